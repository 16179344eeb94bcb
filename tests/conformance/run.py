#!/usr/bin/env python3
"""Autobahn TestSuite conformance run against roomcast's echo server.

    python3 tests/conformance/run.py [--cases 1.*,2.*,...] [--out DIR]
                     [--tool auto|autobahntestsuite|kosoku] [--python2 PATH]

1. Installs the test tool if missing, under build/conformance/ and never
   into the project's interpreter. ``--tool auto`` (the default) takes the
   Autobahn TestSuite itself (PyPI ``autobahntestsuite``) when a Python 2.7
   interpreter is found, since that package is Python 2 code; it is
   installed by that interpreter's pip into
   build/conformance/autobahntestsuite-py2/. Otherwise it takes kosoku (PyPI
   ``kosoku``, a Python 3 runner of the same Autobahn case files), in its
   own virtual environment build/conformance/venv-kosoku/.
2. Starts examples/echo.py (PYTHONPATH=python) on a free loopback port;
   builds the extension first with ``make build`` if it cannot be imported.
3. Runs the fuzzing client against it: sections 1-7 and 9 by default.
   Sections 12 and 13 (permessage-deflate) are always left out: roomcast
   does not offer compression. One line is printed per case.
4. Stops the server and writes the tool's own report (HTML and JSON) to
   ``--out`` (default build/conformance/report, not committed), then
   ``summary.md`` (counts per section, tool, date, command, and every case
   that did not pass) and ``results.json`` (case id -> behavior,
   behaviorClose, duration in ms). A run of the default selection writes
   these two next to this file, where they are committed; a run of other
   cases writes them into ``--out`` so it cannot replace the full record.

A case passes when its behavior is OK, NON-STRICT, INFORMATIONAL or
UNIMPLEMENTED and its closing behavior is OK or INFORMATIONAL, as in
Autobahn's reports. Exit status: 0 when every case passed, 1 when one did
not (or the server died during the run), 2 when the tool or the server
could not be run at all. The server and the tool are stopped on every exit,
Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD = ROOT / "build" / "conformance"
DRIVER = HERE / "kosoku_driver.py"
ECHO = ROOT / "examples" / "echo.py"

DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*"
# permessage-deflate: roomcast negotiates no extension.
EXCLUDED = "12.*,13.*"

AUTOBAHN = ("autobahntestsuite", "25.10.1")
AUTOBAHN_DIR = BUILD / "autobahntestsuite-py2"
KOSOKU = ("kosoku", "0.1.0")
# What `wstest` 25.10.1 does in a Python 3 venv (seen on Python 3.11): the
# package is Python 2.7 code (implicit relative imports, print statements).
AUTOBAHN_ON_PY3 = "`ModuleNotFoundError: No module named '_version'`, its first implicit relative import"

SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/Performance",
    "10": "Miscellaneous",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
CLOSE_PASSING = {"OK", "INFORMATIONAL"}
NO_RESULT = "NO RESULT"  # ours: the tool gave the case no verdict at all

SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0


class CannotRun(Exception):
    """The tool or the server could not be run: exit status 2."""


def say(message: str) -> None:
    print(f"conformance: {message}", flush=True)


def case_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- tools -------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return BUILD / f"venv-{name}" / "bin" / "python"


def create_venv(path: Path) -> None:
    cmd = [sys.executable, "-m", "venv", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return
    shutil.rmtree(path, ignore_errors=True)
    # Debian's python3 keeps ensurepip, which venv needs, in python3-venv.
    if "ensurepip" in done.stdout + done.stderr and os.geteuid() == 0 and shutil.which("apt-get"):
        say("the venv module needs python3-venv: apt-get update && apt-get install python3-venv")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for apt in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "python3-venv"]):
            if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                raise CannotRun(f"{shlex.join(apt)} failed")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            return
        shutil.rmtree(path, ignore_errors=True)
    raise CannotRun(
        f"cannot create a virtual environment ({shlex.join(cmd)}):\n{tail(done.stdout + done.stderr)}\n"
        "on Debian or Ubuntu, as root: apt-get update && apt-get install -y python3-venv"
    )


def ensure_tool(name: str, version: str) -> Path:
    """The Python of build/conformance/venv-NAME with NAME==VERSION in it."""
    python = venv_python(name)
    if not python.exists():
        say(f"creating {python.parents[1].relative_to(ROOT)}")
        create_venv(python.parents[1])
    probe = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 and probe.stdout.strip() == version:
        return python
    say(f"installing {name}=={version} into {python.parents[1].relative_to(ROOT)}")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{name}=={version}"]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise CannotRun(f"pip could not install {name}=={version}:\n{tail(done.stdout + done.stderr)}")
    return python


def find_python2(explicit: Optional[str]) -> tuple[Optional[str], str]:
    """(a Python 2.7 interpreter, its version) or (None, where we looked)."""
    if explicit:
        candidates = [explicit]
    else:
        # PATH first; a pyenv shim on PATH fails unless 2.7 is selected, so
        # also its versions directory.
        candidates = [c for c in (shutil.which("python2.7"), shutil.which("python2"), shutil.which("pypy")) if c]
        pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        candidates += [str(p) for p in sorted(pyenv_root.glob("versions/2.7*/bin/python2.7"), reverse=True)]
    for candidate in candidates:
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                capture_output=True,
                text=True,
                timeout=60,
                env=tool_env(),
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.startswith("2.7."):
            return candidate, done.stdout.strip()
    where = explicit or "python2.7, python2 and pypy on PATH and pyenv's versions/2.7.*"
    return None, where


def tool_env() -> dict[str, str]:
    """The environment of the tools: nothing of the project's Python path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def wstest_command(python2: str) -> list[str]:
    # --target installs no console script that works and leaves namespace
    # packages (zope.interface) to .pth files: addsitedir reads them.
    boot = (
        "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
        "from autobahntestsuite.wstest import run; run()"
    )
    return [python2, "-c", boot, str(AUTOBAHN_DIR)]


