"""roomcast.App: events in the {"event", "payload"} envelope, many rooms per
socket, hooks, and broadcasts from anywhere; real sockets, the websockets
library as the client."""

import asyncio
import json
import threading

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import App

T = 30  # hang guard only


def make_app(**options):
    app = App(**options)

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload)

    @app.on("leave")
    def leave(ws):  # handlers may be plain functions
        ws.leave(ws.payload)

    @app.on("say")
    async def say(ws):
        p = ws.payload
        await ws.broadcast("said", p["text"], to=p.get("to"), skip_self=p.get("skip_self", True))

    @app.on("rooms")
    async def rooms(ws):
        await ws.emit("rooms", sorted(ws.rooms()))

    return app


async def event(ws):
    """The next envelope that is not a room notice."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        if not message["event"].startswith("roomcast:"):
            return message["event"], message["payload"]


async def send(ws, name, payload=None):
    await ws.send(json.dumps({"event": name, "payload": payload}))


async def joined(ws, *rooms):
    for room in rooms:
        await send(ws, "join", room)
    await send(ws, "rooms")
    assert await event(ws) == ("rooms", sorted(rooms))


class Served:
    def __init__(self, app):
        self.app = app

    async def __aenter__(self):
        self._cm = self.app.serve("127.0.0.1", 0)
        running = await self._cm.__aenter__()
        self.url = f"ws://127.0.0.1:{running.port}/"
        self.port = running.port
        return self

    async def __aexit__(self, *exc):
        await self._cm.__aexit__(*exc)


async def test_broadcast_reaches_each_socket_of_the_rooms_once():
    async with Served(make_app()) as s:
        async with connect(s.url) as a, connect(s.url) as b, connect(s.url) as c, connect(s.url) as d:
            await joined(a, "red", "blue")
            await joined(b, "red", "blue")  # in both target rooms
            await joined(c, "blue")
            await joined(d, "green")
            await send(a, "say", {"text": "hi", "to": ["red", "blue"]})
            assert await event(b) == ("said", "hi")
            assert await event(c) == ("said", "hi")
            # skip_self=False: the sender too, once
            await send(a, "say", {"text": "me too", "to": ["red", "blue"], "skip_self": False})
            for ws in (a, b, c):
                assert await event(ws) == ("said", "me too")
            # to=None: every socket of the app, green included
            await send(d, "say", {"text": "all", "to": None})
            for ws in (a, b, c):
                assert await event(ws) == ("said", "all")
            # Nothing else was queued for anyone: a marker comes next.
            s.app.broadcast("marker")
            for ws in (a, b, c, d):
                assert await event(ws) == ("marker", None)


async def test_rooms_join_and_leave_with_notices(until):
    async with Served(make_app()) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await send(a, "join", "lobby")
            assert json.loads(await a.recv()) == {"event": "roomcast:joined", "payload": "lobby"}
            await send(a, "join", "lobby")  # twice: no second notice
            await send(a, "leave", "lobby")
            assert json.loads(await a.recv()) == {"event": "roomcast:left", "payload": "lobby"}
            await joined(b, "lobby")
            await send(b, "say", {"text": "anyone?", "to": ["lobby"], "skip_self": False})
            assert await event(b) == ("said", "anyone?")
            await send(a, "rooms")
            assert await event(a) == ("rooms", [])  # a left: it got nothing
            assert s.app.rooms() == ["lobby"]
            [member] = s.app.members("lobby")  # b only: a left
            assert member.rooms() == {"lobby"}
            assert s.app.members("nowhere") == set()
        # Everyone gone: no room is kept.
        await until(lambda: not s.app.rooms(), what="every room to go")


async def test_rejoin_after_a_reconnection_restores_the_rooms():
    async with Served(make_app()) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await joined(a, "x", "y")
            await send(b, "roomcast:rejoin", ["x", "y"])
            await send(b, "rooms")
            assert await event(b) == ("rooms", ["x", "y"])
            await send(b, "roomcast:rejoin", "x")
            assert await event(b) == (
                "error",
                {"message": "roomcast:rejoin takes a list of room names", "event": "roomcast:rejoin"},
            )


@pytest.mark.parametrize(
    "frame, message",
    [
        (b"\x00binary", "binary frames are not events: send a JSON text frame"),
        ("{not json", "not JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", 'an event is a JSON object {"event": ..., "payload": ...}'),
        ('{"payload": 1}', 'the "event" member must be a string'),
        ('{"event": 7}', 'the "event" member must be a string'),
    ],
)
async def test_a_frame_that_is_not_an_envelope_gets_an_error_event(frame, message):
    async with Served(make_app()) as s:
        async with connect(s.url) as ws:
            await ws.send(frame)
            assert await event(ws) == ("error", {"message": message})
            await send(ws, "rooms")  # still open
            assert await event(ws) == ("rooms", [])


async def test_unknown_events_and_failing_handlers_get_error_events(caplog):
    app = make_app()

    @app.on("boom")
    async def boom(ws):
        raise RuntimeError("boom")

    async with Served(app) as s:
        async with connect(s.url) as ws:
            await send(ws, "nope")
            assert await event(ws) == ("error", {"message": "no handler for event 'nope'", "event": "nope"})
            await send(ws, "boom")
            assert await event(ws) == ("error", {"message": "internal error", "event": "boom"})
            await send(ws, "rooms")
            assert await event(ws) == ("rooms", [])
    assert "handler of event 'boom' failed" in caplog.text


async def test_every_before_on_hook_runs_in_order_and_any_can_stop():
    app = make_app()
    calls = []

    @app.hooks.before_on
    async def first(ws, func):
        calls.append(("first", ws.event))
        await func(ws)

    @app.hooks.before_on
    async def auth(ws, func):
        calls.append(("auth", ws.event))
        if ws.event == "say" and ws.payload.get("text") == "forbidden":
            await ws.emit("denied")
            return
        await func(ws)

    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await joined(a, "r")
            await joined(b, "r")
            await send(a, "say", {"text": "forbidden", "to": ["r"]})
            assert await event(a) == ("denied", None)
            await send(a, "say", {"text": "fine", "to": ["r"]})
            assert await event(b) == ("said", "fine")  # the forbidden one never came
    said = [c for c in calls if c[1] == "say"]
    assert said == [("first", "say"), ("auth", "say")] * 2


async def test_connect_and_disconnect_hooks_and_lifecycle(until):
    app = make_app()
    log = []

    @app.on_startup
    def started():
        log.append("startup")

    @app.on_shutdown
    async def stopped():
        log.append("shutdown")

    @app.on_connect
    async def check(ws):
        return ws.ws.query_params.get("token") == "ok"

    @app.on_disconnect
    async def gone(ws):
        log.append(("gone", sorted(ws.rooms())))

    async with Served(app) as s:
        assert log == ["startup"]
        with pytest.raises(InvalidStatus) as refused:
            await connect(s.url + "?token=bad")
        assert refused.value.response.status_code == 403
        async with connect(s.url + "?token=ok") as ws:
            await joined(ws, "a", "b")
        await until(lambda: len(log) > 1, what="the disconnect hook")
        assert log == ["startup", ("gone", ["a", "b"])]
    assert log[-1] == "shutdown"


async def test_app_broadcast_from_another_thread():
    app = make_app()
    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await joined(a, "news")
            await joined(b, "other")
            thread = threading.Thread(target=app.broadcast, args=("flash", {"n": 1}), kwargs={"to": ["news"]})
            thread.start()
            thread.join(T)
            assert await event(a) == ("flash", {"n": 1})
            thread = threading.Thread(target=app.broadcast, args=("everyone",))
            thread.start()
            thread.join(T)
            assert await event(a) == ("everyone", None)
            assert await event(b) == ("everyone", None)


def test_broadcast_arguments_are_checked():
    app = make_app()
    with pytest.raises(TypeError, match="to= takes a list of rooms"):
        app.broadcast("x", to="room")
    with pytest.raises(TypeError):
        app.broadcast("x", payload=object())
    app.broadcast("x", to=["nobody"])  # not serving: nothing happens


async def test_on_unhandled_takes_events_without_a_handler_after_the_hooks():
    app = make_app(room_notices=False)
    order = []

    @app.hooks.before_on
    async def hook(ws, func):
        order.append(("hook", ws.event))
        await func(ws)

    @app.on_unhandled
    async def fallback(ws):
        order.append(("fallback", ws.event))
        await ws.emit("echo", {"event": ws.event, "payload": ws.payload})

    async with Served(app) as s:
        async with connect(s.url) as ws:
            await send(ws, "anything", [1])
            assert await event(ws) == ("echo", {"event": "anything", "payload": [1]})
            # room_notices=False: joining sends nothing back by itself
            await send(ws, "join", "quiet")
            await send(ws, "rooms")
            assert json.loads(await ws.recv()) == {"event": "rooms", "payload": ["quiet"]}
    assert order[:2] == [("hook", "anything"), ("fallback", "anything")]


async def test_close_code_and_reason_once_closed(until):
    app = make_app()
    seen = []

    @app.on_disconnect
    def gone(ws):
        seen.append((ws.ws.close_code, ws.ws.close_reason))

    @app.on("peek")
    async def peek(ws):
        await ws.emit("peek", [ws.ws.close_code, ws.ws.close_reason])

    async with Served(app) as s:
        async with connect(s.url) as ws:
            await send(ws, "peek")
            assert await event(ws) == ("peek", [None, None])
            await ws.close(4000, "bye now")
        await until(lambda: seen, what="the close to be seen")
    assert seen == [(4000, "bye now")]
