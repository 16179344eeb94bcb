"""Soak test: minutes of connection churn against a chat server, its memory
and file descriptors sampled as it goes.

    python3 tests/soak/soak.py [--seconds 600] [--interval 10] [--report FILE]

What runs:

* ``soak_server.py`` in its own process, from a private copy of the
  ``roomcast`` package taken at start (a rebuild of the tree during the run
  cannot touch the library the server has loaded);
* in this process, long-lived members (the ``websockets`` package) in
  several lobbies, each publishing now and then, each checking that it
  receives every message of its lobby exactly once and in order;
* in a second process (``--churn-worker``), clients on raw sockets that
  connect, join a lobby or a short-lived room, send a few messages, wait for
  their own messages to come back through the room, stay a moment, and
  leave: with a close handshake, by being removed by the server, by dropping
  TCP (FIN or RST) with or without half a frame sent; and a few that never
  finish the opening handshake (silent, or half a request head), some of
  them until the server's handshake timeout drops them.

Every ``--interval`` seconds one line: elapsed time, the server's RSS
(``VmRSS``), its open descriptors, open connections and rooms (from the
server's stats), accepted connections, messages received and deliveries
per second, the server's CPU use and the client errors so far.

Once the churn stops: the server must come back to the long-lived members
only, with as many descriptors as before the churn; every long-lived member
must have received each message published in its lobby exactly once, in
order; once they leave too, the descriptors must be those of the idle
server. RSS is flat when the median of the second tenth of the run (the
second minute of ten) is within ``max(10 %, 2 MiB)`` of the median of the
last tenth. Exits 1 when any of this fails, and writes a markdown report
with ``--report``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

from support.wsraw import (  # noqa: E402  # noqa: E402
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_value,
    close_payload,
    encode_frame,
    handshake_request,
    new_key,
)

MIB = 1024 * 1024
RSS_GROWTH_FRACTION = 0.10
RSS_GROWTH_FLOOR_KIB = 2048
HANDSHAKE_TIMEOUT = 10.0
# Hang guards only: nothing below measures speed.
STEP_TIMEOUT = 60.0
DRAIN_TIMEOUT = 60.0

LOBBIES = 8
LOBBY_MEMBERS = 5
SHORT_ROOMS = 16
SHORT_ROOM_SHARE = 0.3
STAY = 1.0  # longest stay in a room after the own messages came back

# (kind, weight): how a churning client ends its visit.
KINDS = [
    ("clean", 33),  # close handshake started by the client
    ("removed", 10),  # asks the server to remove it: close started by the server
    ("rst", 17),  # TCP reset, no close frame
    ("fin", 10),  # TCP FIN, no close frame
    ("midframe_rst", 10),  # half a frame, then a reset
    ("midframe_fin", 6),  # half a frame, then FIN
    ("silent_wait", 3),  # TCP only, until the server's handshake timeout
    ("silent_quit", 3),  # TCP only, leaves after a moment
    ("halfhead_wait", 3),  # half a request head, until the handshake timeout
    ("halfhead_quit", 5),  # half a request head, leaves after a moment
]
NO_HANDSHAKE = {"silent_wait", "silent_quit", "halfhead_wait", "halfhead_quit"}
TEXT = "soak é€ "


def message_text(rng: random.Random) -> str:
    # Mostly chat-sized; one in ten over 125 bytes (16-bit length frames).
    n = rng.randint(300, 2000) if rng.random() < 0.1 else rng.randint(5, 100)
    return (TEXT * (n // len(TEXT) + 1))[:n]


class ProtocolError(Exception):
    pass


# --- churning clients (the worker process) ---------------------------------


class RawConn:
    """One client connection on asyncio streams, after the 101: masked frames
    out, server frames in (checked unmasked), pings answered."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload))

    def send_json(self, obj: Any) -> None:
        self.send(OP_TEXT, json.dumps(obj).encode())

    async def frame(self) -> tuple[bool, int, bytes]:
        # Parsed from a buffer filled by large reads: one read usually holds
        # several frames, and the client side must stay cheap.
        buf = self.buf
        while True:
            if len(buf) >= 2:
                n = buf[1] & 0x7F
                start = 2 if n < 126 else 4 if n == 126 else 10
                if len(buf) >= start:
                    if n == 126:
                        n = int.from_bytes(buf[2:4], "big")
                    elif n == 127:
                        n = int.from_bytes(buf[2:10], "big")
                    if len(buf) >= start + n:
                        b0, b1 = buf[0], buf[1]
                        payload = bytes(buf[start : start + n])
                        del buf[: start + n]
                        if b1 & 0x80:
                            raise ProtocolError("the server masked a frame")
                        if b0 & 0x70:
                            raise ProtocolError("a server frame with RSV bits set")
                        return bool(b0 & 0x80), b0 & 0x0F, payload
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                raise EOFError(f"the server closed TCP with {len(buf)} bytes of a frame unread")
            buf += chunk

    async def at_eof(self) -> bool:
        """True if the server closes TCP with nothing more sent."""
        return not self.buf and not await self.reader.read()

    async def message(self) -> tuple[int, bytes]:
        """The next data message or close frame (opcode, payload)."""
        parts: list[bytes] = []
        first = -1
        while True:
            fin, opcode, payload = await self.frame()
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                return opcode, payload
            if (opcode == OP_CONT) != (first >= 0):
                raise ProtocolError("bad continuation frame")
            if first < 0:
                first = opcode
            parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def open_ws(port: int, path: str) -> RawConn:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = new_key()
        writer.write(handshake_request(path, key=key))
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise ProtocolError(f"handshake answered {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_value(key):
            raise ProtocolError("wrong Sec-WebSocket-Accept")
    except BaseException:
        writer.transport.abort()
        raise
    return RawConn(reader, writer)


class Churn:
    """The churning clients of one worker process and their counters."""

    def __init__(self, port: int, rate: float, seed: int, tag: str) -> None:
        self.port = port
        self.rate = rate
        self.rng = random.Random(seed)
        self.tag = tag
        self.count: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        # Lobby visitors: [room, id, sent, confirmed, saw its own join].
        self.senders: list[list[Any]] = []
        self.active = 0
        self.next_id = 0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{kind}: {detail}")

    def snapshot(self) -> dict[str, Any]:
        return {"k": "tick", "count": dict(self.count), "errors": sum(self.errors.values()), "active": self.active}

    async def run(self, seconds: float) -> None:
        kinds = [k for k, _ in KINDS]
        weights = [w for _, w in KINDS]
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_start = loop.time()
        while True:
            next_start += self.rng.expovariate(self.rate)
            if next_start >= end:
                break
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            kind = self.rng.choices(kinds, weights)[0]
            task = loop.create_task(self.visit(kind))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=HANDSHAKE_TIMEOUT * 2 + STEP_TIMEOUT)
        for task in tasks:
            self.error("unfinished", "a client still running after the churn ended")
            task.cancel()

    async def visit(self, kind: str) -> None:
        self.next_id += 1
        ident = f"{self.tag}{self.next_id}"
        self.active += 1
        self.count["started"] += 1
        phase = ["start"]
        try:
            if kind in NO_HANDSHAKE:
                await asyncio.wait_for(self.no_handshake(kind, phase), HANDSHAKE_TIMEOUT * 2 + STEP_TIMEOUT)
            else:
                await asyncio.wait_for(self.member(kind, ident, phase), STEP_TIMEOUT)
            self.count["done_" + kind] += 1
        except asyncio.TimeoutError:
            self.error(f"timeout:{kind}:{phase[0]}", ident)
        except (OSError, EOFError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
            self.error(f"{type(exc).__name__}:{kind}:{phase[0]}", f"{ident} {exc!r}"[:200])
        finally:
            self.active -= 1

    async def no_handshake(self, kind: str, phase: list[str]) -> None:
        phase[0] = "connect"
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        if kind.startswith("halfhead"):
            head = handshake_request("/room/lobby-0/nobody", key=new_key())
            writer.write(head[: self.rng.randint(5, len(head) - 5)])
        if kind.endswith("_wait"):
            phase[0] = "wait for the handshake timeout"
            if await reader.read(1 << 16):
                raise ProtocolError("the server answered half a request head")
            self.count["handshake_timeouts"] += 1
            writer.close()
            return
        phase[0] = "linger"
        await asyncio.sleep(self.rng.uniform(0.05, 2.0))
        if self.rng.random() < 0.5:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    async def member(self, kind: str, ident: str, phase: list[str]) -> None:
        rng = self.rng
        short = rng.random() < SHORT_ROOM_SHARE
        room = f"tmp-{rng.randrange(SHORT_ROOMS)}" if short else f"lobby-{rng.randrange(LOBBIES)}"
        phase[0] = "handshake"
        conn = await open_ws(self.port, f"/room/{room}/{ident}")
        self.count["opened"] += 1
        record: list[Any] = [room, ident, 0, 0, False]
        if not short:
            self.senders.append(record)
        mark = f'"id":"{ident}"'.encode()

        async def pump(until: Any) -> None:
            while not until():
                opcode, payload = await conn.message()
                if opcode == OP_CLOSE:
                    raise ProtocolError(f"closed by the server in phase {phase[0]}: {payload!r}")
                if opcode != OP_TEXT:
                    raise ProtocolError(f"a binary message: {payload[:40]!r}")
                self.count["received"] += 1
                if mark not in payload:
                    continue  # another client's: the long-lived members check those
                event = json.loads(payload)
                if event.get("id") != ident:
                    continue
                if event.get("ev") == "join":
                    record[4] = True
                elif event.get("ev") == "msg":
                    if event.get("seq") != record[3]:
                        raise ProtocolError(f"own message {event.get('seq')} came back before {record[3]}")
                    record[3] += 1

        try:
            phase[0] = "join"
            await pump(lambda: record[4])
            phase[0] = "send"
            for seq in range(rng.randint(1, 5)):
                conn.send_json({"seq": seq, "t": message_text(rng)})
                record[2] += 1
                self.count["sent"] += 1
                if rng.random() < 0.5:
                    await asyncio.sleep(rng.uniform(0.0, 0.2))
            phase[0] = "echo"
            await pump(lambda: record[3] == record[2])
            phase[0] = "stay"
            try:
                await asyncio.wait_for(pump(lambda: False), rng.uniform(0.0, STAY))
            except asyncio.TimeoutError:
                pass
            phase[0] = "leave"
            await self.leave(conn, kind)
        except BaseException:
            conn.writer.transport.abort()
            raise
        finally:
            self.count["confirmed"] += record[3]

    async def leave(self, conn: RawConn, kind: str) -> None:
        if kind in ("clean", "removed"):
            if kind == "clean":
                conn.send(OP_CLOSE, close_payload(1000, "bye"))
            else:
                conn.send_json({"cmd": "leave"})
            while True:
                opcode, payload = await conn.message()
                if opcode == OP_CLOSE:
                    break
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            if code != 1000:
                raise ProtocolError(f"close code {code} after a {kind} leave")
            if kind == "removed":
                conn.send(OP_CLOSE, close_payload(1000))
            if not await conn.at_eof():
                raise ProtocolError("data after the close frame")
            conn.writer.close()
        elif kind == "rst":
            conn.reset()
        elif kind == "fin":
            conn.writer.close()
        else:
            frame = encode_frame(OP_TEXT, json.dumps({"seq": -1, "t": "x" * 200}).encode())
            conn.writer.write(frame[: self.rng.randint(1, len(frame) - 1)])
            await conn.writer.drain()
            await asyncio.sleep(self.rng.uniform(0.0, 0.1))
            if kind == "midframe_rst":
                conn.reset()
            else:
                conn.writer.close()


async def churn_worker(args: argparse.Namespace) -> None:
    churn = Churn(args.port, args.rate, args.seed, args.tag)
    loop = asyncio.get_running_loop()

    async def orphaned() -> None:
        # The driver holds our stdin: end of file means it is gone.
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        await stdin.read()
        os._exit(1)

    guard = loop.create_task(orphaned())

    async def ticks() -> None:
        while True:
            print(json.dumps(churn.snapshot()), flush=True)
            await asyncio.sleep(1.0)

    ticker = loop.create_task(ticks())
    await churn.run(args.seconds)
    ticker.cancel()
    guard.cancel()
    final = churn.snapshot()
    final.update(
        k="final",
        error_kinds=dict(churn.errors),
        error_samples=churn.error_samples,
        senders=churn.senders,
    )
    print(json.dumps(final), flush=True)


# --- long-lived members (this process) --------------------------------------


class Member:
    """A long-lived member of a lobby, on the ``websockets`` client."""

    def __init__(self, port: int, room: str, ident: str, rng: random.Random) -> None:
        self.url = f"ws://127.0.0.1:{port}/room/{room}/{ident}"
        self.room = room
        self.ident = ident
        self.rng = rng
        self.ws: Any = None
        self.sent = 0
        self.received = 0
        self.seqs: dict[str, int] = {}  # sender -> last seq received
        self.missing: Counter[str] = Counter()  # sender -> seqs skipped
        self.dups: Counter[str] = Counter()  # sender -> seqs received again or late
        self.joins: Counter[str] = Counter()
        self.leaves: Counter[str] = Counter()
        self.finals: set[str] = set()
        self.problems: list[str] = []
        self.joined = asyncio.Event()
        self.closed: str | None = None
        self.reader: asyncio.Task[None] | None = None

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.ident}: {text}")

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url, compression=None, max_size=None, open_timeout=STEP_TIMEOUT)
        self.reader = asyncio.get_running_loop().create_task(self.read())
        await asyncio.wait_for(self.joined.wait(), STEP_TIMEOUT)

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self.received += 1
                event = json.loads(raw)
                ev, who = event.get("ev"), event.get("id")
                if ev == "msg":
                    seq = event.get("seq")
                    last = self.seqs.get(who, -1)
                    if not isinstance(seq, int):
                        self.problem(f"from {who}: seq {seq!r}")
                    elif seq <= last:
                        self.dups[who] += 1
                        self.problem(f"duplicate or late: from {who} seq {seq} after {last}")
                    else:
                        if seq != last + 1:
                            self.missing[who] += seq - last - 1
                            self.problem(f"gap: from {who} seq {seq} after {last}")
                        self.seqs[who] = seq
                    if event.get("t") == "final":
                        self.finals.add(who)
                elif ev == "join":
                    self.joins[who] += 1
                    if who == self.ident:
                        self.joined.set()
                elif ev == "leave":
                    self.leaves[who] += 1
                else:
                    self.problem(f"unexpected message {raw[:80]!r}")
        except Exception as exc:  # the connection broke: reported at the end
            self.closed = repr(exc)
        else:
            self.closed = f"closed {self.ws.close_code} {self.ws.close_reason!r}"

    async def publish(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.5, 1.5) * every)
            except asyncio.TimeoutError:
                pass
            if stop.is_set() or self.closed is not None:
                return
            try:
                await self.send(message_text(self.rng))
            except Exception as exc:  # the reader reports the broken connection
                self.problem(f"send failed: {exc!r}")
                return

    async def send(self, text: str) -> None:
        await self.ws.send(json.dumps({"seq": self.sent, "t": text}))
        self.sent += 1


