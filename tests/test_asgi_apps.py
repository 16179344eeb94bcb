"""roomcast.App and microsockets.Application as ASGI apps, and the
fastapi_pubsub README example, under a real uvicorn: in the test's loop
(tests/support/asgiserve.py) and as ``python -m uvicorn`` subprocesses.
Each runs with uvicorn's own websocket implementation (the Python path:
roomcast._pyhub serves the sockets) and with roomcast's protocol (the C
core serves them), with the websockets library as the client."""

import asyncio
import json
import signal
import sys
import threading

import pytest
from fastapi import FastAPI
from fastapi import WebSocket as StarletteWebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import roomcast.uvicorn
from roomcast import App, Room
from roomcast._core import Core
from roomcast._pyhub import PyCore
from roomcast.compat.fastapi_pubsub import BasePubSubWebSocket, RedisCredentials
from roomcast.websocket import hub_of
from support.asgiserve import CORE, PYTHON, REPO, Served, UvicornProcess, http_get
from support.historyapp import history_app

T = 60  # hang guard only

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # "examples.microsockets_readme:app", as uvicorn imports it from the repo

# roomcast's protocol needs Core.adopt (the core taking uvicorn's socket).
ADOPTS = hasattr(Core, "adopt")
needs_adopt = pytest.mark.skipif(not ADOPTS, reason="the core cannot adopt connections yet (Core.adopt)")
MODES = [PYTHON, pytest.param(CORE, marks=needs_adopt)]


@pytest.fixture(autouse=True)
def unconfigured():
    """Each test starts with roomcast.uvicorn's options unset (an App
    served with options sets them for the process)."""
    yield
    roomcast.uvicorn._configured.clear()
    roomcast.uvicorn._configured_by = None


