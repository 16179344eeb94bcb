"""The examples run as their users run them: ``python examples/X.py`` in a
subprocess on a free port, exercised by a client, stopped by a signal."""

import asyncio
import json
import os
import re
import signal
import ssl
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.clientpeers import make_certificate
from support.example_proc import EXAMPLES, REPO

T = 60  # seconds; starting Python on a loaded machine can be slow


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), T)


async def close_of(ws):
    await asyncio.wait_for(ws.wait_closed(), T)
    return ws.close_code


async def test_websocket_rooms_basic_example(examples):
    example = await examples("websocket_rooms_basic.py", env={"PORT": "0"})
    uri = f"ws://127.0.0.1:{example.port}/chat"
    async with connect(uri) as a, connect(uri) as b:
        # Both have joined once the example has logged it twice.
        await example.wait_for_line(r"127\.0\.0\.1 joined the chat room")
        await example.wait_for_line(r"127\.0\.0\.1 joined the chat room")
        await a.send(json.dumps({"user": "a", "text": "hello"}))
        for ws in (a, b):
            assert json.loads(await recv(ws)) == {"user": "a", "text": "hello"}
        await b.send("{}")  # falsy messages are delivered too
        for ws in (a, b):
            assert await recv(ws) == "{}"
        # SIGTERM: the clients are told the server is going away (1001).
        assert await example.stop(signal.SIGTERM) == 0
        assert await close_of(a) == 1001
        assert await close_of(b) == 1001


async def test_websocket_rooms_client_id_example(examples):
    example = await examples("websocket_rooms_client_id.py", "0")
    base = f"ws://127.0.0.1:{example.port}/chat"
    async with connect(f"{base}/42") as a:
        await example.wait_for_line(r"\b42 joined the chat room")
        async with connect(f"{base}/7") as b:
            await example.wait_for_line(r"\b7 joined the chat room")
            await b.send('{"from": 7}')
            for ws in (a, b):
                assert json.loads(await recv(ws)) == {"from": 7}
            # client_id: int in the endpoint's signature: not a number, no route.
            with pytest.raises(InvalidStatus) as info:
                await connect(f"{base}/not-a-number")
            assert info.value.response.status_code == 404
            assert await example.stop(signal.SIGINT) == 0
            assert await close_of(a) == 1001
            assert await close_of(b) == 1001


async def test_chat_demo(examples):
    example = await examples("chat.py", "--port", "0", "--host", "127.0.0.1")
    port = example.port

    async def get(path):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        response = await asyncio.wait_for(reader.read(), T)
        writer.close()
        return response

    page = await get("/")
    assert page.startswith(b"HTTP/1.1 200")
    assert b"text/html" in page and b'<script src="/roomcast.js">' in page
    script = await get("/roomcast.js")
    assert script.startswith(b"HTTP/1.1 200")
    assert b"javascript" in script.split(b"\r\n\r\n")[0] and b"roomcast.connect" in script

    async def send(ws, event, payload):
        await ws.send(json.dumps({"event": event, "payload": payload}))

    async def event(ws):
        message = json.loads(await recv(ws))
        return message["event"], message["payload"]

    uri = f"ws://127.0.0.1:{port}/"
    async with connect(uri) as a:
        await send(a, "join", {"room": "lobby"})
        assert await event(a) == ("roomcast:joined", "lobby")
        assert await event(a) == ("presence", {"room": "lobby", "count": 1})
        async with connect(uri) as b:
            await send(b, "join", {"room": "lobby"})
            assert await event(b) == ("roomcast:joined", "lobby")
            for ws in (a, b):
                assert await event(ws) == ("presence", {"room": "lobby", "count": 2})
            # A room of its own: b is not in it, so it hears nothing from it.
            await send(a, "join", {"room": "side"})
            assert await event(a) == ("roomcast:joined", "side")
            assert await event(a) == ("presence", {"room": "side", "count": 1})
            await send(a, "say", {"room": "side", "name": "ann", "text": "only here"})
            assert await event(a) == ("message", {"room": "side", "name": "ann", "text": "only here"})
            # Not a member of "side": ignored (b's messages are handled in
            # order, so a's next message is b's second one).
            await send(b, "say", {"room": "side", "name": "bob", "text": "not a member"})
            await send(b, "say", {"room": "lobby", "name": "bob", "text": "hello"})
            for ws in (a, b):
                assert await event(ws) == ("message", {"room": "lobby", "name": "bob", "text": "hello"})
            await send(a, "say", [1, 2])  # valid JSON but not a chat message: ignored
            await send(a, "say", {"room": "lobby", "name": "ann", "text": "hi <b>all</b>"})
            for ws in (a, b):
                assert await event(ws) == ("message", {"room": "lobby", "name": "ann", "text": "hi <b>all</b>"})
        assert await event(a) == ("presence", {"room": "lobby", "count": 1})
        # Not an event: answered with an error, and the connection stays open.
        await a.send("not json")
        name, payload = await event(a)
        assert name == "error" and "not JSON" in payload["message"]
        await send(a, "leave", {"room": "side"})
        assert await event(a) == ("roomcast:left", "side")
    # A page that reconnects (after a restart) rejoins its rooms through the
    # app's on_rejoin, which takes them as joins: the counts come back; a
    # name the join check refuses (empty) is answered roomcast:left.
    async with connect(uri) as c:
        await send(c, "roomcast:rejoin", ["lobby", "  "])
        assert await event(c) == ("roomcast:joined", "lobby")
        assert await event(c) == ("presence", {"room": "lobby", "count": 1})
        assert await event(c) == ("roomcast:left", "  ")
    assert await example.stop(signal.SIGINT) == 0


