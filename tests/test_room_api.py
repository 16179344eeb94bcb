"""The Room API as a websocket_rooms user sees it: decorators, handler
modes, hooks, pushes, membership, errors. Every test serves on an ephemeral
port on 127.0.0.1 and talks to it with the ``websockets`` client."""

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import BaseRoom, Room, Server, ServerWebSocket, WebSocketClosed

T = 30  # seconds; a generous bound on any single wait


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), T)


async def close_of(ws):
    """The close code and reason the server sent to this client."""
    await asyncio.wait_for(ws.wait_closed(), T)
    return ws.close_code, ws.close_reason


def serve_room(room, path="/room"):
    server = Server()
    server.route(path, room)
    return server.serve("127.0.0.1", 0)


def url(running, path="/room"):
    return f"ws://127.0.0.1:{running.port}{path}"


def welcoming_room():
    """A room that sends "welcome" to each member once it has joined, so a
    client knows when it is a member."""
    room = Room()

    @room.on_connect("after")
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    return room


async def join(running, path="/room"):
    ws = await connect(url(running, path))
    assert await recv(ws) == "welcome"
    return ws


# -- on_receive modes ----------------------------------------------------------


async def test_text_room_delivers_every_text_message_and_ignores_binary():
    room = Room()
    seen = []

    @room.on_receive("text")
    async def echo(room, websocket, message):
        seen.append(message)
        await room.push_text(message)

    async with serve_room(room) as running:
        async with connect(url(running)) as ws:
            await ws.send("")
            await ws.send("hello")
            await ws.send(b"no bytes handler")
            await ws.send("last")
            assert [await recv(ws) for _ in range(3)] == ["", "hello", "last"]
    assert seen == ["", "hello", "last"]


async def test_bytes_room_delivers_every_binary_message_and_ignores_text():
    room = Room()

    @room.on_receive("bytes")
    def echo(room, websocket, message):  # a plain function works too
        assert isinstance(message, bytes)
        return room.push_bytes(message)

    async with serve_room(room) as running:
        async with connect(url(running)) as ws:
            await ws.send(b"")
            await ws.send(b"\x00\xff")
            await ws.send("no text handler")
            await ws.send(b"end")
            assert [await recv(ws) for _ in range(3)] == [b"", b"\x00\xff", b"end"]


async def test_json_room_delivers_falsy_values_and_binary_json():
    room = Room()
    seen = []

    @room.on_receive("json")
    async def echo(room, websocket, message):
        seen.append(message)
        await room.push_json({"got": message})

    sent = ["0", "{}", "[]", '""', "false", "null", b'{"b":"\xc3\xa9"}']
    expected = [0, {}, [], "", False, None, {"b": "é"}]
    async with serve_room(room) as running:
        async with connect(url(running)) as ws:
            for message in sent:
                await ws.send(message)
            got = [await recv(ws) for _ in sent]
    assert seen == expected
    # push_json: compact separators, UTF-8 rather than \u escapes
    assert got[-1] == '{"got":{"b":"é"}}'
    assert got[:3] == ['{"got":0}', '{"got":{}}', '{"got":[]}']


@pytest.mark.parametrize("bad", ["not json", b"\xff\xfe not utf-8", b"{broken"])
async def test_malformed_json_closes_only_the_sender_with_1007(bad):
    room = welcoming_room()

    @room.on_receive("json")
    async def echo(room, websocket, message):
        await room.push_json({"echo": message, "members": len(room)})

    async with serve_room(room) as running:
        async with await join(running) as good, await join(running) as bad_client:
            await bad_client.send(bad)
            code, reason = await close_of(bad_client)
            assert code == 1007
            assert reason
            await good.send('{"still": "here"}')
            assert await recv(good) == '{"echo":{"still":"here"},"members":1}'


