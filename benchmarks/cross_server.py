"""Cross-server fan-out: one room shared by three roomcast servers through
one Redis, against one server alone, in the same run; and many rooms on
one Redis against the same rooms on a three-shard Redis Cluster.

    python benchmarks/cross_server.py                 # N=1000, 3 repetitions
    python benchmarks/cross_server.py --clients 1000,3000 --repeat 5
    python benchmarks/cross_server.py --modes '3 servers rooms,3 servers cluster' --rooms 12

For each N and each scenario (burst: 64 messages in flight; single: one at
a time, for latency) it runs, in turns:

* ``single``: ``servers/roomcast_chat.py``, one process, every client on it;
* ``3 servers``: three ``servers/roomcast_chat.py PORT REDIS_URL`` (a named
  room on the backplane) processes on one ``redis-server`` (started here on a free port, no persistence); the load
  generator spreads its clients over the three (``--ports``), the
  publisher on the first. A message goes from the publisher to server 1,
  whose Python handler pushes it: server 1's members get it at once,
  servers 2 and 3 get it from Redis and deliver it in C.
* ``3 servers rediss``: the same, each server reaching the same Redis
  through TLS (``rediss://``, Redis's TLS port, on a certificate made here
  with the ``openssl`` command, checked with its name): what TLS to Redis
  costs.

* ``1 worker`` and ``2 workers``: the same room served by the ``roomcast``
  command, ``python -m roomcast benchapp:server --backplane REDIS_URL
  --workers K`` (one port, ``SO_REUSEPORT``: the kernel spreads the
  clients over the workers). Besides the load generator's figures each run
  records the CPU time of every worker (``/proc/PID/stat``, from just
  before the load generator starts until it ends, so the handshakes and
  the warm-up are in it), divided by the publish phase's deliveries:
  ``workers_cpu_us_per_delivery``, the same measure for both rows.

* ``3 servers rooms`` and ``3 servers cluster``: the three servers, each
  with ``--rooms`` (default 12) named rooms (``roomcast_chat.py PORT URL
  --rooms NAME,...``, room k at ``/bench/k``), on the one ``redis-server``
  and on a Redis Cluster of three masters without replicas
  (``tests/support/rediscluster.py``, started here once, every node
  pinned to CPU 0; ``redis+cluster://`` with the masters as seeds). The
  load generator spreads the clients over the rooms and the servers
  (``--rooms``: every room has members on every server, and its own
  publisher, the publishers spread over the servers), so both rows carry
  the same traffic. The names are chosen so that each master owns the
  slot of as many rooms as the others (the slot of the room's tag,
  ``_core.key_slot(_core.room_tag(...))``, as the backplane computes it;
  without the cluster row, ``bench-0``, ``bench-1``, ...). Each run
  records the CPU time of the Redis process, or of each master (every
  thread's ``/proc/PID/task/TID/schedstat``, from just before the load
  generator starts until it ends), and the same per message sent: the
  busiest shard's against the one Redis's is what spreading the rooms
  saves.

Every server and Redis run on CPU 0, the load generator on CPU 1, as in
``run.py``: on a 2-core machine the three servers (and the two workers)
share one core, so the figures say what the backplane costs, not what
three machines (or cores) would do. Each configuration is repeated
(``--repeat``) and the run with the median deliveries/s kept. Writes
``results/<date>-cross-server.{json,md}``. ``--modes`` picks the rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402  (the 80% rule of the load generator's CPU)
import run as bench  # noqa: E402  (the fan-out benchmark's machinery)

# The room names' slots are the backplane's (roomcast._core), and the
# cluster is the tests' (tests/support/rediscluster.py).
sys.path[:0] = [str(bench.ROOT / "python"), str(bench.ROOT / "tests")]
from roomcast import _core  # noqa: E402
from roomcast.backplane import escape_prefix  # noqa: E402
from support.rediscluster import RedisCluster  # noqa: E402

SCENARIOS = {"burst": bench.BURST_WINDOW, "single": 1}
MODES = (
    "single", "3 servers", "3 servers rediss", "1 worker", "2 workers", "3 servers rooms", "3 servers cluster",
)  # fmt: skip
WORKERS = {"1 worker": 1, "2 workers": 2}
ROOMS = ("3 servers rooms", "3 servers cluster")
# roomcast_chat.py's servers use the default backplane_prefix
PREFIX = escape_prefix("roomcast:")
# The figures compared between two rows of servers: (scenario, key, label, unit).
SERVER_FIGURES = (
    ("burst", "deliveries_per_sec", "deliveries/s", ""),
    ("single", "deliveries_per_sec", "deliveries/s", ""),
    ("single", "p50", "p50 latency", " µs"),
    ("single", "p99", "p99 latency", " µs"),
)

# The module the roomcast command serves (written to the run's directory):
# the room of servers/roomcast_chat.py; the options come on the command line.
BENCH_APP = f"""
import sys

