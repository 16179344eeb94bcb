"""roomcast.WebSocket, the synchronous client with the browser's API, over
real sockets: against the roomcast server, and against raw servers where a
test must control what the server does and when."""

import asyncio
import logging
import ssl
import threading
import time

import pytest

import roomcast
from roomcast import ConnectionClosed, InvalidStateError, Server, WebSocket
from support.clientpeers import (
    RawServer,
    T,
    accept,
    close_frame,
    read_client_frame,
    read_request,
    server_frame,
    wait_until,
)
from support.wsraw import OP_CLOSE, OP_TEXT, ServerThread, echo_server


class Recorder:
    """Sets every callback of ws; ``events`` holds (name, args), and
    ``threads`` the thread each callback ran on."""

    def __init__(self, ws: WebSocket) -> None:
        self.events: list = []
        self.threads: set = set()
        self.lock = threading.Lock()
        for name in ("onopen", "onmessage", "onerror", "onclose", "onreconnect"):
            setattr(ws, name, self._make(name))

    def _make(self, name):
        def callback(*args):
            with self.lock:
                self.events.append((name, args))
                self.threads.add(threading.current_thread().name)

        return callback

    def names(self) -> list:
        with self.lock:
            return [name for name, _ in self.events]

    def of(self, name) -> list:
        with self.lock:
            return [args for n, args in self.events if n == name]

    def wait(self, name, count=1):
        wait_until(lambda: len(self.of(name)) >= count, what=f"{count} x {name}")
        return self.of(name)


def test_browser_api_against_the_roomcast_server():
    with ServerThread(echo_server()) as srv:
        ws = WebSocket(f"ws://127.0.0.1:{srv.port}/echo?room=1", ["chat"])
        assert ws.readyState == WebSocket.CONNECTING == 0
        assert ws.url == f"ws://127.0.0.1:{srv.port}/echo?room=1"
        rec = Recorder(ws)
        rec.wait("onopen")
        assert ws.readyState == WebSocket.OPEN == 1
        assert ws.protocol == ""  # offered, but the server speaks none
        ws.send("héllo")
        ws.send(b"\x00\xffbinary")
        assert rec.wait("onmessage", 2) == [("héllo",), (b"\x00\xffbinary",)]
        ws.close(1000, "done")
        assert ws.readyState == WebSocket.CLOSING == 2
        ((code, reason),) = rec.wait("onclose")
        assert code == 1000
        assert ws.readyState == WebSocket.CLOSED == 3
        assert ws.close_code == 1000
        assert rec.names() == ["onopen", "onmessage", "onmessage", "onclose"]
        # Every callback ran on the one dispatcher thread.
        assert rec.threads == {"roomcast-client"}
        with pytest.raises(ConnectionClosed) as info:
            ws.send("too late")
        assert info.value.code == 1000


def test_closing_is_observable_until_the_server_answers():
    got_close = threading.Event()
    answer = threading.Event()

    def script(sock, reader):
        accept(sock, read_request(reader))
        frame = read_client_frame(reader)
        assert frame.opcode == OP_CLOSE and frame.masked
        got_close.set()
        assert answer.wait(T)  # the client waits in CLOSING meanwhile
        sock.sendall(close_frame(4001, "later"))
        reader.read_to_eof()

    with RawServer(script) as server:
        ws = WebSocket(server.url)
        rec = Recorder(ws)
        ws.wait_open(T)
        ws.close(4000, "bye")
        assert got_close.wait(T)
        assert ws.readyState == WebSocket.CLOSING
        # Nothing reaches the client until `answer`. A client that reported
        # the close before the server's answer would do so within a loop
        # turn of sending its frame; 0.3 s is hundreds of turns, and far
        # below the close timeout (5 s), the one timer that may end CLOSING.
        time.sleep(0.3)
        assert ws.readyState == WebSocket.CLOSING and rec.of("onclose") == []
        answer.set()
        assert rec.wait("onclose") == [(4001, "later")]
        assert ws.readyState == WebSocket.CLOSED
        server.check()