async def test_raising_handler_closes_1011_its_connection_only_and_is_logged(caplog):
    room = welcoming_room()

    @room.on_receive("text")
    async def handler(room, websocket, message):
        if message == "boom":
            raise ValueError("handler failure for the test")
        await room.push_text(message)

    async with serve_room(room) as running:
        async with await join(running) as good, await join(running) as failing:
            await failing.send("boom")
            assert (await close_of(failing))[0] == 1011
            await good.send("ok")
            assert await recv(good) == "ok"
            # The server keeps accepting new members too.
            async with await join(running) as late:
                await late.send("again")
                assert await recv(late) == "again"
                assert await recv(good) == "again"

    errors = [r for r in caplog.records if r.name == "roomcast" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert isinstance(errors[0].exc_info[1], ValueError)


async def test_raising_before_connect_handler_answers_500():
    room = Room()

    @room.on_connect("before")
    def refuse(room, websocket):
        raise RuntimeError("before-connect failure for the test")

    async with serve_room(room) as running:
        with pytest.raises(InvalidStatus) as info:
            await connect(url(running))
        assert info.value.response.status_code == 500


# -- hooks ---------------------------------------------------------------------


async def test_connect_and_disconnect_hooks_run_in_order():
    room = Room()
    events = []
    gone = asyncio.Event()

    @room.on_connect("before")
    def before_connect(room, websocket):
        events.append(("before_connect", len(room), websocket.application_state.name))

    @room.on_connection
    async def after_connect(room, websocket):
        events.append(("after_connect", len(room), websocket in room))
        await websocket.send_text("welcome")

    @room.on_disconnect("before")
    async def before_disconnect(room, websocket):
        events.append(("before_disconnect", len(room), websocket in room))

    @room.on_disconnect()  # "after" is the default
    def after_disconnect(room, websocket):
        events.append(("after_disconnect", len(room), websocket in room))
        gone.set()

    async with serve_room(room) as running:
        ws = await join(running)
        await ws.close()
        await asyncio.wait_for(gone.wait(), T)
    assert events == [
        ("before_connect", 0, "CONNECTING"),
        ("after_connect", 1, True),
        ("before_disconnect", 1, True),
        ("after_disconnect", 0, False),
    ]


async def test_before_connect_hook_can_refuse_with_403():
    room = welcoming_room()

    @room.on_connect("before")
    async def check_token(room, websocket):
        if websocket.query_params.get("token") != "open sesame":
            await websocket.close()

    async with serve_room(room) as running:
        with pytest.raises(InvalidStatus) as info:
            await connect(url(running) + "?token=wrong")
        assert info.value.response.status_code == 403
        async with await join(running, "/room?token=open+sesame"):
            assert len(room) == 1


def test_decorator_modes_are_checked():
    room = Room()
    with pytest.raises(ValueError):
        room.on_receive("xml")
    with pytest.raises(ValueError):
        room.on_connect("during")
    with pytest.raises(ValueError):
        room.on_disconnect("later")


# -- pushes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, excluded_push, expected",
    [
        ("text", lambda room, ws: room.push_text("others", exclude=ws), "others"),
        ("json", lambda room, ws: room.push_json({"to": "others"}, exclude=ws), '{"to":"others"}'),
        ("bytes", lambda room, ws: room.push_bytes(b"others", exclude=ws), b"others"),
    ],
)
async def test_push_with_exclude_skips_exactly_the_excluded_member(kind, excluded_push, expected):
    room = welcoming_room()

    @room.on_receive("text")
    async def command(room, websocket, message):
        if message == "others":
            await excluded_push(room, websocket)
        else:
            await room.push_text(message)

    async with serve_room(room) as running:
        a, b, c = [await join(running) for _ in range(3)]
        await a.send("others")
        await a.send("everyone")
        # The sender's next message is the push to everyone: it was skipped.
        assert await recv(a) == "everyone"
        for other in (b, c):
            assert await recv(other) == expected
            assert await recv(other) == "everyone"
        for ws in (a, b, c):
            await ws.close()


async def test_pushes_reach_every_member_in_call_order():
    room = welcoming_room()

    @room.on_receive("text")
    async def burst(room, websocket, message):
        for i in range(int(message)):
            if i % 2:
                await room.push_text(str(i))
            else:
                await room.push_json(i)

    async with serve_room(room) as running:
        async with await join(running) as a, await join(running) as b:
            await a.send("300")
            for ws in (a, b):
                assert [await recv(ws) for _ in range(300)] == [str(i) for i in range(300)]