sys.path.insert(0, {str(HERE / "servers")!r})
from _limits import raise_open_files_limit

from roomcast import Room, Server

raise_open_files_limit()
room = Room(name="bench")


@room.on_receive("text")
async def relay(room, websocket, message):
    await room.push_text(message)


server = Server()
server.route("/bench", room)
"""


class Proc(bench.ServerProcess):
    """A process pinned to CPU 0, its output in a file, ready once it
    prints ``ready`` and accepts a TCP connection on ``port``."""

    def __init__(self, cmd: list[str], port: int, ready: str, pin: bool, env: dict | None = None) -> None:
        self.name, self.port, self.READY = cmd[0], port, ready
        self.log = tempfile.TemporaryFile(mode="w+", errors="replace")
        self.proc = subprocess.Popen(
            bench.pinned(0, cmd, pin), stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


class CommandProc(Proc):
    """``python -m roomcast benchapp:server ... --workers K``, ready once
    each of its K workers has said it listens."""

    def __init__(self, tmp: str, port: int, url: str, workers: int, pin: bool) -> None:
        (Path(tmp) / "benchapp.py").write_text(BENCH_APP)
        cmd = [
            sys.executable, "-m", "roomcast", "benchapp:server", "--app-dir", tmp,
            "--port", str(port), "--backplane", url, "--workers", str(workers),
            "--max-queue-bytes", str(64 * 2**20), "--backplane-buffer", str(64 * 2**20),
            "--compression", "none",
        ]  # fmt: skip
        super().__init__(cmd, port, "listening on", pin, python_env())
        self.workers = workers

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count("listening on") < self.workers and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        super().wait_ready(max(1.0, deadline - time.monotonic()))

    def worker_pids(self) -> list[int]:
        """The serving processes: the command's own with one worker, its
        children (the workers) with more."""
        if self.workers == 1:
            return [self.proc.pid]
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return [int(p) for p in f.read().split()]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def task_cpu_seconds(pid: int) -> float:
    """The CPU time of every thread of a process, from each one's
    /proc/PID/task/TID/schedstat (nanoseconds): a shard's CPU over a run is
    a few of /proc/PID/stat's 10 ms ticks, too coarse for a ratio."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(bench.ROOT / "python"), env.get("PYTHONPATH")]))
    return env


def start_redis(tmp: str, pin: bool) -> Proc:
    """redis-server on a free port, and on another through TLS
    (``redis.tls_url``) with a self-signed certificate for 127.0.0.1."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server; `make deps` installs it)")
    cert, key = os.path.join(tmp, "redis.pem"), os.path.join(tmp, "redis.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port, tls_port = bench.free_port(), bench.free_port()
    redis = Proc(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp,
         "--tls-port", str(tls_port), "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
         "--tls-auth-clients", "no"],
        port,
        "Ready to accept connections",
        pin,
    )  # fmt: skip
    redis.wait_ready()
    redis.tls_url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"  # type: ignore[attr-defined]
    return redis


def start_cluster(tmp: str, pin: bool) -> RedisCluster:
    """Three masters, no replicas (a replica would cost its master the
    copy of every SPUBLISH, which the one Redis does not pay), each node
    and all its threads moved to CPU 0 like the one Redis."""
    cluster = RedisCluster(os.path.join(tmp, "cluster"), masters=3, replicas=0).start()
    if pin:
        for pid in cluster_pids(cluster).values():
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), {0})
    return cluster


def cluster_pids(cluster: RedisCluster) -> dict[str, int]:
    """Each master's address: its pid, in the order of their slots."""
    masters = sorted((n for n in cluster.nodes() if n.role == "master"), key=lambda n: n.slots[0])
    return {n.address: cluster.procs[n.port].pid for n in masters}


