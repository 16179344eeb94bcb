"""Cross-server fan-out: one room shared by three roomcast servers through
one Redis, against one server alone, in the same run.

    python benchmarks/cross_server.py                 # N=1000, 3 repetitions
    python benchmarks/cross_server.py --clients 1000,3000 --repeat 5

For each N and each scenario (burst: 64 messages in flight; single: one at
a time, for latency) it runs, in turns:

* ``single``: ``servers/roomcast_chat.py``, one process, every client on it;
* ``3 servers``: three ``servers/roomcast_chat.py PORT REDIS_URL`` (a named
  room on the backplane) processes on one ``redis-server`` (started here on a free port, no persistence); the load
  generator spreads its clients over the three (``--ports``), the
  publisher on the first. A message goes from the publisher to server 1,
  whose Python handler pushes it: server 1's members get it at once,
  servers 2 and 3 get it from Redis and deliver it in C.

Every server and Redis run on CPU 0, the load generator on CPU 1, as in
``run.py``: on a 2-core machine the three servers share one core, so the
figures say what the backplane costs, not what three machines would do.
Each configuration is repeated (``--repeat``) and the run with the median
deliveries/s kept. Writes ``results/<date>-cross-server.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402  (the 80% rule of the load generator's CPU)
import run as bench  # noqa: E402  (the fan-out benchmark's machinery)

SCENARIOS = {"burst": bench.BURST_WINDOW, "single": 1}


class Proc(bench.ServerProcess):
    """A process pinned to CPU 0, its output in a file, ready once it
    prints ``ready`` and accepts a TCP connection on ``port``."""

    def __init__(self, cmd: list[str], port: int, ready: str, pin: bool, env: dict | None = None) -> None:
        self.name, self.port, self.READY = cmd[0], port, ready
        self.log = tempfile.TemporaryFile(mode="w+", errors="replace")
        self.proc = subprocess.Popen(
            bench.pinned(0, cmd, pin), stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(bench.ROOT / "python"), env.get("PYTHONPATH")]))
    return env


def start_redis(tmp: str, pin: bool) -> Proc:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server; `make deps` installs it)")
    port = bench.free_port()
    redis = Proc(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        port,
        "Ready to accept connections",
        pin,
    )
    redis.wait_ready()
    return redis


def one_run(mode: str, n: int, scenario: str, args: argparse.Namespace, redis: Proc | None) -> dict:
    window = SCENARIOS[scenario]
    rec: dict = {"mode": mode, "clients": n, "scenario": scenario, "window": window, "size": args.size}
    servers: list[Proc] = []
    try:
        if mode == "single":
            port = bench.free_port()
            servers.append(
                Proc(
                    [sys.executable, str(HERE / "servers" / "roomcast_chat.py"), str(port)],
                    port,
                    "listening",
                    not args.no_pin,
                    python_env(),
                )
            )
        else:
            assert redis is not None
            url = f"redis://127.0.0.1:{redis.port}/0"
            for _ in range(3):
                port = bench.free_port()
                servers.append(
                    Proc(
                        [sys.executable, str(HERE / "servers" / "roomcast_chat.py"), str(port), url],
                        port,
                        "listening",
                        not args.no_pin,
                        python_env(),
                    )
                )
        for s in servers:
            s.wait_ready()
        messages = max(4 * window, -(-args.deliveries // n))
        cmd = [
            str(bench.LOADGEN),
            "--ports",
            ",".join(str(s.port) for s in servers),
            "--path",
            "/bench",
            "--clients",
            str(n),
            "--size",
            str(args.size),
            "--window",
            str(window),
            "--messages",
            str(messages),
            "--duration",
            f"{args.seconds:g}",
            "--server-pid",
            str(servers[0].proc.pid),
            "--timeout",
            f"{args.budget:g}",
            "--json",
        ]
        cmd = bench.pinned(1, cmd, not args.no_pin)
        rec["command"] = " ".join(cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget + 30)
        result = next((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")), None)
        if result is None:
            return {**rec, "status": "failed", "error": bench.tail(proc.stderr)}
        mine = dict(rec)
        rec.update(result)
        rec.update(mine)  # the load generator's "mode" is its pacing, not ours
        rec["loadgen_mode"] = result.get("mode")
        share = result.get("loadgen_cpu_share")
        if share is not None:
            rec["loadgen_busy"] = round(share, 4)
            rec["loadgen_limited"] = share > report.LOADGEN_LIMIT
        rec["status"] = "ok" if proc.returncode == 0 and result.get("ok") else "failed"
        if rec["status"] != "ok":
            rec["error"] = bench.tail(proc.stderr)
        return rec
    except bench.StartError as exc:
        return {**rec, "status": "failed", "error": str(exc)}
    finally:
        for s in servers:
            s.stop()


def table(results: list[dict], clients: list[int]) -> str:
    def row(mode: str, n: int, scenario: str) -> dict | None:
        for r in results:
            if (r["mode"], r["clients"], r["scenario"]) == (mode, n, scenario) and r.get("status") == "ok":
                return r
        return None

    def fig(mode: str, n: int, scenario: str, key: str) -> float | None:
        r = row(mode, n, scenario)
        return None if r is None else bench.metric(r, key)

    def show(mode: str, n: int, scenario: str, key: str, unit: str) -> str:
        """The figure, a bound († ≥ or ≤) when the load generator was above
        80% of its core, and that share."""
        r, v = row(mode, n, scenario), fig(mode, n, scenario, key)
        if r is None or v is None:
            return "–"
        text = f"{v:,.0f}{unit}"
        text = report.at_least(r, text) if key == "deliveries_per_sec" else report.at_most(r, text)
        return f"{text} (loadgen {report.loadgen_cell(r)})"

    lines = [
        "| N | scenario | figure | one server | 3 servers, 1 Redis | ratio |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for n in clients:
        for scenario, key, label, unit in (
            ("burst", "deliveries_per_sec", "deliveries/s", ""),
            ("single", "deliveries_per_sec", "deliveries/s", ""),
            ("single", "p50", "p50 latency", " µs"),
            ("single", "p99", "p99 latency", " µs"),
        ):
            one, three = fig("single", n, scenario, key), fig("3 servers", n, scenario, key)
            ratio = f"{three / one:.2f}×" if one and three else "–"
            lines.append(
                f"| {n:,} | {scenario} (W={SCENARIOS[scenario]}) | {label} | "
                f"{show('single', n, scenario, key, unit)} | {show('3 servers', n, scenario, key, unit)}"
                f" | {ratio} |"
            )
    lines.append("")
    lines.extend(report.footnote(results))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1000", help="N, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time of a run at most")
    ap.add_argument("--deliveries", type=int, default=2_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--budget", type=float, default=90.0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    ap.add_argument("--out", default=None, help="stem in benchmarks/results/ (default <date>-cross-server)")
    args = ap.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",")]
    bench.build_loadgen()
    bench.RESULTS.mkdir(exist_ok=True)
    stem = args.out or f"{dt.date.today().isoformat()}-cross-server"
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(tmp, not args.no_pin)
        try:
            for rep in range(args.repeat):
                for n in clients:
                    for scenario in SCENARIOS:
                        for mode in ("single", "3 servers"):
                            rec = one_run(mode, n, scenario, args, redis)
                            rec["repetition"] = rep
                            runs.append(rec)
                            p99 = bench.metric(rec, "p99")
                            print(
                                f"[{rep + 1}/{args.repeat}] {mode:9} N={n} {scenario:6} {rec['status']}: "
                                f"{rec.get('deliveries_per_sec', 0):,.0f} deliveries/s, "
                                f"p99 {p99 if p99 is not None else '-'} µs"
                                + (f" ({rec.get('error')})" if rec["status"] != "ok" else ""),
                                flush=True,
                            )
        finally:
            redis.stop()
    medians = []
    for n in clients:
        for scenario in SCENARIOS:
            for mode in ("single", "3 servers"):
                mine = [
                    r
                    for r in runs
                    if (r["mode"], r["clients"], r["scenario"]) == (mode, n, scenario) and r["status"] == "ok"
                ]
                if mine:
                    best = bench.median_run(mine, "deliveries_per_sec")
                    medians.append({**best, "spread": sorted(r["deliveries_per_sec"] for r in mine)})
    doc = {
        "date": dt.date.today().isoformat(),
        "settings": vars(args),
        "machine": bench.machine_info(["roomcast"]),
        "medians": medians,
        "runs": runs,
    }
    bench.write_json(bench.RESULTS / f"{stem}.json", doc)
    md = [
        f"# Cross-server fan-out, {doc['date']}",
        "",
        f"`python benchmarks/cross_server.py --clients {args.clients} --repeat {args.repeat} "
        f"--seconds {args.seconds:g}`; medians of {args.repeat} runs (the run with the median deliveries/s). "
        "Every server and Redis on CPU 0, the load generator on CPU 1: the three servers share one core.",
        "",
        table(medians, clients),
        "",
    ]
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        md += (
            ["Failed runs:", ""]
            + [f"- {r['mode']} N={r['clients']} {r['scenario']}: {r.get('error')}" for r in failed]
            + [""]
        )
    (bench.RESULTS / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