async def test_push_type_errors():
    room = Room()
    with pytest.raises(TypeError):
        await room.push_text(b"bytes")
    with pytest.raises(TypeError):
        await room.push_bytes("text")
    with pytest.raises(TypeError):
        await room.push_json(object())
    await room.push_text("no members: nothing happens")


# -- membership ------------------------------------------------------------------


async def test_len_iteration_and_leaving_follow_membership():
    room = welcoming_room()
    left = asyncio.Queue()

    @room.on_disconnect("after")
    async def gone(room, websocket):
        left.put_nowait(websocket)

    async with serve_room(room) as running:
        a = await join(running)
        b = await join(running)
        members = list(room)
        assert len(room) == 2
        assert all(isinstance(m, ServerWebSocket) for m in members)
        # In joining order; the server sees each client's own port.
        assert [m.client.port for m in members] == [a.local_address[1], b.local_address[1]]
        await a.close()
        assert await asyncio.wait_for(left.get(), T) is members[0]
        assert list(room) == [members[1]] and len(room) == 1
        assert members[0] not in room
        await b.close()
        assert await asyncio.wait_for(left.get(), T) is members[1]
        assert len(room) == 0


async def test_remove_closes_the_member_with_1000_and_its_connect_returns():
    room = welcoming_room()
    returned = asyncio.Event()

    @room.on_receive("text")
    async def command(room, websocket, message):
        if message == "kick the others":
            for member in room:
                if member is not websocket:
                    await room.remove(member)
        await room.push_text(f"{message}: {len(room)}")

    server = Server()

    @server.websocket("/room")
    async def endpoint(websocket):
        await room.connect(websocket)
        if websocket.query_params.get("who") == "b":
            returned.set()

    async with server.serve("127.0.0.1", 0) as running:
        async with await join(running, "/room?who=a") as a, await join(running, "/room?who=b") as b:
            await a.send("kick the others")
            assert await close_of(b) == (1000, "")
            await asyncio.wait_for(returned.wait(), T)
            assert await recv(a) == "kick the others: 1"
            (member_a,) = room
            await room.remove(member_a)
            assert (await close_of(a))[0] == 1000
            assert len(room) == 0
            await room.remove(member_a)  # not a member any more: ignored


async def test_close_removes_and_closes_every_member():
    room = welcoming_room()
    disconnected = []

    @room.on_disconnect("after")
    def gone(room, websocket):
        disconnected.append(websocket)

    async with serve_room(room) as running:
        clients = [await join(running) for _ in range(3)]
        members = list(room)
        await room.close()
        assert len(room) == 0
        assert sorted(disconnected, key=id) == sorted(members, key=id)
        for ws in clients:
            assert (await close_of(ws))[0] == 1000
        # The room is still usable afterwards.
        async with await join(running):
            assert len(room) == 1


# -- parameters and base rooms ---------------------------------------------------


async def test_handlers_get_extra_parameters_from_path_params():
    room = Room()
    ids = {}

    @room.on_connection
    async def joined(room, websocket, client_id: int):
        ids[websocket] = client_id  # websockets are hashable
        await websocket.send_text("welcome")

    @room.on_receive("json")
    async def said(room, websocket, message, client_id: int):
        await room.push_json({"from": client_id, "said": message})

    server = Server()

    @server.websocket("/chat/{client_id}")
    async def endpoint(websocket, client_id: int):
        assert client_id == int(websocket.path_params["client_id"])
        await room.connect(websocket)

    async with server.serve("127.0.0.1", 0) as running:
        async with await join(running, "/chat/7") as ws:
            await ws.send('{"hi": 1}')
            assert await recv(ws) == '{"from":7,"said":{"hi":1}}'
    assert list(ids.values()) == [7]


async def test_room_from_base_room_starts_with_a_copy_of_its_handlers():
    base = Room()

    @base.on_receive("text")
    async def shout(room, websocket, message):
        await room.push_text(message.upper())

    derived = Room(base)

    @derived.on_connect("after")
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    server = Server()
    server.route("/base", base)
    server.route("/derived", derived)
    async with server.serve("127.0.0.1", 0) as running:
        async with await join(running, "/derived") as d, connect(url(running, "/base")) as b:
            await d.send("x")
            assert await recv(d) == "X"
            # The base room did not get the derived room's welcome handler,
            # and the two rooms do not share members.
            await b.send("y")
            assert await recv(b) == "Y"
            assert len(base) == 1 and len(derived) == 1


