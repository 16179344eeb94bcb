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
from roomcast.app import REJOIN_USAGE

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


def guarded_app(**options):
    """An app whose "join" handler keeps everyone out of "secret"; the
    "spy" event reports what a socket has received so far."""
    app = make_app(**options)
    app._handlers.pop("join")

    def allowed(room):
        return isinstance(room, str) and room != "secret"

    @app.on("join")
    async def join(ws):
        if allowed(ws.payload):
            await ws.join(ws.payload)
        else:
            await ws.emit("refused", ws.payload)

    return app, allowed


async def notices(ws, until="rooms"):
    """Every envelope up to (and with) the first ``until`` event."""
    seen = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        seen.append((message["event"], message["payload"]))
        if message["event"] == until:
            return seen


async def test_rejoin_joins_nothing_until_the_app_says_how():
    """A client that sends roomcast:rejoin itself, to get into a room the
    app's join handler refuses: without an on_rejoin handler nothing is
    joined, and each listed room is answered roomcast:left."""
    app, _ = guarded_app()
    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as intruder:
            await joined(a, "secret-free")
            await send(intruder, "join", "secret")
            assert await event(intruder) == ("refused", "secret")
            await send(intruder, "roomcast:rejoin", ["secret", "secret-free", "secret"])
            await send(intruder, "rooms")
            assert await notices(intruder) == [
                ("roomcast:left", "secret"),
                ("roomcast:left", "secret-free"),
                ("rooms", []),
            ]
            s.app.broadcast("for members", to=["secret", "secret-free"])
            s.app.broadcast("marker")
            assert await event(a) == ("for members", None)
            assert await event(intruder) == ("marker", None)


async def test_rejoin_goes_through_the_apps_own_check():
    """With on_rejoin routed through the same check as "join", a rejoin
    gets the client back into the rooms it may enter and nowhere else."""
    app, allowed = guarded_app()

    @app.on_rejoin
    async def rejoin(ws, room):
        if allowed(room):
            await ws.join(room)

    async with Served(app) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await send(b, "roomcast:rejoin", ["x", "secret", "y", ""])
            await send(b, "rooms")
            assert await notices(b) == [
                ("roomcast:joined", "x"),
                ("roomcast:left", "secret"),
                ("roomcast:joined", "y"),
                ("roomcast:left", ""),  # not a room name: never joined
                ("rooms", ["x", "y"]),
            ]
            await joined(a, "secret-free")
            s.app.broadcast("to secret", to=["secret"])
            s.app.broadcast("to x", to=["x"])
            assert await event(b) == ("to x", None)


async def test_rejoin_takes_a_list_of_room_names():
    async with Served(make_app()) as s:
        async with connect(s.url) as b:
            for payload in (
                "x",
                ["x", 1],
                None,
                [{"room": "x", "epoch": 5, "offset": 1}],
                [{"room": "x", "epoch": "e", "offset": -1}],
            ):
                await send(b, "roomcast:rejoin", payload)
                assert await event(b) == (
                    "error",
                    {"message": REJOIN_USAGE, "event": "roomcast:rejoin"},
                )


async def test_app_rooms_and_named_rooms_of_the_same_name_are_two_rooms():
    """An App socket in "lobby" and the members of Room(name="lobby") on
    the same server: neither side's messages reach the other."""
    from roomcast import Room

    named = Room(name="lobby")

    @named.on_connect("after")
    async def hello(room, websocket):
        await websocket.send_text("welcome")

    app = make_app()
    app.route("/named", named)
    async with Served(app) as s:
        async with connect(s.url) as a, connect(f"ws://127.0.0.1:{s.port}/named") as member:
            assert await asyncio.wait_for(member.recv(), T) == "welcome"
            await joined(a, "lobby")
            s.app.broadcast("app only", to=["lobby"])
            await named.push_text("room only")
            assert await event(a) == ("app only", None)
            assert await asyncio.wait_for(member.recv(), T) == "room only"
            # Nothing else reached either: the next message is a marker.
            s.app.broadcast("marker")
            await named.push_text("marker")
            assert await event(a) == ("marker", None)
            assert await asyncio.wait_for(member.recv(), T) == "marker"