def ensure_autobahn(python2: str) -> list[str]:
    """The command that runs wstest, after installing the Autobahn TestSuite
    with the Python 2.7's own pip into build/conformance/ if missing."""
    name, version = AUTOBAHN
    if not (AUTOBAHN_DIR / f"{name}-{version}.dist-info").is_dir():
        shutil.rmtree(AUTOBAHN_DIR, ignore_errors=True)
        say(f"installing {name}=={version} with {python2} -m pip into {AUTOBAHN_DIR.relative_to(ROOT)} (about a minute)")
        pip = [python2, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location"]
        pip += ["--target", str(AUTOBAHN_DIR), f"{name}=={version}"]
        done = subprocess.run(pip, capture_output=True, text=True, env=tool_env())
        if done.returncode != 0:
            shutil.rmtree(AUTOBAHN_DIR, ignore_errors=True)
            raise CannotRun(f"{shlex.join(pip)} failed:\n{tail(done.stdout + done.stderr)}")
    cmd = wstest_command(python2)
    try:
        done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, env=tool_env())
    except subprocess.TimeoutExpired:
        raise CannotRun(f"wstest --help did not return within 120 s under {python2}") from None
    if done.returncode != 0:
        raise CannotRun(f"wstest does not start under {python2}:\n{tail(done.stdout + done.stderr)}")
    return cmd


# --- the server --------------------------------------------------------------


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "python"), env.get("PYTHONPATH", "")) if p)
    return env


def ensure_built() -> None:
    check = [sys.executable, "-c", "import roomcast._core"]
    if subprocess.run(check, env=server_env(), cwd=ROOT, capture_output=True).returncode == 0:
        return
    say("roomcast._core cannot be imported: make build")
    if subprocess.run(["make", "build"], cwd=ROOT).returncode != 0:
        raise CannotRun("make build failed (make deps installs what it needs)")
    if subprocess.run(check, env=server_env(), cwd=ROOT).returncode != 0:
        raise CannotRun("roomcast._core still cannot be imported after make build")


def start_server(log_path: Path, children: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], str]:
    """Starts examples/echo.py (added to ``children`` at once, so that it is
    stopped even if the wait below is interrupted); returns it and its URL."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(ECHO), "127.0.0.1", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops it
        )
    children.append(proc)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        found = re.search(r"listening on (ws://\S+)", log_path.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise CannotRun(
                f"examples/echo.py exited with status {proc.returncode} before listening:\n"
                f"{tail(log_path.read_text(errors='replace'))}"
            )
        if time.monotonic() > deadline:
            raise CannotRun(f"examples/echo.py printed no 'listening on' line in {SERVER_START_TIMEOUT:.0f} s")
        time.sleep(0.05)


def stop(proc: Optional[subprocess.Popen[bytes]]) -> Optional[int]:
    """Stops a child started in its own session (SIGTERM, then SIGKILL);
    returns its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    return proc.returncode