# --- the server process -------------------------------------------------------


def snapshot_package(into: Path) -> Path:
    """Copies python/roomcast (with its built extension) into a private
    directory: ``make build`` during the run rewrites the .so in place, which
    would change the code under a running server."""
    source = REPO / "python" / "roomcast"
    if not any(source.glob("_core*.so")):
        raise SystemExit("roomcast is not built: run `make build` first")
    shutil.copytree(source, into / "roomcast", ignore=shutil.ignore_patterns("__pycache__"))
    return into


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.log = log
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, pkg_parent: Path, log: Path) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=str(pkg_parent), PYTHONDONTWRITEBYTECODE="1")
        with open(log, "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "soak_server.py"),
                "--handshake-timeout",
                str(HANDSHAKE_TIMEOUT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=env,
            )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STEP_TIMEOUT)
        if not line.strip().isdigit():
            proc.kill()
            raise SystemExit(f"the server did not start: {line!r}\n{log.read_text()}")
        return cls(proc, int(line), log)

    async def stats(self, command: str = "stats") -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self.lock:
            self.proc.stdin.write(command.encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT)
        if not line:
            raise RuntimeError("the server exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def stop(self) -> int | None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return 60.0 * sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.problems: list[str] = []
        self.worker_ticks: list[dict[str, Any]] = []
        self.worker_final: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}
        self.members: list[Member] = []

    def say(self, text: str) -> None:
        print(text, flush=True)

    async def sample(
        self, server: ServerProcess, label: str, t: float, prev: dict[str, Any] | None, command: str = "stats"
    ) -> dict[str, Any]:
        st = await server.stats(command)
        row: dict[str, Any] = {
            "label": label,
            "t": t,
            "mono": time.monotonic(),
            "rss": server.rss_kib(),
            "fds": server.fds(),
            "cpu": cpu_seconds(server.pid),
            "st": st,
            "errors": self.client_errors(),
        }
        if prev is not None:
            dt = row["mono"] - prev["mono"]
            for key, name in (("accepted_total", "acc_s"), ("messages_in", "in_s"), ("deliveries", "deliv_s")):
                row[name] = (st[key] - prev["st"][key]) / dt
            row["cpu_pct"] = 100.0 * (row["cpu"] - prev["cpu"]) / dt
        self.rows.append(row)
        self.say(self.format_line(row))
        return row

    def client_errors(self) -> int:
        errors = sum(len(m.problems) for m in self.members)
        return errors + sum(int(t.get("errors", 0)) for t in self.worker_ticks)

    @staticmethod
    def format_line(row: dict[str, Any]) -> str:
        st = row["st"]
        rates = ""
        if "acc_s" in row:
            rates = (
                f"  acc/s {row['acc_s']:6.1f}  in/s {row['in_s']:6.1f}  deliv/s {row['deliv_s']:7.0f}"
                f"  cpu {row['cpu_pct']:4.0f}%"
            )
        return (
            f"{row['label']:>8}  rss {row['rss'] / 1024:6.1f} MiB  fds {row['fds']:4d}"
            f"  conns {st['connections']:4d}  rooms {st['py_rooms']:3d}{rates}  errors {row['errors']}"
        )

    async def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="roomcast-soak-") as tmp:
            pkg = snapshot_package(Path(tmp))
            so = next((pkg / "roomcast").glob("_core*.so"))
            self.notes["core_sha256"] = hashlib.sha256(so.read_bytes()).hexdigest()[:16]
            self.notes["load_start"] = Path("/proc/loadavg").read_text().split()[:3]
            server = await ServerProcess.start(pkg, Path(tmp) / "server.log")
            try:
                return await self.drive(server)
            finally:
                if server.proc.returncode is None:
                    await server.stop()

    async def drive(self, server: ServerProcess) -> int:
        args = self.args
        self.say(f"server pid {server.pid} port {server.port}; churn {args.rate}/s for {args.seconds:.0f} s")
        idle = await self.sample(server, "idle", 0.0, None, "gc")
        rng = random.Random(args.seed)
        self.members = [
            Member(server.port, f"lobby-{r}", f"m{r}-{i}", random.Random(rng.random()))
            for r in range(LOBBIES)
            for i in range(LOBBY_MEMBERS)
        ]
        await asyncio.gather(*(m.start() for m in self.members))
        await asyncio.sleep(1.0)
        base = await self.sample(server, "members", 0.0, None)
        stop_publishing = asyncio.Event()
        publishers = [
            asyncio.get_running_loop().create_task(m.publish(stop_publishing, args.publish_every)) for m in self.members
        ]
        start = time.monotonic()
        workers = [await self.start_worker(server.port, w) for w in range(args.workers)]
        readers = [asyncio.get_running_loop().create_task(self.read_worker(p)) for p in workers]
        prev = base
        cpu0 = base["cpu"]
        client_cpu0 = self.client_cpu(workers)
        deadline = start + args.seconds
        while True:
            now = time.monotonic()
            wait = min(prev["mono"] + args.interval, deadline) - now
            if wait > 0:
                await asyncio.sleep(wait)
            t = time.monotonic() - start
            prev = await self.sample(server, f"{t:.0f} s", t, prev)
            if server.proc.returncode is not None:
                self.problems.append(f"the server exited with {server.proc.returncode}")
                return 1
            if time.monotonic() >= deadline - 0.5:
                break
        churn_end = prev
        self.notes["server_cpu_pct"] = 100.0 * (churn_end["cpu"] - cpu0) / (churn_end["mono"] - base["mono"])
        cpu1 = self.client_cpu(workers)
        span = churn_end["mono"] - base["mono"]
        self.notes["members_cpu_pct"] = 100.0 * (cpu1[0] - client_cpu0[0]) / span
        self.notes["churn_cpu_pct"] = 100.0 * (cpu1[1] - client_cpu0[1]) / span
        stop_publishing.set()
        await asyncio.gather(*publishers)
        self.say("churn over; waiting for the workers and for the server to drain")
        await asyncio.wait_for(asyncio.gather(*readers), HANDSHAKE_TIMEOUT * 2 + STEP_TIMEOUT * 2)
        for p in workers:
            await p.wait()

        n = len(self.members)
        drained = await self.wait_for(server, lambda st: st["connections"] == n and st["py_endpoints"] == n, "drained")
        # Everything published before the markers reaches every member first.
        for m in self.members:
            await m.send("final")
        names = {m.room: {x.ident for x in self.members if x.room == m.room} for m in self.members}
        t0 = time.monotonic()
        while any(m.finals != names[m.room] for m in self.members) and time.monotonic() - t0 < STEP_TIMEOUT:
            await asyncio.sleep(0.2)
        self.check_messages()
        for m in self.members:
            await m.ws.close()
        await asyncio.gather(*(m.reader for m in self.members if m.reader is not None))
        closed = await self.wait_for(server, lambda st: st["connections"] == 0 and st["py_endpoints"] == 0, "closed")
        collected = await server.stats("gc")
        self.notes["objects_after_gc"] = collected["py_objects"]
        self.notes["objects_idle"] = idle["st"]["py_objects"]
        code = await server.stop()
        self.notes["server_exit"] = code
        self.notes["server_log"] = server.log.read_text(errors="replace").splitlines()
        return self.verdict(idle, base, drained, closed, code)

    async def wait_for(self, server: ServerProcess, ok: Any, label: str) -> dict[str, Any]:
        t0 = time.monotonic()
        while True:
            st = await server.stats()
            if ok(st) or time.monotonic() - t0 > DRAIN_TIMEOUT:
                break
            await asyncio.sleep(0.5)
        return await self.sample(server, label, self.rows[-1]["t"], None)

    async def start_worker(self, port: int, index: int) -> asyncio.subprocess.Process:
        a = self.args
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--churn-worker",
            "--port",
            str(port),
            "--seconds",
            str(a.seconds),
            "--rate",
            str(a.rate / a.workers),
            "--seed",
            str(a.seed * 100 + index + 1),
            "--tag",
            f"c{index}-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,  # the final line lists every lobby visitor
        )

    async def read_worker(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        slot = len(self.worker_ticks)
        self.worker_ticks.append({})
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            self.worker_ticks[slot] = msg
            if msg.get("k") == "final":
                self.worker_final.append(msg)

    @staticmethod
    def client_cpu(workers: list[asyncio.subprocess.Process]) -> tuple[float, float]:
        """CPU seconds of this process and of the churn workers."""
        t = os.times()
        total = 0.0
        for p in workers:
            try:
                total += cpu_seconds(p.pid)
            except OSError:
                pass
        return t.user + t.system, total

    def check_messages(self) -> None:
        members = self.members
        problems = self.problems
        for m in members:
            problems.extend(m.problems)
            if m.closed is not None:
                problems.append(f"{m.ident}: connection ended during the run: {m.closed}")
        by_room: dict[str, list[Member]] = {}
        for m in members:
            by_room.setdefault(m.room, []).append(m)
        visitors: dict[str, list[list[Any]]] = {}
        for final in self.worker_final:
            for rec in final["senders"]:
                visitors.setdefault(rec[0], []).append(rec)
        if len(self.worker_final) != self.args.workers:
            problems.append(f"{self.args.workers - len(self.worker_final)} churn worker(s) gave no final report")
        lost = duplicated = 0
        for room, mems in by_room.items():
            # sender -> (messages every member must have, messages it sent)
            expected = {other.ident: (other.sent, other.sent) for other in mems}
            for _, ident, sent, confirmed, _ in visitors.get(room, []):
                expected[ident] = (confirmed, sent)
            for m in mems:
                for ident, (least, most) in expected.items():
                    got = m.seqs.get(ident, -1) + 1  # messages 0 .. got-1 arrived, but for the gaps
                    lost += m.missing[ident] + max(0, least - got)
                    duplicated += m.dups[ident]
                    if not least <= got <= most:
                        problems.append(
                            f"{m.ident}: messages up to {got} of {ident}, which sent {most} ({least} came back)"
                        )
                for _, ident, _, _, saw_join in visitors.get(room, []):
                    if saw_join and m.joins[ident] != 1:
                        problems.append(f"{m.ident}: {m.joins[ident]} join notices of {ident}")
                    if m.joins[ident] != m.leaves[ident]:
                        problems.append(f"{m.ident}: {ident} joined {m.joins[ident]}x, left {m.leaves[ident]}x")
                strangers = set(m.seqs) - set(expected)
                if strangers:
                    problems.append(f"{m.ident}: messages from unknown senders {sorted(strangers)[:5]}")
        self.notes["lost"] = lost
        self.notes["duplicated"] = duplicated
        self.notes["member_messages_received"] = sum(m.received for m in members)
        self.notes["member_messages_sent"] = sum(m.sent for m in members)
        self.notes["lobby_visitors"] = sum(len(v) for v in visitors.values())

    def verdict(
        self,
        idle: dict[str, Any],
        base: dict[str, Any],
        drained: dict[str, Any],
        closed: dict[str, Any],
        code: int | None,
    ) -> int:
        secs = self.args.seconds
        churn = [r for r in self.rows if "acc_s" in r and r["label"] not in ("drained", "closed")]
        warm = [r for r in churn if secs / 10 < r["t"] <= secs / 5 + 0.5]
        end = [r for r in churn if r["t"] > secs * 0.9]
        rss_warm = median([r["rss"] for r in warm])
        rss_end = median([r["rss"] for r in end])
        allowed = max(RSS_GROWTH_FRACTION * rss_warm, RSS_GROWTH_FLOOR_KIB)
        steady = [r for r in churn if r["t"] > secs / 10]
        n = self.notes
        n.update(
            rss_warm=rss_warm,
            rss_end=rss_end,
            rss_allowed=allowed,
            rss_slope=slope_per_minute([(r["t"], r["rss"]) for r in steady]),
            fds_warm=median([r["fds"] for r in warm]),
            fds_end=median([r["fds"] for r in end]),
            extra_fds_warm=median([r["fds"] - r["st"]["connections"] for r in warm]),
            extra_fds_end=median([r["fds"] - r["st"]["connections"] for r in end]),
        )
        worker_errors: Counter[str] = Counter()
        for final in self.worker_final:
            worker_errors.update(final["error_kinds"])
            self.problems.extend(final["error_samples"])
        n["client_errors"] = dict(worker_errors)
        failures = []
        if not warm or not end:
            failures.append("too few samples for the RSS comparison: lengthen --seconds or shorten --interval")
        elif rss_end - rss_warm > allowed:
            failures.append(f"RSS grew {rss_end - rss_warm:.0f} KiB (allowed {allowed:.0f})")
        if drained["fds"] != base["fds"]:
            failures.append(f"{drained['fds']} fds once the churn stopped, {base['fds']} before it")
        if drained["st"]["connections"] != len(self.members):
            failures.append(
                f"{drained['st']['connections']} connections once the churn stopped, expected {len(self.members)}"
            )
        if closed["fds"] != idle["fds"] or closed["st"]["connections"] != 0:
            failures.append(f"{closed['fds']} fds with every client gone, {idle['fds']} when the server started idle")
        if n.get("lost") or n.get("duplicated"):
            failures.append(f"messages lost: {n['lost']}, duplicated: {n['duplicated']}")
        if self.problems:
            failures.append(f"{len(self.problems)} problems (below)")
        if worker_errors:
            failures.append(f"{sum(worker_errors.values())} client errors")
        if code != 0:
            failures.append(f"the server exited with {code}")
        n["failures"] = failures
        self.summary(idle, base, drained, closed)
        if self.args.report:
            Path(self.args.report).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.report).write_text(self.report(idle, base, drained, closed))
            self.say(f"report written to {self.args.report}")
        return 1 if failures else 0

    def totals(self, base: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for final in self.worker_final:
            counts.update(final["count"])
        return {
            "accepted": last["st"]["accepted_total"] - base["st"]["accepted_total"],
            "messages_in": last["st"]["messages_in"] - base["st"]["messages_in"],
            "deliveries": last["st"]["deliveries"] - base["st"]["deliveries"],
            "churners": counts["started"],
            "opened": counts["opened"],
            "handshake_timeouts": counts["handshake_timeouts"],
            "kinds": {k: counts["done_" + k] for k, _ in KINDS},
            "churn_sent": counts["sent"],
            "churn_received": counts["received"],
        }

    def summary(
        self, idle: dict[str, Any], base: dict[str, Any], drained: dict[str, Any], closed: dict[str, Any]
    ) -> None:
        n = self.notes
        tot = self.totals(base, drained)
        self.say("")
        self.say(
            f"RSS: {n['rss_warm'] / 1024:.1f} MiB (median, second tenth) -> {n['rss_end'] / 1024:.1f} MiB (last tenth);"
            f" allowed +{n['rss_allowed'] / 1024:.1f} MiB; slope {round(n['rss_slope']):+d} KiB/min"
        )
        self.say(
            f"fds: idle {idle['fds']}, with members {base['fds']}, after the churn {drained['fds']},"
            f" all gone {closed['fds']}"
        )
        self.say(
            f"connections accepted {tot['accepted']}, messages in {tot['messages_in']},"
            f" deliveries {tot['deliveries']}, lost {n.get('lost')}, duplicated {n.get('duplicated')}"
        )
        self.say(
            f"server CPU {n['server_cpu_pct']:.0f}% of a core; clients: members {n['members_cpu_pct']:.0f}%,"
            f" churn {n['churn_cpu_pct']:.0f}%"
        )
        for p in self.problems[:30]:
            self.say(f"  problem: {p}")
        self.say("FLAT, nothing lost" if not n["failures"] else "FAILED: " + "; ".join(n["failures"]))

    def report(
        self, idle: dict[str, Any], base: dict[str, Any], drained: dict[str, Any], closed: dict[str, Any]
    ) -> str:
        a = self.args
        n = self.notes
        tot = self.totals(base, drained)
        out = [
            "# Soak: connection churn, memory and descriptors",
            "",
            f"Run on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC with",
            "",
            "```sh",
            "python3 tests/soak/soak.py " + " ".join(sys.argv[1:]),
            "```",
            "",
            "Verdict: **" + ("flat, nothing lost**" if not n["failures"] else "FAILED**: " + "; ".join(n["failures"])),
            "",
            "## Set-up",
            "",
            f"- Server: `tests/soak/soak_server.py` (rooms made on demand, push on receive,"
            f" handshake timeout {HANDSHAKE_TIMEOUT:.0f} s), one process; roomcast at commit {git_head()}"
            f" (`_core` sha256 {n['core_sha256']}…).",
            f"- Long-lived members: {LOBBIES} lobbies × {LOBBY_MEMBERS} (the `websockets` client), each"
            f" publishing every {a.publish_every:g} s on average.",
            f"- Churn: {a.rate:g} clients/s (Poisson) from {a.workers} raw-socket process(es),"
            f" {100 * (1 - SHORT_ROOM_SHARE):.0f} % into the lobbies, the rest into {SHORT_ROOMS} rooms that"
            f" come and go; 1–5 messages each, then a stay of 0–{STAY:g} s. How they leave:"
            f" {', '.join(f'{k} {w} %' for k, w in KINDS)}.",
            f"- Machine: {machine_facts()}; load average at start {' '.join(n['load_start'])}.",
            f"- Server CPU during the churn: {n['server_cpu_pct']:.0f} % of one core; the long-lived members'"
            f" process {n['members_cpu_pct']:.0f} %, the churn process(es) {n['churn_cpu_pct']:.0f} %.",
            "",
            "## Every interval",
            "",
            "| t | RSS (MiB) | fds | connections | rooms | endpoints | tasks | parsers | accepts/s | messages in/s |"
            " deliveries/s | server CPU | client errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.rows:
            st = r["st"]
            rates = (
                f"{r['acc_s']:.1f} | {r['in_s']:.1f} | {r['deliv_s']:.0f} | {r['cpu_pct']:.0f} %"
                if "acc_s" in r
                else " | | | "
            )
            out.append(
                f"| {r['label']} | {r['rss'] / 1024:.1f} | {r['fds']} | {st['connections']} | {st['py_rooms']} |"
                f" {st['py_endpoints']} | {st['py_tasks']} | {st['parsers']} | {rates} | {r['errors']} |"
            )
        out += [
            "",
            "`idle`: the server before any client; `members`: with the long-lived members, before the churn;"
            " `drained`: once the churn stopped and the server was back to the long-lived members; `closed`: once"
            " they left too. Rooms, endpoints and tasks are the server's Python side; parsers: connections holding"
            " a wslay frame parser (the core's counter).",
            "",
            "## Figures",
            "",
            f"- RSS: median of the second tenth of the run {n['rss_warm'] / 1024:.1f} MiB, of the last tenth"
            f" {n['rss_end'] / 1024:.1f} MiB (allowed growth max(10 %, 2 MiB) = {n['rss_allowed'] / 1024:.1f} MiB);"
            f" least-squares slope after the first tenth {round(n['rss_slope']):+d} KiB/min; idle server"
            f" {idle['rss'] / 1024:.1f} MiB, at the end with every client gone {closed['rss'] / 1024:.1f} MiB.",
            f"- Descriptors: idle {idle['fds']}, with the members {base['fds']}, once the churn stopped"
            f" {drained['fds']}, with every client gone {closed['fds']}. During the churn, descriptors beyond the"
            f" open connections: median {n['extra_fds_warm']:.0f} (second tenth), {n['extra_fds_end']:.0f} (last"
            " tenth).",
            f"- Connections accepted by the server during the run: {tot['accepted']}; churning clients"
            f" {tot['churners']} ({tot['opened']} completed the handshake, {tot['handshake_timeouts']} dropped by the"
            f" handshake timeout); how they ended: {', '.join(f'{k} {v}' for k, v in tot['kinds'].items())}.",
            f"- Messages received by the server: {tot['messages_in']}; deliveries: {tot['deliveries']}. The"
            f" long-lived members sent {n['member_messages_sent']} and received {n['member_messages_received']};"
            f" lobby visitors checked against them: {n['lobby_visitors']}. Lost: {n['lost']}, duplicated:"
            f" {n['duplicated']}.",
            f"- Python objects in the server after a full collection: {n['objects_idle']} idle at the start,"
            f" {n['objects_after_gc']} at the end;"
            f" server exit status {n.get('server_exit')}.",
        ]
        if self.problems or n["client_errors"]:
            out += ["", "## Problems", ""]
            out += [f"- client errors by kind: {n['client_errors']}"] if n["client_errors"] else []
            out += [f"- {p}" for p in self.problems[:50]]
        log = [line for line in n.get("server_log", []) if line.strip()]
        if log:
            out += ["", "## Server log (first lines)", "", "```"] + log[:20] + ["```"]
        return "\n".join(out) + "\n"


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "csrc", "python"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout
    except OSError:
        return "unknown"
    return head.strip() + (" with uncommitted changes to csrc/ or python/" if dirty.strip() else "")


def machine_facts() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    try:
        libuv = subprocess.run(["pkg-config", "--modversion", "libuv"], capture_output=True, text=True).stdout.strip()
        wslay = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libwslay-dev"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        libuv = wslay = "?"
    import websockets

    return (
        f"{os.cpu_count()} × {model}, {mem} MiB, Linux {platform.release()}, Python {platform.python_version()},"
        f" libuv {libuv}, wslay {wslay}, websockets {getattr(websockets, '__version__', '?')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the churn (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--report", help="write a markdown report to this file")
    parser.add_argument("--rate", type=float, default=200.0, help="churning clients per second (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="churn processes (default 2)")
    parser.add_argument("--publish-every", type=float, default=3.0, help="mean seconds between a member's messages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--churn-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="c-", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.churn_worker:
        asyncio.run(churn_worker(args))
        return
    sys.exit(asyncio.run(Soak(args).run()))


if __name__ == "__main__":
    main()
