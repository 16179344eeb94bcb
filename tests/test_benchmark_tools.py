"""The benchmark's own tools stay honest: the load generator and the C floor
server build with -Werror, and a small fan-out through roomcast and through
the floor completes with every message delivered, in order, to every client.
(Speed is measured in benchmarks/, never here.)"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import report  # noqa: E402  (benchmarks/report.py)
import run as bench  # noqa: E402  (benchmarks/run.py)


@pytest.fixture(scope="module")
def loadgen():
    return bench.build_loadgen()


def start(cmd, env=None):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.monotonic() + 30
    line = ""
    while "listening" not in line:
        assert time.monotonic() < deadline, "the server did not start"
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "the server exited"
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_loadgen(loadgen, port, clients, messages, size, window, *extra):
    """One run of the load generator with --json: its result, checked to
    have every delivery, in order."""
    out = subprocess.run(
        [str(loadgen), "--port", str(port), "--clients", str(clients), "--messages", str(messages)]
        + ["--size", str(size), "--window", str(window), *extra, "--json", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["ok"], out.stderr
    assert result["deliveries"] == clients * messages
    assert result["order_errors"] == 0 and result["lost"] == 0
    return result


def fan_out(loadgen, port, pid, window):
    return run_loadgen(loadgen, port, 50, 100, 64, window, "--server-pid", str(pid))


@pytest.mark.parametrize("window", [1, 16])
def test_roomcast_chat_server_delivers_everything(loadgen, window):
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO / "python")]))
    proc = start([sys.executable, str(REPO / "benchmarks/servers/roomcast_chat.py"), str(port)], env)
    try:
        fan_out(loadgen, port, proc.pid, window)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("mode", ["write", "writev"])
def test_floor_server_delivers_everything(loadgen, mode):
    floor = bench.build_floor()
    port = free_port()
    proc = start([str(floor), str(port), "--mode", mode])
    try:
        fan_out(loadgen, port, proc.pid, 16)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_shared_room_across_servers_delivers_everything(loadgen, redis_server):
    """The cross-server benchmark's set-up: the load generator spreads its
    clients over three servers sharing a room through Redis (--ports)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO / "python")]))
    ports = [free_port() for _ in range(3)]
    procs = [
        start([sys.executable, str(REPO / "benchmarks/servers/roomcast_chat.py"), str(port), redis_server.url], env)
        for port in ports
    ]
    try:
        out = subprocess.run(
            [
                str(loadgen),
                "--ports",
                ",".join(map(str, ports)),
                "--clients",
                "30",
                "--messages",
                "100",
                "--window",
                "8",
                "--json",
                "--timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = json.loads(out.stdout)
        assert out.returncode == 0 and result["ok"], out.stderr
        assert result["deliveries"] == 30 * 100
        assert result["order_errors"] == 0 and result["lost"] == 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


class AwkwardServer:
    """A chat room on threads that sends each member its copies in a
    different shape, so that the load generator's in-place parser meets
    every case a server may produce: member i % 4 gets
      0: one frame in one write;
      1: the message in three fragments, a ping between the first two;
      2: one frame written a few bytes at a time (header split, prefix
         split, payload split across reads);
      3: a ping, then the frame split right after its first byte.
    Every member must still see every message once, in order."""

    def __init__(self) -> None:
        import threading

        self.threading = threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.members: list = []
        self.errors: list[str] = []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    @staticmethod
    def frame(op: int, payload: bytes, fin: bool = True) -> bytes:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | op])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + n.to_bytes(2, "big")
        else:
            head += bytes([127]) + n.to_bytes(8, "big")
        return head + payload

    def shapes(self, i: int, msg: bytes) -> list[bytes]:
        whole = self.frame(0x1, msg)
        style = i % 4
        if style == 0:
            return [whole]
        if style == 1:
            return [
                self.frame(0x1, msg[:5], fin=False),
                self.frame(0x9, b"hi"),
                self.frame(0x0, msg[5:20], fin=False),
                self.frame(0x0, msg[20:]),
            ]
        if style == 2:
            cuts = [0, 1, 3, 12, 30, len(whole) // 2, len(whole)]
            return [whole[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        return [self.frame(0x9, b"ping"), whole[:1], whole[1:]]

    def serve(self, conn: socket.socket) -> None:
        import base64
        import hashlib
        import queue

        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = conn.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return
            head += line
        key = [
            ln.split(b":", 1)[1].strip() for ln in head.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key:")
        ][0]
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        out: queue.Queue = queue.Queue()

        def sender() -> None:
            while True:
                chunks = out.get()
                if chunks is None:
                    conn.close()
                    return
                for chunk in chunks:
                    try:
                        conn.sendall(chunk)
                    except OSError:
                        return
                    if len(chunks) > 1:
                        time.sleep(0.001)  # separate segments, separate reads

        self.threading.Thread(target=sender, daemon=True).start()
        out.put(
            [
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            ]
        )
        with self.lock:
            index = len(self.members)
            self.members.append(out)
        while True:
            b = f.read(2)
            if len(b) < 2:
                return
            op, n = b[0] & 0x0F, b[1] & 0x7F
            if n == 126:
                n = int.from_bytes(f.read(2), "big")
            elif n == 127:
                n = int.from_bytes(f.read(8), "big")
            mask = f.read(4)
            data = bytes(x ^ mask[k & 3] for k, x in enumerate(f.read(n)))
            if op == 0x1:
                with self.lock:
                    for i, member in enumerate(self.members):
                        member.put(self.shapes(i, data))
            elif op == 0x8:
                out.put([self.frame(0x8, data[:2])])
                out.put(None)
                return
            elif op != 0xA:
                self.errors.append(f"member {index}: opcode {op}")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("size", [300, 70000])
def test_loadgen_reads_frames_in_every_shape(loadgen, size):
    """Fragments, interleaved pings, headers and payloads split across reads
    (126- and 127-length headers): every delivery counted once, in order."""
    server = AwkwardServer()
    try:
        result = run_loadgen(loadgen, server.port, 8, 20, size, 4)
        assert result["protocol_errors"] == 0 and not server.errors
        assert 0 < result["loadgen_cpu_share"] <= 1.5
    finally:
        server.close()


@pytest.mark.parametrize("protocol", ["uvicorn", "roomcast"])
def test_roomcast_fastapi_chat_server_delivers_everything(loadgen, protocol):
    """The FastAPI rows' server: roomcast's Room in a FastAPI app on uvicorn,
    with uvicorn's own websocket protocol and with roomcast's."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from roomcast._core import Core

    if protocol == "roomcast" and not hasattr(Core, "adopt"):
        pytest.skip("this build's core has no adopt(): roomcast.uvicorn cannot hand connections over")
    port = free_port()
    cmd, env = bench.server_command("roomcast-fastapi" if protocol == "roomcast" else "roomcast-fastapi-py", port)
    assert cmd[-2:] == [str(port), protocol]
    proc = start(cmd, env)
    try:
        fan_out(loadgen, port, proc.pid, 16)
        assert proc.poll() is None  # not stopped by a connection uvicorn served itself
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """run.py --tls's certificate and key (the openssl command)."""
    return bench.make_certificate(tmp_path_factory.mktemp("tls"), "ec")


def tls_server(name, certificate):
    """A -tls server of the benchmark on a free port: (process, port)."""
    if name == "roomcast-tls":
        import inspect

        from roomcast import Server

        if "ssl_certfile" not in inspect.signature(Server).parameters:
            pytest.skip("this roomcast has no TLS server (ssl_certfile)")
    port = free_port()
    cmd, env = bench.server_command(name, port, certificate)
    assert cmd[-3:] == ["--tls", *certificate]
    if name == "roomcast-tls":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO / "python")]))
    return start(cmd, env), port