async def test_plain_base_room_only_relays_pushes():
    room = BaseRoom()
    server = Server()

    @server.websocket("/room")
    async def endpoint(websocket):
        await websocket.accept()
        await websocket.send_text("hello")
        # connect() joins without waiting when the websocket is accepted
        # already, so the client's "hello" means it is a member.
        await room.connect(websocket)

    async with server.serve("127.0.0.1", 0) as running:
        async with connect(url(running)) as ws:
            assert await recv(ws) == "hello"
            assert len(room) == 1
            await ws.send("ignored: no handlers")
            await room.push_text("pushed")
            assert await recv(ws) == "pushed"


async def test_sending_to_a_departed_member_is_a_handler_error_of_the_sender(caplog):
    room = welcoming_room()
    gone = asyncio.Queue()

    @room.on_disconnect("after")
    def left(room, websocket):
        gone.put_nowait(websocket)

    @room.on_receive("text")
    async def send_to(room, websocket, message):
        departed = await gone.get()
        await departed.send_text("too late")  # raises WebSocketClosed

    async with serve_room(room) as running:
        async with await join(running) as sender:
            leaver = await join(running)
            await leaver.close()
            await sender.send("send to the one who left")
            assert (await close_of(sender))[0] == 1011
    errors = [r for r in caplog.records if r.name == "roomcast" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and isinstance(errors[0].exc_info[1], WebSocketClosed)


# --- relay rooms -------------------------------------------------------------


@pytest.mark.parametrize("relay", ["all", "others"])
async def test_relay_room_forwards_in_the_core_without_calling_python(relay, until):
    from roomcast import Room, Server

    server = Server()
    room = Room(relay=relay)
    seen = {"received": 0, "connected": 0, "left": 0}

    @room.on_receive("text")
    async def never(room, ws, msg):
        seen["received"] += 1

    @room.on_connect("after")
    async def connected(room, ws):
        seen["connected"] += 1

    @room.on_disconnect("after")
    async def left(room, ws):
        seen["left"] += 1

    server.route("/relay", room)
    async with server.serve("127.0.0.1", 0) as running:
        uri = f"ws://127.0.0.1:{running.port}/relay"
        async with connect(uri) as a, connect(uri) as b, connect(uri) as c:
            await until(lambda: seen["connected"] == 3, what="three members")
            await a.send("from a")
            await a.send(b"\x00binary from a")
            for ws in (b, c):
                assert await ws.recv() == "from a"
                assert await ws.recv() == b"\x00binary from a"
            if relay == "all":  # the sender's own copy comes first
                assert await a.recv() == "from a"
                assert await a.recv() == b"\x00binary from a"
            await c.send("from c")
            assert await a.recv() == "from c"
            assert await b.recv() == "from c"
            if relay == "all":
                assert await c.recv() == "from c"
            # Nothing else is waiting for anyone (the sender's copy comes
            # only with "all", and was read above).
            await room.push_text("end")
            for ws in (a, b, c):
                assert await ws.recv() == "end"
        await until(lambda: seen["left"] == 3, what="three departures")
        assert seen["received"] == 0
        assert running.stats()["messages_in"] == 3


def test_relay_must_be_all_or_others():
    from roomcast import Room

    with pytest.raises(ValueError, match='relay must be None, "all" or "others"'):
        Room(relay="everyone")


# --- a room's mode is fixed when it is made -----------------------------------


def relay_lobby_and_app():
    """An App at "/" whose sockets join App rooms ("join", payload: the
    room) and answer "echo" with "echoed"; Room(relay="all", name="lobby")
    at "/relay", welcoming each member once it has joined."""
    import json

    from roomcast import App

    app = App(room_notices=False)
    lobby = Room(relay="all", name="lobby")

    @lobby.on_connect("after")
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload)
        await ws.emit("joined", ws.payload)

    @app.on("echo")
    async def echo(ws):
        await ws.emit("echoed", ws.payload)

    app.route("/relay", lobby)

    def envelope(event, payload=None):
        return json.dumps({"event": event, "payload": payload})

    return app, lobby, envelope