async def test_app_rooms_and_named_rooms_do_not_meet_on_the_backplane(redis_server):
    """Server A serves Room(name="lobby"), server B an App whose socket is
    in the App room "lobby", on one Redis: their channels differ, and
    neither side's messages cross over."""
    from roomcast import Room

    named = Room(name="lobby")

    @named.on_connect("after")
    async def hello(room, websocket):
        await websocket.send_text("welcome")

    room_server = App(backplane=redis_server.url)
    room_server.route("/named", named)
    app = make_app(backplane=redis_server.url)
    async with Served(room_server) as a, Served(app) as b:
        async with connect(f"ws://127.0.0.1:{a.port}/named") as member, connect(b.url) as client:
            assert await asyncio.wait_for(member.recv(), T) == "welcome"
            await joined(client, "lobby")
            channels = set()
            deadline = asyncio.get_running_loop().time() + T
            while not {b"roomcast:|lobby", b"roomcast:|\xffapp:lobby"} <= channels:
                assert asyncio.get_running_loop().time() < deadline, channels
                await asyncio.sleep(0.05)
                channels = set(redis_server.command("PUBSUB", "CHANNELS", "roomcast:*"))
            await named.push_text("room only")
            b.app.broadcast("app only", to=["lobby"])
            assert await asyncio.wait_for(member.recv(), T) == "room only"
            assert await event(client) == ("app only", None)
            # Nothing crossed over: each one's next message is its marker.
            await named.push_text("marker")
            b.app.broadcast("marker")
            assert await asyncio.wait_for(member.recv(), T) == "marker"
            assert await event(client) == ("marker", None)


async def test_rooms_per_socket_are_bounded():
    async with Served(make_app(max_rooms_per_socket=3)) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await joined(a, "r1", "r2", "r3")
            await send(a, "join", "r4")
            assert await event(a) == (
                "error",
                {
                    "message": "max_rooms_per_socket (3) reached: this socket is in 3 rooms; 'r4' not joined",
                    "event": "join",
                },
            )
            await send(a, "join", "r1")  # already in: not a new room
            await send(a, "leave", "r3")
            await send(a, "join", "r4")
            await send(a, "rooms")
            assert await event(a) == ("rooms", ["r1", "r2", "r4"])
            await joined(b, "r3")  # the bound is per socket


async def test_rooms_in_total_are_bounded():
    async with Served(make_app(max_rooms=2)) as s:
        async with connect(s.url) as a, connect(s.url) as b:
            await joined(a, "r1", "r2")
            await send(b, "join", "r3")
            assert await event(b) == (
                "error",
                {"message": "max_rooms (2) reached: the app has 2 rooms; 'r3' not joined", "event": "join"},
            )
            await joined(b, "r1", "r2")  # rooms that exist take more members
            await send(a, "leave", "r1")
            await send(a, "leave", "r2")
            await send(b, "leave", "r2")
            await joined(b, "r1", "r3")
            assert sorted(s.app.rooms()) == ["r1", "r3"]


async def test_rejoin_past_the_bound_joins_up_to_it_and_says_why():
    app = make_app(max_rooms_per_socket=2)

    @app.on_rejoin
    async def rejoin(ws, room):
        await ws.join(room)

    async with Served(app) as s:
        async with connect(s.url) as a:
            await send(a, "roomcast:rejoin", ["a", "b", "c", "d"])
            await send(a, "rooms")
            message = "max_rooms_per_socket (2) reached: this socket is in 2 rooms; 'c' not joined"
            assert await notices(a) == [
                ("roomcast:joined", "a"),
                ("roomcast:joined", "b"),
                ("roomcast:left", "c"),
                ("roomcast:left", "d"),
                ("error", {"message": message, "event": "roomcast:rejoin"}),
                ("rooms", ["a", "b"]),
            ]


@pytest.mark.parametrize("option", ["max_rooms_per_socket", "max_rooms"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_room_bounds_are_checked_at_construction(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a positive int or None"):
        App(**{option: value})


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
