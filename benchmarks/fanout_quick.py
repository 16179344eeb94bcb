"""Quick fan-out benchmark: roomcast against the ``websockets`` library.

For each server in ``--servers``, starts ``servers/<name>_chat.py`` pinned to
CPU 0, then runs the C load generator (``loadgen.c``) pinned to CPU 1:
``--clients`` connections in one room, the first of them publishing
``--messages`` messages of ``--size`` bytes, in two modes:

* burst (W=64): up to 64 messages on their way at once, the throughput case;
* single (W=1): the next message leaves only when every client has the
  previous one, the latency case.

Each mode runs ``--repeat`` times; the run with the median deliveries/s is
kept. A delivery is one message arriving at one client. The server's CPU
time (user + system, from /proc) over the publishing phase divided by the
deliveries gives its cost per delivery; on loopback that includes the
kernel's work for the server's sends.

    python benchmarks/fanout_quick.py
    python benchmarks/fanout_quick.py --clients 5000 --servers roomcast

Exits non-zero if any run lost a message, saw one out of order, or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN_SRC = HERE / "loadgen.c"
LOADGEN = ROOT / "build" / "loadgen"
# The load generator borrows the core's SHA-1 and base64 for the handshake.
CORE_SRCS = [ROOT / "csrc" / "rc_http.c", ROOT / "csrc" / "rc_sha1.c"]
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]
MODES = [("burst", 64), ("single", 1)]


def build_loadgen() -> Path:
    """Compiles the load generator into build/ when missing or older than
    its source."""
    sources = [LOADGEN_SRC, *CORE_SRCS]
    if LOADGEN.exists() and all(LOADGEN.stat().st_mtime >= s.stat().st_mtime for s in sources):
        return LOADGEN
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, *CFLAGS, f"-I{ROOT / 'csrc'}", *map(str, sources), "-o", str(LOADGEN)]
    print("building:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return LOADGEN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, cmd: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if pin else cmd


class ServerProcess:
    """A server script in a subprocess; ready once it has printed its
    "listening" line and accepts a TCP connection."""

    def __init__(self, name: str, port: int, pin: bool) -> None:
        script = HERE / "servers" / f"{name}_chat.py"
        if not script.exists():
            raise SystemExit(f"no server script {script}")
        env = dict(os.environ)
        if name == "roomcast":
            # the package from this work tree, not an installed one
            python_dir = str(ROOT / "python")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [python_dir, env.get("PYTHONPATH")]))
        self.name, self.port = name, port
        # A file, not a pipe: a server that logs a lot must never block on a
        # full pipe nobody reads.
        self.log = tempfile.TemporaryFile(mode="w+")
        cmd = pinned(0, [sys.executable, str(script), str(port)], pin)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} server exited with {self.proc.returncode}:\n{self.output()}")
            if "listening" in self.output():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{self.name} server not ready after {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_loadgen(loadgen: Path, server: ServerProcess, args: argparse.Namespace, window: int,
                pin: bool) -> tuple[dict | None, str]:
    # The server's pid, not taskset's: taskset execs the script in place.
    cmd = pinned(1, [
        str(loadgen), "--port", str(server.port), "--path", "/bench",
        "--clients", str(args.clients), "--messages", str(args.messages),
        "--size", str(args.size), "--window", str(window),
        "--server-pid", str(server.proc.pid), "--timeout", str(args.timeout), "--json",
    ], pin)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
    if proc.returncode != 0 or result is None:
        return None, f"loadgen exited with {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    return result, proc.stderr


def median_run(runs: list[dict]) -> dict:
    # One whole run, so that the figures of a row belong together.
    ordered = sorted(runs, key=lambda r: r["deliveries_per_sec"])
    return ordered[(len(ordered) - 1) // 2]


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def print_table(results: dict, args: argparse.Namespace) -> None:
    print()
    print(f"fan-out: {args.clients} clients, {args.messages} messages of {args.size} bytes,"
          f" median of {args.repeat} runs")
    header = (f"{'server':<11} {'mode':<13} {'deliveries/s':>13} {'CPU us/deliv':>13}"
              f" {'p50 us':>10} {'p99 us':>10} {'loadgen CPU':>12}")
    print(header)
    print("-" * len(header))
    for name in args.servers:
        for mode, window in MODES:
            r = results.get((name, mode))
            label = f"{mode} (W={window})"
            if r is None:
                print(f"{name:<11} {label:<13} {'failed':>13}")
                continue
            lat = r["latency_us"]
            busy = r["client_cpu_seconds"] / r["publish_seconds"] if r["publish_seconds"] else 0
            print(f"{name:<11} {label:<13} {fmt_num(r['deliveries_per_sec']):>13}"
                  f" {fmt_num(r['server_cpu_us_per_delivery'], 3):>13}"
                  f" {fmt_num(lat['p50']):>10} {fmt_num(lat['p99']):>10} {busy:>11.0%}")
    print("(loadgen CPU: the load generator's own CPU time over the publish time; near 100%\n"
          " it, not the server, may be what limits deliveries/s)")
    if "roomcast" in args.servers and "websockets" in args.servers:
        print()
        for mode, window in MODES:
            a, b = results.get(("roomcast", mode)), results.get(("websockets", mode))
            if a is None or b is None:
                continue
            parts = [f"{a['deliveries_per_sec'] / b['deliveries_per_sec']:.1f}x deliveries/s"]
            ca, cb = a["server_cpu_us_per_delivery"], b["server_cpu_us_per_delivery"]
            if ca and cb:
                parts.append(f"{cb / ca:.1f}x less server CPU per delivery")
            if a["latency_us"]["p50"] and b["latency_us"]["p50"]:
                parts.append(f"p50 latency {b['latency_us']['p50'] / a['latency_us']['p50']:.1f}x lower")
            print(f"roomcast vs websockets, {mode}: " + ", ".join(parts))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--servers", default="roomcast,websockets",
                    help="comma-separated names of servers/<name>_chat.py (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300,
                    help="seconds one load generator run may take (default: %(default)s)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's result to FILE")
    args = ap.parse_args()
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]

    loadgen = build_loadgen()
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not pin:
        print("warning: not pinning (needs taskset and 2 CPUs); figures will be noisier", file=sys.stderr)

    results: dict = {}
    everything = []
    failed = False
    for name in args.servers:
        server = ServerProcess(name, free_port(), pin)
        try:
            server.wait_ready()
            for mode, window in MODES:
                runs = []
                for i in range(args.repeat):
                    result, log = run_loadgen(loadgen, server, args, window, pin)
                    if result is None:
                        print(f"{name} {mode} run {i + 1}: FAILED\n{log}", file=sys.stderr)
                        failed = True
                        continue
                    print(f"{name:<11} {mode:<7} run {i + 1}: {result['deliveries_per_sec']:>12,.0f} deliveries/s,"
                          f" connect {result['connect_seconds']:.2f} s,"
                          f" publish {result['publish_seconds']:.2f} s", flush=True)
                    runs.append(result)
                    everything.append({"server": name, "mode": mode, **result})
                if runs:
                    results[(name, mode)] = median_run(runs)
        finally:
            server.stop()

    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
