"""uvicorn serving FastAPI apps with roomcast's WebSocket protocol
(``--ws roomcast.uvicorn:WebSocketProtocol``, issue 14): the app sees what
uvicorn's own implementations give it (scope, accept, refusals, close
codes), ``Room.connect`` with the Starlette websocket takes the C path
(fan-out, slow-consumer policy, named rooms on Redis), uvicorn's options
and shutdown are honoured, TLS falls back to uvicorn's own implementation.

Real uvicorn (in the test's loop, or as ``python -m uvicorn`` processes),
real clients: the ``websockets`` library and raw sockets (run in threads,
since the server shares the test's loop).
"""

import asyncio
import contextlib
import importlib.util
import json
import logging
import random
import signal
import socket
import struct
import subprocess
import uuid
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, WebSocket, WebSocketDisconnect, WebSocketException, status
from fastapi.responses import PlainTextResponse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import roomcast.uvicorn
from roomcast import Room
from support import wsraw
from support.polling import until
from support.uvicornproc import REPO, Uvicorn, UvicornProcess

T = 30  # a hang guard for one wait, never a speed check


async def recv(ws, timeout=T):
    return await asyncio.wait_for(ws.recv(), timeout)


def thread(fn, *args):
    """Runs a blocking raw-socket call off the loop that serves uvicorn."""
    return asyncio.wait_for(asyncio.to_thread(fn, *args), T)


# -- the loop and HTTP parser a test runs with -----------------------------------

STACKS = [
    pytest.param(("asyncio", "h11"), id="asyncio-h11"),
    pytest.param(("uvloop", "httptools"), id="uvloop-httptools"),
]


def run_on(stack, body):
    """Runs ``body(http)`` (a coroutine function taking uvicorn's ``http=``)
    on the event loop of ``stack``; skips when uvloop or httptools is not
    installed."""
    loop_kind, http = stack
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        pytest.importorskip("httptools")
        factory = uvloop.new_event_loop
    else:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(body(http), 120))