@pytest.fixture
def uvicorns():
    """``await uvicorns(target, ws, ...)`` starts ``python -m uvicorn``
    (support/asgiserve.py); all are killed after the test."""
    started = []

    async def start(*args, **kw):
        proc = await UvicornProcess.start(*args, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


async def send(ws, event, payload=""):
    await ws.send(json.dumps({"event": event, "payload": payload}))


async def event(ws):
    """The next event that is not one of roomcast's room notices."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        if not message["event"].startswith("roomcast:"):
            return message["event"], message["payload"]


def in_core(sockets):
    """Whether the C core serves every one of ``sockets`` (App sockets)."""
    kinds = {isinstance(hub_of(s.ws)._core, PyCore) for s in sockets}
    assert len(kinds) == 1
    return kinds == {False}


# -- the microsockets README example ---------------------------------------------------


async def readme_conversation(url):
    """What tests/test_compat_microsockets.py checks of the README example,
    plus: a broadcast reaches each member of the room once, not the
    sender, nobody else."""
    async with connect(url) as a, connect(url + "/any/path") as b, connect(url) as c, connect(url) as d:
        await send(b, "join", json.dumps({"room": "gamers", "user": 2}))
        assert await event(b) == ("joined", "")
        await send(c, "join", json.dumps({"room": "lurkers", "user": 3}))
        assert await event(c) == ("joined", "")
        await send(d, "join", json.dumps({"room": "gamers", "user": 4}))
        assert await event(d) == ("joined", "")
        assert await event(b) == ("user joined", '{"user": 4}')
        await send(a, "join", json.dumps({"room": "gamers", "user": 1}))
        assert await event(a) == ("joined", "")
        # The broadcast is a JSON string, as the handler made it.
        assert await event(b) == ("user joined", '{"user": 1}')
        assert await event(d) == ("user joined", '{"user": 1}')
        # Once each: the next event each of them gets is the next broadcast.
        await send(c, "join", json.dumps({"room": "gamers", "user": 3}))
        assert await event(c) == ("joined", "")
        for ws in (a, b, d):
            assert await event(ws) == ("user joined", '{"user": 3}')
        # c got nothing of the room it was not in (its next event is this).
        await send(a, "join", json.dumps({"room": "lurkers", "user": 1}))
        assert await event(a) == ("joined", "")
        assert await event(c) == ("user joined", '{"user": 1}')


@pytest.mark.parametrize("ws", MODES)
async def test_microsockets_readme_example_by_its_import_string(ws):
    from examples.microsockets_readme import app

    async with Served("examples.microsockets_readme:app", ws=ws) as served:
        await readme_conversation(served.url)
        async with connect(served.url) as e:
            await send(e, "join", json.dumps({"room": "solo", "user": 5}))
            assert await event(e) == ("joined", "")
            # Its own broadcast skipped it: a socket that came after others
            # left (the core reuses their places) is skipped too.
            await send(e, "join", json.dumps({"room": "duo", "user": 5}))
            assert await event(e) == ("joined", "")
            assert in_core(app.app.members("solo")) is (ws == CORE)
        status, headers, body = await http_get(served.port, "/roomcast.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert b"roomcast" in body


@pytest.mark.parametrize("ws", MODES)
async def test_microsockets_readme_example_under_python_m_uvicorn(uvicorns, ws):
    served = await uvicorns("examples.microsockets_readme:app", ws)
    await readme_conversation(served.url)
    status, headers, body = await http_get(served.port, "/roomcast.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and body
    async with connect(served.url) as a:
        await send(a, "join", json.dumps({"room": "r", "user": 1}))
        assert await event(a) == ("joined", "")
        # uvicorn stops gracefully, then dies of the signal it caught.
        assert await served.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert "Finished server process" in "".join(served.log)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), T)
        # Closed by whoever serves it: the core says "going away", uvicorn
        # "service restart".
        assert a.close_code == (1001 if ws == CORE else 1012)


# -- HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize("ws", MODES)
async def test_http_static_client_426_404_405(ws):
    app = App("/events")

    async with Served(app, ws=ws) as served:
        status, headers, body = await http_get(served.port, "/roomcast.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        assert int(headers["content-length"]) == len(body) > 1000
        status, headers, body = await http_get(served.port, "/roomcast.js", "HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
        status, headers, _ = await http_get(served.port, "/events")
        assert status == 426 and headers["upgrade"] == "websocket"
        assert (await http_get(served.port, "/nothing/here"))[0] == 404
        status, headers, _ = await http_get(served.port, "/roomcast.js", "POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        # A websocket to a path the App does not serve: 404.
        with pytest.raises(InvalidStatus) as refused:
            await connect(served.url + "/nothing")
        assert refused.value.response.status_code == 404


@pytest.mark.parametrize("ws", MODES)
async def test_origins_are_checked_under_uvicorn(ws):
    app = App(origins=["http://good.example"])

    @app.on("ping")
    async def ping(sock):
        await sock.emit("pong")

    async with Served(app, ws=ws) as served:
        with pytest.raises(InvalidStatus) as refused:
            await connect(served.url, origin="http://evil.example")
        assert refused.value.response.status_code == 403
        async with connect(served.url, origin="http://good.example") as a:
            await send(a, "ping")
            assert await event(a) == ("pong", None)


@pytest.mark.parametrize("ws", MODES)
async def test_behind_a_proxy_with_a_root_path(ws):
    """uvicorn --root-path /api: the proxy took /api off; the App's routes
    and files are matched without it."""
    app = App("/events")

    @app.on("ping")
    async def ping(sock):
        await sock.emit("pong", sock.ws.url.path)

    async with Served(app, ws=ws, root_path="/api") as served:
        status, _, body = await http_get(served.port, "/roomcast.js")
        assert status == 200 and body
        async with connect(served.url + "/events") as a:
            await send(a, "ping")
            assert (await event(a))[0] == "pong"


# -- hooks -----------------------------------------------------------------------------


@pytest.mark.parametrize("ws", MODES)
async def test_on_connect_refusing_answers_403_and_hooks_run_around_serving(ws):
    app = App()
    seen = []

    @app.on_startup
    async def started():
        seen.append("startup")

    @app.on_connect
    def check(sock):
        seen.append("connect")
        return "deny" not in sock.ws.query_params

    @app.on_disconnect
    async def gone(sock):
        await asyncio.sleep(0)  # a coroutine that yields: the ASGI call waits for it
        seen.append("disconnect")

    @app.on_shutdown
    def stopped():
        seen.append("shutdown")

    @app.on("echo")
    async def echo(sock):
        await sock.emit("echo", sock.payload)

    async with Served(app, ws=ws) as served:
        assert seen == ["startup"]
        with pytest.raises(InvalidStatus) as refused:
            await connect(served.url + "/?deny=1")
        assert refused.value.response.status_code == 403
        async with connect(served.url) as a:
            await send(a, "echo", {"n": 1})
            assert await event(a) == ("echo", {"n": 1})
        for _ in range(T * 50):
            if "disconnect" in seen:
                break
            await asyncio.sleep(0.02)
        assert seen == ["startup", "connect", "connect", "disconnect"]
    assert seen[-1] == "shutdown"


async def test_a_failing_startup_handler_answers_startup_failed():
    """What uvicorn stops on (it exits with status 3)."""
    app = App()

    @app.on_startup
    def broken():
        raise RuntimeError("no database")

    sent = []

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.failed", "message": "RuntimeError: no database"}]


# -- sending from outside a handler ----------------------------------------------------


@pytest.mark.parametrize("ws", MODES)
async def test_app_broadcast_from_the_loop_and_from_another_thread(ws):
    app = App()

    @app.on("join")
    async def join(sock):
        await sock.join(sock.payload)
        await sock.emit("in", sock.payload)

    async with Served(app, ws=ws) as served:
        async with connect(served.url) as a, connect(served.url) as b, connect(served.url) as c:
            for sock, room in ((a, "red"), (b, "red"), (c, "blue")):
                await send(sock, "join", room)
                assert await event(sock) == ("in", room)
            app.broadcast("news", 1, to=["red"])
            assert await event(a) == ("news", 1) and await event(b) == ("news", 1)
            thread = threading.Thread(target=app.broadcast, args=("all", 2))
            thread.start()
            thread.join()
            for sock in (a, b, c):
                assert await event(sock) == ("all", 2)  # c got no "news" before it
            await send(a, "join", "blue")
            assert await event(a) == ("in", "blue")
            app.broadcast("both", 3, to=["red", "blue"])
            app.broadcast("end")
            for sock in (a, b, c):  # once each, a too (in both rooms)
                assert [await event(sock), await event(sock)] == [("both", 3), ("end", None)]
            assert sorted(app.rooms()) == ["blue", "red"] and len(app.members("red")) == 2
            assert in_core(app.members("red")) is (ws == CORE)


async def test_a_client_that_does_not_read_is_closed_with_1008_on_the_python_path():
    app = App(max_queue_bytes=64 * 1024)

    @app.on("flood")
    async def flood(sock):
        for _ in range(64):
            await sock.emit("data", "x" * 4096)  # 256 KiB at once: past the bound

    @app.on("ping")
    async def ping(sock):
        await sock.emit("pong")

    async with Served(app, ws=PYTHON) as served:
        async with connect(served.url) as a, connect(served.url) as b:
            await send(a, "flood")
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(a.recv(), T)
            assert a.close_code == 1008
            await send(b, "ping")
            assert await event(b) == ("pong", None)  # the others carry on


async def test_a_client_that_reads_nothing_is_given_up_on_after_close_timeout_on_the_python_path():
    """Its 1008 close cannot reach it: after close_timeout the App lets
    go of it all the same (on_disconnect runs), as the core does."""
    app = App(close_timeout=1)
    gone = []

    @app.on("flood")
    async def flood(sock):
        for _ in range(200):
            await sock.emit("data", "x" * 2**19)
            await asyncio.sleep(0.005)  # the writer hands what it can to uvicorn

    @app.on_disconnect
    def left(sock):
        gone.append(sock.ws.close_code)

    # No pings: nothing but the App's close_timeout ends the connection.
    async with Served(app, ws=PYTHON, ws_ping_interval=None) as served:
        a = await connect(served.url, max_queue=1, max_size=None, close_timeout=1, ping_interval=None)
        await send(a, "flood")
        for _ in range(T * 50):  # while a reads nothing
            if gone:
                break
            await asyncio.sleep(0.02)
        assert gone == [1008]
        a.transport.abort()


@pytest.mark.parametrize("ws", MODES)
async def test_rooms_and_endpoints_routed_beside_the_app(ws):
    """``app.route`` and ``app.websocket`` work under uvicorn too: a Room's
    pushes (a relay room's too) reach its members on either path."""
    app = App("/events")
    chat = Room()
    relay = Room(relay="others")

    @chat.on_receive("text")
    async def said(room, websocket, message):
        await room.push_text(f"{websocket.path_params['who']}: {message}")

    app.route("/chat/{who}", chat)
    app.route("/relay", relay)

    @app.websocket("/echo/{n:int}")
    async def echo(websocket, n: int):
        await websocket.accept()
        await websocket.send_text(str(n + 1))  # returns: the server closes with 1000

    async with Served(app, ws=ws) as served:
        async with connect(served.url + "/chat/ann") as ann, connect(served.url + "/chat/bob") as bob:
            for _ in range(T * 50):
                if len(chat) == 2:
                    break
                await asyncio.sleep(0.02)
            await bob.send("hi")
            assert await asyncio.wait_for(ann.recv(), T) == "bob: hi"
            assert await asyncio.wait_for(bob.recv(), T) == "bob: hi"
        async with connect(served.url + "/relay") as a, connect(served.url + "/relay") as b:
            for _ in range(T * 50):
                if len(relay) == 2:
                    break
                await asyncio.sleep(0.02)
            await a.send(b"\x01")
            assert await asyncio.wait_for(b.recv(), T) == b"\x01"
        async with connect(served.url + "/echo/41") as e:
            assert await asyncio.wait_for(e.recv(), T) == "42"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(e.recv(), T)
            assert e.close_code == 1000


# -- fastapi_pubsub's README example under uvicorn ---------------------------------------


def pubsub_readme_app(credentials=None):
    """The fastapi-pubsub README's example, the import of
    BasePubSubWebSocket being roomcast's."""
    app = FastAPI()

    class SimplePubSubWebsocket(BasePubSubWebSocket):
        async def generate_object_to_send(self):
            # any logic that you want to implement to send to connected users
            connections = self.connection_manager.get(self.channel_id)
            return {"num_connected_clients": len(connections)}

    @app.websocket("/ws/connected_clients")
    async def online_players_endpoint(websocket: StarletteWebSocket):
        ssw = SimplePubSubWebsocket(websocket, "connected_clients", redis_credentials=credentials)
        await ssw.run()

    return app


async def count_of(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), T))["num_connected_clients"]


