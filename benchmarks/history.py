"""The history benchmark (issue 18): what per-room history costs the fan-out,
and 1,000 clients recovering what they missed at once.

    python3 benchmarks/history.py [--quick] [--out STEM] [--repeat K]

1. **Fan-out, history on against off**: ``servers/roomcast_history_chat.py``
   (``roomcast_chat.py``'s room, pushes from Python with
   ``room.push_text(message, wait=False)``), ``Room(history=1000)`` against ``Room()``, driven
   by the load generator (``build/loadgen``) as ``run.py`` drives it: burst
   (W=64) and single (W=1) at N = 1,000, 64 B messages, server pinned to
   CPU 0 and the load generator to CPU 1. On and off runs alternate (the
   order swapped each repetition); the run with the median deliveries/s is
   kept. Reported: deliveries/s (burst), server CPU per delivery (single),
   the on/off ratios (target >= 0.9), the load generator's share of its
   core, the server's resident memory after the run (VmRSS, VmHWM). An
   "on" run checks that the room's last position counts every message.
2. **The same with Redis**: the Server on a ``redis-server`` started here
   (free port, no persistence) and a named Room: the history in a Redis
   stream, every push a script and every delivery, the pusher's server's
   too, through Redis. Twice: Redis on the server's core (``redis``, as in
   ``cross_server.py``), then on the load generator's (``redis-apart``, as
   a deployment gives Redis a core or host of its own); Redis's CPU share
   is recorded.
3. **Recovery**: ``servers/roomcast_history_app.py``, an App with
   ``keep_history("bench:*", 1000)``. 1,000 clients (this script's
   ``--worker`` processes, raw asyncio sockets, pinned to CPU 1) join
   ``bench:1``; a publisher in the server broadcasts ``live`` events at
   ``--rate`` per second to ``bench:live`` (where ``--observers`` clients of
   this process listen) and every ``--every``-th (50th) of them to ``bench:1`` too. The
   1,000 clients close their connections, the server broadcasts 100 events
   to ``bench:1``, the clients reconnect, then all send ``roomcast:rejoin``
   with their last position at once: time until every one has its missed
   events and ``roomcast:position`` with ``recovered: true``, the server's
   CPU over that time, the clients' CPU share, and the live events
   (publish rate achieved, delivery latency) before, during and after the
   recovery. Every client checks its offsets as it goes (contiguous from its
   join to the room's last offset, nothing twice), and every observer its
   ``bench:live`` offsets; any error fails the run.

Before each run it waits (``--quiet-wait``, 20 s at most, 5 with ``--quick``) for the other
work on the machine to drop below 25% of each core, and records what it
saw. ``--quick``: 3 repetitions of each, 2 s of sending; about a minute.
Default: 5 repetitions, 3 s. Writes ``results/<date>-history.json`` and
``.md`` (``--out STEM``: ``results/STEM.*``). Exits 1 if a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

N = 1000
HISTORY = 1000
SIZE = 64
RECOVERY_ROOM = "bench:1"
LIVE_ROOM = "bench:live"
MISSED = 100
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
POS_RE = re.compile(rb'"position":\{"room":"([^"]*)","epoch":"([0-9a-f]+)","offset":(\d+)\}')
T_RE = re.compile(rb'"t":(\d+)')
P_RE = re.compile(rb'"p":(\d+)')


# ------------------------------------------------------ a minimal WebSocket client


class Conn(asyncio.Protocol):
    """One client connection: the upgrade, then text frames to ``on_text(conn,
    payload_bytes, now_ns)``. Frames it sends are masked with a zero key
    (the server unmasks; the content is what counts here)."""

    def __init__(self, port: int, on_text: Any, owner: Any = None) -> None:
        self.port, self.on_text, self.owner = port, on_text, owner
        self.buf = bytearray()
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future = loop.create_future()
        self.lost: asyncio.Future = loop.create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
                self.opened.set_exception(ConnectionError(f"upgrade refused: {head[:80]!r}"))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(None)
        n, i = len(buf), 0
        while n - i >= 2:
            length, h = buf[i + 1] & 0x7F, 2
            if length == 126:
                if n - i < 4:
                    break
                length, h = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, h = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i < h + length:
                break
            op = buf[i] & 0x0F
            payload = bytes(buf[i + h : i + h + length])
            i += h + length
            if op == 1 and buf[i - h - length] & 0x80:
                self.on_text(self, payload, now)
            elif op == 9:
                self.send(payload, 0xA)
            elif op == 8:
                self.transport.close()
            else:
                self.on_text(self, b"!frame opcode %d not expected" % op, now)
        del buf[:i]

    def send(self, data: bytes, op: int = 1) -> None:
        n = len(data)
        head = bytes([0x80 | op, 0x80 | n]) if n < 126 else bytes([0x80 | op, 0xFE]) + n.to_bytes(2, "big")
        self.transport.write(head + b"\0\0\0\0" + data)

    def send_event(self, event: str, payload: Any) -> None:
        self.send(json.dumps({"event": event, "payload": payload}, separators=(",", ":")).encode())


async def connect(port: int, on_text: Any, owner: Any = None) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Conn(port, on_text, owner), "127.0.0.1", port)
    await conn.opened
    return conn


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * len(v)))]

    return {"n": len(v), "p50": q(0.5), "p99": q(0.99), "max": v[-1]}


# ------------------------------------------------------------ the recovering clients


class Client:
    """One of the 1,000: its position in bench:1 and its checks."""

    __slots__ = ("conn", "epoch", "offset", "join_offset", "state", "replayed", "missed", "recovered_at", "done")

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.epoch = b""
        self.offset = -1
        self.join_offset = -1
        self.state = "join"  # join -> live -> rejoin -> live
        self.replayed = 0
        self.missed = -1
        self.recovered_at = 0
        self.done: asyncio.Future | None = None


class Worker:
    """``history.py --worker``: a process holding ``--clients`` clients,
    driven by commands on stdin, answering one JSON line each on stdout."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.clients = [Client() for _ in range(count)]
        self.errors: list[str] = []
        self.error_count = 0
        self.live_latency: list[int] = []  # after recovery: receipt - due, ns

    def error(self, client: Client, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(f"client {self.clients.index(client)}: {text}")
        if client.done is not None and not client.done.done():
            client.done.set_result(None)

    def on_text(self, conn: Conn, m: bytes, now: int) -> None:
        c: Client = conn.owner
        if m.startswith(b'{"event":"roomcast:') or m.startswith(b'{"event":"error"') or m.startswith(b"!"):
            if m.startswith(b"!"):
                return self.error(c, m[1:].decode())
            d = json.loads(m)
            event, p = d["event"], d["payload"]
            if event == "roomcast:joined":
                return None
            if event != "roomcast:position":
                return self.error(c, f"unexpected {m[:200]!r}")
            if c.state == "join":
                c.epoch, c.offset, c.join_offset = p["epoch"].encode(), p["offset"], p["offset"]
            elif c.state == "rejoin":
                if p.get("recovered") is not True:
                    return self.error(c, f"not recovered: {p}")
                if p["epoch"].encode() != c.epoch or p["offset"] != c.offset or p.get("missed") != c.replayed:
                    return self.error(c, f"position {p} after {c.replayed} replayed events up to {c.offset}")
                c.missed, c.recovered_at = p["missed"], now
            else:
                return self.error(c, f"a position while live: {p}")
            c.state = "live"
            if c.done is not None and not c.done.done():
                c.done.set_result(None)
            return None
        found = POS_RE.search(m)
        if found is None:
            return self.error(c, f"an event without position: {m[:200]!r}")
        room, epoch, offset = found.group(1), found.group(2), int(found.group(3))
        if room != RECOVERY_ROOM.encode() or c.state == "join":
            return self.error(c, f"event of {room!r} in state {c.state}")
        if epoch != c.epoch or offset != c.offset + 1:
            what = "twice" if epoch == c.epoch and offset <= c.offset else "a gap"
            return self.error(c, f"{what}: offset {offset} after {c.offset}")
        c.offset = offset
        if c.state == "rejoin":
            c.replayed += 1
        elif c.recovered_at and m.startswith(b'{"event":"live"'):
            due = T_RE.search(m)
            if due is not None:
                self.live_latency.append(now - int(due.group(1)))
        return None

    async def open_all(self, join: bool) -> float:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(200)
        t0 = time.monotonic()

        async def one(c: Client) -> None:
            async with gate:
                c.state = "join" if join else "connected"
                c.conn = await connect(self.port, self.on_text, c)
            if join:
                c.done = loop.create_future()
                c.conn.send_event("join", {"room": RECOVERY_ROOM})
                await c.done

        await asyncio.gather(*(one(c) for c in self.clients))
        return time.monotonic() - t0

    async def close_all(self) -> None:
        for c in self.clients:
            assert c.conn is not None
            c.conn.transport.close()
        await asyncio.gather(*(c.conn.lost for c in self.clients if c.conn is not None))

    async def go(self) -> dict:
        loop = asyncio.get_running_loop()
        frames = []
        for c in self.clients:
            c.state, c.replayed, c.recovered_at, c.done = "rejoin", 0, 0, loop.create_future()
            item = {"room": RECOVERY_ROOM, "epoch": c.epoch.decode(), "offset": c.offset}
            frames.append(json.dumps({"event": "roomcast:rejoin", "payload": [item]}).encode())
        cpu0 = time.process_time()
        t_go = time.monotonic_ns()
        for c, frame in zip(self.clients, frames, strict=True):
            assert c.conn is not None
            c.conn.send(frame)
        t_sent = time.monotonic_ns()
        await asyncio.wait_for(asyncio.gather(*(c.done for c in self.clients if c.done)), 120)
        cpu = time.process_time() - cpu0
        recovered = [c.recovered_at - t_go for c in self.clients if c.recovered_at]
        return {
            "t_go_ns": t_go,
            "t_sent_ns": t_sent,
            "t_last_ns": max((c.recovered_at for c in self.clients), default=0),
            "recovered": len(recovered),
            "recovered_after_ns": recovered,
            "missed": [c.missed for c in self.clients],
            "cpu_seconds": cpu,
        }

    def report(self) -> dict:
        finals = sorted({(c.epoch.decode(), c.offset) for c in self.clients})
        return {
            "errors": self.error_count,
            "error_samples": self.errors,
            "finals": finals,
            "join_offsets": sorted({c.join_offset for c in self.clients}),
            "live_latency_ns": percentiles(self.live_latency),  # type: ignore[arg-type]
            "live_events_after_recovery": len(self.live_latency),
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "exit":
                return
            answer: dict = {"cmd": line}
            try:
                if line == "join":
                    answer["seconds"] = await self.open_all(join=True)
                elif line == "close":
                    await self.close_all()
                elif line == "reconnect":
                    answer["seconds"] = await self.open_all(join=False)
                elif line == "go":
                    answer.update(await self.go())
                elif line == "report":
                    answer.update(self.report())
                answer["errors"] = self.error_count
                answer["error_samples"] = self.errors
            except Exception as exc:  # said to the driver, which fails the run
                answer["failed"] = f"{type(exc).__name__}: {exc}"
            print(json.dumps(answer), flush=True)


def worker_main(port: int, count: int) -> int:
    raise_nofile()
    asyncio.run(Worker(port, count).serve())
    return 0


# ---------------------------------------------------------------- part 1 and 2


def proc_status(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def wait_quiet(args: argparse.Namespace) -> list[float]:
    """Waits (--quiet-wait seconds at most) until every core is less than
    25% busy over half a second with nothing of ours running: other work on
    the shared machine moves the figures. Returns the last shares seen."""
    deadline = time.monotonic() + args.quiet_wait
    while True:
        before = core_ticks()
        time.sleep(0.5)
        shares = [round(busy_share(x, y), 3) for x, y in zip(before, core_ticks(), strict=True)]
        if max(shares, default=0) < 0.25 or time.monotonic() > deadline:
            return shares


def fanout_run(
    history: bool, scenario: str, args: argparse.Namespace, redis_url: str | None, redis_pid: int | None = None
) -> dict:
    """One load generator run against a fresh roomcast_history_chat.py."""
    import cross_server as cross
    import report
    import run as bench

    window = bench.BURST_WINDOW if scenario == "burst" else 1
    rec: dict = {
        "history": history,
        "scenario": scenario,
        "window": window,
        "clients": N,
        "size": SIZE,
        "redis": redis_url is not None,
    }
    rec["machine_busy_before"] = wait_quiet(args)
    with open("/proc/loadavg") as f:
        rec["loadavg_before"] = float(f.read().split()[0])
    port = bench.free_port()
    cmd = [sys.executable, str(HERE / "servers" / "roomcast_history_chat.py"), str(port)]
    cmd += ["--history", str(HISTORY)] if history else []
    cmd += [redis_url] if redis_url else []
    server = cross.Proc(cmd, port, "listening", args.pin, cross.python_env())
    rec["server_command"] = " ".join(cmd[1:])
    try:
        server.wait_ready()
        messages = max(4 * window, -(-args.deliveries // N))
        lg = [
            str(bench.LOADGEN), "--port", str(port), "--path", "/bench", "--clients", str(N),
            "--size", str(SIZE), "--window", str(window), "--messages", str(messages),
            "--duration", f"{args.seconds:g}", "--server-pid", str(server.proc.pid),
            "--timeout", f"{args.budget:g}", "--json",
        ]  # fmt: skip
        lg = bench.pinned(1, lg, args.pin)
        rec["command"] = " ".join(lg)
        redis_before = cpu_seconds(redis_pid) if redis_pid else None
        proc = subprocess.run(lg, capture_output=True, text=True, timeout=args.budget + 30)
        if redis_pid:
            rec["redis_cpu_seconds"] = round(cpu_seconds(redis_pid) - redis_before, 3)
        rec.update(proc_status(server.proc.pid))
        result = next((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")), None)
        if result is None or proc.returncode != 0 or not result.get("ok"):
            err = bench.tail(proc.stderr) + " | server: " + bench.tail(server.output(), 3)
            return {**rec, **(result or {}), "status": "failed", "error": err}
        result.pop("latency_cdf_us", None)
        mode = result.pop("mode", None)
        rec.update(result)
        rec["loadgen_mode"] = mode
        share = result.get("loadgen_cpu_share")
        if share is not None:
            rec["loadgen_busy"] = round(share, 4)
            rec["loadgen_limited"] = share > report.LOADGEN_LIMIT
        if result.get("server_cpu_seconds") is not None and result.get("publish_seconds"):
            rec["server_busy"] = round(result["server_cpu_seconds"] / result["publish_seconds"], 4)
        if rec.get("redis_cpu_seconds") is not None and result.get("publish_seconds"):
            # Over the whole run (connections and warm-up too): an upper bound.
            rec["redis_busy"] = round(rec["redis_cpu_seconds"] / result["publish_seconds"], 4)
        rec["status"] = "ok"
    except bench.StartError as exc:
        return {**rec, "status": "failed", "error": f"server: {exc}"}
    finally:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()
        out = server.output()
        server.log.close()
    if history and rec["status"] == "ok":
        found = re.search(r"history position: ([0-9a-f]{16}) (\d+)", out)
        rec["history_offset"] = int(found.group(2)) if found else None
        # every measured message (and the warm-ups) took a position
        if not found or int(found.group(2)) < rec.get("sent", 0):
            rec["status"] = "failed"
            rec["error"] = (
                f"the room's position does not count the {rec.get('sent')} messages: {found and found.group(0)}"
            )
    return rec


def run_fanout(
    args: argparse.Namespace, doc: dict, redis_url: str | None, label: str, redis_pid: int | None = None
) -> None:
    for rep in range(args.repeat):
        for scenario in ("burst", "single"):
            order = (False, True) if rep % 2 == 0 else (True, False)
            for history in order:
                rec = fanout_run(history, scenario, args, redis_url, redis_pid)
                rec["backend"], rec["repeat"] = label, rep + 1
                doc["runs"].append(rec)
                print(
                    f"[{label} {rep + 1}/{args.repeat}] {scenario:6} history {'on ' if history else 'off'}: "
                    + (
                        f"{rec['deliveries_per_sec']:,.0f} deliveries/s, "
                        f"{rec.get('server_cpu_us_per_delivery') or 0:.3f} µs CPU/delivery, "
                        f"loadgen {rec.get('loadgen_busy', 0):.0%}, RSS {rec.get('VmRSS', 0) / 2**20:.1f} MiB"
                        if rec["status"] == "ok"
                        else f"{rec['status'].upper()}: {rec.get('error')}"
                    ),
                    flush=True,
                )


# ------------------------------------------------------------------------ part 3


class Observer:
    """A client of this process in bench:live: the live events' times."""

    def __init__(self) -> None:
        self.epoch = b""
        self.offset = -1
        self.events: list[tuple[int, int, int]] = []  # (due, published, received) ns
        self.errors: list[str] = []
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_text(self, conn: Conn, m: bytes, now: int) -> None:
        if m.startswith(b'{"event":"roomcast:'):
            d = json.loads(m)
            if d["event"] == "roomcast:position":
                self.epoch, self.offset = d["payload"]["epoch"].encode(), d["payload"]["offset"]
                self.ready.set_result(None)
            return
        found = POS_RE.search(m)
        if found is None or found.group(2) != self.epoch or int(found.group(3)) != self.offset + 1:
            self.errors.append(f"observer: {m[:160]!r} after offset {self.offset}")
            return
        self.offset = int(found.group(3))
        due, published = T_RE.search(m), P_RE.search(m)
        if due is not None and published is not None:
            self.events.append((int(due.group(1)), int(published.group(1)), now))


class Control:
    def __init__(self) -> None:
        self.answers: asyncio.Queue = asyncio.Queue()

    def on_text(self, conn: Conn, m: bytes, now: int) -> None:
        d = json.loads(m)
        self.answers.put_nowait(d)

    async def ask(self, conn: Conn, **cmd: Any) -> dict:
        conn.send_event("ctl", cmd)
        d = await asyncio.wait_for(self.answers.get(), 60)
        if d["event"] != "ctl:ok":
            raise RuntimeError(f"control: {d}")
        return d["payload"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_ticks() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each CPU, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            out.append((sum(v[:8]) - idle, sum(v[:8])))
    return out


def busy_share(a: tuple[int, int], b: tuple[int, int]) -> float:
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def window_stats(events: list[tuple[int, int, int]], start: int, end: int) -> dict:
    """The live events due in [start, end): delivery latency (receipt - due,
    and receipt - published), the publisher's lag (published - due), and
    the rate at which they were published."""
    inside = [e for e in events if start <= e[0] < end]
    seconds = (end - start) / 1e9
    published = {e[0] for e in events if start <= e[1] < end}
    return {
        "seconds": round(seconds, 4),
        "latency_ms": _ms(percentiles([r - d for d, _, r in inside])),
        "delivery_ms": _ms(percentiles([r - p for _, p, r in inside])),
        "publish_lag_ms": _ms(percentiles([p - d for d, p, _ in inside])),
        "published_per_sec": round(len(published) / seconds, 1) if seconds > 0 else None,
    }


def _ms(p: dict | None) -> dict | None:
    return None if p is None else {k: (v if k == "n" else round(v / 1e6, 3)) for k, v in p.items()}


async def recovery_run(args: argparse.Namespace, planned: int) -> dict:
    import cross_server as cross
    import run as bench

    rec: dict = {"clients": args.recovery_clients, "missed_planned": planned, "rate": args.rate, "every": args.every}
    rec["machine_busy_before"] = wait_quiet(args)
    port = bench.free_port()
    server = cross.Proc(
        [sys.executable, str(HERE / "servers" / "roomcast_history_app.py"), str(port), "--size", str(HISTORY)],
        port,
        "listening",
        args.pin,
        cross.python_env(),
    )
    workers: list[asyncio.subprocess.Process] = []
    conns: list[Conn] = []
    try:
        server.wait_ready()
        per = -(-args.recovery_clients // args.workers)
        counts = [min(per, args.recovery_clients - i * per) for i in range(args.workers)]
        for count in counts:
            cmd = bench.pinned(1, [sys.executable, __file__, "--worker", str(port), str(count)], args.pin)
            workers.append(await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

        async def tell(line: str) -> list[dict]:
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(line.encode() + b"\n")
                await w.stdin.drain()
            answers = []
            for w in workers:
                assert w.stdout is not None
                raw = await asyncio.wait_for(w.stdout.readline(), args.budget)
                if not raw:
                    raise RuntimeError(f"worker exited during {line!r}")
                answer = json.loads(raw)
                if answer.get("failed") or answer.get("errors"):
                    raise RuntimeError(f"{line}: {answer.get('failed')} {answer.get('error_samples')}")
                answers.append(answer)
            return answers

        control = Control()
        ctl = await connect(port, control.on_text)
        conns.append(ctl)
        observers = [Observer() for _ in range(args.observers)]
        for o in observers:
            conn = await connect(port, o.on_text, o)
            conns.append(conn)
            conn.send_event("join", {"room": LIVE_ROOM})
            await asyncio.wait_for(o.ready, 30)
        rec["join_seconds"] = max(a["seconds"] for a in await tell("join"))
        await control.ask(ctl, cmd="live", rate=args.rate, every=args.every)
        await asyncio.sleep(args.before)
        await control.ask(ctl, cmd="live", rate=args.rate, every=0)
        await asyncio.sleep(0.5)  # the clients get everything sent to bench:1
        await tell("close")
        await control.ask(ctl, cmd="burst", count=planned)
        rec["reconnect_seconds"] = max(a["seconds"] for a in await tell("reconnect"))
        await control.ask(ctl, cmd="live", rate=args.rate, every=args.every)
        rss0 = proc_status(server.proc.pid)
        cpu0 = cpu_seconds(server.proc.pid)
        cores0 = core_ticks()
        t0 = time.monotonic_ns()
        go = await tell("go")
        cpu1 = cpu_seconds(server.proc.pid)
        cores1 = core_ticks()
        rec["cpu_busy"] = {f"cpu{i}": round(busy_share(cores0[i], cores1[i]), 3) for i in range(min(2, len(cores0)))}
        t1 = time.monotonic_ns()
        t_go = min(a["t_go_ns"] for a in go)
        t_done = max(a["t_last_ns"] for a in go)
        after = [x for a in go for x in a["recovered_after_ns"]]
        missed = [x for a in go for x in a["missed"]]
        rec["recovered_clients"] = len(after)
        rec["recovery_seconds"] = round((t_done - t_go) / 1e9, 4)
        rec["per_client_recovery_ms"] = _ms(
            percentiles([t + a["t_go_ns"] - t_go for a in go for t in a["recovered_after_ns"]])
        )
        rec["rejoins_sent_seconds"] = round((max(a["t_sent_ns"] for a in go) - t_go) / 1e9, 4)
        rec["missed"] = {"min": min(missed), "max": max(missed), "total": sum(missed)}
        rec["server_cpu_seconds"] = round(cpu1 - cpu0, 3)
        rec["server_cpu_window_seconds"] = round((t1 - t0) / 1e9, 3)
        rec["server_cpu_us_per_replayed_event"] = round((cpu1 - cpu0) * 1e6 / max(1, sum(missed)), 3)
        rec["clients_cpu_share"] = round(sum(a["cpu_seconds"] for a in go) / ((t_done - t_go) / 1e9), 3)
        rec["server_rss_before_bytes"] = rss0.get("VmRSS")
        await asyncio.sleep(args.after)
        stop = await control.ask(ctl, cmd="stop")
        await asyncio.sleep(0.5)
        status = await control.ask(ctl, cmd="status")
        rec["server_rss_after_bytes"] = proc_status(server.proc.pid).get("VmRSS")
        rec["published"] = stop["published"]
        reports = await tell("report")
        finals = {tuple(f) for r in reports for f in r["finals"]}
        room = status[RECOVERY_ROOM]
        errors: list[str] = []
        if finals != {(room["epoch"], room["offset"])}:
            errors.append(f"clients ended at {sorted(finals)[:5]}, the room at {room}")
        for o in observers:
            errors += o.errors[:5]
            if (o.epoch.decode(), o.offset) != (status[LIVE_ROOM]["epoch"], status[LIVE_ROOM]["offset"]):
                errors.append(f"an observer ended at {o.offset}, {LIVE_ROOM} at {status[LIVE_ROOM]}")
        if len(after) != args.recovery_clients or min(missed) < planned:
            errors.append(f"{len(after)} recovered, missed {rec['missed']}")
        lat = [r["live_latency_ns"] for r in reports if r["live_latency_ns"]]
        rec["rejoined_live_latency_ms"] = {
            "p50_max_of_workers": round(max(p["p50"] for p in lat) / 1e6, 3) if lat else None,
            "p99_max_of_workers": round(max(p["p99"] for p in lat) / 1e6, 3) if lat else None,
            "events": sum(r["live_events_after_recovery"] for r in reports),
        }
        events = [e for o in observers for e in o.events]
        span = int(args.before * 1e9)
        rec["live_before"] = window_stats(events, t_go - span, t_go)
        rec["live_during"] = window_stats(events, t_go, max(t_done, t_go + 1))
        rec["live_after"] = window_stats(events, t_done, t_done + int(args.after * 1e9) - int(0.2e9))
        if errors:
            rec["status"], rec["error"] = "failed", " | ".join(errors)
        else:
            rec["status"] = "ok"
    except (bench.StartError, RuntimeError, asyncio.TimeoutError, OSError) as exc:
        rec["status"], rec["error"] = (
            "failed",
            f"{type(exc).__name__}: {exc} | server: {bench.tail(server.output(), 3)}",
        )
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        for w in workers:
            if w.returncode is None:
                try:
                    assert w.stdin is not None
                    w.stdin.write(b"exit\n")
                    await w.stdin.drain()
                    await asyncio.wait_for(w.wait(), 10)
                except (OSError, asyncio.TimeoutError):
                    w.kill()
                    await w.wait()
        server.stop()
    return rec


# ------------------------------------------------------------------------ report


def recovery_line(rec: dict) -> str:
    if rec["status"] != "ok":
        return f"FAILED: {rec.get('error')}"
    lag = rec["live_during"]["publish_lag_ms"]
    return (
        f"{rec['recovery_seconds'] * 1000:.0f} ms for {rec['recovered_clients']} clients, missed"
        f" {rec['missed']['min']}-{rec['missed']['max']}, server CPU {rec['server_cpu_seconds']:.3f} s, CPU busy"
        f" {rec['cpu_busy']}, publisher lag during max {lag['max'] if lag else '-'} ms"
    )


def median_of(runs: list[dict], key: str) -> dict | None:
    ok = [r for r in runs if r["status"] == "ok" and r.get(key) is not None]
    if not ok:
        return None
    ordered = sorted(ok, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], "spread": [r[key] for r in ok]}


def fanout_table(doc: dict, label: str) -> list[str]:
    runs = [r for r in doc["runs"] if r.get("backend") == label]
    if not runs:
        return []
    lines = [
        "| scenario | figure | history off | history on (1,000) | on/off (medians) | on/off (paired runs) | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for scenario, key, name, better in (
        ("burst", "deliveries_per_sec", "deliveries/s", "higher"),
        ("single", "server_cpu_us_per_delivery", "server CPU µs per delivery", "lower"),
        ("single", "deliveries_per_sec", "deliveries/s", "higher"),
    ):
        cells, values = [], []
        for history in (False, True):
            mine = [r for r in runs if r["scenario"] == scenario and r["history"] is history]
            best = median_of(mine, key)
            if best is None:
                why = "failed" if mine else "not run"
                cells.append(why)
                values.append(None)
                continue
            fmt = "{:,.0f}" if key == "deliveries_per_sec" else "{:.3f}"
            limited = " †" if best.get("loadgen_limited") else ""
            redis = f", Redis ≤ {best['redis_busy']:.0%}" if best.get("redis_busy") is not None else ""
            cells.append(
                f"{fmt.format(best[key])}{limited} (loadgen {best.get('loadgen_busy', 0):.0%},"
                f" server {best.get('server_busy', 0):.0%}{redis};"
                f" runs: {', '.join(fmt.format(v) for v in best['spread'])})"
            )
            values.append(best[key])
        off, on = values
        pairs = paired_ratios(runs, scenario, key, better)
        if off and on:
            ratio = on / off if better == "higher" else off / on
            paired = statistics.median(pairs) if pairs else ratio
            target = "≥ 0.9× (paired): " + ("met" if paired >= 0.9 else "missed")
            ratio_text = f"{ratio:.2f}×"
            pair_text = f"{paired:.2f}× ({', '.join(f'{x:.2f}' for x in pairs)})" if pairs else "–"
        else:
            ratio_text, pair_text, target = "–", "–", "not measured"
        lines.append(f"| {scenario} | {name} | {cells[0]} | {cells[1]} | {ratio_text} | {pair_text} | {target} |")
    rss = []
    for history in (False, True):
        mine = [r["VmRSS"] for r in runs if r["history"] is history and r["status"] == "ok" and r.get("VmRSS")]
        hwm = [r["VmHWM"] for r in runs if r["history"] is history and r["status"] == "ok" and r.get("VmHWM")]
        rss.append(
            f"{statistics.median(mine) / 2**20:.1f} MiB (peak {statistics.median(hwm) / 2**20:.1f} MiB)"
            if mine
            else "–"
        )
    lines.append(f"| all | server RSS after the run (median) | {rss[0]} | {rss[1]} | {rss_delta(runs)} | – | – |")
    lines.append("")
    lines.append(
        "On/off: history on divided by off for deliveries/s, off divided by on for CPU per delivery (1× or"
        " more: history costs nothing measurable), from the medians and as the median of each repetition's"
        " pair of runs (on and off back to back, so that other work on the machine moves both: the target is"
        " judged on it). † the load generator"
        " used more than 80% of its core: the deliveries/s is then at least the figure, and the load"
        " generator's speed, not the server's, is what the row measures."
    )
    busy = [r["server_busy"] for r in runs if r["scenario"] == "burst" and r["status"] == "ok" and r.get("server_busy")]
    others = [max(r.get("machine_busy_before") or [0]) for r in runs]
    lines += [
        "",
        f"Other work before each run (the busier core, 0.5 s, after waiting up to {doc['settings']['quiet_wait']:g} s"
        f" for it to drop below 25%): {min(others):.0%}–{max(others):.0%}; the server's share of its core in the"
        f" burst runs: {min(busy):.0%}–{max(busy):.0%}"
        + (
            " (below 90%: its core was shared with other work during some runs, which moves their figures;"
            " the paired ratio compares runs taken back to back)."
            if busy and min(busy) < 0.9
            else "."
        ),
    ]
    return lines


def paired_ratios(runs: list[dict], scenario: str, key: str, better: str) -> list[float]:
    """on/off (or off/on for a cost) of the two runs of each repetition."""
    out = []
    for rep in sorted({r["repeat"] for r in runs}):
        pair = {
            r["history"]: r.get(key)
            for r in runs
            if r["scenario"] == scenario and r["repeat"] == rep and r["status"] == "ok"
        }
        if pair.get(True) and pair.get(False):
            out.append(pair[True] / pair[False] if better == "higher" else pair[False] / pair[True])
    return out


def rss_delta(runs: list[dict]) -> str:
    """History on minus off, VmRSS after the run, medians."""
    on = [r["VmRSS"] for r in runs if r["history"] and r["status"] == "ok" and r.get("VmRSS")]
    off = [r["VmRSS"] for r in runs if not r["history"] and r["status"] == "ok" and r.get("VmRSS")]
    if not on or not off:
        return "–"
    return f"{(statistics.median(on) - statistics.median(off)) / 1024:+,.0f} KiB"


def recovery_section(doc: dict) -> list[str]:
    runs = doc["recovery"]
    if not runs:
        return []
    lines = ["## 1,000 clients reconnecting at once", ""]
    for r in runs:
        if r["status"] != "ok":
            lines.append(f"- FAILED run ({r['missed_planned']} missed): {r.get('error')}")
    plans = sorted({r["missed_planned"] for r in runs}, reverse=True)
    bests = [median_of([r for r in runs if r["missed_planned"] == m], "recovery_seconds") for m in plans]
    cols = [(m, b) for m, b in zip(plans, bests, strict=True) if b is not None]
    if not cols:
        return lines + [""]
    first = cols[0][1]
    lines += [
        f"{first['clients']:,} clients in `{RECOVERY_ROOM}` (history 1,000) close their connections; the server"
        f" broadcasts {cols[0][0]} events to the room; they reconnect, then all send `roomcast:rejoin` with their"
        f" last position at once. Meanwhile the server publishes `live` events at {first['rate']:g}/s to"
        f" `{LIVE_ROOM}` ({doc['settings']['observers']} observers, in the driver's process) and every"
        f" {first['every']}th of them to `{RECOVERY_ROOM}` too, so a client also misses the live ones published"
        " between its disconnection and its rejoin. The second column is the same with no event broadcast while"
        " they are away: the rejoins alone. Medians of the runs by recovery time.",
        "",
        "| figure | " + " | ".join(f"{m} missed" for m, _ in cols) + " |",
        "| --- |" + " ---: |" * len(cols),
    ]

    def row(name: str, cell: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(b) for _, b in cols) + " |")

    def lat(x: dict | None) -> str:
        return "–" if x is None else f"{x['p50']:.1f} / {x['p99']:.1f} / {x['max']:.1f} ms"

    def lag(x: dict | None) -> str:
        return "–" if x is None else f"{x['p99']:.1f} / {x['max']:.1f} ms"

    row("other work before the run (the busier core)", lambda b: f"{max(b.get('machine_busy_before') or [0]):.0%}")
    row("events missed per client (min–max)", lambda b: f"{b['missed']['min']}–{b['missed']['max']}")
    row("events replayed in all", lambda b: f"{b['missed']['total']:,}")
    row(
        "**time until every client had its missed events and `recovered: true`**",
        lambda b: (
            f"**{b['recovery_seconds'] * 1000:,.0f} ms** (runs: {', '.join(f'{v * 1000:.0f}' for v in b['spread'])})"
        ),
    )
    row("per client, from the rejoins (p50 / p99 / max)", lambda b: lat(b["per_client_recovery_ms"]))
    row("server CPU over that time", lambda b: f"{b['server_cpu_seconds'] * 1000:,.0f} ms")
    row(
        "CPU 0 (server) / CPU 1 (clients) busy over that time",
        lambda b: f"{b['cpu_busy'].get('cpu0', 0):.0%} / {b['cpu_busy'].get('cpu1', 0):.0%}",
    )
    row("the client processes' CPU over that time", lambda b: f"{b['clients_cpu_share']:.0%} of a core")
    row(
        "server RSS before / after",
        lambda b: (
            f"{(b['server_rss_before_bytes'] or 0) / 2**20:.1f} / {(b['server_rss_after_bytes'] or 0) / 2**20:.1f} MiB"
        ),
    )
    for key, name in (("live_before", "before (2 s)"), ("live_during", "during the recovery"), ("live_after", "after")):
        row(f"live: published/s, {name}", lambda b, k=key: f"{b[k]['published_per_sec'] or 0:,.0f}")
    for key, name in (("live_before", "before"), ("live_during", "during the recovery"), ("live_after", "after")):
        row(f"live: latency p50 / p99 / max, {name}", lambda b, k=key: lat(b[k]["latency_ms"]))
    for key, name in (("live_before", "before"), ("live_during", "during the recovery"), ("live_after", "after")):
        row(f"live: publisher's lag behind schedule p99 / max, {name}", lambda b, k=key: lag(b[k]["publish_lag_ms"]))
    row(
        f"live events to `{RECOVERY_ROOM}` after each client's recovery: p99 (worst worker)",
        lambda b: f"{b['rejoined_live_latency_ms']['p99_max_of_workers']} ms",
    )
    lines += [
        "",
        "Live latency: receipt by an observer minus the time the event was due (the publisher's schedule);"
        " the publisher's lag is when the server published it minus when it was due: how long the server's"
        " loop could not run it. The observers share CPU 1 with the clients, so their latency includes"
        " waiting for that core; the lag is the server's alone. The latency of live events to"
        f" `{RECOVERY_ROOM}` after a client's recovery is measured by the clients, their own backlog of"
        " replayed events included.",
        "",
        "Checked in every run: each client's offsets contiguous from its join to the room's last offset (the"
        " replay, then live, nothing twice, no gap), `missed` equal to the events replayed, `recovered: true`"
        " for all; each observer's `bench:live` offsets contiguous to the end.",
        "",
    ]
    return lines


def markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        f"# History benchmark, {doc['started'][:10]}",
        "",
        f"`{doc['command']}`: N = {N:,}, {SIZE} B messages, {s['repeat']} run(s) per row, on and off interleaved,"
        f" {s['seconds']:g} s of sending per run; server on CPU 0, load generator and clients on CPU 1"
        + ("" if s["pin"] else " (not pinned)")
        + ". Compare within this run only.",
        "",
        "Each core's busy share over 1 s before the first run, with nothing of this benchmark running: "
        + ", ".join(f"{x:.0%}" for x in doc.get("machine_busy_before", []))
        + " (other work on the machine; it moves every figure below).",
        "",
        f"Machine: {doc['machine'].get('cpu_model')}, {doc['machine'].get('cpus')} CPUs,"
        f" Python {doc['machine'].get('python')}, kernel {doc['machine'].get('kernel')}.",
        "",
        "## Fan-out, history on against off (in memory)",
        "",
        "`servers/roomcast_history_chat.py`: `Room(history=1000)` against `Room()`, every message pushed from"
        " Python with `room.push_text(message, wait=False)` (in memory the push's Position is returned either"
        " way; with Redis, `wait=False` keeps the pushes in flight together instead of one per round trip).",
        "",
        *fanout_table(doc, "memory"),
        "",
        "## With Redis",
        "",
    ]
    redis = fanout_table(doc, "redis")
    if not redis:
        lines.append(doc.get("redis_note", "not run"))
    else:
        lines += [
            "The same server on a `redis-server` backplane (started here, no persistence) with"
            ' `Room(name="bench", ...)`. Redis on the server\'s core (CPU 0), as in `cross_server.py`: the'
            " script each push runs in Redis takes from the server's core.",
            "",
            *redis,
        ]
    apart = fanout_table(doc, "redis-apart")
    if apart:
        lines += [
            "",
            "### Redis on a core of its own",
            "",
            "The same, Redis on the load generator's core (CPU 1), as a deployment gives Redis its own core or"
            " host: the server's core does the server's work only. Redis's share is its CPU time over the"
            " publishing time (an upper bound: its CPU is counted over the whole run); with the load"
            " generator's, it must stay below 100% of that core for the figure to be the server's.",
            "",
            *apart,
        ]
    lines += ["", *recovery_section(doc)]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(int(argv[1]), int(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs of each, 2 s of sending (about a minute)")
    ap.add_argument("--out", help="stem of the results in benchmarks/results/ (default: <date>-history)")
    ap.add_argument("--repeat", type=int, help="runs of each row (default 5; 3 with --quick)")
    ap.add_argument("--seconds", type=float, help="sending time of a fan-out run at most (default 3; 2 with --quick)")
    ap.add_argument("--deliveries", type=int, default=10_000_000, help="a fan-out run's deliveries: M = this / N")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds a load generator run may take")
    ap.add_argument(
        "--parts",
        default="memory,redis,redis-apart,recovery",
        help="comma-separated: memory, redis (Redis on the server's core), redis-apart (on the load generator's),"
        " recovery",
    )
    ap.add_argument("--recovery-clients", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="client processes of the recovery")
    ap.add_argument("--observers", type=int, default=10, help="clients in bench:live")
    ap.add_argument("--rate", type=float, default=1000.0, help="live events per second")
    ap.add_argument("--every", type=int, default=50, help="every so many live events go to bench:1 too")
    ap.add_argument("--before", type=float, default=2.0, help="seconds of live events before the recovery")
    ap.add_argument("--after", type=float, default=2.0, help="seconds of live events after it")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait at most before each run for the machine's other work to drop below 25%% of each"
        " core (default 20; 5 with --quick)",
    )
    ap.add_argument("--report", metavar="JSON", help="rewrite the .md beside a results .json, and stop")
    args = ap.parse_args(argv)
    if args.report:
        path = Path(args.report)
        path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
        print(f"written: {path.with_suffix('.md')}")
        return 0
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.seconds = args.seconds or (2.0 if args.quick else 3.0)
    if args.quiet_wait is None:
        args.quiet_wait = 5.0 if args.quick else 20.0
    parts = [p.strip() for p in args.parts.split(",")]

    import cross_server as cross
    import run as bench

    args.pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if args.pin:
        os.sched_setaffinity(0, {1})  # this process's observers: the clients' core
    raise_nofile()
    bench.build_loadgen()
    started = dt.datetime.now()
    stem = args.out or started.strftime("%Y-%m-%d") + "-history"
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join(["python3", "benchmarks/history.py", *argv]),
        "machine": bench.machine_info(["roomcast"]),
        "settings": {k: v for k, v in vars(args).items()},
        "runs": [],
        "recovery": [],
    }
    # What the machine does without us: other work on it moves every figure.
    before = core_ticks()
    time.sleep(1.0)
    after = core_ticks()
    doc["machine_busy_before"] = [round(busy_share(x, y), 3) for x, y in zip(before, after, strict=True)]
    print(f"CPU busy before starting (each core, 1 s): {doc['machine_busy_before']}", flush=True)
    t0 = time.monotonic()
    if "memory" in parts:
        run_fanout(args, doc, None, "memory")
    for label in ("redis", "redis-apart"):
        if label not in parts:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            redis = cross.start_redis(tmp, args.pin)
            try:
                if label == "redis-apart" and args.pin:
                    os.sched_setaffinity(redis.proc.pid, {1})
                run_fanout(args, doc, f"redis://127.0.0.1:{redis.port}/0", label, redis.proc.pid)
            finally:
                redis.stop()
    if "recovery" in parts:
        for rep in range(args.repeat):
            for planned in (MISSED, 0):
                rec = asyncio.run(recovery_run(args, planned))
                rec["repeat"] = rep + 1
                doc["recovery"].append(rec)
                print(f"[recovery {rep + 1}/{args.repeat}, {planned} missed] {recovery_line(rec)}", flush=True)
    doc["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    doc["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    out_json = bench.RESULTS / f"{stem}.json"
    bench.write_json(out_json, doc)
    md = markdown(doc)
    (bench.RESULTS / f"{stem}.md").write_text(md)
    print()
    print(md)
    print(f"written: {bench.shown(out_json)}, {bench.shown(bench.RESULTS / f'{stem}.md')}")
    failed = [r for r in doc["runs"] + doc["recovery"] if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