@pytest.fixture(autouse=True)
def fresh_configuration():
    """roomcast.uvicorn's options are module state: each test starts with
    none and leaves none."""
    saved = (dict(roomcast.uvicorn._configured), roomcast.uvicorn._configured_by)
    roomcast.uvicorn._configured.clear()
    roomcast.uvicorn._configured_by = None
    yield
    roomcast.uvicorn._configured.clear()
    roomcast.uvicorn._configured.update(saved[0])
    roomcast.uvicorn._configured_by = saved[1]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logged():
    """The records of the loggers uvicorn and roomcast log to, each once."""
    handler = Records()
    names = ("uvicorn.error", "roomcast")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def load_example(name):
    """A fresh copy of examples/NAME.py (its room is module state)."""
    spec = importlib.util.spec_from_file_location(f"_{name}_{uuid.uuid4().hex}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def echo_app():
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    return app


# -- 1. the websocket_rooms README examples ------------------------------------------


async def _chat(server, room, paths):
    """Clients on ``paths`` each send 20 JSON messages; every client gets
    every message, each sender's in order; returns the core's counters
    before and after."""
    clients = [await connect(server.url(path)) for path in paths]
    try:
        await until(lambda: len(room) == len(clients), what="every client in the room")
        before = server.stats()
        for i, ws in enumerate(clients):
            for k in range(20):
                await ws.send(json.dumps({"from": i, "k": k}))
        total = 20 * len(clients)
        for ws in clients:
            got = [json.loads(await recv(ws)) for _ in range(total)]
            for i in range(len(clients)):
                assert [m["k"] for m in got if m["from"] == i] == list(range(20))
        after = server.stats()
    finally:
        for ws in clients:
            await ws.close()
    await until(lambda: len(room) == 0, what="every client gone from the room")
    return before, after


@pytest.mark.parametrize("stack", STACKS)
def test_the_readme_basic_example_under_fastapi_takes_the_c_path(stack):
    async def body(http):
        example = load_example("websocket_rooms_basic")
        room = example.chat_room
        seen = []

        @room.on_disconnect("before")
        async def leaving(room, websocket):
            seen.append(type(websocket))

        app = FastAPI()

        @app.websocket("/chat")
        async def connect_websocket(websocket: WebSocket):
            await room.connect(websocket)

        async with Uvicorn(app, http=http) as server:
            before, after = await _chat(server, room, ["/chat"] * 3)
            # Handed to the core, and pushed by it: 60 messages to 3 members.
            assert after["adopted_total"] == 3
            assert after["deliveries"] - before["deliveries"] >= 60 * 3
            # The C path: no member had a Python sending task.
            assert not room._asgi
        assert seen == [WebSocket] * 3

    run_on(stack, body)


@pytest.mark.parametrize("stack", STACKS)
def test_the_readme_client_id_example_under_fastapi_takes_the_c_path(stack):
    async def body(http):
        example = load_example("websocket_rooms_client_id")
        room = example.chat_room
        seen = []

        @room.on_disconnect("before")
        async def leaving(room, websocket):
            seen.append((type(websocket), room.get_client_id(websocket)))

        app = FastAPI()

        @app.websocket("/chat/{client_id}")
        async def connect_websocket(websocket: WebSocket, client_id: int):
            await room.connect(websocket, client_id)

        async with Uvicorn(app, http=http) as server:
            before, after = await _chat(server, room, ["/chat/7", "/chat/8", "/chat/9"])
            assert after["adopted_total"] == 3
            assert after["deliveries"] - before["deliveries"] >= 60 * 3
            assert not room._asgi
        assert sorted(seen) == [(WebSocket, 7), (WebSocket, 8), (WebSocket, 9)]

    run_on(stack, body)


# -- 2. the scope ----------------------------------------------------------------------

SCOPE_REQUEST = (
    b"GET /items/caf%C3%A9%20x?q=1&q=2&e=%C3%A9 HTTP/1.1\r\n"
    b"Host: example.test\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Rep: one\r\n"
    b"X-Rep: two\r\n"
    b"Sec-WebSocket-Protocol: p1, p2\r\n"
    b"\r\n"
)
SCOPE_KEYS = (
    "type",
    "scheme",
    "http_version",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "subprotocols",
    "root_path",
    "state",
    "path_params",
)


def scope_app(record):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield {"token": "abc"}

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/items/{item_id}")
    async def item(websocket: WebSocket, item_id: str):
        scope = dict(websocket.scope)
        record.update({key: scope.get(key) for key in SCOPE_KEYS})
        record["client_host"] = scope["client"][0]
        record["server"] = scope["server"]
        await websocket.accept(subprotocol="p2")
        await websocket.send_text(item_id)
        await websocket.close()

    return app


def scope_exchange(port):
    sock = wsraw.connect_socket(port)
    with sock:
        sock.sendall(SCOPE_REQUEST)
        reader = wsraw.Reader(sock)
        response = wsraw.read_http_response(reader)
        client = wsraw.WSClient(sock, reader, response)
        return response, client.recv_text()


async def test_the_scope_is_the_one_uvicorns_own_implementation_gives():
    scopes = {}
    for ws in ("websockets-sansio", roomcast.uvicorn.WebSocketProtocol):
        record = {}
        async with Uvicorn(scope_app(record), ws=ws, root_path="/api", lifespan="on") as server:
            response, text = await thread(scope_exchange, server.port)
            assert response.status == 101
            assert response.header("sec-websocket-protocol") == "p2"
            assert text == "café x"
            assert record.pop("server") == ("127.0.0.1", server.port)
            if not isinstance(ws, str):
                assert server.stats()["adopted_total"] == 1
        scopes[ws if isinstance(ws, str) else "roomcast"] = record
    theirs, ours = scopes["websockets-sansio"], scopes["roomcast"]
    for key in theirs:
        assert ours[key] == theirs[key], key
    assert ours["path"] == "/api/items/café x"
    assert ours["root_path"] == "/api"
    assert ours["query_string"] == b"q=1&q=2&e=%C3%A9"
    assert ours["subprotocols"] == ["p1", "p2"]
    assert [v for k, v in ours["headers"] if k == b"x-rep"] == [b"one", b"two"]
    assert ours["state"] == {"token": "abc"}
    assert ours["client_host"] == "127.0.0.1"


# -- 3. refusing before accept -------------------------------------------------------


def refusing_app():
    app = FastAPI()

    async def user(websocket: WebSocket, token: str = ""):
        if token == "bad":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
        if token == "deny":
            await websocket.send_denial_response(PlainTextResponse("nope", status_code=401, headers={"x-why": "token"}))
            return None
        return token

    @app.websocket("/private")
    async def private(websocket: WebSocket, name: Annotated[str | None, Depends(user)]):
        if name is None:
            return
        await websocket.accept()
        await websocket.send_text(f"hello {name}")
        await websocket.close()

    return app


async def test_a_dependency_refuses_with_403_or_its_own_http_response():
    async with Uvicorn(refusing_app()) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url("/private?token=bad")):
                pass
        assert refused.value.response.status_code == 403

        with pytest.raises(InvalidStatus) as denied:
            async with connect(server.url("/private?token=deny")):
                pass
        response = denied.value.response
        assert response.status_code == 401
        assert response.body == b"nope"
        assert response.headers["x-why"] == "token"

        async with connect(server.url("/private?token=ann")) as ws:
            assert await recv(ws) == "hello ann"
            await asyncio.wait_for(ws.wait_closed(), T)
        assert server.stats()["adopted_total"] == 3