@pytest.mark.parametrize("ws", MODES)
async def test_fastapi_pubsub_readme_example_under_uvicorn(ws):
    async with Served(pubsub_readme_app(), ws=ws) as served:
        uri = f"{served.url}/ws/connected_clients"
        async with connect(uri) as a:
            assert await count_of(a) == 1
            async with connect(uri) as b:
                assert await count_of(a) == 2
                assert await count_of(b) == 2
            assert await count_of(a) == 1  # told when b left


PUBSUB_WITH_REDIS = """
import os
from urllib.parse import urlsplit

from fastapi import FastAPI, WebSocket

import roomcast.uvicorn
from roomcast.compat.fastapi_pubsub import BasePubSubWebSocket, RedisCredentials

parts = urlsplit(os.environ["REDIS_URL"])
credentials = RedisCredentials(host=parts.hostname, port=parts.port, db=int(parts.path.strip("/") or 0))
roomcast.uvicorn.configure(backplane=credentials.url)

app = FastAPI()


class SimplePubSubWebsocket(BasePubSubWebSocket):
    async def generate_object_to_send(self):
        connections = self.connection_manager.get(self.channel_id)
        return {"num_connected_clients": len(connections)}


@app.websocket("/ws/connected_clients")
async def online_players_endpoint(websocket: WebSocket):
    ssw = SimplePubSubWebsocket(websocket, "connected_clients", redis_credentials=credentials)
    await ssw.run()
"""


