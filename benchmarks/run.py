"""The fan-out benchmark: roomcast against its peers and the C floor.

Runs the scenarios of the benchmark (see benchmarks/README.md) for a list of
servers, each configuration against a fresh server process pinned to CPU 0,
with the C load generator (``loadgen.c``) pinned to CPU 1; every
configuration is repeated and the median run kept. Writes
``results/<stem>.json`` (every run, every figure, the machine),
``results/<stem>.md`` (the tables and the targets) and the plots
``results/<stem>-deliveries.png`` and ``results/<stem>-latency.png``.

    python benchmarks/run.py --quick     # make bench: a pass of a few minutes
    python benchmarks/run.py --full      # make bench-full: everything
    python benchmarks/run.py --fastapi   # make bench-fastapi: the FastAPI rows
    python benchmarks/run.py --deflate   # permessage-deflate against its peers
    python benchmarks/run.py --tls       # make bench-tls: TLS against its peers
    python benchmarks/run.py --servers roomcast,floor-writev \\
        --scenarios burst --clients 1000,10000 --sizes 64 --repeat 5

The stem is the date (``2026-11-22``), with ``-quick`` for a quick pass,
``-fastapi`` for the FastAPI rows, ``-deflate`` for permessage-deflate and
``-tls`` for TLS. Exits 1 if a run of a roomcast server
(``roomcast`` or one of the FastAPI ones) failed (lost a message, saw one
out of order, timed out); a peer that is missing, fails to start or is too slow is
recorded as such and does not change the exit status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import report  # benchmarks/report.py: the tables, the plots, the 80% rule

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = ROOT / "build"
RESULTS = HERE / "results"
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}"]
LOADGEN = BUILD / "loadgen"
LOADGEN_SRCS = [HERE / "loadgen.c"] + [ROOT / "csrc" / "proto" / f for f in ("rc_http.c", "rc_pmd.c", "rc_deflate.c")]
FLOOR = BUILD / "floor_server"
FLOOR_SRCS = [HERE / "floor_server.c"] + [ROOT / "csrc" / "proto" / f for f in ("rc_http.c", "rc_utf8.c", "rc_frame.c")]
# rc_http.c takes SHA-1 and base64 (the accept value) from OpenSSL;
# rc_deflate.c, libdeflate and zlib (the load generator's --deflate).
LIBS = ["-lcrypto"]
# ... and OpenSSL's TLS (the load generator's --tls).
LOADGEN_LIBS = ["-lssl", *LIBS, "-ldeflate", "-lz"]

# Server name -> (kind, argument, Python distributions whose versions are
# recorded). For "py" the argument is the script in servers/ and the
# arguments it takes after the port. Order is the order of the tables.
# uvicorn runs on uvloop and parses HTTP with httptools when they are
# installed (uvicorn[standard]), on asyncio and h11 otherwise: recorded too.
FASTAPI_DISTS = ["fastapi", "uvicorn", "starlette", "uvloop", "httptools"]
SERVERS = {
    "roomcast": ("py", "roomcast_chat.py", []),
    "floor-writev": ("floor", "writev", []),
    "floor-write": ("floor", "write", []),
    "socketify": ("py", "socketify_chat.py", ["socketify"]),
    "picows": ("py", "picows_chat.py", ["picows", "aiofastnet"]),
    "aiohttp": ("py", "aiohttp_chat.py", ["aiohttp"]),
    "websockets": ("py", "websockets_chat.py", ["websockets"]),
    # roomcast's Room in a FastAPI app on uvicorn: with roomcast's uvicorn
    # protocol (the core serves the connections), and with uvicorn's own.
    "roomcast-fastapi": ("py", "roomcast_fastapi_chat.py roomcast", FASTAPI_DISTS),
    "roomcast-fastapi-py": ("py", "roomcast_fastapi_chat.py uvicorn", FASTAPI_DISTS),
    "websocket_rooms": ("py", "websocket_rooms_chat.py", ["websocket-rooms", *FASTAPI_DISTS]),
    # permessage-deflate (a name ending in -deflate: the load generator
    # offers it, and a run where a connection did not negotiate it fails).
    # roomcast compresses a published message once for every member;
    # socketify with uWS's shared compressor (no context takeover);
    # websockets and aiohttp with their defaults (context takeover: each
    # message compressed for each connection).
    "roomcast-deflate": ("py", "roomcast_chat.py --deflate", []),
    "socketify-deflate": ("py", "socketify_chat.py deflate", ["socketify"]),
    "websockets-deflate": ("py", "websockets_chat.py deflate", ["websockets"]),
    "aiohttp-deflate": ("py", "aiohttp_chat.py deflate", ["aiohttp"]),
    # TLS (a name ending in -tls: the server gets `--tls CERTFILE KEYFILE`,
    # see servers/_tls.py, and the load generator --tls). roomcast with
    # its Server's ssl_certfile/ssl_keyfile, socketify with its SSL app
    # (uSockets' OpenSSL), websockets with an ssl.SSLContext (asyncio).
    "roomcast-tls": ("py", "roomcast_chat.py", []),
    "socketify-tls": ("py", "socketify_chat.py", ["socketify"]),
    "websockets-tls": ("py", "websockets_chat.py", ["websockets"]),
}
DEFLATE_SUFFIX = "-deflate"
TLS_SUFFIX = "-tls"
# The servers that run this work tree's roomcast package: its PYTHONPATH is
# set for them, and a failed run of any of them is the exit status's.
ROOMCAST_SERVERS = ("roomcast", "roomcast-fastapi", "roomcast-fastapi-py", "roomcast-deflate", "roomcast-tls")
SCENARIOS = ("burst", "single", "latency", "idle", "selfcheck", "handshake", "resume")
# new connections per second: full handshakes, and resumed ones (TLS only)
RATE_SCENARIOS = ("handshake", "resume")
BURST_WINDOW = 64

# --quick: what `make bench` runs (a few minutes on a 2-core machine).
QUICK: dict[str, Any] = dict(
    servers=["roomcast", "floor-writev", "floor-write", "socketify", "websockets"],
    scenarios=["burst", "single", "latency", "idle"],
    clients=[1000],
    sizes=[64],
    latency_clients=[1000],
    rates=[100],
    idle_clients=10000,
    repeat=1,
    seconds=3.0,
    budget=60.0,
)
# --full: what `make bench-full` runs, the grid of the issue.
FULL: dict[str, Any] = dict(
    servers=list(SERVERS),
    scenarios=["burst", "single", "latency", "idle", "selfcheck"],
    clients=[100, 1000, 10000],
    sizes=[64, 1024],
    latency_clients=[1000, 10000],
    rates=[10, 100],
    idle_clients=10000,
    repeat=3,
    seconds=10.0,
    budget=120.0,
)
# --fastapi: what `make bench-fastapi` runs, the FastAPI rows of issue 14:
# roomcast's own Server, roomcast's Room in FastAPI on uvicorn with
# roomcast's protocol and with uvicorn's, and websocket_rooms on uvicorn,
# burst and single at N = 1,000 and 10,000 (about 10 minutes; --max-minutes
# stops starting runs at 14). M = 10,000,000 / N: at 2,000,000 / N a burst
# of roomcast's at N = 1,000 lasts half a second, short enough for a moment
# of the shared machine's other work to move it by half; the slower servers
# stop at --seconds either way.
FASTAPI: dict[str, Any] = dict(
    servers=["roomcast", "roomcast-fastapi", "roomcast-fastapi-py", "websocket_rooms"],
    scenarios=["burst", "single"],
    clients=[1000, 10000],
    sizes=[64],
    latency_clients=[],
    rates=[],
    idle_clients=10000,
    repeat=3,
    seconds=3.0,
    budget=90.0,
    max_minutes=14.0,
    deliveries=10_000_000,
)
# --deflate: permessage-deflate (issue 15). roomcast without compression
# and with it, socketify, websockets and aiohttp with theirs, on the same
# JSON payload of 1 KiB (the load generator's --payload json, about 2.5x
# with a standalone deflate; the publisher sends it plain), burst at N =
# 1,000 and 10,000 and idle memory at 10,000, every connection offering
# permessage-deflate. M = 10,000,000 / N as for --fastapi. 150 s per run at
# most: a peer that compresses for each member (20,000 deliveries/s or
# less) needs half a minute or more to drain the window of 64 messages at
# N = 10,000.
DEFLATE: dict[str, Any] = dict(
    servers=["roomcast", "roomcast-deflate", "socketify-deflate", "websockets-deflate", "aiohttp-deflate"],
    scenarios=["burst", "idle"],
    clients=[1000, 10000],
    sizes=[1024],
    latency_clients=[],
    rates=[],
    idle_clients=10000,
    repeat=3,
    seconds=3.0,
    budget=150.0,
    max_minutes=30.0,
    deliveries=10_000_000,
    payload="json",
    offer_deflate=True,
)
# --tls: TLS (issue 16). roomcast, socketify and websockets over TLS, burst
# and single at N = 1,000, and roomcast in plaintext for the ratio; then
# new connections per second (connect, TLS handshake, upgrade, close) for
# each, roomcast in plaintext too: --handshakes at most, new ones started
# for --seconds, --handshake-batch in flight; then the same with session
# resumption (the TLS servers). A P-256 certificate made with the openssl
# command (--tls-key rsa: RSA 2048). M = 10,000,000 / N as for --fastapi.
# 5 runs of each (the runs are short: about 5 minutes in all); no run
# started after 14 minutes.
TLS: dict[str, Any] = dict(
    servers=["roomcast", "roomcast-tls", "socketify-tls", "websockets-tls"],
    scenarios=["burst", "single", "handshake", "resume"],
    clients=[1000],
    sizes=[64],
    latency_clients=[],
    rates=[],
    idle_clients=10000,
    repeat=5,
    seconds=3.0,
    budget=60.0,
    max_minutes=14.0,
    deliveries=10_000_000,
)
MODES = {"quick": QUICK, "full": FULL, "fastapi": FASTAPI, "deflate": DEFLATE, "tls": TLS}


# ----------------------------------------------------------------- building


def _stale(target: Path, sources: list[Path]) -> bool:
    return not target.exists() or any(target.stat().st_mtime < s.stat().st_mtime for s in sources)


def _compile(target: Path, sources: list[Path], libs: list[str] = LIBS) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [os.environ.get("CC", "gcc"), *CFLAGS, *map(str, sources), "-o", str(target), *libs]
    print("building:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_loadgen() -> Path:
    """Compiles the load generator into build/ when missing or stale."""
    if _stale(LOADGEN, LOADGEN_SRCS):
        _compile(LOADGEN, LOADGEN_SRCS, LOADGEN_LIBS)
    return LOADGEN


def build_floor() -> Path:
    """Compiles the floor server into build/ when missing or stale; raises
    if its source is missing or does not compile."""
    if not FLOOR_SRCS[0].exists():
        raise RuntimeError(f"{FLOOR_SRCS[0].relative_to(ROOT)} does not exist")
    if _stale(FLOOR, FLOOR_SRCS):
        try:
            _compile(FLOOR, FLOOR_SRCS)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"the floor server does not build: {exc}") from None
    return FLOOR


def make_certificate(directory: Path, key: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, valid two
    days, and its unencrypted key, made with the openssl command in
    directory: key "ec" (P-256) or "rsa" (2048 bits). Returns the paths
    (certificate, key)."""
    cert, keyfile = directory / "cert.pem", directory / "key.pem"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key == "ec" else ["-newkey", "rsa:2048"]
    cmd = ["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(keyfile), "-out", str(cert)]
    cmd += ["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(cmd, check=True, capture_output=True)
    return str(cert), str(keyfile)


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, cmd: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if pin else cmd


class StartError(Exception):
    pass


def is_tls(name: str) -> bool:
    return name.endswith(TLS_SUFFIX)


def server_command(name: str, port: int, tls: tuple[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a server under test, given the
    certificate and key of a TLS server; raises StartError when its script
    is missing (RuntimeError: the floor does not build)."""
    kind, arg, _ = SERVERS[name]
    if is_tls(name) and tls is None:
        raise StartError("a TLS server needs a certificate (run.py makes one when a -tls server is asked for)")
    env = dict(os.environ)
    if kind == "floor":
        return [str(build_floor()), str(port), "--mode", arg], env
    script_name, *extra = arg.split()
    script = HERE / "servers" / script_name
    if not script.exists():
        raise StartError(f"{script.relative_to(ROOT)} does not exist")
    if name in ROOMCAST_SERVERS:
        # the package of this work tree, not an installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "python"), env.get("PYTHONPATH")]))
    if tls is not None and is_tls(name):
        extra += ["--tls", *tls]
    return [sys.executable, str(script), str(port), *extra], env


class ServerProcess:
    """One server under test in its own process, pinned to CPU 0; ready
    once it has printed its "listening" line and accepts a TCP connection.
    taskset execs the server in place, so the pid is the server's own."""

    READY = "listening"  # what the server prints once it listens

    def __init__(self, name: str, pin: bool, tls: tuple[str, str] | None = None) -> None:
        self.name, self.port = name, free_port()
        cmd, env = server_command(name, self.port, tls)
        # A file, not a pipe: a server that logs a lot must never block on a
        # pipe nobody reads.
        self.log = tempfile.TemporaryFile(mode="w+", errors="replace")
        self.proc = subprocess.Popen(
            pinned(0, cmd, pin), stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"exited with status {self.proc.returncode}: {tail(self.output())}")
            if self.READY in self.output():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        raise StartError(f"not ready after {timeout:.0f} s: {tail(self.output())}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


# ------------------------------------------------------------ configurations


def config_key(c: dict) -> tuple:
    return (c["scenario"], c["clients"], c["size"], c.get("rate"))


def config_label(c: dict) -> str:
    if c["scenario"] == "latency":
        return f"latency N={c['clients']} rate={c['rate']:g}/s S={c['size']}"
    if c["scenario"] == "idle":
        return f"idle N={c['clients']}"
    if c["scenario"] == "handshake":
        return f"handshake ≤ {c['clients']:,} connections"
    if c["scenario"] == "resume":
        return f"resumed handshake ≤ {c['clients']:,} connections"
    return f"{c['scenario']} N={c['clients']} S={c['size']}"


def write_json(path: Path, doc: dict) -> None:
    """The results file: one line per run (a run holds a 111-point latency
    CDF, which pretty-printing would spread over hundreds of lines)."""

    def compact(v: Any) -> str:
        return json.dumps(v, separators=(",", ":"))

    fields = []
    for key, value in doc.items():
        if isinstance(value, list) and value:
            body = ",\n  ".join(compact(item) for item in value)
            fields.append(f" {compact(key)}: [\n  {body}\n ]")
        else:
            fields.append(f" {compact(key)}: {compact(value)}")
    path.write_text("{\n" + ",\n".join(fields) + "\n}\n")


def plan(args: argparse.Namespace) -> list[dict]:
    """The configurations in run order: by scenario, then size or rate, then
    ascending N, so that a smaller N tells whether a larger one can finish."""
    configs: list[dict] = []
    for sc in args.scenarios:
        if sc in ("burst", "single"):
            for size in args.sizes:
                for n in args.clients:
                    configs.append(dict(scenario=sc, clients=n, size=size, window=BURST_WINDOW if sc == "burst" else 1))
        elif sc == "latency":
            for rate in args.rates:
                for n in args.latency_clients:
                    configs.append(dict(scenario=sc, clients=n, size=64, rate=rate, window=max(8, int(rate))))
        elif sc == "idle":
            # the JSON payload has a smallest size; its idle runs take the
            # first burst size
            size = 64 if args.payload == "x" else args.sizes[0]
            configs.append(dict(scenario=sc, clients=args.idle_clients, size=size, window=1))
        elif sc in RATE_SCENARIOS:
            # clients: connections at most (--seconds of starting them);
            # resumption is for the TLS servers
            config = dict(scenario=sc, clients=args.handshakes, size=64, window=1)
            if sc == "resume":
                config["only"] = [s for s in args.servers if is_tls(s)]
            if config.get("only", True):
                configs.append(config)
        elif sc == "selfcheck":
            # Burst against the fastest server at the largest sizes of N: the
            # same configurations as burst, so they are shared when both run.
            for n in (1000, 10000):
                configs.append(
                    dict(scenario="burst", clients=n, size=64, window=BURST_WINDOW, only=[args.selfcheck_server])
                )
    seen: set[tuple] = set()
    unique: list[dict] = []
    for c in configs:
        k = config_key(c)
        if k in seen:
            for u in unique:
                if config_key(u) == k and "only" in u and "only" not in c:
                    del u["only"]
            continue
        seen.add(k)
        unique.append(c)
    return unique


def messages_for(c: dict, args: argparse.Namespace) -> tuple[int, float | None]:
    """M and the sending time limit of a run.

    burst/single: M = target deliveries / N (2,000,000 by default), and the
    load generator stops sending after --seconds: a run delivers about 2M
    messages or lasts about --seconds, whichever comes first.
    latency: M = rate x --seconds (a fixed-rate run lasts --seconds)."""
    if c["scenario"] == "latency":
        return max(10, int(c["rate"] * args.seconds)), None
    if c["scenario"] == "idle":
        return 1, None
    return max(4 * c["window"], math.ceil(args.deliveries / c["clients"])), args.seconds


def offers_deflate(name: str, args: argparse.Namespace) -> bool:
    """The load generator offers permessage-deflate to every server of a
    --deflate run and to a -deflate server in any run."""
    return bool(args.offer_deflate) or name.endswith(DEFLATE_SUFFIX)


def loadgen_cmd(c: dict, server: ServerProcess, args: argparse.Namespace, pin: bool) -> list[str]:
    base = [str(LOADGEN), "--port", str(server.port), "--path", "/bench"] + (["--tls"] if is_tls(server.name) else [])
    if c["scenario"] in RATE_SCENARIOS:
        cmd = [
            *base,
            *(["--tls-resume"] if c["scenario"] == "resume" else []),
            "--handshakes",
            str(c["clients"]),
            "--duration",
            f"{args.seconds:g}",
            "--batch",
            str(args.handshake_batch),
            "--server-pid",
            str(server.proc.pid),
            "--timeout",
            f"{args.budget:g}",
            "--json",
        ]
        return pinned(1, cmd, pin)
    cmd = [
        *base,
        "--clients",
        str(c["clients"]),
        "--size",
        str(c["size"]),
        "--window",
        str(c["window"]),
        "--server-pid",
        str(server.proc.pid),
        "--timeout",
        f"{args.budget:g}",
        "--json",
    ]
    if args.payload != "x":
        cmd += ["--payload", args.payload]
    if offers_deflate(server.name, args):
        cmd += ["--deflate"]
    if c["scenario"] == "idle":
        cmd += ["--idle-rss", "--rss-warm", "100", "--settle", "1"]
    else:
        m, seconds = messages_for(c, args)
        cmd += ["--messages", str(m)]
        if seconds:
            cmd += ["--duration", f"{seconds:g}"]
        if c["scenario"] == "latency":
            cmd += ["--rate", f"{c['rate']:g}"]
    return pinned(1, cmd, pin)


def primary(c: dict) -> str:
    return {
        "burst": "deliveries_per_sec",
        "single": "deliveries_per_sec",
        "latency": "p99",
        "idle": "rss_per_idle_conn_bytes",
        "handshake": "handshakes_per_sec",
        "resume": "handshakes_per_sec",
    }[c["scenario"]]


def metric(run: dict, name: str) -> float | None:
    if name in ("p50", "p99", "p999", "max"):
        return run.get("latency_us", {}).get(name)
    return run.get(name)


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median figure (the lower middle for an even count):
    one whole run, so that the figures of a row belong together."""
    ordered = sorted(runs, key=lambda r: metric(r, key) or 0)
    return ordered[(len(ordered) - 1) // 2]


def one_run(name: str, c: dict, args: argparse.Namespace, pin: bool) -> dict:
    """Starts a fresh server, runs the load generator once, stops the
    server. Returns a record with "status": ok, failed or unavailable."""
    rec: dict = {"server": name, **{k: v for k, v in c.items() if k != "only"}}
    with open("/proc/loadavg") as f:
        rec["loadavg_before"] = float(f.read().split()[0])
    try:
        server = ServerProcess(name, pin, args.tls_files if is_tls(name) else None)
    except (StartError, RuntimeError) as exc:
        return {**rec, "status": "unavailable", "error": str(exc)}
    try:
        try:
            server.wait_ready()
        except StartError as exc:
            return {**rec, "status": "unavailable", "error": f"server {exc}"}
        cmd = loadgen_cmd(c, server, args, pin)
        rec["command"] = " ".join(cmd)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget + 30)
        except subprocess.TimeoutExpired:
            return {
                **rec,
                "status": "failed",
                "error": f"timed out after {args.budget + 30:g} s",
                "wall_seconds": time.monotonic() - t0,
            }
        rec["wall_seconds"] = round(time.monotonic() - t0, 3)
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                result = json.loads(line)
        if result is None:
            return {
                **rec,
                "status": "failed",
                "error": f"load generator exited with {proc.returncode}: {tail(proc.stderr)}",
            }
        rec.update(result)
        # The load generator's share of its core (over the publishing time,
        # or the whole run for idle): next to every figure, and above 80%
        # the figure may be the load generator's, not the server's.
        share = result.get("loadgen_cpu_share")
        if share is None and result.get("publish_seconds"):
            share = result["client_cpu_seconds"] / result["publish_seconds"]
        if share is not None:
            rec["loadgen_busy"] = round(share, 4)
            rec["loadgen_limited"] = share > report.LOADGEN_LIMIT
        if result.get("handshake_seconds") and result.get("server_cpu_seconds") is not None:
            rec["server_busy"] = round(result["server_cpu_seconds"] / result["handshake_seconds"], 4)
        if result.get("publish_seconds", 0) > 0:
            if result["deliveries"]:
                rec["loadgen_cpu_us_per_delivery"] = round(result["client_cpu_seconds"] * 1e6 / result["deliveries"], 4)
            if result.get("server_cpu_seconds") is not None:
                rec["server_busy"] = round(result["server_cpu_seconds"] / result["publish_seconds"], 4)
        if c["scenario"] == "latency" and result["sent"] > 1:
            # Kept up: the last message was delivered soon after it left.
            # Saturated: it had to wait for the window, the rate slipped, or
            # the backlog took more than half a second to drain.
            drain = result["publish_seconds"] - (result["sent"] - 1) / c["rate"]
            rec["drain_seconds"] = round(drain, 3)
            rec["saturated"] = (
                bool(result.get("window_stalls")) or drain > 0.5 or result.get("rate_achieved", 0) < 0.95 * c["rate"]
            )
        # a -deflate server must have compressed for every connection
        no_deflate = name.endswith(DEFLATE_SUFFIX) and not result.get("deflate_negotiated")
        if no_deflate:
            rec["status"] = "failed"
            rec["error"] = (
                f"permessage-deflate negotiated on {result.get('deflate_connections', 0)}"
                f" of {result.get('connections_opened', 0)} connections"
            )
        elif is_tls(name) and not result.get("tls_handshakes"):
            rec["status"] = "failed"
            rec["error"] = "no TLS handshake completed"
        elif proc.returncode != 0 or not result.get("ok"):
            rec["status"] = "failed"
            # the load generator's own notes say what went wrong; its
            # summary's last line counts the errors
            notes = [line for line in proc.stderr.splitlines() if line.startswith("loadgen:")]
            errors = [line for line in proc.stderr.splitlines() if line.startswith("errors")]
            rec["error"] = " | ".join(line.strip() for line in (notes[:3] + errors[-1:])) or tail(proc.stderr)
            if server.proc.poll() is not None:
                rec["error"] += f" | server exited with {server.proc.returncode}: {tail(server.output(), 3)}"
        else:
            rec["status"] = "ok"
        return rec
    finally:
        server.stop()


def skip_reason(name: str, c: dict, summary: dict, args: argparse.Namespace) -> str | None:
    """Why a configuration cannot finish for this server, judged from the
    same series (scenario, size or rate) at the next smaller N."""
    smaller = [
        s
        for s in summary.values()
        if s["server"] == name
        and s["scenario"] == c["scenario"]
        and s["size"] == c["size"]
        and s.get("rate") == c.get("rate")
        and s["clients"] < c["clients"]
    ]
    if not smaller:
        return None
    prev = max(smaller, key=lambda s: s["clients"])
    if prev["status"] in ("failed", "skipped"):
        return f"too slow: {prev['status']} at N={prev['clients']}"
    if prev["status"] != "ok":
        return None
    if prev.get("saturated"):
        return f"saturated: could not keep {c['rate']:g} msg/s at N={prev['clients']:,} already"
    scale = c["clients"] / prev["clients"]
    predicted = prev.get("connect_seconds", 0) * scale + 2 * args.settle_margin
    if c["scenario"] in ("burst", "single") and prev.get("deliveries_per_sec"):
        # the messages already in flight when sending stops must drain
        m, seconds = messages_for(c, args)
        predicted += min(seconds or 1e9, m * c["clients"] / prev["deliveries_per_sec"])
        predicted += c["window"] * c["clients"] / prev["deliveries_per_sec"]
    if predicted > args.budget:
        return f"too slow: predicted {predicted:.0f} s > budget {args.budget:g} s (from N={prev['clients']})"
    return None


# ------------------------------------------------------------------ machine


def _cmd_output(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine_info(servers: list[str]) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dists = ["matplotlib"]
    for s in servers:
        dists += SERVERS[s][2]
    versions: dict[str, str | None] = {}
    for d in dists:
        try:
            versions[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            versions[d] = None
    try:
        nofile = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout)
    except ValueError:
        nofile = None
    return {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "os": _cmd_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "gcc": _cmd_output(["gcc", "--version"]),
        "libuv": _cmd_output(["pkg-config", "--modversion", "libuv"]),
        "libwslay": _cmd_output(["dpkg-query", "-W", "-f", "${Version}", "libwslay-dev"]),
        "open_files_hard_limit": nofile,
        "libraries": versions,
    }


# ------------------------------------------------------------------ running


def summarise(name: str, c: dict, runs: list[dict]) -> dict:
    base = {"server": name, **{k: v for k, v in c.items() if k != "only"}}
    ok = [r for r in runs if r["status"] == "ok"]
    if ok:
        best = median_run(ok, primary(c))
        return {
            **best,
            "status": "ok",
            "repeats": len(runs),
            "repeats_ok": len(ok),
            "connect_seconds_median": (
                statistics.median(r["connect_seconds"] for r in ok) if "connect_seconds" in best else None
            ),
            "spread": [metric(r, primary(c)) for r in runs],
        }
    if any(r["status"] == "unavailable" for r in runs):
        return {**base, "status": "unavailable", "error": runs[-1].get("error")}
    # all failed: keep the figures of the last failure for the record
    return {**runs[-1], "status": "failed", "repeats": len(runs), "repeats_ok": 0}


def fmt_secs(s: float) -> str:
    return f"{int(s // 60)}:{int(s % 60):02d}"


def progress_line(rec: dict, c: dict) -> str:
    if rec["status"] == "unavailable":
        return f"unavailable: {rec['error']}"
    parts = []
    if rec["status"] == "failed":
        parts.append(f"FAILED ({rec.get('error', '')[:200]})")
    if c["scenario"] in ("burst", "single") and rec.get("deliveries_per_sec"):
        parts.append(f"{'≥ ' if rec.get('loadgen_limited') else ''}{rec['deliveries_per_sec']:,.0f} deliveries/s")
        if rec.get("server_cpu_us_per_delivery"):
            parts.append(f"{rec['server_cpu_us_per_delivery']:.3f} us CPU/delivery")
    elif c["scenario"] == "latency" and "latency_us" in rec:
        lat = rec["latency_us"]
        parts.append(f"p50 {lat['p50'] / 1000:.2f} ms p99 {lat['p99'] / 1000:.2f} ms max {lat['max'] / 1000:.2f} ms")
        if rec.get("saturated"):
            parts.append(f"SATURATED ({rec.get('rate_achieved', 0):.1f} msg/s sent)")
    elif c["scenario"] == "idle" and rec.get("rss_per_idle_conn_bytes"):
        parts.append(f"{rec['rss_per_idle_conn_bytes']:,.0f} bytes per idle connection")
    elif c["scenario"] in RATE_SCENARIOS and rec.get("handshakes_per_sec"):
        parts.append(f"{'≥ ' if rec.get('loadgen_limited') else ''}{rec['handshakes_per_sec']:,.0f} connections/s")
        if rec.get("server_cpu_us_per_handshake"):
            parts.append(f"{rec['server_cpu_us_per_handshake']:,.0f} us CPU/connection")
        if rec.get("tls_resume"):
            parts.append(f"{rec.get('tls_resumed', 0):,} of {rec.get('tls_handshakes', 0):,} resumed")
    if rec.get("loadgen_busy") is not None:
        parts.append(
            f"loadgen {rec['loadgen_busy']:.0%} of its core"
            + (f" (above {report.LOADGEN_LIMIT:.0%}: a bound)" if rec.get("loadgen_limited") else "")
        )
    if "connect_seconds" in rec:
        parts.append(f"connect {rec['connect_seconds']:.2f} s")
    if "wall_seconds" in rec:
        parts.append(f"({rec['wall_seconds']:.1f} s)")
    return ", ".join(parts)


def run_all(args: argparse.Namespace, doc: dict, out_json: Path) -> bool:
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not pin:
        print("warning: not pinning (needs taskset and 2 CPUs): figures will be noisier", file=sys.stderr)
    doc["settings"]["pinned"] = pin
    configs = plan(args)
    total = sum(len(c.get("only", args.servers)) * args.repeat for c in configs)
    print(
        f"{len(configs)} configurations, {len(args.servers)} servers, up to {total} runs;"
        f" {args.budget:g} s at most per run",
        flush=True,
    )
    summary: dict = {}
    unavailable: dict = {}
    done, t0 = 0, time.monotonic()
    roomcast_failed = False
    for c in configs:
        servers = [s for s in args.servers if s in c.get("only", args.servers)]
        runs: dict = {s: [] for s in servers}
        skipped: dict = {}
        for s in servers:
            if s in unavailable:
                skipped[s] = ("unavailable", unavailable[s])
            else:
                why = skip_reason(s, c, summary, args)
                if why is not None:
                    skipped[s] = ("skipped", why)
        for rep in range(args.repeat):
            # Servers take turns within each repetition, so that a noisy
            # minute on the machine hits all of them rather than one.
            for s in servers:
                done += 1
                if s in skipped:
                    continue
                if args.max_minutes and time.monotonic() - t0 > args.max_minutes * 60:
                    skipped[s] = ("skipped", f"time budget of the whole run ({args.max_minutes:g} min) spent")
                    continue
                rec = one_run(s, c, args, pin)
                rec["repeat"] = rep + 1
                doc["runs"].append(rec)
                runs[s].append(rec)
                print(
                    f"[{done:>4}/{total} {fmt_secs(time.monotonic() - t0)}] {config_label(c)}"
                    f" {s} run {rep + 1}/{args.repeat}: {progress_line(rec, c)}",
                    flush=True,
                )
                if rec["status"] == "unavailable":
                    unavailable[s] = rec["error"]
                    skipped[s] = ("unavailable", rec["error"])
                elif rec["status"] == "failed" and rec.get("error", "").startswith("timed out"):
                    skipped[s] = ("skipped", "too slow: timed out at this configuration")
        for s in servers:
            if runs[s]:
                summary[(s, config_key(c))] = summarise(s, c, runs[s])
                if s in ROOMCAST_SERVERS and summary[(s, config_key(c))]["status"] != "ok":
                    roomcast_failed = True
            elif s in skipped:
                status, why = skipped[s]
                summary[(s, config_key(c))] = {
                    "server": s,
                    **{k: v for k, v in c.items() if k != "only"},
                    "status": status,
                    "error": why,
                }
                print(f"       {config_label(c)} {s}: {status}: {why}", flush=True)
        doc["results"] = list(summary.values())
        doc["unavailable"] = unavailable
        write_json(out_json, doc)
    doc["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    return not roomcast_failed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Servers: " + ", ".join(SERVERS) + ". Scenarios: " + ", ".join(SCENARIOS),
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick pass of `make bench` (the default)")
    mode.add_argument("--full", action="store_true", help="every scenario, server and size of the issue")
    mode.add_argument(
        "--fastapi",
        action="store_true",
        help="the FastAPI rows: roomcast, roomcast-fastapi, roomcast-fastapi-py, websocket_rooms",
    )
    mode.add_argument(
        "--tls",
        action="store_true",
        help="TLS: roomcast, socketify and websockets over TLS (and roomcast without it), burst, single"
        " and new connections per second (full and resumed handshakes)",
    )
    mode.add_argument(
        "--deflate",
        action="store_true",
        help="permessage-deflate: roomcast with and without it, socketify, websockets and aiohttp with it,"
        " on a 1 KiB JSON payload",
    )
    ap.add_argument("--servers", help="comma-separated servers (default: those of the mode)")
    ap.add_argument("--scenarios", help="comma-separated: burst, single, latency, idle, selfcheck, handshake, resume")
    ap.add_argument("--clients", help="N for burst and single, comma-separated")
    ap.add_argument("--sizes", help="message sizes S in bytes for burst and single, comma-separated")
    ap.add_argument("--latency-clients", help="N for the latency scenario, comma-separated")
    ap.add_argument("--rates", help="publish rates (messages/s) of the latency scenario, comma-separated")
    ap.add_argument("--idle-clients", type=int, help="N of the idle RSS scenario")
    ap.add_argument("--repeat", type=int, help="runs per configuration; the median is kept")
    ap.add_argument("--seconds", type=float, help="sending time of a run at most (burst, single, latency)")
    ap.add_argument(
        "--deliveries",
        type=int,
        help="deliveries a burst/single run aims at: M = this / N (default: 2,000,000; 10,000,000 with --fastapi)",
    )
    ap.add_argument("--budget", type=float, help="seconds one load generator run may take")
    ap.add_argument(
        "--max-minutes",
        type=float,
        help="start no new run after this many minutes (default: no limit; 14 with --fastapi)",
    )
    ap.add_argument(
        "--selfcheck-server",
        default="floor-writev",
        help="the fastest server, for the self-check (default: %(default)s)",
    )
    ap.add_argument(
        "--out", help="stem of the output files in benchmarks/results/ (default: the date, plus -quick for --quick)"
    )
    ap.add_argument(
        "--payload",
        choices=["x", "json"],
        help="message text: the key then 'x' (default), or JSON chat/ticker updates (the default with --deflate)",
    )
    ap.add_argument(
        "--handshakes",
        type=int,
        default=20000,
        help="connections a handshake run opens at most; it starts new ones for --seconds (default: %(default)s)",
    )
    ap.add_argument(
        "--handshake-batch",
        type=int,
        default=32,
        help="connections in flight at a time in a handshake run (default: %(default)s)",
    )
    ap.add_argument(
        "--tls-key",
        choices=["ec", "rsa"],
        default="ec",
        help="the key of the TLS servers' certificate: ec (P-256, the default) or rsa (2048 bits)",
    )
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = ap.parse_args(argv)
    args.mode = (
        "full"
        if args.full
        else "fastapi"
        if args.fastapi
        else "deflate"
        if args.deflate
        else "tls"
        if args.tls
        else "quick"
    )
    base = MODES[args.mode]

    def csv(value: str | None, default: list, conv=str) -> list:
        return default if value is None else [conv(v.strip()) for v in value.split(",") if v.strip()]

    args.servers = csv(args.servers, base["servers"])
    args.scenarios = csv(args.scenarios, base["scenarios"])
    args.clients = csv(args.clients, base["clients"], int)
    args.sizes = csv(args.sizes, base["sizes"], int)
    args.latency_clients = csv(args.latency_clients, base["latency_clients"], int)
    args.rates = csv(args.rates, base["rates"], float)
    for attr in ("idle_clients", "repeat", "seconds", "budget"):
        if getattr(args, attr) is None:
            setattr(args, attr, base[attr])
    if args.max_minutes is None:
        args.max_minutes = base.get("max_minutes", 0)
    if args.deliveries is None:
        args.deliveries = base.get("deliveries", 2_000_000)
    if args.payload is None:
        args.payload = base.get("payload", "x")
    args.offer_deflate = base.get("offer_deflate", False)
    if args.payload == "json" and any(size < 256 for size in args.sizes):
        ap.error("--payload json needs sizes of 256 bytes or more")
    for s in args.servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r} (known: {', '.join(SERVERS)})")
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    if "selfcheck" in args.scenarios and args.selfcheck_server not in args.servers:
        args.servers.append(args.selfcheck_server)
    args.settle_margin = 3.0  # server start and stop, settling
    return args


def shown(path: Path) -> str:
    """A path as the user reads it: relative to the repository when inside
    it (an absolute --out such as /tmp/x is not)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build_loadgen()
    started = dt.datetime.now()
    stem = args.out or started.strftime("%Y-%m-%d") + ("" if args.mode == "full" else f"-{args.mode}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / f"{stem}.json"
    settings = {
        k: getattr(args, k)
        for k in (
            "mode",
            "servers",
            "scenarios",
            "clients",
            "sizes",
            "latency_clients",
            "rates",
            "idle_clients",
            "repeat",
            "seconds",
            "deliveries",
            "budget",
            "max_minutes",
            "selfcheck_server",
            "payload",
            "offer_deflate",
            "handshakes",
            "handshake_batch",
            "tls_key",
        )
    }
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python3", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(args.servers),
        "settings": settings,
        "runs": [],
        "results": [],
    }
    print(f"fan-out benchmark ({args.mode}): results in {shown(out_json)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-tls-") as tmp:
        args.tls_files = None
        if any(is_tls(s) for s in args.servers):
            args.tls_files = make_certificate(Path(tmp), args.tls_key)
            doc["machine"]["openssl"] = _cmd_output(["openssl", "version"])
        try:
            ok: bool = run_all(args, doc, out_json)
        except KeyboardInterrupt:
            print("interrupted: writing what was measured", file=sys.stderr)
            doc["interrupted"] = True
            ok = False
    doc["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    write_json(out_json, doc)
    pngs = {} if args.no_plots else report.plots(doc, RESULTS, stem)
    md = report.markdown(doc, pngs)
    (RESULTS / f"{stem}.md").write_text(md)
    print()
    print(md)
    print(
        f"written: {shown(out_json)}, {shown(RESULTS / f'{stem}.md')}" + "".join(f", {shown(p)}" for p in pngs.values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