# -- 4. accept, close, the disconnect event, the send/receive helpers -----------------


def talking_app(disconnects):
    app = FastAPI()

    @app.websocket("/talk")
    async def talk(websocket: WebSocket):
        await websocket.accept(subprotocol="b", headers=[(b"x-extra", b"1")])
        data = await websocket.receive_json()
        await websocket.send_json({"echo": data})
        async for text in websocket.iter_text():
            if text == "binary now":
                break
            await websocket.send_text(text.upper())
        data = await websocket.receive_bytes()
        await websocket.send_bytes(data[::-1])
        await websocket.close(4001, "bye")

    @app.websocket("/wait")
    async def wait(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("ready")
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            disconnects.append((exc.code, exc.reason))

    @app.websocket("/raw")
    async def raw(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("ready")
        disconnects.append(await websocket.receive())

    return app


@pytest.mark.parametrize("stack", STACKS)
def test_accept_close_and_the_disconnect_event_as_uvicorn_gives_them(stack):
    async def body(http):
        disconnects = []
        async with Uvicorn(talking_app(disconnects), http=http) as server:
            async with connect(server.url("/talk"), subprotocols=["a", "b"]) as ws:
                assert ws.subprotocol == "b"
                assert ws.response.headers["x-extra"] == "1"
                await ws.send(json.dumps({"n": [1, 2]}))
                assert json.loads(await recv(ws)) == {"echo": {"n": [1, 2]}}
                for text in ("one", "two", "ünï"):
                    await ws.send(text)
                    assert await recv(ws) == text.upper()
                await ws.send("binary now")
                await ws.send(b"\x00\x01\xff")
                assert await recv(ws) == b"\xff\x01\x00"
                await asyncio.wait_for(ws.wait_closed(), T)
            assert (ws.close_code, ws.close_reason) == (4001, "bye")

            async with connect(server.url("/wait")) as ws:
                assert await recv(ws) == "ready"
                await ws.close(4002, "later")
            await until(lambda: disconnects, what="the app's WebSocketDisconnect")
            assert disconnects.pop() == (4002, "later")

            async with connect(server.url("/raw")) as ws:
                assert await recv(ws) == "ready"
                await ws.close(4003, "raw")
            await until(lambda: disconnects, what="the app's websocket.disconnect")
            assert disconnects.pop() == {"type": "websocket.disconnect", "code": 4003, "reason": "raw"}
            assert server.stats()["adopted_total"] == 3

    run_on(stack, body)


# -- 5. fan-out ------------------------------------------------------------------------


def room_app(room, path="/room"):
    app = FastAPI()

    @app.websocket(path)
    async def endpoint(websocket: WebSocket):
        await room.connect(websocket)

    return app


async def test_a_push_reaches_500_members_complete_and_in_order():
    room = Room()

    @room.on_receive("text")
    async def relay(room, websocket, text):
        await room.push_text(text)

    async with Uvicorn(room_app(room), backlog=1024) as server:
        clients = []
        try:
            for _ in range(10):
                clients += await asyncio.gather(*(connect(server.url("/room")) for _ in range(50)))
            await until(lambda: len(room) == 500, what="500 members")
            pusher = clients[0]
            for k in range(200):
                await pusher.send(str(k))

            async def all_of(ws):
                return [await recv(ws) for _ in range(200)]

            received = await asyncio.gather(*(all_of(ws) for ws in clients))
            expected = [str(k) for k in range(200)]
            assert sum(got == expected for got in received) == 500
            stats = server.stats()
            assert stats["adopted_total"] == 500
            assert stats["deliveries"] >= 500 * 200
            assert not room._asgi
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))
        await until(lambda: len(room) == 0, what="the room emptied")