async def subscribers(redis_server, n):
    channel = "roomcast:|fastapi_pubsub:connected_clients"
    for _ in range(600):
        if redis_server.command("PUBSUB", "NUMSUB", channel)[1] >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} servers subscribed {channel}")


@needs_adopt
async def test_fastapi_pubsub_redis_credentials_across_two_uvicorn_processes(uvicorns, redis_server, tmp_path):
    (tmp_path / "pubsub_redis.py").write_text(PUBSUB_WITH_REDIS)
    env = {"REDIS_URL": redis_server.url}
    one = await uvicorns("pubsub_redis:app", CORE, app_dir=tmp_path, env=env)
    two = await uvicorns("pubsub_redis:app", CORE, app_dir=tmp_path, env=env)
    path = "/ws/connected_clients"
    async with connect(one.url + path) as a:
        assert await count_of(a) == 1
        await subscribers(redis_server, 1)
        async with connect(two.url + path) as b:
            assert await count_of(b) == 2  # counted on both servers
            assert await count_of(a) == 2  # and pushed across them
        assert await count_of(a) == 1  # b left, on the other server
    for proc in (one, two):
        assert await proc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)


async def test_fastapi_pubsub_redis_credentials_need_the_core():
    refused = []

    app = FastAPI()

    class Counting(BasePubSubWebSocket):
        async def generate_object_to_send(self):
            return 0

    @app.websocket("/ws")
    async def endpoint(websocket: StarletteWebSocket):
        try:
            await Counting(websocket, "c", redis_credentials=RedisCredentials()).run()
        except RuntimeError as exc:
            refused.append(str(exc))
            raise

    async with Served(app, ws=PYTHON) as served:
        with pytest.raises(InvalidStatus) as failed:
            await connect(served.url + "/ws")
        assert failed.value.response.status_code == 500
    assert refused and "roomcast.uvicorn:WebSocketProtocol" in refused[0]


