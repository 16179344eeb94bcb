"""roomcast.compat.pyn: pyn's WebSocket API on roomcast, over real sockets
with the websockets library as the client. The README's examples run as
their users run them, in a subprocess."""

import asyncio
import contextlib
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from roomcast.compat import pyn

T = 60  # hang guard only: starting Python on a loaded machine can be slow


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), T)


async def rest(ws):
    """Every message still to come until the server closes the connection."""
    messages = []
    with contextlib.suppress(ConnectionClosedError):  # a close code other than 1000/1001
        async for message in ws:
            messages.append(message)
    return messages


class Serving:
    """``await ws.serve(port=0)`` in a task, for the length of the block."""

    def __init__(self, service):
        self.service = service

    async def __aenter__(self):
        self.task = asyncio.create_task(self.service.serve(port=0, host="127.0.0.1"))
        for _ in range(T * 100):
            if self.service.port or self.task.done():
                break
            await asyncio.sleep(0.01)
        if self.task.done():
            await self.task  # raises what made it fail
        self.url = f"ws://127.0.0.1:{self.service.port}/"
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


# -- the README examples, run as programs ----------------------------------------


async def test_readme_example_echoes_to_the_sender_only(examples):
    example = await examples("pyn_readme.py", "0")
    url = f"ws://127.0.0.1:{example.port}/"
    async with connect(url) as a, connect(url) as b:
        await a.send("from a")
        await b.send("from b")
        assert await recv(a) == "from a"
        assert await recv(b) == "from b"
        async with connect(url) as c:
            await c.send("from c")
            assert await recv(c) == "from c"
        await example.wait_for_line(r"^Connection closed$", "stdout")
        assert await example.stop(signal.SIGINT) == 0
        assert await rest(a) == [] and await rest(b) == []
        assert a.close_code == 1001


async def test_guide_example_relays_to_everyone_and_replays_history(examples):
    example = await examples("pyn_chat.py", "0")
    url = f"ws://127.0.0.1:{example.port}/"
    async with connect(url) as a, connect(url) as b:
        await a.send("one")
        assert await recv(a) == "one" and await recv(b) == "one"
        await b.send("two")
        assert await recv(a) == "two" and await recv(b) == "two"
        async with connect(url) as late:
            assert await recv(late) == "one"  # the init handler replays to it only
            assert await recv(late) == "two"
            await late.send("three")
            for ws in (a, b, late):
                assert await recv(ws) == "three"
        await example.wait_for_line(r"^Connection closed$", "stdout")
        assert await example.stop(signal.SIGTERM) == 0
        assert await rest(a) == [] and await rest(b) == []


# -- send, send_all, send_except --------------------------------------------------


async def test_send_answers_the_connection_whose_handler_runs_when_clients_interleave():
    service = pyn.WebSocket()
    gates = {}

    @service.define("message")
    async def on_message(ws, message):
        verb, _, name = message.partition(":")
        gate = gates.setdefault(name, asyncio.Event())
        if verb == "wait":
            await ws.send(f"waiting {name}")
            await gate.wait()  # meanwhile other clients speak
            await ws.send(f"answer for {name}")
        elif verb == "open":
            gate.set()
            await ws.send(f"opened {name}")

    async with Serving(service) as s:
        async with connect(s.url) as a, connect(s.url) as b, connect(s.url) as c:
            await a.send("wait:a")
            assert await recv(a) == "waiting a"
            await b.send("wait:b")
            assert await recv(b) == "waiting b"
            await c.send("open:a")  # c spoke last, then a's handler goes on
            assert await recv(c) == "opened a"
            assert await recv(a) == "answer for a"
            await c.send("open:b")
            assert await recv(c) == "opened b"
            assert await recv(b) == "answer for b"