def test_send_before_open_raises_a_clear_error():
    release = threading.Event()

    def script(sock, reader):
        req = read_request(reader)
        release.wait(T)
        accept(sock, req)
        frame = read_client_frame(reader)
        sock.sendall(server_frame(OP_TEXT, frame.payload))
        read_client_frame(reader)  # the close
        sock.sendall(close_frame(1000))

    with RawServer(script) as server:
        ws = WebSocket(server.url)
        with pytest.raises(InvalidStateError, match="not open yet.*CONNECTING"):
            ws.send("early")
        assert isinstance(InvalidStateError("x"), ConnectionError)
        release.set()
        ws.wait_open(T)
        ws.send("now")
        assert ws.recv(T) == "now"
        ws.close()
        ws.wait_closed(T)
        server.check()


def test_recv_blocks_times_out_and_ends_with_the_close():
    timed_out = threading.Event()

    def script(sock, reader):
        accept(sock, read_request(reader))
        assert timed_out.wait(T)  # nothing to receive before the timeout
        sock.sendall(server_frame(OP_TEXT, b"one") + server_frame(OP_TEXT, b"two"))
        sock.sendall(close_frame(4002, "that was all"))
        read_client_frame(reader)

    with RawServer(script) as server:
        ws = WebSocket(server.url)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
        timed_out.set()
        assert ws.recv(T) == "one"  # waits for it
        assert ws.recv(T) == "two"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(T)
        assert (info.value.code, info.value.reason) == (4002, "that was all")
        assert ws.readyState == WebSocket.CLOSED
        server.check()


def test_a_server_that_answers_and_closes_at_once_is_opened_then_read():
    """The Autobahn fuzzing server's /getCaseCount: the 101, one message and
    the close in one segment. The connection did open, so ``with
    WebSocket(url)`` (wait_open) must not call it a failure however late
    the waiting thread wakes: the message is read, then the close. Ten
    times, since the race is between the waiting thread and the callbacks'."""

    def script(sock, reader):
        accept(sock, read_request(reader), extra=server_frame(OP_TEXT, b"301") + close_frame(1000, "done"))
        read_client_frame(reader)  # the close's answer

    for _ in range(10):
        with RawServer(script) as server:
            with WebSocket(server.url) as ws:
                assert ws.recv(T) == "301"
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(T)
                assert (info.value.code, info.value.reason) == (1000, "done")


def test_recv_refuses_when_it_could_never_return():
    with ServerThread(echo_server()) as srv:
        ws = WebSocket(f"ws://127.0.0.1:{srv.port}/echo")
        errors = []

        def onopen():
            try:
                ws.recv(1)
            except RuntimeError as exc:
                errors.append(str(exc))

        ws.onopen = onopen
        ws.wait_open(T)
        wait_until(lambda: errors)
        assert "roomcast-client thread" in errors[0]
        ws.onmessage = lambda m: None
        with pytest.raises(RuntimeError, match="onmessage"):
            ws.recv(1)
        ws.close()
        ws.wait_closed(T)


def test_a_subclass_overrides_the_callbacks():
    class Logic(WebSocket):
        def __init__(self, url):
            super().__init__(url)
            self.log = []

        def onopen(self):
            self.log.append("open")
            self.send("ping?")

        def onmessage(self, message):
            self.log.append(message)
            self.close()

        def onclose(self, code, reason):
            self.log.append(code)

    with ServerThread(echo_server()) as srv:
        ws = Logic(f"ws://127.0.0.1:{srv.port}/echo")
        ws.wait_closed(T)
        assert ws.log == ["open", "ping?", 1000]


def test_a_callback_that_raises_is_logged_and_the_others_still_run(caplog):
    with ServerThread(echo_server()) as srv:
        ws = WebSocket(f"ws://127.0.0.1:{srv.port}/echo")
        seen = []

        def onmessage(message):
            seen.append(message)
            if message == "boom":
                raise ValueError("handler bug")

        ws.onmessage = onmessage
        with caplog.at_level(logging.ERROR, logger="roomcast"):
            ws.wait_open(T)
            ws.send("boom")
            ws.send("after")
            wait_until(lambda: len(seen) == 2)
        assert seen == ["boom", "after"]
        assert any("onmessage" in r.getMessage() and r.exc_info for r in caplog.records)
        assert ws.readyState == WebSocket.OPEN
        ws.close()
        ws.wait_closed(T)


