"""roomcast.connect, the asyncio client: send, recv, async for, close, the
close code and reason, and events delivered to the loop in batches."""

import asyncio

import pytest

import roomcast
from roomcast import ConnectionClosed, ConnectionFailed, InvalidStateError, Server
from support.clientpeers import (
    RawServer,
    T,
    WebsocketsServer,
    accept,
    close_frame,
    read_client_frame,
    read_request,
    server_frame,
)
from support.wsraw import OP_TEXT, ServerThread, echo_server


async def test_send_recv_iterate_and_close():
    with ServerThread(echo_server()) as srv:
        async with roomcast.connect(f"ws://127.0.0.1:{srv.port}/echo") as ws:
            assert ws.state == 1
            await ws.send("text")
            await ws.send(bytearray(b"bytes"))
            assert await asyncio.wait_for(ws.recv(), T) == "text"
            assert await asyncio.wait_for(ws.recv(), T) == b"bytes"
            for i in range(3):
                await ws.send(str(i))
            seen = []
            async for message in ws:
                seen.append(message)
                if len(seen) == 3:
                    break
            assert seen == ["0", "1", "2"]
            assert ws.close_code is None
        assert ws.close_code == 1000 and ws.state == 3
        with pytest.raises(ConnectionClosed):
            await ws.send("after")
        with pytest.raises(ConnectionClosed):
            await ws.recv()


async def test_the_servers_close_code_and_reason_end_the_iteration():
    async def handler(ws):
        await ws.send("last words")
        await ws.close(4000, "bye now")

    with WebsocketsServer(handler) as server:
        ws = await roomcast.connect(server.url)
        messages = [m async for m in ws]
        assert messages == ["last words"]
        assert (ws.close_code, ws.close_reason) == (4000, "bye now")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert (info.value.code, info.value.reason) == (4000, "bye now")


async def test_a_connection_that_cannot_open_raises_with_the_reason():
    with pytest.raises(ConnectionFailed) as info:
        await roomcast.connect("ws://127.0.0.1:1/")
    assert info.value.reason == "connection refused"
    with pytest.raises(ConnectionFailed, match="cannot resolve no-such-host.invalid"):
        await roomcast.connect("ws://no-such-host.invalid/", open_timeout=20)


async def test_a_thousand_messages_each_way_in_order_against_websockets():
    received = []

    async def handler(ws):
        async for message in ws:
            received.append(message)
            if len(received) == 1000:
                break
        for i in range(1000):
            await ws.send(f"s{i}".encode())
        await ws.close()

    with WebsocketsServer(handler) as server:
        async with roomcast.connect(server.url) as ws:
            for i in range(1000):
                await ws.send(f"c{i}")
            got = [m async for m in ws]
        assert received == [f"c{i}" for i in range(1000)]
        assert got == [f"s{i}".encode() for i in range(1000)]


async def test_events_reach_the_loop_in_batches_not_one_wakeup_per_message():
    server = Server()

    @server.websocket("/burst")
    async def burst(ws):
        await ws.accept()
        await ws.receive_text()
        for i in range(2000):
            await ws.send_text(str(i))

    loop = asyncio.get_running_loop()
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counting(callback, *args, **kw):
        nonlocal wakeups
        wakeups += 1
        return original(callback, *args, **kw)

    with ServerThread(server) as srv:
        async with roomcast.connect(f"ws://127.0.0.1:{srv.port}/burst") as ws:
            loop.call_soon_threadsafe = counting
            try:
                await ws.send("go")
                got = [await asyncio.wait_for(ws.recv(), T) for _ in range(2000)]
            finally:
                del loop.call_soon_threadsafe
        assert got == [str(i) for i in range(2000)]
        # 2000 messages; the core hands them over a read at a time.
        print(f"2000 messages, {wakeups} wake-ups of the loop")
        assert 1 <= wakeups <= 200, wakeups


async def test_send_while_not_open_and_concurrent_recv():
    with ServerThread(echo_server()) as srv:
        ws = await roomcast.connect(f"ws://127.0.0.1:{srv.port}/echo")
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)  # one loop turn: `first` waits in recv()
        with pytest.raises(RuntimeError, match="already waiting"):
            await ws.recv()
        await ws.send("x")
        assert await asyncio.wait_for(first, T) == "x"
        await ws.close()
        with pytest.raises(ConnectionClosed):
            await ws.send("y")
    assert issubclass(InvalidStateError, ConnectionError)


async def test_a_server_that_answers_and_closes_at_once_is_opened_then_read():
    """The 101, one message and the close in one segment (the Autobahn
    fuzzing server's /getCaseCount): connect() opens, the message is read,
    then the close."""

    def script(sock, reader):
        accept(sock, read_request(reader), extra=server_frame(OP_TEXT, b"301") + close_frame(1000, "done"))
        read_client_frame(reader)  # the close's answer

    for _ in range(10):
        with RawServer(script) as server:
            async with roomcast.connect(server.url) as ws:
                assert await asyncio.wait_for(ws.recv(), T) == "301"
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), T)
                assert (info.value.code, info.value.reason) == (1000, "done")