# -- App options under roomcast's protocol -----------------------------------------------


@needs_adopt
async def test_app_options_configure_the_core_under_uvicorn(redis_server):
    app = App(backplane=redis_server.url, max_queue_bytes=2**16)

    @app.on("join")
    async def join(sock):
        await sock.join(sock.payload)
        await sock.emit("in", sock.payload)

    async with Served(app, ws=CORE) as served:
        async with connect(served.url) as a:
            await send(a, "join", "r")
            assert await event(a) == ("in", "r")
            (sock,) = app.members("r")
            assert hub_of(sock.ws).backplane is not None
    assert roomcast.uvicorn._configured["backplane"] == redis_server.url


@pytest.mark.parametrize("ws", MODES)
async def test_history_and_recovery_under_uvicorn(ws):
    """keep_history under uvicorn, on either path: a client cut off gets
    what it missed, then live events."""
    app = history_app(100)
    async with Served(app, ws=ws) as served:
        first = await connect(served.url)
        await send(first, "join", "chat:u")
        assert json.loads(await asyncio.wait_for(first.recv(), T))["event"] == "roomcast:joined"
        status = json.loads(await asyncio.wait_for(first.recv(), T))["payload"]
        epoch = status["epoch"]
        app.broadcast("n", 1, to=["chat:u"])
        assert json.loads(await asyncio.wait_for(first.recv(), T))["position"]["offset"] == 1
        first.transport.abort()
        for i in range(2, 12):
            app.broadcast("n", i, to=["chat:u"])
        async with connect(served.url) as again:
            await send(again, "roomcast:rejoin", [{"room": "chat:u", "epoch": epoch, "offset": 1}])
            got = [json.loads(await asyncio.wait_for(again.recv(), T)) for _ in range(12)]
            assert got[0]["event"] == "roomcast:joined"
            assert [m["payload"] for m in got[1:11]] == list(range(2, 12))
            assert got[11]["payload"]["recovered"] is True and got[11]["payload"]["missed"] == 10
            app.broadcast("n", "live", to=["chat:u"])
            live = json.loads(await asyncio.wait_for(again.recv(), T))
            assert (live["payload"], live["position"]["offset"]) == ("live", 12)