async def app_client_in_lobby(port, envelope):
    import json

    client = await connect(f"ws://127.0.0.1:{port}/")
    await client.send(envelope("join", "lobby"))
    assert json.loads(await recv(client)) == {"event": "joined", "payload": "lobby"}
    return client


async def relay_member(port):
    member = await connect(f"ws://127.0.0.1:{port}/relay")
    assert await recv(member) == "welcome"
    return member


async def check_both_modes_hold(app, lobby, envelope, client, members):
    import json

    a, b = members
    await a.send("relayed")
    assert await recv(a) == "relayed"  # "all": the sender too
    assert await recv(b) == "relayed"
    # The App client's events reach the App, not the relay members.
    await client.send(envelope("echo", 1))
    assert json.loads(await recv(client)) == {"event": "echoed", "payload": 1}
    app.broadcast("to the app's lobby", to=["lobby"])
    assert json.loads(await recv(client)) == {"event": "to the app's lobby", "payload": None}
    await lobby.push_text("to the relay lobby")
    for ws in (a, b):
        assert await recv(ws) == "to the relay lobby"
    # Nothing crossed over: the next message of each is its marker.
    app.broadcast("marker")
    await lobby.push_text("marker")
    assert json.loads(await recv(client)) == {"event": "marker", "payload": None}
    for ws in (a, b):
        assert await recv(ws) == "marker"


@pytest.mark.parametrize("app_first", [True, False], ids=["app-client-first", "relay-members-first"])
async def test_an_app_room_and_a_relay_room_of_the_same_name_keep_their_modes(app_first):
    """Whoever joins "lobby" first, the relay members keep their relay and
    the App client keeps its events."""
    app, lobby, envelope = relay_lobby_and_app()
    async with app.serve("127.0.0.1", 0) as running:
        if app_first:
            client = await app_client_in_lobby(running.port, envelope)
            members = [await relay_member(running.port) for _ in range(2)]
        else:
            members = [await relay_member(running.port) for _ in range(2)]
            client = await app_client_in_lobby(running.port, envelope)
        try:
            await check_both_modes_hold(app, lobby, envelope, client, members)
        finally:
            for ws in [client, *members]:
                await ws.close()


async def test_a_relay_room_keeps_its_mode_once_emptied_and_made_again():
    """The room goes with its last member and comes back with the next:
    still relaying."""
    room = Room(relay="others")

    @room.on_connect("after")
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    async with serve_room(room) as running:
        for _ in range(2):
            a, b = await join(running), await join(running)
            await a.send("x")
            assert await recv(b) == "x"
            await a.close()
            await b.close()
            while len(room):
                await asyncio.sleep(0.01)


async def test_rooms_of_one_name_must_agree_on_the_mode(caplog):
    """Room(name="n") and Room(name="n", relay="all") on one server are
    one room with two modes: the second is refused, its member closed
    with 1011 and the reason logged."""
    relaying = Room(relay="all", name="n")

    @relaying.on_connect("after")
    async def welcome(room, websocket):
        await websocket.send_text("welcome")

    plain = Room(name="n")
    server = Server()
    server.route("/relaying", relaying)
    server.route("/plain", plain)
    async with server.serve("127.0.0.1", 0) as running:
        first = await join(running, "/relaying")
        second = await connect(url(running, "/plain"))
        assert await close_of(second) == (1011, "internal error")
        await first.close()
    assert "served here with relay='all'" in caplog.text


def test_the_core_refuses_a_join_with_another_mode():
    from roomcast import _core

    core = _core.Core()
    core.listen("127.0.0.1", 0)
    try:
        relay_room = core.room_new(1)
        with pytest.raises(ValueError, match="was not made with relay 0"):
            core.join(1, relay_room, 0)
        with pytest.raises(ValueError, match="relay must be 0, 1 or 2, not 3"):
            core.room_new(3)
        core.join(1, relay_room, 1)  # the room's own mode: taken (conn 1 is not there: ignored)
    finally:
        core.stop()
