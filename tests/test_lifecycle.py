"""Connections come and go without the server growing or falling over.

The server runs in its own process, so that its resident memory can be read
from /proc and a failure inside it cannot hide behind the test's own state.
"""

import os
import subprocess
import sys
import tempfile

import pytest

import roomcast
from support import wsraw
from support.wsraw import WSClient, handshake_request, http_exchange

SERVER_SOURCE = r"""
import asyncio
import sys

from roomcast import Room, Server

room = Room()


@room.on_receive("text")
async def echo(room, ws, msg):
    if msg == "boom":
        raise RuntimeError("handler failure requested by the test")
    await ws.send_text(msg)


async def main():
    server = Server()
    server.route("/echo", room)
    async with server.serve("127.0.0.1", 0) as running:
        print(running.port, flush=True)
        # Serve until the test closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
"""

WARM_UP = 200
CYCLES = 1000
RSS_GROWTH_LIMIT_KIB = 2048


class ServerProcess:
    def __init__(self):
        env = dict(os.environ)
        # The roomcast under test, wherever this run imports it from.
        pkg_parent = os.path.dirname(os.path.dirname(roomcast.__file__))
        env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in [env.get("PYTHONPATH")] if p])
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SOURCE],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("the server did not start: %r\n%s" % (line, self.log()))
        self.port = int(line)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(wsraw.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server():
    s = ServerProcess()
    yield s
    s.stop()
    s.stderr.close()


def echo_round_trip(port, text="ping"):
    with WSClient.connect(port, "/echo") as c:
        c.send_text(text)
        assert c.recv_text() == text
        c.send_close(1000)
        _, frame = c.recv_until_close()
        assert frame.close_code == 1000


def one_cycle(port, i):
    """One connection's life, ended in one of the ways a real client ends
    it, so that every path that frees a connection is taken."""
    kind = i % 4
    if kind == 0:  # echo, then the close handshake
        echo_round_trip(port, "m%d" % i)
    elif kind == 1:  # echo, then the TCP connection just goes away
        c = WSClient.connect(port, "/echo")
        c.send_text("m%d" % i)
        assert c.recv_text() == "m%d" % i
        c.close()
    elif kind == 2:  # a refused handshake
        resp = http_exchange(port, handshake_request("/echo", key=None))
        assert resp.status == 400
    else:  # half a handshake, then gone
        sock = wsraw.connect_socket(port)
        sock.sendall(handshake_request("/echo", key=wsraw.new_key())[:40])
        sock.close()


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer holds freed memory in quarantine: RSS grows"
)
def test_1000_connect_disconnect_cycles_do_not_grow_memory(server):
    for i in range(WARM_UP):
        one_cycle(server.port, i)
    echo_round_trip(server.port)
    before = server.rss_kib()
    for i in range(CYCLES):
        one_cycle(server.port, i)
    # In order on one loop: this answer comes after the cycles' cleanup.
    echo_round_trip(server.port)
    after = server.rss_kib()
    assert server.alive()
    assert after - before < RSS_GROWTH_LIMIT_KIB, (before, after)


def test_a_raising_handler_does_not_stop_the_server(server):
    with WSClient.connect(server.port, "/echo") as bystander:
        for _ in range(10):
            with WSClient.connect(server.port, "/echo") as c:
                c.send_text("boom")
                # Only the connection whose handler failed is closed.
                _, frame = c.recv_until_close()
                assert frame.close_code == 1011
            bystander.send_text("still here")
            assert bystander.recv_text() == "still here"
    echo_round_trip(server.port, "new client")
    assert server.alive()
    assert "handler failure requested by the test" in server.log()