async def test_echo_example_sends_each_message_back_as_it_came(examples):
    example = await examples("echo.py", "127.0.0.1", "0", listen_on="stdout")
    async with connect(f"ws://127.0.0.1:{example.port}/any/path", max_size=None) as ws:
        await ws.send("text stays text")
        assert await recv(ws) == "text stays text"
        await ws.send(b"\x00binary\xff")
        assert await recv(ws) == b"\x00binary\xff"
        big = bytes(range(256)) * 16384  # 4 MiB: past the default limit
        await ws.send(big)
        assert await recv(ws) == big
        assert await example.stop(signal.SIGINT) == 0
        assert await close_of(ws) == 1001


async def test_echo_example_with_relay_echoes_in_the_core_to_the_sender_alone(examples):
    example = await examples("echo.py", "--relay", "127.0.0.1", "0", listen_on="stdout")
    url = f"ws://127.0.0.1:{example.port}/relay"
    async with connect(url, max_size=None) as one, connect(url, max_size=None) as two:
        await one.send("from one")
        await two.send(b"\x00from two")
        assert await recv(one) == "from one"
        assert await recv(two) == b"\x00from two"
        big = bytes(range(256)) * 16384
        await one.send(big)
        assert await recv(one) == big
        await two.send("last")
        assert await recv(two) == "last"  # one's messages never reached two
        assert await example.stop(signal.SIGINT) == 0
        assert await close_of(one) == 1001


async def test_echo_example_with_a_certificate_echoes_over_wss(examples, tmp_path):
    cert, key = make_certificate(str(tmp_path), "echo", "DNS:localhost,IP:127.0.0.1")
    args = ("--certfile", cert, "--keyfile", key, "127.0.0.1", "0")
    example = await examples("echo.py", *args, listen_on="stdout")
    assert example.log[-1].startswith("listening on wss://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=cert)
    url = f"wss://127.0.0.1:{example.port}/tls"
    async with connect(url, ssl=trusting, max_size=None) as ws:
        await ws.send("over tls")
        assert await recv(ws) == "over tls"
        big = bytes(range(256)) * 16384  # 4 MiB: many TLS records each way
        await ws.send(big)
        assert await recv(ws) == big
        version = ws.transport.get_extra_info("ssl_object").version()
        assert await example.stop(signal.SIGINT) == 0
        assert await close_of(ws) == 1001
    # When stopped it says what its connections negotiated: this one's version.
    expected = {"TLSv1.2": "1.2", "TLSv1.3": "1.3"}[version]
    assert re.search(rf"^tls: {re.escape(expected)} 0x[0-9a-f]{{4}} on 1 connections$", example.log[-1], re.MULTILINE)


async def test_echo_example_refuses_a_key_that_is_not_one(tmp_path):
    cert, _ = make_certificate(str(tmp_path), "echo", "DNS:localhost")
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("not a key\n")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "python")]))
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "echo.py"),
        *("--certfile", cert, "--keyfile", str(not_a_key), "127.0.0.1", "0"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), T)
    # Said at once, naming the option and the file; nothing listens.
    assert proc.returncode == 2
    assert f"ssl_keyfile {not_a_key}" in err.decode()
    assert b"listening" not in out
