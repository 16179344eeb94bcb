"""The WebSocket and Server API: handshake decisions, request data, sending
and receiving, routing, static files, shutdown. Real sockets on 127.0.0.1;
the ``websockets`` client, or a raw socket where exact bytes matter."""

import asyncio
import logging
import os

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import Room, Server, ServerWebSocket, WebSocketClosed, WebSocketDisconnect

T = 30  # seconds; a generous bound on any single wait


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), T)


async def close_of(ws):
    await asyncio.wait_for(ws.wait_closed(), T)
    return ws.close_code, ws.close_reason


async def status_of(uri, **kwargs):
    """The HTTP status with which the server refuses the upgrade."""
    with pytest.raises(InvalidStatus) as info:
        await connect(uri, **kwargs)
    return info.value.response.status_code


async def http(port, target, method="GET"):
    """Sends one plain HTTP request with exactly this target; returns
    (status, headers with lower-case names, body). The server closes the
    connection after answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), T)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- handshake -------------------------------------------------------------------


async def test_accept_with_subprotocol_and_extra_headers():
    server = Server()

    @server.websocket("/ws")
    async def endpoint(websocket):
        offered = [p.strip() for p in websocket.headers["Sec-WebSocket-Protocol"].split(",")]
        await websocket.accept(subprotocol=offered[-1], headers=[("X-Room", "lobby"), (b"X-Bytes", b"yes")])
        await websocket.send_text("hi")

    async with server.serve("127.0.0.1", 0) as running:
        uri = f"ws://127.0.0.1:{running.port}/ws"
        async with connect(uri, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["X-Room"] == "lobby"
            assert ws.response.headers["X-Bytes"] == "yes"
            assert await recv(ws) == "hi"


async def _close_before_accept(ws):
    await ws.close()


async def _return_without_accept(ws):
    pass


async def _raise_before_accept(ws):
    raise RuntimeError("endpoint failure for the test")


@pytest.mark.parametrize(
    "endpoint, status, logged",
    [
        (_close_before_accept, 403, False),
        (_return_without_accept, 403, False),
        (_raise_before_accept, 500, True),
    ],
)
async def test_endpoint_that_does_not_accept(endpoint, status, logged, caplog):
    server = Server()
    server.websocket("/ws")(endpoint)

    @server.websocket("/ok")
    async def ok(websocket):
        await websocket.accept()
        await websocket.send_text("still serving")

    async with server.serve("127.0.0.1", 0) as running:
        assert await status_of(f"ws://127.0.0.1:{running.port}/ws") == status
        async with connect(f"ws://127.0.0.1:{running.port}/ok") as ws:
            assert await recv(ws) == "still serving"
    errors = [r for r in caplog.records if r.name == "roomcast" and r.levelno >= logging.ERROR]
    assert len(errors) == (1 if logged else 0)


async def _return_after_accept(ws):
    await ws.accept()
    await ws.send_text("bye")


async def _raise_after_accept(ws):
    await ws.accept()
    await ws.send_text("bye")
    raise RuntimeError("endpoint failure for the test")


async def _close_with_code(ws):
    await ws.accept()
    await ws.send_text("bye")
    await ws.close(4321, "done here")


@pytest.mark.parametrize(
    "endpoint, code, reason, logged",
    [
        (_return_after_accept, 1000, "", False),
        (_raise_after_accept, 1011, None, True),
        (_close_with_code, 4321, "done here", False),
    ],
)
async def test_how_an_accepted_endpoint_ends_decides_the_close(endpoint, code, reason, logged, caplog):
    server = Server()
    server.websocket("/ws")(endpoint)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/ws") as ws:
            assert await recv(ws) == "bye"
            got_code, got_reason = await close_of(ws)
    assert got_code == code
    if reason is not None:
        assert got_reason == reason
    errors = [r for r in caplog.records if r.name == "roomcast" and r.levelno >= logging.ERROR]
    assert len(errors) == (1 if logged else 0)


async def test_unknown_path_is_404():
    server = Server()

    @server.websocket("/chat")
    async def endpoint(websocket):
        await websocket.accept()

    async with server.serve("127.0.0.1", 0) as running:
        assert await status_of(f"ws://127.0.0.1:{running.port}/elsewhere") == 404
        assert await status_of(f"ws://127.0.0.1:{running.port}/chat/more") == 404


# -- request data ------------------------------------------------------------------


async def test_path_params_are_converted():
    server = Server()

    async def report(websocket, **values):
        await websocket.accept()
        await websocket.send_json({k: [v, type(v).__name__] for k, v in values.items()})

    @server.websocket("/items/{item_id:int}")
    async def item(websocket, item_id):
        await report(websocket, item_id=item_id, from_params=websocket.path_params["item_id"])

    @server.websocket("/users/{name}/{age}")
    async def user(websocket, age: int, name: str):
        await report(websocket, name=name, age=age)

    @server.websocket("/files/{rest:path}")
    async def files(websocket, rest):
        await report(websocket, rest=rest)

    async with server.serve("127.0.0.1", 0) as running:
        base = f"ws://127.0.0.1:{running.port}"

        async def get(path):
            async with connect(base + path) as ws:
                return await recv(ws)

        assert await get("/items/42") == '{"item_id":[42,"int"],"from_params":[42,"int"]}'
        assert await get("/users/j%C3%BCrgen/7") == '{"name":["jürgen","str"],"age":[7,"int"]}'
        assert await get("/files/a/b.txt") == '{"rest":["a/b.txt","str"]}'
        assert await status_of(base + "/items/forty-two") == 404  # {item_id:int}
        assert await status_of(base + "/users/bob/old") == 404  # age: int


def test_endpoint_parameter_missing_from_path_is_an_error():
    server = Server()
    with pytest.raises(TypeError):

        @server.websocket("/chat")
        async def endpoint(websocket, room_name):
            pass

    @server.websocket("/chat")  # a default makes it optional
    async def fine(websocket, room_name="lobby"):
        pass


async def test_query_params_headers_client_url_and_state():
    server = Server()
    seen = {}

    @server.websocket("/info")
    async def endpoint(websocket: ServerWebSocket):
        websocket.state.user = "ann"
        seen.update(
            a=websocket.query_params["a"],
            a_all=websocket.query_params.getlist("a"),
            b=websocket.query_params["b"],
            custom=websocket.headers["X-CUSTOM"],
            custom_lower=websocket.headers.get("x-custom"),
            missing=websocket.headers.get("x-missing"),
            client=websocket.client,
            path=websocket.url.path,
            query=websocket.url.query,
            url=str(websocket.url),
            user=websocket.state.user,
        )
        await websocket.accept()
        await websocket.send_text("done")

    async with server.serve("127.0.0.1", 0) as running:
        uri = f"ws://127.0.0.1:{running.port}/info?a=1&a=2&b=x%20y"
        async with connect(uri, additional_headers={"X-Custom": "value"}) as ws:
            assert await recv(ws) == "done"
            local_port = ws.local_address[1]
    assert seen["a"] == "2" and seen["a_all"] == ["1", "2"] and seen["b"] == "x y"
    assert seen["custom"] == seen["custom_lower"] == "value"
    assert seen["missing"] is None
    assert seen["client"] == ("127.0.0.1", local_port)
    assert seen["client"].host == "127.0.0.1" and seen["client"].port == local_port
    assert seen["path"] == "/info" and seen["query"] == "a=1&a=2&b=x%20y"
    assert seen["url"] == uri
    assert seen["user"] == "ann"


# -- sending and receiving -----------------------------------------------------------


async def test_send_and_receive_each_kind_then_disconnect():
    server = Server()
    outcome = asyncio.get_running_loop().create_future()

    @server.websocket("/echo")
    async def endpoint(websocket):
        with pytest.raises(RuntimeError):
            await websocket.receive_text()  # before accept
        with pytest.raises(RuntimeError):
            await websocket.send_text("too early")
        await websocket.accept()
        with pytest.raises(RuntimeError):
            await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.send_bytes(await websocket.receive_bytes())
        await websocket.send_json(await websocket.receive_json())
        await websocket.send_json(await websocket.receive_json(mode="binary"), mode="binary")
        with pytest.raises(TypeError):
            await websocket.receive_text()  # a binary frame
        assert await websocket.receive() == {"type": "websocket.receive", "text": "raw"}
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            disconnect = exc
        try:
            await websocket.send_text("to nobody")
        except WebSocketClosed as exc:
            closed = exc
        outcome.set_result((disconnect, closed))

    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/echo") as ws:
            await ws.send("")
            assert await recv(ws) == ""
            await ws.send(b"\x00\x01")
            assert await recv(ws) == b"\x00\x01"
            await ws.send('{"n": [1, 2]}')
            assert await recv(ws) == '{"n":[1,2]}'
            await ws.send(b'{"b": "\xc3\xa9"}')
            assert await recv(ws) == '{"b":"é"}'.encode()
            await ws.send(b"not text")
            await ws.send("raw")
            await ws.send("shout")
            assert await recv(ws) == "SHOUT"
            await ws.close(4001, "bye")
        disconnect, closed = await asyncio.wait_for(outcome, T)
    assert (disconnect.code, disconnect.reason) == (4001, "bye")
    assert isinstance(closed, WebSocketDisconnect)


async def test_a_slow_reader_gets_every_message_in_order():
    """The receive queue is bounded: the server stops reading from the
    client while the endpoint lags and reads again once it catches up;
    nothing is lost. Each message is larger than the bound, so every
    message pauses reading and only an emptied queue resumes it; and the
    total (48 MiB) is more than the core's read burst plus the kernel's
    socket buffers can hold, so without resuming this would never end."""
    server = Server(max_receive_queue=1000)
    may_read = asyncio.Event()
    messages = [f"{i:04d}" + "x" * (64 * 1024 - 4) for i in range(768)]

    @server.websocket("/slow")
    async def endpoint(websocket):
        await websocket.accept()
        await may_read.wait()
        received = [await websocket.receive_text() for _ in messages]
        await websocket.send_json(received == messages)

    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/slow") as ws:
            await ws.send(messages[0])
            may_read.set()
            for message in messages[1:]:
                await ws.send(message)
            assert await recv(ws) == "true"


# -- rooms at shutdown and serve() ------------------------------------------------


async def test_leaving_serve_closes_every_connection_with_1001(caplog):
    room = Room()
    ended = []

    @room.on_connection
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    @room.on_disconnect("after")
    async def left(room, websocket):
        await room.push_json({"members": len(room)})  # must not fail at shutdown

    server = Server()

    @server.websocket("/room")
    async def in_room(websocket):
        await room.connect(websocket)
        ended.append("room")

    @server.websocket("/plain")
    async def plain(websocket):
        await websocket.accept()
        await websocket.send_text("welcome")
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            ended.append("plain")

    async with server.serve("127.0.0.1", 0) as running:
        assert running.port != 0
        clients = []
        for path in ("/room", "/room", "/plain"):
            ws = await connect(f"ws://127.0.0.1:{running.port}{path}")
            assert await recv(ws) == "welcome"
            clients.append(ws)
    # serve() returned: every endpoint has finished and every client got 1001.
    assert sorted(ended) == ["plain", "room", "room"]
    for ws in clients:
        assert (await close_of(ws))[0] == 1001
    assert len(room) == 0
    assert not [r for r in caplog.records if r.name == "roomcast" and r.levelno >= logging.WARNING]

    # The same server can serve again, and the room works there too.
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/room") as ws:
            assert await recv(ws) == "welcome"
            await room.push_text("again")
            assert await recv(ws) == "again"


async def test_serve_refuses_a_port_in_use():
    server = Server()
    async with server.serve("127.0.0.1", 0) as running:
        with pytest.raises(OSError):
            async with Server().serve("127.0.0.1", running.port):
                pass


# -- plain HTTP ----------------------------------------------------------------------


@pytest.fixture
def site(tmp_path):
    public = tmp_path / "public"
    (public / "sub").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "app.js").write_text("console.log('hi');")
    (public / "sub" / "index.html").write_text("<h1>sub</h1>")
    (public / "big.bin").write_bytes(os.urandom(600 * 1024))
    (tmp_path / "secret.txt").write_text("top secret")
    (public / "link.txt").symlink_to(tmp_path / "secret.txt")
    return public


def static_server(public):
    server = Server()
    server.static("/", public)

    @server.websocket("/ws")
    async def endpoint(websocket):
        await websocket.accept()
        await websocket.send_text("ws")

    return server


async def test_static_files_are_served(site):
    async with static_server(site).serve("127.0.0.1", 0) as running:
        port = running.port
        status, headers, body = await http(port, "/")
        assert (status, body) == (200, b"<h1>home</h1>")
        assert headers["content-type"] == "text/html; charset=utf-8"
        status, headers, body = await http(port, "/app.js")
        assert status == 200 and "javascript" in headers["content-type"]
        assert body == b"console.log('hi');"
        status, headers, body = await http(port, "/app.js", method="HEAD")
        assert (status, body) == (200, b"")
        assert headers["content-length"] == str(len("console.log('hi');"))
        status, headers, _ = await http(port, "/sub")
        assert status == 301 and headers["location"] == "/sub/"
        assert (await http(port, "/sub/"))[::2] == (200, b"<h1>sub</h1>")
        status, _, body = await http(port, "/big.bin")  # read off the event loop
        assert status == 200 and body == (site / "big.bin").read_bytes()
        assert (await http(port, "/missing.html"))[0] == 404
        # The websocket route still upgrades; a plain GET to it gets 426.
        status, headers, _ = await http(port, "/ws")
        assert status == 426 and headers["upgrade"].lower() == "websocket"
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            assert await recv(ws) == "ws"


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/link.txt",
        "/%00/../secret.txt",
    ],
)
async def test_static_files_cannot_escape_their_directory(site, target):
    async with static_server(site).serve("127.0.0.1", 0) as running:
        status, _, body = await http(running.port, target)
    assert status in (400, 404)
    assert b"top secret" not in body


@pytest.mark.parametrize(
    "prefix, target, location",
    [
        ("/", "//evil.example", "/evil.example/"),
        ("/", "///evil.example", "/evil.example/"),
        ("/", "/.//evil.example", "/evil.example/"),
        ("/", "//evil.example/./", None),  # a slash at the end: served
        ("/", "/sub/..%2f/evil.example", 404),
        ("/static", "/static//evil.example", "/static/evil.example/"),
        ("/", "/odd%20name", "/odd%20name/"),
    ],
)
async def test_static_redirect_stays_on_this_host(site, prefix, target, location):
    """Issue 12, item 15: a directory named like a host, asked for as
    "//evil.example", was redirected to the protocol-relative
    "//evil.example/", which a browser follows to that host. The Location
    is the directory's own path, built from its decoded segments."""
    (site / "evil.example").mkdir()
    (site / "evil.example" / "index.html").write_text("dir")
    (site / "odd name").mkdir()
    server = Server()
    server.static(prefix, site)
    async with server.serve("127.0.0.1", 0) as running:
        status, headers, body = await http(running.port, target)
    if location is None:
        assert (status, body) == (200, b"dir")
    elif location == 404:
        assert status == 404
    else:
        assert (status, headers["location"]) == (301, location)


async def test_plain_request_outside_static_prefix_is_404_or_426(site):
    server = Server()
    server.static("/static", site)

    @server.websocket("/chat/{room}")
    async def endpoint(websocket, room):
        await websocket.accept()

    async with server.serve("127.0.0.1", 0) as running:
        assert (await http(running.port, "/static/app.js"))[0] == 200
        assert (await http(running.port, "/static"))[0] == 301
        assert (await http(running.port, "/elsewhere"))[0] == 404
        assert (await http(running.port, "/staticky"))[0] == 404
        assert (await http(running.port, "/chat/lobby"))[0] == 426
