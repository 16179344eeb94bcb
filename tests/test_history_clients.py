"""Recovery on the client side (issue 18): the Python clients with
``rejoin=True`` and roomcast.js keep their App rooms and the last position
seen in each history room, and rejoin from it after a reconnection, so the
events broadcast while the connection was down arrive, in order, once.

The connection is cut for real: the clients reach the App through a TCP
relay of this file (:class:`Relay`) that drops every connection through it
(no close frame: both TCP connections just end) and refuses new ones until
told, while the test broadcasts. The App is a real roomcast App with
``keep_history``; a scripted ``websockets`` server checks the rejoin message
itself, byte for byte, and what a server without history gets.
"""

import asyncio
import json
import uuid

import pytest
from websockets.asyncio.server import serve

import roomcast
from roomcast import App, WebSocket
from support.browser import DevTools, T, Tab
from support.historyapp import history_app
from support.polling import until

MISSED = 50


def envelope(event, payload=None):
    return json.dumps({"event": event, "payload": payload})


class Relay:
    """A TCP relay on 127.0.0.1 to ``port``. :meth:`cut` ends every
    connection through it at once, on both sides, without a close frame;
    while :meth:`down`, a new connection is closed as soon as it is
    accepted (the client's attempt fails and it tries again later)."""

    def __init__(self, port):
        self.target = port
        self.refusing = False
        self.pairs = set()
        self.accepted = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        self.cut()
        await self.server.wait_closed()

    def down(self):
        self.refusing = True

    def up(self):
        self.refusing = False

    def cut(self):
        for pair in list(self.pairs):
            for writer in pair:
                writer.transport.abort()

    async def _accept(self, reader, writer):
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self.pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            self.pairs.discard(pair)
            for w in pair:
                w.transport.abort()


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def said(room, epoch, n):
    """The n-th event broadcast to ``room`` (from 0), as it reaches a client."""
    return {"event": "say", "payload": n, "position": {"room": room, "epoch": epoch, "offset": n + 1}}


async def broadcast(app, room, numbers):
    for n in numbers:
        app.broadcast("say", n, to=[room])
    last = numbers[-1] + 1
    # The history holds them all before the test goes on.
    for _ in range(3000):
        if (await app.history(room)).position.offset == last:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the history of {room} never reached offset {last}")


class AsyncioPeer:
    """The asyncio client, as the recovery scenario drives it."""

    async def open(self, url):
        self.ws = await roomcast.connect(
            url, reconnect=True, rejoin=True, min_delay=0.05, max_delay=0.2, max_attempts=None
        )

    async def send(self, text):
        await self.ws.send(text)

    async def recv(self):
        return json.loads(await asyncio.wait_for(self.ws.recv(), T))

    def connecting(self):
        return self.ws.state == roomcast.client.CONNECTING

    async def close(self):
        await self.ws.close()


class SyncPeer:
    """The synchronous client; its blocking calls run in a worker thread so
    that the App and the relay on this loop go on."""

    async def open(self, url):
        self.ws = WebSocket(url, reconnect=True, rejoin=True, min_delay=0.05, max_delay=0.2, max_attempts=None)
        await asyncio.to_thread(self.ws.wait_open, T)

    async def send(self, text):
        self.ws.send(text)

    async def recv(self):
        return json.loads(await asyncio.to_thread(self.ws.recv, T))

    def connecting(self):
        return self.ws.readyState == WebSocket.CONNECTING

    async def close(self):
        self.ws.close()
        await asyncio.to_thread(self.ws.wait_closed, T)


