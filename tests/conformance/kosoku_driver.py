"""Runs Autobahn TestSuite cases with kosoku, one case at a time.

Not run by hand: tests/conformance/run.py starts it with the Python of the
virtual environment it installed kosoku into (build/conformance/), which is
why it imports nothing from the project.

    python kosoku_driver.py URL OUTDIR --cases 1.*,2.* [--exclude 12.*]
    python kosoku_driver.py serve OUTDIR --cases 1.*,2.* [--exclude 12.*]

With a URL it runs kosoku's fuzzing client against the server there.
kosoku's own command line prints nothing until every case has run, and the
Limits/Performance cases take minutes, so this asks for one case at a time
and prints a line per case.

With ``serve`` it runs kosoku's fuzzing server (``run_fuzzingserver``) for
a client under test on a free loopback port, prints ``listening on
ws://127.0.0.1:PORT`` once bound, and waits until the client has driven
every case and asked for the report (``/updateReports``; the runner's
client_driver.py does). The progress lines are the client's.

At the end it writes kosoku's report (index.json, index.html and one file
per case, the layout of Autobahn's own reports) into OUTDIR, and
selected.json, the ids it was to run. Exit status: 0 when every case ran
(whatever the verdicts), 2 when the tool itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import sys
import time
from typing import Any

# A hang guard only: the slowest case of the suite takes seconds.
CASE_TIMEOUT = 600.0


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def select(all_ids: list[str], include: list[str], exclude: list[str]) -> list[str]:
    def matches(case_id: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)

    return [c for c in all_ids if matches(c, include) and not matches(c, exclude)]


async def run(url: str, case_ids: list[str]) -> list[Any]:
    from kosoku import FailureError, run_fuzzingclient

    results: list[Any] = []
    width = len(str(len(case_ids)))
    started = time.monotonic()
    for n, case_id in enumerate(case_ids, 1):
        try:
            got = await asyncio.wait_for(run_fuzzingclient(url, [case_id]), CASE_TIMEOUT)
        except FailureError as failure:
            got = failure.results
        except asyncio.TimeoutError:
            print(f"[{n:>{width}}/{len(case_ids)}] {case_id:<8} no verdict after {CASE_TIMEOUT:.0f} s", flush=True)
            continue
        if not got:
            print(f"[{n:>{width}}/{len(case_ids)}] {case_id:<8} no result", flush=True)
            continue
        result = got[0]
        results.append(result)
        verdict = result.behavior.value
        close = result.behavior_close.value
        mark = "" if result.passed else "   <-- not passed"
        print(
            f"[{n:>{width}}/{len(case_ids)}] {case_id:<8} {verdict:<13} close {close:<13}"
            f" {result.duration:>6} ms  ({time.monotonic() - started:.0f} s){mark}",
            flush=True,
        )
    return results


async def serve(case_ids: list[str], timeout: float) -> list[Any]:
    from kosoku import FailureError, run_fuzzingserver

    async with run_fuzzingserver(case_ids, port=0) as server:
        print(f"listening on ws://{server.address}:{server.port}", flush=True)
        try:
            return await asyncio.wait_for(server.get_result(), timeout)
        except FailureError as failure:
            return list(failure.results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server under test, or serve: be the server for a client")
    parser.add_argument("outdir")
    parser.add_argument("--cases", required=True, help="comma-separated case ids or globs")
    parser.add_argument("--exclude", default="", help="comma-separated case ids or globs")
    args = parser.parse_args()
    include = [p for p in args.cases.split(",") if p]
    exclude = [p for p in args.exclude.split(",") if p]

    try:
        import kosoku.cases
        from kosoku._report import write_reports
    except Exception as exc:  # a broken install: say so, do not trace back
        print(f"kosoku cannot be imported: {exc!r}", file=sys.stderr)
        return 2

    case_ids = select(sorted(kosoku.cases.CASES, key=case_key), include, exclude)
    if not case_ids:
        print(f"no case matches {args.cases!r} (excluding {args.exclude!r})", file=sys.stderr)
        return 2
    # Lets the runner tell a case that never got a verdict from one not asked for.
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "selected.json"), "w") as f:
        json.dump(case_ids, f)
    if args.url == "serve":
        print(f"{len(case_ids)} cases for a client", flush=True)
        try:
            results = asyncio.run(serve(case_ids, CASE_TIMEOUT * 4))
        except asyncio.TimeoutError:
            print(f"the client did not finish within {CASE_TIMEOUT * 4:.0f} s", file=sys.stderr)
            return 2
    else:
        print(f"{len(case_ids)} cases against {args.url}", flush=True)
        results = asyncio.run(run(args.url, case_ids))
    if not results:
        print("no case produced a result", file=sys.stderr)
        return 2
    write_reports(results, args.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
