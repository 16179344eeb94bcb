"""No thread or descriptor outlives the clients: counted in /proc/self/fd,
/proc/self/task (native threads, the core's loop thread among them) and
threading.enumerate(), before and after many connections of both clients,
failed ones included."""

import asyncio
import os
import subprocess
import sys
import threading

import roomcast
from roomcast import WebSocket
from support.clientpeers import RawServer, T, read_request, wait_until
from support.wsraw import ServerThread, echo_server


def counts():
    return (
        len(os.listdir("/proc/self/fd")),
        len(os.listdir("/proc/self/task")),
        sorted(t.name for t in threading.enumerate()),
    )


def client_threads():
    return [t for t in threading.enumerate() if t.name == "roomcast-client"]


async def async_round(url, n):
    conns = [await roomcast.connect(url) for _ in range(n)]
    for i, ws in enumerate(conns):
        await ws.send(f"a{i}")
    for i, ws in enumerate(conns):
        assert await asyncio.wait_for(ws.recv(), T) == f"a{i}"
    for ws in conns:
        await ws.close()
    try:
        await roomcast.connect("ws://127.0.0.1:1/")
    except roomcast.ConnectionFailed:
        pass


def test_no_thread_or_descriptor_is_left_after_close():
    """In a fresh interpreter: the process-wide client core stops only when
    the last client of the process has gone, so in the suite's process the
    outcome would hang on every earlier test's clients."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", "import test_client_leaks as t; t.no_thread_or_descriptor_is_left_after_close()"],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=10 * T,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def no_thread_or_descriptor_is_left_after_close():
    def silent(sock, reader):  # a server that accepts and never answers
        read_request(reader)
        sock.recv(1)

    with ServerThread(echo_server()) as srv, RawServer(silent) as raw:
        url = f"ws://127.0.0.1:{srv.port}/echo"
        # Warm up: libuv's thread pool (which runs getaddrinfo) is made
        # once per process and stays; everything else must go.
        with WebSocket(url) as ws:
            ws.send("warm")
            assert ws.recv(T) == "warm"
        wait_until(lambda: not client_threads(), what="the client core to stop")
        before = counts()
        for _ in range(3):
            clients = [WebSocket(url) for _ in range(10)]
            for ws in clients:
                ws.wait_open(T)
            # However many connections, one core and one dispatcher thread.
            assert len(client_threads()) == 1
            for i, ws in enumerate(clients):
                ws.send(f"s{i}")
                assert ws.recv(T) == f"s{i}"
            failing = [WebSocket("ws://127.0.0.1:1/") for _ in range(5)]
            failing.append(WebSocket(raw.url, open_timeout=0.3))
            for ws in clients:
                ws.close()
            for ws in clients + failing:
                ws.wait_closed(T)
            asyncio.run(async_round(url, 10))
        wait_until(lambda: counts() == before, what=f"counts back to {before} (now {counts()})")
        assert not client_threads()