def test_a_thousand_messages_each_way_in_order():
    server = Server()
    received = []

    @server.websocket("/count")
    async def count(ws):
        await ws.accept()
        for _ in range(1000):
            received.append(await ws.receive_text())
        for i in range(1000):
            await ws.send_text(f"s{i}")
        await ws.close()

    with ServerThread(server) as srv:
        with WebSocket(f"ws://127.0.0.1:{srv.port}/count") as ws:
            for i in range(1000):
                ws.send(f"c{i}")
            got = [ws.recv(T) for _ in range(1000)]
            with pytest.raises(ConnectionClosed):
                ws.recv(T)
        assert received == [f"c{i}" for i in range(1000)]
        assert got == [f"s{i}" for i in range(1000)]


def test_buffered_amount_counts_what_the_server_has_not_taken():
    reading = threading.Event()
    total = []

    def script(sock, reader):
        accept(sock, read_request(reader))
        reading.wait(T)  # a server that does not read yet
        n = 0
        while True:
            frame = read_client_frame(reader)
            if frame.opcode == OP_CLOSE:
                break
            n += len(frame.payload)
        total.append(n)
        sock.sendall(close_frame(1000))

    with RawServer(script) as server:
        ws = WebSocket(server.url)
        ws.wait_open(T)
        assert ws.bufferedAmount == 0
        chunk = b"\x5a" * 2**20
        for _ in range(24):  # more than the kernel's buffers on both sides
            ws.send(chunk)
        wait_until(lambda: ws.bufferedAmount > 2**20, what="bytes held back")
        reading.set()
        wait_until(lambda: ws.bufferedAmount == 0, what="the queue to drain")
        ws.close()
        ws.wait_closed(T)
        assert total == [24 * 2**20]
        server.check()


async def test_works_inside_a_running_asyncio_loop():
    """As in a Jupyter kernel: the calling thread runs an asyncio loop,
    and the client neither needs nor disturbs it."""
    loop = asyncio.get_running_loop()
    assert loop.is_running()
    with ServerThread(echo_server()) as srv:
        with WebSocket(f"ws://127.0.0.1:{srv.port}/echo") as ws:
            ws.send("from inside a coroutine")
            assert ws.recv(T) == "from inside a coroutine"
        assert ws.readyState == WebSocket.CLOSED
    await asyncio.sleep(0)  # the loop still runs


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WebSocket("http://127.0.0.1/")
    with pytest.raises(ValueError, match="fragment"):
        WebSocket("ws://127.0.0.1/#top")
    with pytest.raises(ValueError, match="credentials"):
        WebSocket("ws://user:pw@127.0.0.1/")
    with pytest.raises(ValueError, match="port"):
        WebSocket("ws://127.0.0.1:99999/")
    with pytest.raises(ValueError, match="protocols="):
        WebSocket("ws://127.0.0.1:1/", headers={"Sec-WebSocket-Protocol": "x"})
    with pytest.raises(ValueError, match="invalid HTTP header"):
        WebSocket("ws://127.0.0.1:1/", headers={"X-Bad": "a\r\nInjected: 1"})
    with pytest.raises(ValueError, match="invalid subprotocol"):
        WebSocket("ws://127.0.0.1:1/", ["two words"])
    with pytest.raises(ValueError, match="wss://"):
        WebSocket("ws://127.0.0.1:1/", ssl=roomcast.TLS(verify=False))
    with pytest.raises(TypeError, match="SSLContext"):
        WebSocket("wss://127.0.0.1:1/", ssl=ssl.create_default_context())
    ws = WebSocket("ws://127.0.0.1:1/")
    with pytest.raises(ValueError, match="1005"):
        ws.close(1005)
    ws.wait_closed(T)
    assert ws.close_code == 1006 and ws.close_reason == "connection refused"