async def test_send_except_skips_the_sender_and_send_all_does_not():
    service = pyn.WebSocket()

    @service.define("message")
    async def on_message(ws, message):
        if message == "ping":
            await ws.send("pong")
        elif message.startswith("all "):
            await ws.send_all(message)
        else:
            await ws.send_except(message)

    async with Serving(service) as s:
        async with connect(s.url) as a, connect(s.url) as b, connect(s.url) as c:
            await a.send("hello others")
            assert await recv(b) == "hello others"
            assert await recv(c) == "hello others"
            await a.send("ping")
            assert await recv(a) == "pong"  # nothing came to a before its pong
            await b.send("all of us")
            for ws in (a, b, c):
                assert await recv(ws) == "all of us"


async def test_send_outside_a_handler_has_no_connection():
    service = pyn.WebSocket()
    with pytest.raises(RuntimeError, match="no current connection"):
        await service.send("to whom?")
    with pytest.raises(RuntimeError, match="no current connection"):
        await service.send_except("except whom?")


async def test_init_and_close_handlers_see_the_clients():
    service = pyn.WebSocket()
    seen = []
    closed = asyncio.Queue()

    @service.define("init")
    async def on_init(ws):
        seen.append(("init", len(ws.clients), ws.connection in ws.clients))
        await ws.send("welcome")

    @service.define("close")
    async def on_close(ws):
        seen.append(("close", len(ws.clients), ws.connection in ws.clients))
        await ws.send_all("someone left")
        closed.put_nowait(None)

    async with Serving(service) as s:
        async with connect(s.url) as a:
            assert await recv(a) == "welcome"
            async with connect(s.url) as b:
                assert await recv(b) == "welcome"
            assert await recv(a) == "someone left"
        for _ in range(2):
            await asyncio.wait_for(closed.get(), T)
    assert seen == [("init", 1, True), ("init", 2, True), ("close", 1, False), ("close", 0, False)]


# -- frames and failures --------------------------------------------------------------


async def test_binary_frames_are_read_as_utf8_text_and_bad_utf8_closes_1007():
    service = pyn.WebSocket()

    @service.define("message")
    async def on_message(ws, message):
        await ws.send(f"{type(message).__name__}:{message}")

    async with Serving(service) as s, connect(s.url + "any/path") as ws:
        await ws.send("café".encode())
        assert await recv(ws) == "str:café"
        await ws.send(b"\xff\xfe")
        assert await rest(ws) == []
        assert ws.close_code == 1007


async def test_a_failing_handler_closes_its_own_connection_only():
    service = pyn.WebSocket()

    @service.define("message")
    async def on_message(ws, message):
        if message == "boom":
            raise RuntimeError("handler bug")
        await ws.send(message)

    async with Serving(service) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await a.send("boom")
            assert await rest(a) == []
            assert a.close_code == 1011
            await b.send("still here")
            assert await recv(b) == "still here"


# -- serving ----------------------------------------------------------------------------


async def test_one_server_runs_several_services_on_their_own_ports():
    first, second = pyn.WebSocket(), pyn.WebSocket()

    @first.define("message")
    async def one(ws, message):
        await ws.send("first: " + message)

    @second.define("message")
    async def two(ws, message):
        await ws.send("second: " + message)

    server = pyn.Server(first, second)
    task = asyncio.create_task(server.serve({"port": 0}, {"port": 0, "host": "127.0.0.1"}))
    for _ in range(T * 100):
        if (first.port and second.port) or task.done():
            break
        await asyncio.sleep(0.01)
    assert first.port != second.port
    async with connect(f"ws://127.0.0.1:{first.port}/") as a, connect(f"ws://127.0.0.1:{second.port}/") as b:
        await a.send("x")
        await b.send("y")
        assert await recv(a) == "first: x"
        assert await recv(b) == "second: y"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await rest(a) == [] and await rest(b) == []
        assert a.close_code == 1001 and b.close_code == 1001


def test_server_takes_websocket_services_only():
    with pytest.raises(TypeError, match="Router"):
        pyn.Server(object())
    with pytest.raises(ValueError):
        pyn.WebSocket().define("open")