@pytest.mark.parametrize("deflate", [True, False])
async def test_ws_per_message_deflate_turns_compression_on_or_off(deflate):
    # uvicorn's flag reaches the core: with it, members that offer
    # permessage-deflate get it, and a push is compressed once for both.
    room = Room()
    update = json.dumps([{"symbol": f"S{i}", "price": 100 + i / 3, "side": "buy"} for i in range(30)])

    @room.on_receive("text")
    async def relay(room, websocket, text):
        await room.push_text(text)

    async with Uvicorn(room_app(room), ws_per_message_deflate=deflate) as server:
        a = await connect(server.url("/room"))
        b = await connect(server.url("/room"))
        try:
            for ws in (a, b):
                answer = ws.response.headers.get("Sec-WebSocket-Extensions")
                if deflate:
                    assert answer == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                else:
                    assert answer is None
            await until(lambda: len(room) == 2, what="2 members")
            await a.send(update)
            assert await recv(a) == update
            assert await recv(b) == update
            stats = server.stats()
            assert stats["deflate_connections"] == (2 if deflate else 0)
            assert stats["messages_deflated"] == (1 if deflate else 0)
            assert stats["messages_inflated"] == (1 if deflate else 0)
        finally:
            await asyncio.gather(a.close(), b.close())


# -- 6. a slow member ------------------------------------------------------------------

MESSAGE = 8 * 1024


def slow_member_frames(client):
    """What the member that stopped reading gets once it reads again:
    (data payloads, close code or "reset")."""
    payloads = []
    try:
        while True:
            frame = client.recv_frame()
            if frame.opcode == wsraw.OP_CLOSE:
                return payloads, frame.close_code
            if frame.opcode == wsraw.OP_BINARY:
                payloads.append(frame.payload)
    except (ConnectionResetError, EOFError):
        return payloads, "reset"