# --- running the cases -------------------------------------------------------


def clear_report(out: Path) -> None:
    """Removes a previous report from ``out`` (only the tool's files)."""
    for path in out.glob("*"):
        if path.is_file() and (path.name.startswith("index.") or path.name == "selected.json" or "_case_" in path.name):
            path.unlink()


def run_kosoku(python: Path, url: str, out: Path, cases: str, children: list[subprocess.Popen[bytes]]) -> int:
    cmd = [str(python), str(DRIVER), url, str(out), "--cases", cases, "--exclude", EXCLUDED]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    children.append(proc)
    return proc.wait()


def run_wstest(wstest: list[str], url: str, out: Path, cases: str, children: list[subprocess.Popen[bytes]]) -> int:
    spec = {
        "outdir": str(out),
        "servers": [{"agent": "roomcast", "url": url}],
        "cases": cases.split(","),
        "exclude-cases": EXCLUDED.split(","),
        "exclude-agent-cases": {},
    }
    spec_path = BUILD / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [*wstest, "-m", "fuzzingclient", "-s", str(spec_path)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=BUILD,
        env=tool_env(),
        start_new_session=True,
    )
    children.append(proc)
    assert proc.stdout is not None
    # wstest announces each case as it starts it; numbered, that is the
    # progress. The verdicts are in its report, read at the end.
    count, total = 0, "?"
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        found = re.match(r"Running test case ID (\S+)", line)
        if found:
            count += 1
            print(f"[{count:>3}/{total}] {found.group(1)}", flush=True)
        elif line and not line.startswith("Cases = "):  # the whole list, one line
            total = re.sub(r".*will run (\d+) test cases.*", r"\1", line) if "will run" in line else total
            print(f"wstest: {line}", flush=True)
    return proc.wait()