@pytest.mark.parametrize("peer", [AsyncioPeer, SyncPeer], ids=["asyncio", "sync"])
async def test_a_client_cut_off_gets_exactly_what_it_missed_then_the_live_events(peer):
    app = history_app()
    room = f"chat:{uuid.uuid4().hex[:8]}"
    client = peer()
    async with app.serve("127.0.0.1", 0) as running, Relay(running.port) as relay:
        await client.open(relay.url)
        try:
            await client.send(envelope("join", room))
            epoch = (await app.history(room)).position.epoch
            assert await client.recv() == {"event": "roomcast:joined", "payload": room}
            assert await client.recv() == {
                "event": "roomcast:position",
                "payload": {"room": room, "epoch": epoch, "offset": 0},
            }
            await broadcast(app, room, range(10))
            for n in range(10):
                assert await client.recv() == said(room, epoch, n)
            assert client.ws.rooms == {room}
            assert client.ws.positions == {room: (epoch, 10)}
            assert isinstance(client.ws.positions[room], roomcast.Position)

            relay.down()
            relay.cut()
            await until(client.connecting, what="the client to see its connection cut")
            await broadcast(app, room, range(10, 10 + MISSED))  # while it cannot get back
            relay.up()

            got = [await client.recv() for _ in range(MISSED + 2)]
            assert got[0] == {"event": "roomcast:joined", "payload": room}
            assert got[1:-1] == [said(room, epoch, n) for n in range(10, 10 + MISSED)]
            assert got[-1] == {
                "event": "roomcast:position",
                "payload": {"room": room, "epoch": epoch, "offset": 10 + MISSED, "recovered": True, "missed": MISSED},
            }
            app.broadcast("say", 10 + MISSED, to=[room])
            assert await client.recv() == said(room, epoch, 10 + MISSED)  # live again, nothing twice before it
            assert client.ws.positions == {room: (epoch, 11 + MISSED)}
            assert relay.accepted == 2
        finally:
            await client.close()


async def test_a_position_the_history_no_longer_holds_is_not_recovered():
    app = history_app(size=5)
    room = f"chat:{uuid.uuid4().hex[:8]}"
    client = AsyncioPeer()
    async with app.serve("127.0.0.1", 0) as running, Relay(running.port) as relay:
        await client.open(relay.url)
        try:
            await client.send(envelope("join", room))
            epoch = (await app.history(room)).position.epoch
            assert [(await client.recv())["event"] for _ in range(2)] == ["roomcast:joined", "roomcast:position"]
            await broadcast(app, room, [0])
            assert await client.recv() == said(room, epoch, 0)
            relay.down()
            relay.cut()
            await until(client.connecting, what="the client to see its connection cut")
            await broadcast(app, room, range(1, 21))  # 20 more: the history keeps 5
            relay.up()
            assert await client.recv() == {"event": "roomcast:joined", "payload": room}
            answer = await client.recv()  # nothing replayed
            assert answer["event"] == "roomcast:position"
            assert answer["payload"] == {
                "room": room,
                "epoch": epoch,
                "offset": 21,
                "recovered": False,
                "reason": "position too old",
            }
            assert client.ws.positions == {room: (epoch, 21)}
        finally:
            await client.close()


async def test_after_a_server_restart_the_client_is_told_the_history_was_lost():
    room = f"chat:{uuid.uuid4().hex[:8]}"
    client = AsyncioPeer()
    first = history_app()
    async with first.serve("127.0.0.1", 0) as running, Relay(running.port) as relay:
        await client.open(relay.url)
        try:
            await client.send(envelope("join", room))
            old_epoch = (await first.history(room)).position.epoch
            assert [(await client.recv())["event"] for _ in range(2)] == ["roomcast:joined", "roomcast:position"]
            await broadcast(first, room, range(3))
            for n in range(3):
                assert await client.recv() == said(room, old_epoch, n)
            relay.down()
            async with history_app().serve("127.0.0.1", 0) as restarted:
                relay.target = restarted.port  # the same address, another process's history
                relay.cut()
                await until(client.connecting, what="the client to see its connection cut")
                relay.up()
                assert await client.recv() == {"event": "roomcast:joined", "payload": room}
                answer = await client.recv()
                new_epoch = answer["payload"]["epoch"]
                assert new_epoch != old_epoch
                assert answer == {
                    "event": "roomcast:position",
                    "payload": {
                        "room": room,
                        "epoch": new_epoch,
                        "offset": 0,
                        "recovered": False,
                        "reason": "epoch changed",
                    },
                }
                assert client.ws.positions == {room: (new_epoch, 0)}
                await client.close()
        finally:
            await client.close()


# -- the rejoin message on the wire, against a scripted server --------------------