async def test_a_member_that_stops_reading_is_closed_with_1008_the_others_get_everything():
    roomcast.uvicorn.configure(max_queue_bytes=64 * 1024)
    room = Room()
    async with Uvicorn(room_app(room), sndbuf=16 * 1024) as server:
        readers = [await connect(server.url("/room"), max_size=None) for _ in range(3)]
        slow = await thread(lambda: wsraw.WSClient.connect(server.port, "/room", rcvbuf=4096))
        got = [[] for _ in readers]

        async def read(i, ws):
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    got[i].append(message)

        tasks = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(readers)]
        try:
            await until(lambda: len(room) == 4, what="4 members")
            messages = [struct.pack("!I", k) * (MESSAGE // 4) for k in range(400)]
            for n, message in enumerate(messages, 1):
                await room.push_bytes(message)
                # The readers keep up (they are never the slow ones).
                await until(lambda n=n: all(len(g) >= n for g in got), what=f"message {n} read")
            await until(lambda: len(room) == 3, what="the slow member gone")
            assert got == [messages] * 3
            assert server.stats()["slow_consumer_closes"] == 1
            payloads, code = await thread(slow_member_frames, slow)
            assert code in (1008, "reset")
            assert payloads == messages[: len(payloads)]
            assert len(payloads) < len(messages)
        finally:
            slow.close()
            for ws in readers:
                await ws.close()
            await asyncio.gather(*tasks)


# -- 7. two worker processes, one room on Redis ---------------------------------------


async def test_two_uvicorn_workers_share_a_named_room_through_redis(redis_server, tmp_path):
    server = UvicornProcess(
        "shared_room:app", "--workers", "2", env={"REDIS_URL": redis_server.url}, log_path=tmp_path / "uvicorn.log"
    )
    clients = []
    try:
        await server.wait_listening()
        pids = {}
        while len(set(pids.values())) < 2:
            assert len(clients) < 200, f"every client went to one worker: {server.output()}"
            ws = await connect(server.url("/room"))
            clients.append(ws)
            pids[ws] = json.loads(await recv(ws))["pid"]

        async def counted():
            await clients[0].send("count")
            return json.loads(await recv(clients[0]))["count"]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + T
        while await counted() != len(clients):
            assert loop.time() < deadline, "the members of both workers were never counted"
            await asyncio.sleep(0.1)

        await clients[-1].send("to everyone")
        for ws in clients:
            assert await recv(ws) == "to everyone"
    finally:
        for ws in clients:
            await ws.close()
        server.kill()


# -- 8. shutdown -----------------------------------------------------------------------


async def test_sigterm_closes_adopted_members_with_1001_and_uvicorn_exits_0(tmp_path):
    server = UvicornProcess("shared_room:app", log_path=tmp_path / "uvicorn.log")
    try:
        await server.wait_listening()
        clients = [await connect(server.url("/room")) for _ in range(5)]
        for ws in clients:
            assert "pid" in json.loads(await recv(ws))
        server.terminate()
        for ws in clients:
            await asyncio.wait_for(ws.wait_closed(), T)
            assert ws.close_code == 1001
        # uvicorn (0.29 and later) ends by raising the signal it handled
        # again, once its shutdown is complete: -SIGTERM, as with its own
        # websocket implementations; older ones exit 0.
        assert await server.wait() in (0, -signal.SIGTERM), server.output()
        assert "Finished server process" in server.output()
    finally:
        server.kill()


# -- 9. the first frame right behind the handshake -------------------------------------


def first_frame_at_once(port, one_write):
    sock = wsraw.connect_socket(port)
    with sock:
        key = wsraw.new_key()
        request = wsraw.handshake_request("/echo", key=key)
        frame = wsraw.encode_frame(wsraw.OP_TEXT, b"first")
        if one_write:
            sock.sendall(request + frame)
        else:
            sock.sendall(request)
        reader = wsraw.Reader(sock)
        head = reader.read_until(b"\r\n\r\n")
        if not one_write:
            sock.sendall(frame)
        assert head.startswith(b"HTTP/1.1 101 ")
        client = wsraw.WSClient(sock, reader, None)
        client.send_text("second")
        # The echoes come in order: "second"'s is the last one to wait for.
        texts = []
        while "second" not in texts:
            opcode, payload = client.recv_message()
            assert opcode != wsraw.OP_CLOSE, f"closed after {texts}"
            if opcode == wsraw.OP_TEXT:
                texts.append(payload.decode())
        return texts


DROPPED_BY_HTTPTOOLS = pytest.mark.xfail(
    strict=True,
    reason="uvicorn's httptools protocol drops the bytes behind the upgrade request before any ws protocol"
    " sees them (its own implementations lose the frame too)",
)


@pytest.mark.parametrize(
    ("stack", "one_write"),
    [
        pytest.param(("asyncio", "h11"), False, id="asyncio-h11-after-101"),
        pytest.param(("uvloop", "httptools"), False, id="uvloop-httptools-after-101"),
        # h11 keeps them (its trailing_data): nothing needs to be lost.
        pytest.param(("asyncio", "h11"), True, id="asyncio-h11-with-the-request"),
        pytest.param(("uvloop", "httptools"), True, id="uvloop-httptools-with-the-request", marks=DROPPED_BY_HTTPTOOLS),
    ],
)
def test_a_frame_sent_right_behind_the_handshake_is_not_lost(stack, one_write):
    async def body(http):
        async with Uvicorn(echo_app(), http=http) as server:
            assert await thread(first_frame_at_once, server.port, one_write) == ["first", "second"]

    run_on(stack, body)


# -- 10. TLS ---------------------------------------------------------------------------


def make_certificate(directory):
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_uvicorn_with_tls_falls_back_to_its_own_websockets_and_says_so_once(tmp_path, logged, monkeypatch):
    import ssl

    monkeypatch.setattr(roomcast.uvicorn, "_tls_logged", False)
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    async with Uvicorn(echo_app(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        for text in ("one", "two"):
            async with connect(server.url("/echo"), ssl=context) as ws:
                await ws.send(text)
                assert await recv(ws) == text
        assert server.adopter() is None  # nothing was handed to the core
    said = [r for r in logged.records if r.name == "uvicorn.error" and "TLS" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.WARNING


# -- 11. uvicorn's ws options ----------------------------------------------------------


async def test_ws_max_size_closes_a_larger_message_with_1009():
    async with Uvicorn(echo_app(), ws_max_size=1000) as server:
        async with connect(server.url("/echo")) as ws:
            await ws.send("x" * 900)
            assert await recv(ws) == "x" * 900
            await ws.send("y" * 2000)
            await asyncio.wait_for(ws.wait_closed(), T)
        assert ws.close_code == 1009


def never_pong(port):
    """Reads without answering pings: (pings seen, close code or "eof")."""
    with wsraw.WSClient.connect(port, "/echo") as client:
        pings = 0
        try:
            while True:
                frame = client.recv_frame()
                if frame.opcode == wsraw.OP_PING:
                    pings += 1
                elif frame.opcode == wsraw.OP_CLOSE:
                    return pings, frame.close_code
        except (EOFError, ConnectionResetError):
            return pings, "eof"


async def test_ws_ping_interval_and_timeout_close_a_client_that_never_answers():
    async with Uvicorn(echo_app(), ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
        pings, code = await thread(never_pong, server.port)
        assert pings >= 1
        assert code == 1011
        # A client that answers (websockets does) stays.
        async with connect(server.url("/echo")) as ws:
            await asyncio.sleep(1)
            await ws.send("alive")
            assert await recv(ws) == "alive"


# -- 12. clients that vanish -----------------------------------------------------------


@pytest.mark.parametrize("wait_for_the_core", [False, True], ids=["at-once", "after-the-core-saw-it"])
async def test_a_client_gone_before_accept_is_a_disconnect_for_the_app_and_leaks_nothing(logged, wait_for_the_core):
    entered = asyncio.Event()
    gate = asyncio.Event()
    outcome = []
    app = FastAPI()

    @app.websocket("/late")
    async def late(websocket: WebSocket):
        entered.set()
        await gate.wait()
        try:
            await websocket.accept()
            outcome.append(await websocket.receive())
        except WebSocketDisconnect as exc:
            outcome.append(("WebSocketDisconnect", exc.code))
        except OSError:
            # What uvicorn's websockets-sansio raises from accept() once the
            # client has gone (its ClientDisconnected, an OSError).
            outcome.append(("OSError", None))

    async with Uvicorn(app) as server:
        sock = await thread(wsraw.connect_socket, server.port)
        await thread(sock.sendall, wsraw.handshake_request("/late", key=wsraw.new_key()))
        await asyncio.wait_for(entered.wait(), T)
        sock.close()
        adopter = server.adopter()
        assert adopter is not None, "the connection was not handed to roomcast"
        if wait_for_the_core:
            await until(lambda: not adopter._protocols, what="the core reported the close")
        gate.set()
        await until(lambda: outcome, what="the app's end")
        assert outcome[0] in (
            ("WebSocketDisconnect", 1006),
            ("OSError", None),
            {"type": "websocket.disconnect", "code": 1006, "reason": ""},
        )
        await until(lambda: not adopter._protocols, what="the adopter's protocols empty")
        await until(lambda: not server.connections, what="uvicorn's connections empty")
    assert not [r for r in logged.records if r.levelno >= logging.ERROR]


def vanish(port, how, rng):
    sock = wsraw.connect_socket(port)
    try:
        request = wsraw.handshake_request("/room", key=wsraw.new_key())
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if how == "part":
            sock.sendall(request[: rng.randrange(1, len(request))])
            return
        sock.sendall(request)
        if how == "request":
            return
        reader = wsraw.Reader(sock)
        reader.read_until(b"\r\n\r\n")
        if how == "open":
            return
        client = wsraw.WSClient(sock, reader, None)
        client.send_text("hi")
        if how == "message":
            return
        client.send_frame(wsraw.OP_TEXT, b"half of a mess", fin=False)
    except (ConnectionResetError, BrokenPipeError, EOFError):
        pass
    finally:
        sock.close()


async def test_100_clients_that_vanish_at_random_moments_leave_nothing(logged):
    room = Room()

    @room.on_receive("text")
    async def relay(room, websocket, text):
        await room.push_text(text)

    rng = random.Random(14)
    hows = ["part", "request", "open", "message", "fragment", "reset"]
    async with Uvicorn(room_app(room)) as server:
        plan = [rng.choice(hows) for _ in range(100)]
        for start in range(0, 100, 10):
            batch = plan[start : start + 10]
            await asyncio.gather(
                *(thread(vanish, server.port, how, random.Random(start + i)) for i, how in enumerate(batch))
            )
        await until(lambda: not server.connections, what="uvicorn's connections empty")
        await until(lambda: len(room) == 0, what="the room empty")
        adopter = server.adopter()
        assert adopter is not None, "no connection was handed to roomcast"
        await until(lambda: not adopter._protocols, what="the adopter's protocols empty")
        # Still serving.
        async with connect(server.url("/room")) as ws:
            await until(lambda: len(room) == 1, what="a new member")
            await ws.send("still here")
            assert await recv(ws) == "still here"
    assert not [r for r in logged.records if r.levelno >= logging.ERROR]