def read_results(out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(index entries, full case reports of the cases that did not pass)."""
    index_path = out / "index.json"
    if not index_path.exists():
        raise CannotRun(f"the tool wrote no {index_path}")
    agents = json.loads(index_path.read_text())
    if len(agents) != 1:
        raise CannotRun(f"{index_path} holds {len(agents)} agents, expected 1")
    (entries,) = agents.values()
    selected = out / "selected.json"
    if selected.exists():
        for case_id in json.loads(selected.read_text()):
            entries.setdefault(case_id, {"behavior": NO_RESULT, "behaviorClose": NO_RESULT, "duration": None})
    details = {}
    for case_id, entry in entries.items():
        if not passed(entry) and entry.get("reportfile"):
            report = out / entry["reportfile"]
            if report.exists():
                details[case_id] = json.loads(report.read_text())
    return dict(sorted(entries.items(), key=lambda kv: case_key(kv[0]))), details


def passed(entry: dict[str, Any]) -> bool:
    return entry["behavior"] in PASSING and entry["behaviorClose"] in CLOSE_PASSING


# --- the record --------------------------------------------------------------


def one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    flat = flat.replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def shown(path: Path) -> str:
    """``path`` relative to the work tree when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def write_record(
    dest: Path,
    out: Path,
    entries: dict[str, dict[str, Any]],
    details: dict[str, dict[str, Any]],
    tool: str,
    why_tool: str,
    command: str,
    started: datetime.datetime,
    case_seconds: float,
    server_note: str,
) -> None:
    results = {
        case_id: {"behavior": e["behavior"], "behaviorClose": e["behaviorClose"], "duration": e.get("duration")}
        for case_id, e in entries.items()
    }
    (dest / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    sections: dict[str, list[dict[str, Any]]] = {}
    for case_id, entry in entries.items():
        sections.setdefault(case_id.split(".")[0], []).append(entry)
    head = ["section", "cases", *BEHAVIORS, "other", "close not OK"]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]

    def counts(label: str, group: list[dict[str, Any]]) -> list[str]:
        row = [label, str(len(group))]
        row += [str(sum(e["behavior"] == b for e in group)) for b in BEHAVIORS]
        row.append(str(sum(e["behavior"] not in BEHAVIORS for e in group)))
        row.append(str(sum(e["behaviorClose"] not in CLOSE_PASSING for e in group)))
        return row

    for number in sorted(sections, key=int):
        rows.append(counts(f"{number} {SECTIONS.get(number, '')}".strip(), sections[number]))
    rows.append(counts("**all**", [e for group in sections.values() for e in group]))

    failing = [c for c, e in entries.items() if not passed(e)]
    lines = [
        "# Autobahn TestSuite conformance",
        "",
        "Written by `tests/conformance/run.py`; do not edit by hand. The tool's full",
        f"report (every case with its wire log) is in `{shown(out)}/` after a run;",
        "it is not committed.",
        "",
        "- Server: `examples/echo.py` (each message echoed as received) on 127.0.0.1",
        f"- Tool: {tool}",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M')} UTC",
        f"- Command: `{command}`",
        f"- Cases: {len(entries)} (sections 12 and 13, permessage-deflate, left out:"
        " roomcast negotiates no compression)",
        f"- Wall time of the cases: {case_seconds:.0f} s",
        f"- Result: {'every case passed' if not failing else f'{len(failing)} case(s) did not pass'}",
    ]
    if server_note:
        lines.append(f"- Server problems: {server_note}")
    lines += ["", "## Per section", ""]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "A case passes when its behavior is OK, NON-STRICT (a SHOULD of RFC 6455 not",
        "followed, still conformant), INFORMATIONAL (behaviour the RFC leaves open)",
        "or UNIMPLEMENTED, and its closing behavior is OK or INFORMATIONAL.",
        "`close not OK` counts closing handshakes judged otherwise (wrong close",
        "code, unclean close, or the wrong side closing), `other` verdicts such",
        f"as `{NO_RESULT}` (the tool produced none).",
        "",
        "## Which tool",
        "",
        why_tool,
        "",
    ]
    if failing:
        lines += ["## Cases that did not pass", ""]
        for case_id in failing:
            entry, case = entries[case_id], details.get(case_id, {})
            lines.append(f"- **{case_id}**: {entry['behavior']}, close {entry['behaviorClose']}")
            if case:
                lines.append(f"  - case: {one_line(case.get('description', ''))}")
                lines.append(f"  - expected: {one_line(case.get('expectation', ''))}")
                got = f"{case.get('result', '')} {case.get('resultClose', '')}"
                code = case.get("remoteCloseCode")
                got += f" (roomcast's close code: {code})" if code is not None else " (roomcast sent no close frame)"
                lines.append(f"  - got: {one_line(got)}")
        lines.append("")
    others = [c for c, e in entries.items() if passed(e) and e["behavior"] != "OK"]
    if others:
        lines += ["## Cases passed with a verdict other than OK", ""]
        for verdict in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
            ids = [c for c in others if entries[c]["behavior"] == verdict]
            if ids:
                lines.append(f"- {verdict}: {', '.join(ids)}")
        lines.append("")
    (dest / "summary.md").write_text("\n".join(lines))