def room_slot(name: str) -> int:
    """The slot of a room's channel on a cluster: that of its tag."""
    return _core.key_slot(_core.room_tag(f"{PREFIX}|{name}".encode()))


def room_names(k: int, cluster: RedisCluster | None) -> list[str]:
    """k room names, as many on each master as on the others (k a multiple
    of the masters), taken in turn from each: ``bench-0`` onwards, each
    name kept if its master still wants rooms."""
    if cluster is None:
        return [f"bench-{i}" for i in range(k)]
    masters = list(cluster_pids(cluster))
    wanted: dict[str, list[str]] = {m: [] for m in masters}
    i = 0
    while any(len(names) < k // len(masters) for names in wanted.values()):
        name = f"bench-{i}"
        names = wanted[cluster.master_of(room_slot(name)).address]
        if len(names) < k // len(masters):
            names.append(name)
        i += 1
    return [wanted[m][j] for j in range(k // len(masters)) for m in masters]


def one_run(
    mode: str, n: int, scenario: str, args: argparse.Namespace, redis: Proc | None, tmp: str, rooms: dict
) -> dict:
    window = SCENARIOS[scenario]
    rec: dict = {"mode": mode, "clients": n, "scenario": scenario, "window": window, "size": args.size}
    # the Redis processes whose CPU time a rooms row records
    redis_pids: dict[str, int] = {}
    servers: list[Proc] = []
    command: CommandProc | None = None
    try:
        if mode in WORKERS:
            assert redis is not None
            command = CommandProc(
                tmp, bench.free_port(), f"redis://127.0.0.1:{redis.port}/0", WORKERS[mode], not args.no_pin
            )
            servers.append(command)
        elif mode == "single":
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
            url = redis.tls_url if mode == "3 servers rediss" else f"redis://127.0.0.1:{redis.port}/0"  # type: ignore[attr-defined]
            extra: list[str] = []
            if mode in ROOMS:
                extra = ["--rooms", ",".join(rooms["names"])]
                rec["rooms"] = len(rooms["names"])
                if mode == "3 servers cluster":
                    redis_pids = rooms["masters"]
                    url = "redis+cluster://" + ",".join(redis_pids)
                else:
                    redis_pids = {f"127.0.0.1:{redis.port}": redis.proc.pid}
            for _ in range(3):
                port = bench.free_port()
                servers.append(
                    Proc(
                        [sys.executable, str(HERE / "servers" / "roomcast_chat.py"), str(port), url, *extra],
                        port,
                        "listening",
                        not args.no_pin,
                        python_env(),
                    )
                )
        for s in servers:
            s.wait_ready()
        pids = command.worker_pids() if command is not None else []
        # a message reaches the members of one room: N / rooms of them
        messages = max(4 * window, -(-args.deliveries * rec.get("rooms", 1) // n))
        cmd = [
            str(bench.LOADGEN),
            "--ports",
            ",".join(str(s.port) for s in servers),
            "--path",
            "/bench",
            "--clients",
            str(n),
            *(["--rooms", str(rec["rooms"])] if "rooms" in rec else []),
            "--size",
            str(args.size),
            "--window",
            str(window),
            "--messages",
            str(messages),
            "--duration",
            f"{args.seconds:g}",
            "--server-pid",
            str(pids[0] if pids else servers[0].proc.pid),
            "--timeout",
            f"{args.budget:g}",
            "--json",
        ]
        cmd = bench.pinned(1, cmd, not args.no_pin)
        rec["command"] = " ".join(cmd)
        if command is not None:
            rec["server_command"] = " ".join(command.proc.args)
            cpu0 = cpu_seconds(pids)
        redis0 = {addr: task_cpu_seconds(pid) for addr, pid in redis_pids.items()}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget + 30)
        if command is not None:
            rec["workers"] = len(pids)
            rec["workers_cpu_seconds"] = round(cpu_seconds(pids) - cpu0, 3)
        if redis_pids:
            rec["redis_cpu_seconds"] = {a: round(task_cpu_seconds(p) - redis0[a], 4) for a, p in redis_pids.items()}
        result = next((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")), None)
        if result is None:
            return {**rec, "status": "failed", "error": bench.tail(proc.stderr)}
        mine = dict(rec)
        rec.update(result)
        rec.update(mine)  # the load generator's "mode" is its pacing, not ours
        rec["loadgen_mode"] = result.get("mode")
        if command is not None and result.get("deliveries"):
            rec["workers_cpu_us_per_delivery"] = round(rec["workers_cpu_seconds"] * 1e6 / result["deliveries"], 4)
        if redis_pids and result.get("sent"):
            # per message sent, so that rows whose runs ended at --seconds
            # with different counts compare for the same traffic
            busiest = max(rec["redis_cpu_seconds"].values())
            rec["redis_busiest_cpu_seconds"] = busiest
            rec["redis_busiest_cpu_us_per_message"] = round(busiest * 1e6 / result["sent"], 3)
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


def table(results: list[dict], clients: list[int], pinned: bool = True, rooms: dict | None = None) -> str:
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
        if key.startswith(("workers_cpu", "redis_")):  # the whole run's CPU: no bound
            text = f"{v:,.2f}{unit}"
        else:
            text = f"{v:,.0f}{unit}"
            text = report.at_least(r, text) if key == "deliveries_per_sec" else report.at_most(r, text)
        return f"{text} (loadgen {report.loadgen_cell(r)})"

    def rows(base: str, other: str, figures: tuple[tuple[str, str, str, str], ...]) -> list[str]:
        """A line per N and figure: base, other, and other / base."""
        out = []
        for n in clients:
            for scenario, key, label, unit in figures:
                one, two = fig(base, n, scenario, key), fig(other, n, scenario, key)
                ratio = f"{two / one:.2f}×" if one and two else "–"
                out.append(
                    f"| {n:,} | {scenario} (W={SCENARIOS[scenario]}) | {label} | "
                    f"{show(base, n, scenario, key, unit)} | {show(other, n, scenario, key, unit)} | {ratio} |"
                )
        return out

    lines: list[str] = []
    if any(r["mode"] not in WORKERS and r["mode"] not in ROOMS for r in results):
        lines += [
            "| N | scenario | figure | one server | 3 servers, 1 Redis | ratio |",
            "| ---: | --- | --- | ---: | ---: | ---: |",
        ]
        lines += rows(
            "single",
            "3 servers",
            SERVER_FIGURES,
        )
    if any(r["mode"] == "3 servers rediss" for r in results):
        lines += [
            "",
            "The three servers reaching Redis in plain TCP against through TLS (`rediss://`, certificate and"
            " name checked):",
            "",
            "| N | scenario | figure | 3 servers, redis:// | 3 servers, rediss:// | ratio |",
            "| ---: | --- | --- | ---: | ---: | ---: |",
        ]
        lines += rows(
            "3 servers",
            "3 servers rediss",
            SERVER_FIGURES,
        )
    if any(r["mode"] in WORKERS for r in results):
        lines += [
            "",
            "The `roomcast` command on one port with a Redis backplane: `--workers 1` against `--workers 2`"
            + (
                " (both workers on CPU 0)."
                if pinned
                else " (nothing pinned: workers, Redis and the load generator share both cores)."
            )
            + " CPU per delivery is the CPU time of every worker over the whole"
            " run (handshakes and warm-up included) divided by the publish phase's deliveries.",
            "",
            "| N | scenario | figure | 1 worker | 2 workers | ratio |",
            "| ---: | --- | --- | ---: | ---: | ---: |",
        ]
        lines += rows(
            "1 worker",
            "2 workers",
            (
                ("burst", "deliveries_per_sec", "deliveries/s", ""),
                ("burst", "workers_cpu_us_per_delivery", "worker CPU per delivery", " µs"),
                ("single", "deliveries_per_sec", "deliveries/s", ""),
                ("single", "workers_cpu_us_per_delivery", "worker CPU per delivery", " µs"),
                ("single", "p99", "p99 latency", " µs"),
            ),
        )
    if any(r["mode"] in ROOMS for r in results):
        lines += rooms_table(clients, rooms or {}, rows, row)
    lines.append("")
    lines.extend(report.footnote(results))
    return "\n".join(lines)


# The rooms rows' targets: the busiest shard's CPU against the one Redis's,
# and the latency on the cluster against that on the one Redis.
CPU_TARGET, LATENCY_TARGET = 0.5, 1.2


def rooms_table(
    clients: list[int], rooms: dict, rows: Callable[..., list[str]], row: Callable[..., dict | None]
) -> list[str]:
    """The rooms rows side by side (``rows`` and ``row`` are table()'s),
    then the CPU time of the one Redis and of each master, and the ratios
    against the targets."""
    names, shards = rooms.get("names", []), rooms.get("shards", [])
    spread = ", ".join(f"{list(rooms['shard_of'].values()).count(a)} on {a}" for a in shards)
    lines = [
        "",
        f"{len(names)} rooms ({', '.join(names)}) on the three servers, through one Redis against a Redis Cluster"
        f" of three masters, no replicas ({spread or 'no cluster row'}); every room has members on every server"
        " and its own publisher. Redis CPU is the busiest process's (the one Redis, or the busiest master) over"
        " the whole load generator run, per message sent.",
        "",
        "| N | scenario | figure | 3 servers, 1 Redis | 3 servers, cluster | ratio |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    lines += rows(
        "3 servers rooms",
        "3 servers cluster",
        (
            *SERVER_FIGURES[:2],
            ("burst", "redis_busiest_cpu_us_per_message", "busiest Redis CPU per message", " µs"),
            *SERVER_FIGURES[2:],
            ("single", "redis_busiest_cpu_us_per_message", "busiest Redis CPU per message", " µs"),
        ),
    )
    lines += [
        "",
        f"Redis CPU time per process, seconds (µs per message sent); targets: the busiest master's CPU per message"
        f" at most {CPU_TARGET:.2f}× the one Redis's, the cluster's single (W=1) p50 and p99 at most"
        f" {LATENCY_TARGET:.2f}× the one Redis's (the burst's latency is its queue's, shown without a target).",
        "",
        "| N | scenario | one Redis | " + " | ".join(f"master {a}" for a in shards) + " | busiest / one Redis | "
        "p50 ratio | p99 ratio |",
        "| ---: | --- | ---: | " + "---: | " * len(shards) + "---: | ---: | ---: |",
    ]

    def cpu(r: dict | None, addr: str | None = None) -> str:
        if r is None or "redis_cpu_seconds" not in r:
            return "–"
        v = r["redis_cpu_seconds"][addr] if addr else r["redis_busiest_cpu_seconds"]
        return f"{v:.3f} s ({v * 1e6 / r['sent']:.1f} µs)"

    def ratio(one: dict | None, two: dict | None, key: str, target: float | None) -> str:
        a, b = (None if r is None else bench.metric(r, key) for r in (one, two))
        if not a or b is None:
            return "–"
        return f"{b / a:.2f}×" + ("" if target is None else f" ({'met' if b / a <= target else 'missed'})")

    for n in clients:
        for scenario in SCENARIOS:
            one, two = row("3 servers rooms", n, scenario), row("3 servers cluster", n, scenario)
            masters = [cpu(two, a) for a in shards]
            latency = LATENCY_TARGET if scenario == "single" else None
            lines.append(
                f"| {n:,} | {scenario} (W={SCENARIOS[scenario]}) | {cpu(one)} | "
                + " | ".join(masters)
                + f" | {ratio(one, two, 'redis_busiest_cpu_us_per_message', CPU_TARGET)} | "
                f"{ratio(one, two, 'p50', latency)} | {ratio(one, two, 'p99', latency)} |"
            )
    lines += ["", "The single (W=1) latency of every run, µs, and the ratio of the medians over the runs:", ""]
    for n in clients:
        one, two = row("3 servers rooms", n, "single"), row("3 servers cluster", n, "single")
        if one is None or two is None or "latency_spread" not in one:
            continue
        for q in ("p50", "p99"):
            a, b = (statistics.median(r["latency_spread"][q]) for r in (one, two))
            lines.append(
                f"- N={n:,} {q}: one Redis {one['latency_spread'][q]}, cluster {two['latency_spread'][q]};"
                f" medians {a:,.0f} and {b:,.0f} µs, {b / a:.2f}×"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1000", help="N, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time of a run at most")
    ap.add_argument("--deliveries", type=int, default=2_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--budget", type=float, default=90.0)
    ap.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    ap.add_argument("--rooms", type=int, default=12, help="rooms of the rooms rows (a multiple of 3)")
    ap.add_argument("--out", default=None, help="stem in benchmarks/results/ (default <date>-cross-server)")
    args = ap.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    if not set(modes) <= set(MODES):
        ap.error(f"--modes takes {', '.join(MODES)}")
    if args.rooms < 3 or args.rooms % 3:
        ap.error("--rooms takes a multiple of 3 (the cluster's masters)")
    bench.build_loadgen()
    bench.RESULTS.mkdir(exist_ok=True)
    stem = args.out or f"{dt.date.today().isoformat()}-cross-server"
    runs: list[dict] = []
    rooms: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(tmp, not args.no_pin)
        cluster = start_cluster(tmp, not args.no_pin) if "3 servers cluster" in modes else None
        try:
            if set(modes) & set(ROOMS):
                rooms["names"] = room_names(args.rooms, cluster)
                if cluster is not None:
                    rooms["masters"] = cluster_pids(cluster)
                    rooms["shards"] = list(rooms["masters"])
                    rooms["shard_of"] = {name: cluster.master_of(room_slot(name)).address for name in rooms["names"]}
            for rep in range(args.repeat):
                for n in clients:
                    for scenario in SCENARIOS:
                        for mode in modes:
                            rec = one_run(mode, n, scenario, args, redis, tmp, rooms)
                            rec["repetition"] = rep
                            runs.append(rec)
                            p99 = bench.metric(rec, "p99")
                            print(
                                f"[{rep + 1}/{args.repeat}] {mode:17} N={n} {scenario:6} {rec['status']}: "
                                f"{rec.get('deliveries_per_sec', 0):,.0f} deliveries/s, "
                                f"p99 {p99 if p99 is not None else '-'} µs"
                                + (f" ({rec.get('error')})" if rec["status"] != "ok" else ""),
                                flush=True,
                            )
        finally:
            redis.stop()
            if cluster is not None:
                cluster.stop()
    medians = []
    for n in clients:
        for scenario in SCENARIOS:
            for mode in modes:
                mine = [
                    r
                    for r in runs
                    if (r["mode"], r["clients"], r["scenario"]) == (mode, n, scenario) and r["status"] == "ok"
                ]
                if mine:
                    best = bench.median_run(mine, "deliveries_per_sec")
                    medians.append(
                        {
                            **best,
                            "spread": sorted(r["deliveries_per_sec"] for r in mine),
                            # every run's latency: a tail the median run happened to catch shows
                            "latency_spread": {q: sorted(bench.metric(r, q) for r in mine) for q in ("p50", "p99")},
                        }
                    )
    doc = {
        "date": dt.date.today().isoformat(),
        "settings": vars(args),
        "machine": bench.machine_info(["roomcast"]),
        "rooms": {k: v for k, v in rooms.items() if k != "masters"},
        "medians": medians,
        "runs": runs,
    }
    bench.write_json(bench.RESULTS / f"{stem}.json", doc)
    md = [
        f"# Cross-server fan-out, {doc['date']}",
        "",
        f"`python benchmarks/cross_server.py --clients {args.clients} --repeat {args.repeat} "
        f"--seconds {args.seconds:g} --modes '{args.modes}'"
        f"{f' --rooms {args.rooms}' if rooms else ''}{' --no-pin' if args.no_pin else ''}`; "
        f"medians of {args.repeat} runs (the run with the median deliveries/s). "
        + (
            "Every server and Redis on CPU 0, the load generator on CPU 1: the three servers share one core."
            if not args.no_pin
            else "Nothing pinned (--no-pin)."
        ),
        "",
        table(medians, clients, not args.no_pin, rooms),
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