@pytest.mark.parametrize("name", ["websockets-tls", "roomcast-tls"])
def test_loadgen_tls_delivers_through_a_tls_server(loadgen, certificate, name):
    """loadgen --tls: every connection makes a TLS handshake, then every
    message reaches every client, in order, through TLS."""
    proc, port = tls_server(name, certificate)
    try:
        result = run_loadgen(loadgen, port, 8, 50, 64, 4, "--tls", "--server-pid", str(proc.pid))
        assert result["tls"] is True and result["tls_handshakes"] == 8
        assert result["tls_version"] in ("TLSv1.2", "TLSv1.3"), result["tls_version"]
        # without --tls the same server is not spoken to at all
        out = subprocess.run(
            [str(loadgen), "--port", str(port), "--clients", "2", "--messages", "2", "--json", "--timeout", "10"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and not json.loads(out.stdout)["ok"]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("resume", [False, True])
def test_loadgen_measures_tls_handshakes(loadgen, certificate, resume):
    """loadgen --tls --handshakes: each connection does the TLS handshake,
    the upgrade and the close; every one is counted, none dropped. With
    --tls-resume the connections after the first ticket resume a session."""
    proc, port = tls_server("websockets-tls", certificate)
    try:
        out = subprocess.run(
            [str(loadgen), "--port", str(port), "--tls", "--handshakes", "40", "--batch", "8"]
            + (["--tls-resume"] if resume else [])
            + ["--server-pid", str(proc.pid), "--json", "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        result = json.loads(out.stdout)
        assert out.returncode == 0 and result["ok"], out.stderr
        assert result["mode"] == "handshakes" and result["started"] == 40
        # the first 4 (a tenth) warm the server up: those done before the
        # clock started are not measured, the rest are
        assert 4 <= result["warmup"] < 40 and result["warmup"] + result["handshakes"] == 40
        assert result["tls_handshakes"] == 40 and result["dropped"] == 0
        assert result["handshakes_per_sec"] > 0 and result["server_cpu_us_per_handshake"] is not None
        # the first batch starts before any ticket has arrived; every ticket
        # offered is one the server takes (each is offered once, and stays
        # resumable after its connection is gone)
        if resume:
            assert 0 < result["tls_offered"] <= 40 - 8 and result["tls_resumed"] == result["tls_offered"]
        else:
            assert result["tls_offered"] == result["tls_resumed"] == 0
    finally:
        proc.terminate()
        proc.wait(30)


def test_tls_mode_runs_the_tls_grid():
    args = bench.parse_args(["--tls"])
    assert args.servers == ["roomcast", "roomcast-tls", "socketify-tls", "websockets-tls"]
    assert args.clients == [1000] and args.scenarios == ["burst", "single", "handshake", "resume"]
    labels = [(c["scenario"], c["clients"], c.get("only")) for c in bench.plan(args)]
    tls_only = ["roomcast-tls", "socketify-tls", "websockets-tls"]
    assert labels == [("burst", 1000, None), ("single", 1000, None), ("handshake", 20000, None)] + [
        ("resume", 20000, tls_only)
    ]


# ------------------------------------------------------- the FastAPI rows


def test_fastapi_mode_runs_the_fastapi_grid():
    args = bench.parse_args(["--fastapi"])
    assert args.mode == "fastapi"
    assert args.servers == ["roomcast", "roomcast-fastapi", "roomcast-fastapi-py", "websocket_rooms"]
    assert [(c["scenario"], c["clients"], c["size"], c["window"]) for c in bench.plan(args)] == [
        ("burst", 1000, 64, bench.BURST_WINDOW),
        ("burst", 10000, 64, bench.BURST_WINDOW),
        ("single", 1000, 64, 1),
        ("single", 10000, 64, 1),
    ]
    assert args.max_minutes > 0  # the whole run is bounded
    assert args.deliveries == 10_000_000  # roomcast's bursts last long enough to measure
    # options still override the mode's grid
    args = bench.parse_args(["--fastapi", "--clients", "1000", "--repeat", "1", "--max-minutes", "0"])
    assert args.clients == [1000] and args.repeat == 1 and args.max_minutes == 0
    quick = bench.parse_args(["--quick"])
    assert quick.max_minutes == 0 and quick.deliveries == 2_000_000


def test_fastapi_servers_are_registered_and_in_the_full_pass():
    full = bench.parse_args(["--full"]).servers
    for name, protocol in (("roomcast-fastapi", "roomcast"), ("roomcast-fastapi-py", "uvicorn")):
        assert name in full and name in bench.ROOMCAST_SERVERS
        assert {"fastapi", "uvicorn", "starlette"} <= set(bench.SERVERS[name][2])
        cmd, env = bench.server_command(name, 4321)
        assert Path(cmd[1]).name == "roomcast_fastapi_chat.py" and cmd[2:] == ["4321", protocol]
        assert str(REPO / "python") in env["PYTHONPATH"].split(os.pathsep)
    cmd, env = bench.server_command("websocket_rooms", 4321)
    assert cmd[2:] == ["4321"]


def result(server, scenario, clients, dps, cpu, loadgen=0.5, status="ok"):
    r = {
        "server": server,
        "scenario": scenario,
        "clients": clients,
        "size": 64,
        "window": 64 if scenario == "burst" else 1,
        "status": status,
    }
    if status == "ok":
        r.update(
            deliveries_per_sec=dps,
            server_cpu_us_per_delivery=cpu,
            loadgen_busy=loadgen,
            loadgen_limited=loadgen > report.LOADGEN_LIMIT,
            latency_us={"p50": 1000, "p99": 2000, "p999": 3000, "max": 4000},
            sent=100,
            repeats=1,
            repeats_ok=1,
            connect_seconds_median=0.5,
            server_busy=1.0,
        )
    else:
        r["error"] = "lost 3 messages"
    return r


def fastapi_doc(results):
    return {
        "started": "2026-12-06T10:00:00",
        "command": "python3 benchmarks/run.py --fastapi",
        "machine": {
            "cpu_model": "x",
            "cpus": 2,
            "os": "x",
            "kernel": "x",
            "python": "3.11",
            "gcc": "gcc",
            "libuv": "1",
            "libwslay": "1",
            "libraries": {},
        },
        "settings": {
            "mode": "fastapi",
            "servers": ["roomcast", "roomcast-fastapi", "roomcast-fastapi-py", "websocket_rooms"],
            "repeat": 1,
            "deliveries": 2_000_000,
            "seconds": 3.0,
            "budget": 90.0,
        },
        "runs": [],
        "results": results,
    }


def by_target(ratios):
    return {(t["scenario"], t["peer"], t["clients"]): t for t in ratios}


def test_fastapi_ratios_are_computed_and_judged():
    doc = fastapi_doc(
        [
            result("roomcast", "burst", 1000, 10_000_000, 0.2),
            result("roomcast-fastapi", "burst", 1000, 9_000_000, 0.22),
            result("websocket_rooms", "burst", 1000, 60_000, 16.0),
            result("roomcast", "single", 1000, 200_000, 3.0),
            result("roomcast-fastapi", "single", 1000, 150_000, 4.0),
            # N=10,000: fast enough against websocket_rooms, too slow
            # against roomcast's Server; single not measured
            result("roomcast", "burst", 10000, 4_000_000, 0.25),
            result("roomcast-fastapi", "burst", 10000, 3_000_000, 0.3),
            result("websocket_rooms", "burst", 10000, 50_000, 18.0),
            result("roomcast-fastapi", "single", 10000, 0, 0, status="failed"),
        ]
    )
    t = by_target(report.fastapi_ratios(doc))
    assert len(t) == 6
    burst = t[("burst", "roomcast", 1000)]
    assert burst["ratio"] == pytest.approx(0.9) and burst["met"] and burst["bound"] is None and burst["certain"]
    assert t[("burst", "websocket_rooms", 1000)]["ratio"] == pytest.approx(150)
    assert t[("burst", "websocket_rooms", 1000)]["met"]
    single = t[("single", "roomcast", 1000)]
    assert single["ratio"] == pytest.approx(4 / 3) and single["met"] is False
    assert (
        t[("burst", "roomcast", 10000)]["ratio"] == pytest.approx(0.75)
        and t[("burst", "roomcast", 10000)]["met"] is False
    )
    assert t[("burst", "websocket_rooms", 10000)]["met"]
    missing = t[("single", "roomcast", 10000)]
    assert missing["met"] is None and missing["missing"] == "roomcast-fastapi"

    md = report.markdown(doc)
    assert "## FastAPI rows" in md
    assert "## Targets of the issue" not in md  # the fan-out targets' peers did not run
    line = next(x for x in md.splitlines() if "N=1,000: roomcast-fastapi server CPU per delivery" in x)
    assert "1.33×" in line and "**missed**" in line and "loadgen 50%, 50% of its core" in line
    line = next(x for x in md.splitlines() if "N=1,000: roomcast-fastapi ≥ 0.8× roomcast's own Server" in x)
    assert "0.90×" in line and "| met |" in line
    line = next(x for x in md.splitlines() if "N=10,000: roomcast-fastapi server CPU" in x)
    assert "not measured" in line


def test_fastapi_ratios_carry_the_load_generators_bound():
    """Above 80% of its core the load generator may have set the pace: a
    burst ratio is then a bound, and a verdict that the bound could turn is
    marked."""
    doc = fastapi_doc(
        [
            # the server's run is limited: the ratio is at least 0.7, which
            # is not enough to say the 0.8 target is missed
            result("roomcast", "burst", 1000, 10_000_000, 0.2),
            result("roomcast-fastapi", "burst", 1000, 7_000_000, 0.2, loadgen=0.9),
            # both runs are limited: 200x is a bound either way, so even a
            # met 50x target is not certain
            result("websocket_rooms", "burst", 1000, 35_000, 16.0, loadgen=0.85),
            result("roomcast", "single", 1000, 200_000, 3.0, loadgen=0.95),
            result("roomcast-fastapi", "single", 1000, 200_000, 3.3),
        ]
    )
    t = by_target(report.fastapi_ratios(doc))
    own = t[("burst", "roomcast", 1000)]
    assert own["bound"] == "lower" and own["met"] is False and not own["certain"]
    peer = t[("burst", "websocket_rooms", 1000)]
    assert peer["bound"] == "unknown" and not peer["certain"]
    single = t[("single", "roomcast", 1000)]
    assert single["bound"] == "unknown" and single["met"] and not single["certain"]
    md = report.markdown(doc)
    line = next(x for x in md.splitlines() if "N=1,000: roomcast-fastapi ≥ 0.8×" in x)
    assert f"≥ 0.70× {report.MARK}" in line and f"**missed** {report.MARK}" in line and "loadgen 90%, 50%" in line
    # the side-by-side table marks the limited rows' deliveries/s as bounds
    row = next(x for x in md.splitlines() if x.startswith("| 1,000 | roomcast-fastapi |"))
    assert f"≥ 7,000,000 {report.MARK}" in row and "90%" in row


def test_fastapi_cpu_target_takes_the_median_cpu_run():
    """The table's row is the run with the median deliveries/s; the CPU
    target compares each server's run with the median CPU per delivery,
    and says of how many runs."""
    rows = [
        result("roomcast", "single", 10000, 120_000, 6.2),
        result("roomcast-fastapi", "single", 10000, 100_000, 7.8),
    ]
    doc = fastapi_doc(rows)
    cpu = {"roomcast": [6.2, 6.8, 6.4], "roomcast-fastapi": [7.8, 4.9, 6.9]}
    doc["runs"] = [
        {**result(server, "single", 10000, 100_000, value, loadgen=0.4 + i / 10), "repeat": i + 1}
        for server, values in cpu.items()
        for i, value in enumerate(values)
    ]
    doc["runs"].append({**result("roomcast", "single", 10000, 0, 0, status="failed"), "repeat": 4})
    t = by_target(report.fastapi_ratios(doc))[("single", "roomcast", 10000)]
    assert t["mine"] == 6.9 and t["theirs"] == 6.4 and t["runs"] == [3, 3]
    assert t["ratio"] == pytest.approx(6.9 / 6.4) and t["met"]
    assert t["loadgen"] == pytest.approx([0.6, 0.6])  # the shares of those two runs
    line = next(x for x in report.markdown(doc).splitlines() if "N=10,000: roomcast-fastapi server CPU" in x)
    assert "1.08×" in line and "the median of 3 and 3 runs" in line and "| met |" in line