# --- main --------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated case ids or globs (default {DEFAULT_CASES})")
    parser.add_argument("--out", type=Path, default=BUILD / "report", help="the tool's report (default build/conformance/report)")
    parser.add_argument(
        "--tool",
        choices=("auto", "autobahntestsuite", "kosoku"),
        default="auto",
        help="auto: the Autobahn TestSuite if a Python 2.7 is found, else kosoku",
    )
    parser.add_argument("--python2", help="the Python 2.7 interpreter for the Autobahn TestSuite (default: searched)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    out: Path = args.out.resolve()
    command = shlex.join(["python3", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])
    BUILD.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    clear_report(out)

    name, version = AUTOBAHN
    on_py3 = (
        f"`{name}` {version} is Python 2.7 code: in a Python 3 virtual environment"
        f" its `wstest` stops at once ({AUTOBAHN_ON_PY3})"
    )
    wstest: Optional[list[str]] = None
    kosoku: Optional[Path] = None
    why_not = ""
    if args.tool in ("auto", "autobahntestsuite"):
        python2, found = find_python2(args.python2)
        try:
            if python2 is None:
                raise CannotRun(f"no Python 2.7 interpreter was found ({found})")
            wstest = ensure_autobahn(python2)
        except CannotRun as exc:
            if args.tool == "autobahntestsuite":
                raise
            why_not = str(exc)
            say(f"the Autobahn TestSuite cannot run: {why_not}; using kosoku")
    if wstest is not None:
        tool = f"Autobahn TestSuite `{name}` {version} (`wstest -m fuzzingclient`) under Python {found}"
        why_tool = (
            f"The Autobahn TestSuite itself ran. {on_py3}, so it runs under the Python"
            f" 2.7 found at `{python2}`, installed by that interpreter's pip into"
            f" `{AUTOBAHN_DIR.relative_to(ROOT)}/`. Where no Python 2.7 exists (Debian 12"
            f" packages none), the runner uses kosoku {KOSOKU[1]}, a Python 3 runner of"
            " the same case files (`--tool kosoku` forces it)."
        )
    else:
        kosoku = ensure_tool(*KOSOKU)
        tool = (
            f"kosoku {KOSOKU[1]} (PyPI `kosoku`, a fuzzing client that runs the Autobahn"
            " TestSuite's own case files), one case at a time through `tests/conformance/kosoku_driver.py`"
        )
        why_tool = f"kosoku ran because `--tool kosoku` was given. {on_py3}."
        if why_not:
            why_tool = f"kosoku ran, not the Autobahn TestSuite. {on_py3}, and here: {one_line(why_not)}."

    ensure_built()
    log_path = BUILD / "server.log"
    children: list[subprocess.Popen[bytes]] = []
    server: Optional[subprocess.Popen[bytes]] = None
    server_note = ""
    try:
        server, url = start_server(log_path, children)
        say(f"echo server at {url} (pid {server.pid}, log {log_path.relative_to(ROOT)})")
        say(f"running cases {args.cases} (excluding {EXCLUDED}) with {'wstest' if wstest else 'kosoku'}")
        t_cases = time.monotonic()
        if wstest is not None:
            status = run_wstest(wstest, url, out, args.cases, children)
        else:
            assert kosoku is not None
            status = run_kosoku(kosoku, url, out, args.cases, children)
        case_seconds = time.monotonic() - t_cases
        if status != 0:
            raise CannotRun(f"the tool exited with status {status}")
        crashed = server.poll()
        if crashed is not None:
            server_note = f"examples/echo.py exited with status {crashed} during the run"
    finally:
        # The tool first, so that the server is not stopped under a live case.
        for child in reversed(children):
            stop(child)
    code = server.returncode if server is not None else None
    if not server_note and code not in (0, None):
        server_note = f"examples/echo.py exited with status {code} when stopped with SIGTERM"
    logged = log_path.read_text(errors="replace").splitlines()
    extra = [line for line in logged if "listening on" not in line and line.strip() != "shutting down"]
    if extra:
        say(f"the server logged {len(extra)} other line(s), see {log_path.relative_to(ROOT)}:\n{tail(chr(10).join(extra), 20)}")
        server_note = "; ".join(filter(None, [server_note, f"it logged {len(extra)} unexpected line(s)"]))

    entries, details = read_results(out)
    full = args.cases == DEFAULT_CASES
    dest = HERE if full else out
    write_record(dest, out, entries, details, tool, why_tool, command, started, case_seconds, server_note)

    failing = [c for c, e in entries.items() if not passed(e)]
    for case_id in failing:
        e = entries[case_id]
        say(f"did not pass: {case_id} {e['behavior']} / close {e['behaviorClose']}")
    say(
        f"{len(entries) - len(failing)} of {len(entries)} cases passed; cases {case_seconds:.0f} s, "
        f"whole run {time.monotonic() - t0:.0f} s"
    )
    say(f"report: {out}/index.html; summary: {(dest / 'summary.md')}; results: {dest / 'results.json'}")
    if server_note:
        say(f"server: {server_note}")
    return 1 if failing or server_note else 0


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's finally


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        sys.exit(main())
    except CannotRun as exc:
        print(f"conformance: cannot run: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("conformance: interrupted; server and tool stopped", file=sys.stderr)
        sys.exit(130)
