"""roomcast.compat.microsockets: the microsockets API on roomcast.App, over
real sockets with the websockets library as the client. The README's
example runs as its users run it, in a subprocess."""

import asyncio
import json
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast.compat.microsockets import Application, EventRouter, RoomManager

T = 60  # hang guard only: starting Python on a loaded machine can be slow


async def send(ws, event, payload=""):
    """As the microsockets JavaScript client sends: payload defaults to ""."""
    await ws.send(json.dumps({"event": event, "payload": payload}))


async def event(ws):
    """The next event that is not one of roomcast's room notices."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        if not message["event"].startswith("roomcast:"):
            return message["event"], message["payload"]


async def rest(ws):
    """Every event still to come until the server closes the connection."""
    events = []
    async for raw in ws:
        message = json.loads(raw)
        if not message["event"].startswith("roomcast:"):
            events.append((message["event"], message["payload"]))
    return events


class Served:
    def __init__(self, app):
        self.app = app

    async def __aenter__(self):
        self._cm = self.app.serve("127.0.0.1", 0)
        running = await self._cm.__aenter__()
        self.url = f"ws://127.0.0.1:{running.port}"
        return self

    async def __aexit__(self, *exc):
        await self._cm.__aexit__(*exc)


def rooms_app(**kwargs):
    app = Application(**kwargs)

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload)

    @app.on("leave")
    async def leave(ws):
        await ws.leave(ws.payload)

    @app.on("say")
    async def say(ws):
        p = ws.payload
        await ws.broadcast("said", p["text"], to=p["to"], skip_self=p.get("skip_self", True))

    @app.on("rooms")
    async def rooms(ws):
        await ws.emit("rooms", await ws.rooms())

    @app.on("ping")
    async def ping(ws):
        await ws.emit("pong", ws.payload)

    return app


async def in_rooms(ws, *rooms):
    for room in rooms:
        await send(ws, "join", room)
    await send(ws, "rooms")
    assert await event(ws) == ("rooms", list(rooms))


async def next_is_pong(ws):
    """Nothing else was queued for ws before the pong it asks for now."""
    await send(ws, "ping", "sentinel")
    assert await event(ws) == ("pong", "sentinel")


# -- the README example, run as a program ------------------------------------------


async def test_readme_example_with_the_javascript_clients_string_payloads(examples):
    example = await examples("microsockets_readme.py", env={"PORT": "0"})
    url = f"ws://127.0.0.1:{example.port}"  # the README's URL: no path
    async with connect(url) as a, connect(url + "/any/path") as b, connect(url) as c:
        # socket.send("join", JSON.stringify({...})): the payload is a string.
        await send(b, "join", json.dumps({"room": "gamers", "user": 2}))
        assert await event(b) == ("joined", "")
        await send(c, "join", json.dumps({"room": "lurkers", "user": 3}))
        assert await event(c) == ("joined", "")
        await send(a, "join", json.dumps({"room": "gamers", "user": 1}))
        assert await event(a) == ("joined", "")
        # The handler broadcast a JSON string, and it arrives as that string.
        assert await event(b) == ("user joined", '{"user": 1}')
        assert await example.stop(signal.SIGTERM) == 0
        assert await rest(a) == [] and await rest(c) == []
        assert a.close_code == 1001 and b.close_code == 1001


async def test_repository_example_joins_emits_and_broadcasts(examples):
    example = await examples("microsockets_topic.py", env={"PORT": "0"})
    url = f"ws://127.0.0.1:{example.port}"
    async with connect(url) as a, connect(url) as b:
        await send(a, "topic", json.dumps("from a"))
        assert await event(a) == ("message", "received")
        await example.wait_for_line(r"^from a$", "stdout")
        await send(b, "topic", json.dumps({"n": 2}))
        assert await event(b) == ("message", "received")
        assert await event(a) == ("broadcast", "hello, everyone!")  # b skips itself
        await example.wait_for_line(r"^\{'n': 2\}$", "stdout")
        assert await example.stop(signal.SIGINT) == 0
        assert await rest(a) == [] and await rest(b) == []


# -- hooks -----------------------------------------------------------------------


async def test_every_before_on_hook_runs_in_order_and_any_can_stop_the_chain():
    app = Application()

    @app.hooks.before_on
    async def first(ws, func):
        ws.trace = ["first"]
        await func(ws)

    @app.hooks.before_on
    def second(ws, func):  # a plain function returning the awaitable works too
        ws.trace.append("second")
        if ws.payload == "stop":
            return ws.emit("stopped", ws.trace)
        return func(ws)

    @app.hooks.before_on
    async def third(ws, func):
        ws.trace.append("third")
        await func(ws)

    @app.on("go")
    async def go(ws):
        ws.trace.append("handler")
        await ws.emit("done", ws.trace)

    @app.on("ping")
    async def ping(ws):
        await ws.emit("pong", ws.payload)

    async with Served(app) as s, connect(s.url) as ws:
        await send(ws, "go")
        assert await event(ws) == ("done", ["first", "second", "third", "handler"])
        await send(ws, "go", "stop")
        assert await event(ws) == ("stopped", ["first", "second"])
        await next_is_pong(ws)  # neither the third hook nor the handler ran


async def test_on_connect_can_refuse_and_on_disconnect_sees_code_and_rooms():
    app = rooms_app()
    seen = []
    gone = asyncio.Event()

    @app.hooks.on_connect
    def gate(ws, acceptance):
        if ws.scope["query_string"] == b"deny":
            acceptance.clear()

    @app.hooks.on_disconnect
    async def left(ws):
        seen.append((ws.code, ws.connected, await ws.rooms()))
        gone.set()

    async with Served(app) as s:
        with pytest.raises(InvalidStatus) as info:
            await connect(s.url + "/?deny")
        assert info.value.response.status_code == 403
        async with connect(s.url + "/?let-me-in") as ws:
            await in_rooms(ws, "red", "blue")
            await ws.close(4000, "bye")
        await asyncio.wait_for(gone.wait(), T)
        assert seen == [(4000, False, ["red", "blue"])]
        # Then it left its rooms: a broadcast to them reaches nobody.
        assert await app.room_manager.members("red") == []


async def test_on_connect_can_choose_the_subprotocol_and_add_headers():
    app = rooms_app()

    @app.hooks.on_connect
    async def pick(ws, acceptance):
        acceptance["subprotocol"] = "chat.v2"
        acceptance["headers"] = [("x-room-server", "roomcast")]

    async with Served(app) as s:
        async with connect(s.url, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["X-Room-Server"] == "roomcast"
            await next_is_pong(ws)


async def test_startup_and_shutdown_hooks_run_around_serving():
    app = rooms_app()
    calls = []
    app.hooks.on_startup(lambda: calls.append("startup"))

    @app.hooks.on_shutdown
    async def shutdown():
        calls.append("shutdown")

    async with Served(app) as s:
        assert calls == ["startup"]
        async with connect(s.url) as ws:
            await next_is_pong(ws)
    assert calls == ["startup", "shutdown"]


# -- rooms -----------------------------------------------------------------------


async def test_broadcast_skips_the_sender_and_reaches_each_socket_once():
    async with Served(rooms_app()) as s:
        async with connect(s.url) as a, connect(s.url) as b, connect(s.url) as c, connect(s.url) as d:
            await in_rooms(a, "red", "blue")
            await in_rooms(b, "red", "blue")  # in both target rooms
            await in_rooms(c, "blue")
            await in_rooms(d, "green")
            await send(a, "say", {"text": "hi", "to": ["red", "blue"]})
            assert await event(b) == ("said", "hi")
            assert await event(c) == ("said", "hi")
            for ws in (a, b, c, d):
                await next_is_pong(ws)  # one copy for b; none for a (skip_self) nor d
            await send(a, "say", {"text": "me too", "to": ["red"], "skip_self": False})
            assert await event(a) == ("said", "me too")
            assert await event(b) == ("said", "me too")
            await send(c, "say", {"text": "nobody", "to": []})  # the original's default: no room
            for ws in (a, b, c, d):
                await next_is_pong(ws)


async def test_leave_stops_broadcasts_from_that_room_only():
    async with Served(rooms_app()) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await in_rooms(a, "red", "blue")
            await in_rooms(b)
            await send(a, "leave", "red")
            await send(a, "leave", "never-joined")  # not an error
            await send(a, "rooms")
            assert await event(a) == ("rooms", ["blue"])
            await send(b, "say", {"text": "to red", "to": ["red"]})
            await send(b, "say", {"text": "to blue", "to": ["blue"]})
            assert await event(a) == ("said", "to blue")


async def test_a_room_manager_subclass_that_calls_super_keeps_core_fan_out():
    class Logged(RoomManager):
        def __init__(self):
            super().__init__()
            self.log = []

        async def join(self, room, socket):
            self.log.append(("join", room))
            await super().join(room, socket)

    app = rooms_app(room_manager=Logged)
    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await in_rooms(a, "red")
            await in_rooms(b, "red")
            await send(a, "say", {"text": "hi", "to": ["red"]})
            assert await event(b) == ("said", "hi")
            await next_is_pong(a)
    assert app.room_manager.log == [("join", "red"), ("join", "red")]


async def test_a_room_manager_with_its_own_membership_is_asked_for_members():
    class Table(RoomManager):
        """Keeps membership itself, as one backed by a database would."""

        def __init__(self):
            self.table = {}

        async def join(self, room, socket):
            self.table.setdefault(room, [])
            if socket not in self.table[room]:
                self.table[room].append(socket)

        async def members(self, room):
            return list(self.table.get(room, []))

        async def rooms(self, socket):
            return [room for room, members in self.table.items() if socket in members]

        async def leave(self, room, socket):
            if socket in self.table.get(room, []):
                self.table[room].remove(socket)

    app = rooms_app(room_manager=Table)
    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as b, connect(s.url) as c:
            await in_rooms(a, "red", "blue")
            await in_rooms(b, "red", "blue")
            await in_rooms(c, "blue")
            await send(a, "say", {"text": "hi", "to": ["red", "blue"]})
            assert await event(b) == ("said", "hi")
            assert await event(c) == ("said", "hi")
            for ws in (a, b, c):
                await next_is_pong(ws)
            await send(c, "leave", "blue")
            await send(c, "rooms")
            assert await event(c) == ("rooms", [])
        # The disconnects flushed every socket out of the manager's table.
        for _ in range(T * 20):  # hang guard
            if not any(app.room_manager.table.values()):
                break
            await asyncio.sleep(0.05)
        assert not any(app.room_manager.table.values())


async def test_the_event_router_is_asked_for_each_message():
    class Counting(EventRouter):
        def __init__(self):
            super().__init__()
            self.asked = []

        def __call__(self, event):
            self.asked.append(event)
            return None if event == "muted" else super().__call__(event)

    app = rooms_app(event_router=Counting)

    @app.on("muted")
    async def muted(ws):
        await ws.emit("should not run")

    async with Served(app) as s, connect(s.url) as ws:
        await send(ws, "muted")
        await next_is_pong(ws)  # declined by the router: nothing sent back
    assert app.event_router.asked == ["muted", "ping"]


# -- mistakes ----------------------------------------------------------------------


async def test_bad_frames_and_failing_handlers_get_an_error_and_the_socket_stays():
    app = rooms_app()

    @app.on("boom")
    async def boom(ws):
        raise RuntimeError("handler bug")

    async with Served(app) as s, connect(s.url) as ws:
        await ws.send("not json")
        name, payload = await event(ws)
        assert name == "error" and "not JSON" in payload["message"]
        await send(ws, "nobody-handles-this")
        assert await event(ws) == (
            "error",
            {"message": "no handler for event 'nobody-handles-this'", "event": "nobody-handles-this"},
        )
        await send(ws, "boom")
        assert await event(ws) == ("error", {"message": "internal error", "event": "boom"})
        await next_is_pong(ws)


async def test_the_application_is_an_asgi_app_too():
    """Called as ASGI, it answers as its App does (tests/test_asgi_apps.py
    serves it under uvicorn)."""
    app = Application()
    sent = []

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "headers": []}, None, send)
    assert sent[0]["status"] == 405


async def test_to_must_be_a_list_of_rooms():
    app = Application()

    @app.on("say")
    async def say(ws):
        try:
            await ws.broadcast("said", "x", to="red")
        except TypeError as exc:
            await ws.emit("refused", str(exc))

    async with Served(app) as s, connect(s.url) as ws:
        await send(ws, "say")
        assert await event(ws) == ("refused", "to= takes a list of rooms, not one room name")


async def raw_events(ws, until):
    """Every message, roomcast's own events included, up to ``until``."""
    seen = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        seen.append((message["event"], message["payload"]))
        if message["event"] == until:
            return seen


async def test_the_wire_is_the_originals_joining_and_leaving_send_nothing():
    """The original sends nothing when a socket joins or leaves, and has
    no rejoin: neither does the compat module, unless asked for."""
    async with Served(rooms_app()) as s:
        async with connect(s.url) as a:
            await send(a, "join", "red")
            await send(a, "leave", "red")
            await send(a, "roomcast:rejoin", ["red"])
            await send(a, "rooms")
            assert await raw_events(a, "rooms") == [("rooms", [])]


async def test_room_notices_are_sent_when_asked_for():
    async with Served(rooms_app(room_notices=True)) as s:
        async with connect(s.url) as a:
            await send(a, "join", "red")
            await send(a, "leave", "red")
            await send(a, "rooms")
            assert await raw_events(a, "rooms") == [
                ("roomcast:joined", "red"),
                ("roomcast:left", "red"),
                ("rooms", []),
            ]