class Scripted:
    """A ``websockets`` server playing an App: the first connection gets
    ``script`` (a list of envelopes to send once the client's first message
    came) and is then cut (no close frame); each later connection records
    what the client sends first and is answered with nothing."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.first = []  # per connection: the frames it got, in order
        self.reconnected = asyncio.Event()

    async def handler(self, ws):
        self.connections += 1
        frames = []
        self.first.append(frames)
        if self.connections == 1:
            frames.append(await ws.recv())
            for message in self.script:
                await ws.send(json.dumps(message))
            await ws.send(envelope("done"))
            await ws.recv()  # the client read it all ("ack"): now cut
            ws.transport.abort()
            return
        async for frame in ws:
            frames.append(frame)
            if len(frames) == 2:
                self.reconnected.set()


POSITIONED = [
    {"event": "roomcast:joined", "payload": "a"},
    {"event": "roomcast:joined", "payload": "b"},
    {"event": "roomcast:joined", "payload": "c"},
    {"event": "roomcast:joined", "payload": "gone"},
    {"event": "roomcast:position", "payload": {"room": "a", "epoch": "00000000000000aa", "offset": 0}},
    {"event": "roomcast:position", "payload": {"room": "gone", "epoch": "00000000000000ff", "offset": 3}},
    # Events carry their room's position; the last one seen is kept.
    {"event": "say", "payload": 1, "position": {"room": "a", "epoch": "00000000000000aa", "offset": 1}},
    {"event": "say", "payload": 2, "position": {"room": "b", "epoch": "00000000000000bb", "offset": 7}},
    {"event": "say", "payload": 3, "position": {"room": "a", "epoch": "00000000000000aa", "offset": 2}},
    {"event": "say", "payload": "roomcast: not a notice", "position": "not a position"},
    {"event": "roomcast:left", "payload": "gone"},
]


@pytest.mark.parametrize("kind", ["asyncio", "sync"])
async def test_the_rejoin_names_each_room_with_its_last_position_before_anything_else(kind):
    server = Scripted(POSITIONED)
    async with serve(server.handler, "127.0.0.1", 0) as listening:
        url = f"ws://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"
        got = []
        if kind == "asyncio":
            ws = await roomcast.connect(
                url,
                reconnect=True,
                rejoin=True,
                min_delay=0.05,
                max_delay=0.2,
                on_reconnect=lambda attempts: asyncio.ensure_future(ws.send(envelope("hello"))),
            )
            await ws.send(envelope("join", "a"))
            while not got or got[-1]["event"] != "done":
                got.append(json.loads(await asyncio.wait_for(ws.recv(), T)))
            await ws.send("ack")
        else:
            ws = WebSocket(url, reconnect=True, rejoin=True, min_delay=0.05, max_delay=0.2)
            ws.onreconnect = lambda attempts: ws.send(envelope("hello"))
            await asyncio.to_thread(ws.wait_open, T)
            ws.send(envelope("join", "a"))
            while not got or got[-1]["event"] != "done":
                got.append(json.loads(await asyncio.to_thread(ws.recv, T)))
            ws.send("ack")
        # Every message reached the application as sent.
        assert got == [*POSITIONED, {"event": "done", "payload": None}]
        assert ws.rooms == {"a", "b", "c"}
        Position = roomcast.Position
        assert ws.positions == {"a": Position("00000000000000aa", 2), "b": Position("00000000000000bb", 7)}
        await asyncio.wait_for(server.reconnected.wait(), T)
        first, second = server.first[1][:2]
        assert json.loads(first) == {
            "event": "roomcast:rejoin",
            "payload": [
                {"room": "a", "epoch": "00000000000000aa", "offset": 2},
                {"room": "b", "epoch": "00000000000000bb", "offset": 7},
                "c",
            ],
        }
        assert json.loads(second) == {"event": "hello", "payload": None}
        if kind == "asyncio":
            await ws.close()
        else:
            ws.close()
            await asyncio.to_thread(ws.wait_closed, T)


@pytest.mark.parametrize("kind", ["asyncio", "sync"])
async def test_without_positions_the_rejoin_is_plain_names_as_before(kind):
    server = Scripted([{"event": "roomcast:joined", "payload": "lobby"}, {"event": "say", "payload": "hi"}])
    async with serve(server.handler, "127.0.0.1", 0) as listening:
        url = f"ws://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"
        if kind == "asyncio":
            ws = await roomcast.connect(url, reconnect=True, rejoin=True, min_delay=0.05, max_delay=0.2)
            await ws.send(envelope("join", "lobby"))
            for _ in range(3):
                await asyncio.wait_for(ws.recv(), T)
            await ws.send("ack")
            await until(lambda: ws.reconnects == 1, what="the reconnection")
            await ws.send("after")
        else:
            ws = WebSocket(url, reconnect=True, rejoin=True, min_delay=0.05, max_delay=0.2)
            await asyncio.to_thread(ws.wait_open, T)
            ws.send(envelope("join", "lobby"))
            for _ in range(3):
                await asyncio.to_thread(ws.recv, T)
            ws.send("ack")
            await until(lambda: server.connections == 2 and ws.readyState == WebSocket.OPEN, what="the reconnection")
            ws.send("after")
        await asyncio.wait_for(server.reconnected.wait(), T)
        assert [json.loads(frame) for frame in server.first[1][:1]] == [
            {"event": "roomcast:rejoin", "payload": ["lobby"]}
        ]
        assert ws.positions == {}
        if kind == "asyncio":
            await ws.close()
        else:
            ws.close()
            await asyncio.to_thread(ws.wait_closed, T)


async def test_a_server_without_history_lets_a_rejoining_client_back_by_name():
    app = App()

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload)

    rejoined = []

    @app.on_rejoin
    async def rejoin(ws, room):
        rejoined.append(room)
        await ws.join(room)

    client = AsyncioPeer()
    async with app.serve("127.0.0.1", 0) as running, Relay(running.port) as relay:
        await client.open(relay.url)
        try:
            await client.send(envelope("join", "lobby"))
            assert await client.recv() == {"event": "roomcast:joined", "payload": "lobby"}
            relay.cut()
            assert await client.recv() == {"event": "roomcast:joined", "payload": "lobby"}  # back in, by name
            assert rejoined == ["lobby"]
            app.broadcast("say", "hi", to=["lobby"])
            assert await client.recv() == {"event": "say", "payload": "hi"}
            assert client.ws.rooms == {"lobby"} and client.ws.positions == {}
        finally:
            await client.close()


def test_rejoin_needs_reconnect():
    with pytest.raises(ValueError, match="rejoin=True needs reconnect=True"):
        WebSocket("ws://127.0.0.1:1/", rejoin=True)
    with pytest.raises(ValueError, match="rejoin=True needs reconnect=True"):
        roomcast.connect("ws://127.0.0.1:1/", rejoin=True)
    with pytest.raises(TypeError, match="rejoin must be True or False"):
        roomcast.connect("ws://127.0.0.1:1/", reconnect=True, rejoin="yes")


# -- roomcast.js in headless Chromium --------------------------------------------


async def open_page(devtools, label, url):
    """A tab showing ``url`` (the App's /roomcast.js: a page of the App's
    origin), once loaded: a new tab shows about:blank first."""
    tab = await Tab.open(devtools, label, url)
    check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
    for _ in range(int(T / 0.05)):
        if await tab.evaluate(check):
            return tab
        await asyncio.sleep(0.05)
    raise AssertionError(f"tab {label} never loaded {url}")


PAGE = """new Promise((resolve, reject) => {
  const script = document.createElement("script");
  script.src = "/roomcast.js";
  script.onload = () => {
    window.got = [];
    window.closes = [];
    window.socket = roomcast.connect(RELAY, { minDelay: 50, maxDelay: 200 });
    for (const name of ["say", "roomcast:joined", "roomcast:left", "roomcast:position"]) {
      socket.on(name, (payload, event) => got.push([event, payload]));
    }
    socket.on("close", (info) => closes.push([info.code, info.willReconnect]));
    socket.send("join", ROOM);
    resolve(true);
  };
  script.onerror = () => reject(new Error("/roomcast.js did not load"));
  document.head.appendChild(script);
})"""


async def test_roomcast_js_recovers_the_events_missed_while_its_socket_was_dropped(chromium):
    from websockets.asyncio.client import connect

    app = history_app()
    room = f"chat:{uuid.uuid4().hex[:8]}"
    async with app.serve("127.0.0.1", 0) as running, Relay(running.port) as relay:
        async with connect(chromium, max_size=None, open_timeout=T, close_timeout=T) as devtools_ws:
            devtools = DevTools(devtools_ws)
            try:
                tab = await open_page(devtools, "H", f"http://127.0.0.1:{running.port}/roomcast.js")
                page = PAGE.replace("RELAY", json.dumps(relay.url)).replace("ROOM", json.dumps(room))
                assert await tab.evaluate(page, await_promise=True) is True

                async def seen(count, what):
                    for _ in range(int(T / 0.05)):
                        got = await tab.evaluate("got")
                        if len(got) >= count:
                            return got
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"the page never got {what}; it got {got}")

                await seen(2, "its join answered")
                epoch = (await app.history(room)).position.epoch
                await broadcast(app, room, range(10))
                got = await seen(12, "the first 10 events")
                assert got == [
                    ["roomcast:joined", room],
                    ["roomcast:position", {"room": room, "epoch": epoch, "offset": 0}],
                    *[["say", n] for n in range(10)],
                ]
                assert await tab.evaluate("socket.positions") == {room: {"epoch": epoch, "offset": 10}}

                relay.down()
                relay.cut()
                for _ in range(int(T / 0.05)):
                    if await tab.evaluate("closes.length") == 1:
                        break
                    await asyncio.sleep(0.05)
                assert await tab.evaluate("closes") == [[1006, True]]
                await broadcast(app, room, range(10, 10 + MISSED))
                relay.up()

                got = await seen(12 + MISSED + 2, "the missed events and the recovery")
                assert got[12:] == [
                    ["roomcast:joined", room],
                    *[["say", n] for n in range(10, 10 + MISSED)],
                    [
                        "roomcast:position",
                        {"room": room, "epoch": epoch, "offset": 10 + MISSED, "recovered": True, "missed": MISSED},
                    ],
                ]
                app.broadcast("say", 10 + MISSED, to=[room])
                got = await seen(12 + MISSED + 3, "the live event after the recovery")
                assert got[-1] == ["say", 10 + MISSED]
                says = [payload for event, payload in got if event == "say"]
                assert says == list(range(11 + MISSED))  # in order, none twice
                assert await tab.evaluate("socket.positions") == {room: {"epoch": epoch, "offset": 11 + MISSED}}
                assert await tab.evaluate("socket.rooms") == [room]
            finally:
                await devtools.close()


SCRIPTED_PAGE = """new Promise((resolve, reject) => {
  const script = document.createElement("script");
  script.src = "/roomcast.js";
  script.onload = () => {
    window.got = [];
    window.socket = roomcast.connect(SERVER, { minDelay: 50, maxDelay: 200 });
    socket.on("done", () => {
      window.before = { rooms: socket.rooms, positions: socket.positions };
      socket.send("ack");
    });
    socket.on("reconnected", () => socket.send("hello"));
    socket.send("join", "a");
    resolve(true);
  };
  script.onerror = () => reject(new Error("/roomcast.js did not load"));
  document.head.appendChild(script);
})"""


async def test_roomcast_js_rejoins_each_room_with_its_last_position_before_anything_else(chromium):
    from websockets.asyncio.client import connect

    weird = [
        {"event": "roomcast:joined", "payload": "__proto__"},
        {"event": "roomcast:position", "payload": {"room": "__proto__", "epoch": "0000000000000011", "offset": 4}},
    ]
    server = Scripted(POSITIONED + weird)
    app = App()  # serves /roomcast.js
    async with app.serve("127.0.0.1", 0) as running, serve(server.handler, "127.0.0.1", 0) as listening:
        url = f"ws://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"
        async with connect(chromium, max_size=None, open_timeout=T, close_timeout=T) as devtools_ws:
            devtools = DevTools(devtools_ws)
            try:
                tab = await open_page(devtools, "S", f"http://127.0.0.1:{running.port}/roomcast.js")
                assert await tab.evaluate(SCRIPTED_PAGE.replace("SERVER", json.dumps(url)), await_promise=True)
                await asyncio.wait_for(server.reconnected.wait(), T)
                before = await tab.evaluate("before")
            finally:
                await devtools.close()
    assert sorted(before["rooms"]) == ["__proto__", "a", "b", "c"]
    assert before["positions"] == {
        "a": {"epoch": "00000000000000aa", "offset": 2},
        "b": {"epoch": "00000000000000bb", "offset": 7},
        "__proto__": {"epoch": "0000000000000011", "offset": 4},
    }
    first, second = server.first[1][:2]
    assert json.loads(first) == {
        "event": "roomcast:rejoin",
        "payload": [
            {"room": "a", "epoch": "00000000000000aa", "offset": 2},
            {"room": "b", "epoch": "00000000000000bb", "offset": 7},
            "c",
            {"room": "__proto__", "epoch": "0000000000000011", "offset": 4},
        ],
    }
    assert json.loads(second) == {"event": "hello", "payload": ""}
