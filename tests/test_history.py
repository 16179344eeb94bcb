"""Per-room history and recovery (roomcast.history): positions, the last N
messages, a client that reconnects getting exactly what it missed and then
the live events, and a plain "could not recover" when that is impossible.
Real sockets; the websockets library plays the client, speaking the App
wire by hand (the roomcast clients' side has its own tests)."""

import asyncio
import json
import threading
import time

import pytest
from websockets.asyncio.client import connect

from roomcast import App, BackplaneError, History, Position, Room, Server
from support import wsraw
from support.polling import until

T = 30  # hang guard only
QUEUE = 256 * 2**20  # max_queue_bytes where clients may leave a lot unread


# -- plain Rooms: positions and room.history() ---------------------------------


async def test_pushes_get_consecutive_positions_and_history_gives_what_follows():
    room = Room(history=5)
    server = Server()
    server.route("/", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/") as member:
            while len(room) < 1:
                await asyncio.sleep(0.01)
            assert room.position is not None and room.position.offset == 0
            positions = [await room.push_text(f"m{i}") for i in range(1, 9)]
            positions.append(await room.push_bytes(bytearray(b"\x00raw")))
            assert [p.offset for p in positions] == list(range(1, 10))
            assert len({p.epoch for p in positions}) == 1 and len(positions[0].epoch) == 16
            got = [await asyncio.wait_for(member.recv(), T) for _ in range(9)]
            assert got == [f"m{i}" for i in range(1, 9)] + [b"\x00raw"]
            assert room.position == positions[-1]

            # The last five are kept: after the 5th push, 6..9 follow.
            history = await room.history(since=positions[4])
            assert history == History(
                [(positions[5], "m6"), (positions[6], "m7"), (positions[7], "m8"), (positions[8], b"\x00raw")],
                True,
                None,
                positions[8],
            )
            assert (await room.history(since=positions[-1])).events == []
            everything = await room.history()
            assert [p.offset for p, _ in everything.events] == [5, 6, 7, 8, 9] and everything.recovered
            # The 4th push's follower (5) is still kept; the 3rd's is not.
            assert (await room.history(since=positions[3])).recovered
            too_old = await room.history(since=positions[2])
            assert too_old == History([], False, "position too old", positions[8])
            other = await room.history(since=Position("0" * 16, 3))
            assert other == History([], False, "epoch changed", positions[8])
            ahead = await room.history(since=Position(positions[0].epoch, 10))
            assert (ahead.recovered, ahead.reason) == (False, "position ahead of the history")


async def test_history_forgets_what_is_older_than_its_ttl():
    room = Room(history=100, history_ttl=0.2)
    first = await room.push_text("old")  # no member: kept all the same
    await asyncio.sleep(0.4)
    second = await room.push_text("new")
    history = await room.history(since=Position(first.epoch, 0))
    assert (history.recovered, history.reason) == (False, "position too old")
    assert (await room.history(since=first)).events == [(second, "new")]
    await asyncio.sleep(0.4)
    gone = await room.history(since=second)
    assert (gone.recovered, gone.events, gone.position) == (True, [], second)
    assert (await room.history(since=first)).reason == "position too old"


def test_history_options_are_checked():
    for kwargs, message in (
        ({"history": 0}, "history must be a positive int"),
        ({"history": True}, "history must be a positive int"),
        ({"history": 5, "history_ttl": 0}, "history_ttl must be a positive number"),
        ({"history": 5, "history_ttl": float("inf")}, "history_ttl must be a positive number"),
        ({"history_ttl": 5}, "history_ttl= needs history="),
        ({"history": 5, "relay": "all"}, "a relay room cannot keep history"),
    ):
        with pytest.raises(ValueError, match=message):
            Room(**kwargs)
    with pytest.raises(ValueError, match="keeps no history"):
        asyncio.run(Room().history())


async def test_rooms_of_one_name_share_one_history():
    a = Room(name="hist-shared", history=10)
    b = Room(name="hist-shared", history=10)
    p1 = await a.push_text("one")
    p2 = await b.push_text("two")
    assert (p1.epoch, p1.offset + 1) == (p2.epoch, p2.offset)
    assert [m for _, m in (await a.history()).events] == ["one", "two"]
    with pytest.raises(ValueError, match="already keeps history=10"):
        Room(name="hist-shared", history=11)


async def test_a_named_room_keeps_its_history_in_redis_for_every_server(redis_server):
    """Room(name=..., history=N) on two servers sharing Redis: one sequence
    of positions, every member once and in order (the pusher's server
    hears its pushes through Redis too), exclude= kept, room.history() the
    same through either, and a push while Redis is away raises."""
    room = Room(name="hist-redis", history=5)
    servers = [Server(backplane=redis_server.url) for _ in range(2)]
    for server in servers:
        server.route("/", room)
    async with servers[0].serve("127.0.0.1", 0) as one, servers[1].serve("127.0.0.1", 0) as two:
        async with connect(f"ws://127.0.0.1:{one.port}/") as a, connect(f"ws://127.0.0.1:{two.port}/") as b:
            while len(room) < 2:
                await asyncio.sleep(0.01)
            positions = [await room.push_text(f"m{i}") for i in range(1, 8)]
            assert [p.offset for p in positions] == list(range(1, 8))
            assert len({p.epoch for p in positions}) == 1
            for ws in (a, b):
                assert [await asyncio.wait_for(ws.recv(), T) for _ in range(7)] == [f"m{i}" for i in range(1, 8)]
            member_a = next(ws for ws in room if ws.headers["host"] == f"127.0.0.1:{one.port}")
            await room.push_bytes(b"not to a", exclude=member_a)
            assert await asyncio.wait_for(b.recv(), T) == b"not to a"
            await room.push_text("to both")
            assert await asyncio.wait_for(a.recv(), T) == "to both"
            assert await asyncio.wait_for(b.recv(), T) == "to both"
            history = await room.history(since=positions[4])
            assert [(p.offset, m) for p, m in history.events] == [
                (6, "m6"),
                (7, "m7"),
                (8, b"not to a"),
                (9, "to both"),
            ]
            assert (await room.history(since=positions[2])).reason == "position too old"
            # Pushes that do not wait for their position: in flight
            # together, in order all the same.
            assert [await room.push_text(f"w{i}", wait=False) for i in range(50)] == [None] * 50
            for ws in (a, b):
                assert [await asyncio.wait_for(ws.recv(), T) for _ in range(50)] == [f"w{i}" for i in range(50)]
            await until(lambda: room.position.offset == 59, what="room.position after the pushes that did not wait")
            assert [m for _, m in (await room.history()).events] == [f"w{i}" for i in range(45, 50)]
            redis_server.stop()
            with pytest.raises(BackplaneError):
                await room.push_text("Redis is away")
            redis_server.start()


async def test_pushes_made_together_share_script_calls_and_keep_their_order(redis_server):
    """Pushes to a room whose history Redis keeps, made in one iteration of
    the loop (waiting for their positions or not), go in shared script
    calls: each still gets its own position, consecutive in the order the
    pushes were made, and the members get them in that order."""
    room = Room(name="hist-batch", history=1000)
    server = Server(backplane=redis_server.url)
    server.route("/", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/") as member:
            while len(room) < 1:
                await asyncio.sleep(0.01)
            await room.push_text("first")  # the script is known to Redis from here on
            before = redis_server.command("INFO", "commandstats").decode()
            pushes = [room.push_text(f"p{i}", wait=i % 3 != 0) for i in range(150)]
            answers = await asyncio.gather(*pushes)
            after = redis_server.command("INFO", "commandstats").decode()
            waited = [p for i, p in enumerate(answers) if i % 3 != 0]
            assert [p.offset for p in waited] == [i + 2 for i in range(150) if i % 3 != 0]
            assert len({p.epoch for p in waited}) == 1
            got = [await asyncio.wait_for(member.recv(), T) for _ in range(151)]
            assert got == ["first"] + [f"p{i}" for i in range(150)]
            await until(lambda: room.position.offset == 151, what="room.position after the last push")

            def evals(stats):
                line = next(x for x in stats.splitlines() if x.startswith("cmdstat_eval:"))
                return int(line.split("calls=")[1].split(",")[0])

            # 150 pushes in one iteration: three calls of 64 at most.
            assert evals(after) - evals(before) <= 3


# -- App: the wire -----------------------------------------------------------------


def make_app(size=1000, ttl=None, **options):
    app = App(**options)
    app.keep_history("chat:*", size, ttl)

    @app.on("join")
    async def join(ws):
        if ws.payload != "chat:secret":
            await ws.join(ws.payload)

    @app.on_rejoin
    async def rejoin(ws, room):
        if room != "chat:secret":
            await ws.join(room)

    @app.on("say")
    async def say(ws):
        await ws.broadcast("said", ws.payload["text"], to=ws.payload["to"], skip_self=False)

    return app


async def send(ws, event, payload=None):
    await ws.send(json.dumps({"event": event, "payload": payload}))


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), T))


class Served:
    def __init__(self, app):
        self.app = app

    async def __aenter__(self):
        self._cm = self.app.serve("127.0.0.1", 0)
        running = self.running = await self._cm.__aenter__()
        self.url = f"ws://127.0.0.1:{running.port}/"
        return self

    async def __aexit__(self, *exc):
        await self._cm.__aexit__(*exc)


async def join(ws, room):
    """Joins ``room``; returns the roomcast:position payload."""
    await send(ws, "join", room)
    assert await recv(ws) == {"event": "roomcast:joined", "payload": room}
    status = await recv(ws)
    assert status["event"] == "roomcast:position", status
    return status["payload"]


async def cut(ws):
    """Drops the TCP connection without a closing handshake, as a network
    that went away does."""
    ws.transport.abort()
    await asyncio.sleep(0)


def position_of(message):
    p = message["position"]
    return p["room"], p["epoch"], p["offset"]


async def test_a_client_cut_off_gets_the_50_it_missed_in_order_then_live_ones():
    async with Served(make_app()) as s:
        async with connect(s.url) as talker:
            first = await connect(s.url)
            status = await join(first, "chat:1")
            assert status == {"room": "chat:1", "epoch": status["epoch"], "offset": 0}
            epoch = status["epoch"]
            await join(talker, "chat:1")
            for i in range(10):
                await send(talker, "say", {"text": f"before {i}", "to": ["chat:1"]})
            seen = [await recv(first) for _ in range(10)]
            assert [m["payload"] for m in seen] == [f"before {i}" for i in range(10)]
            assert [position_of(m) for m in seen] == [("chat:1", epoch, i) for i in range(1, 11)]
            for _ in range(10):
                await recv(talker)
            await cut(first)

            for i in range(50):
                await send(talker, "say", {"text": f"missed {i}", "to": ["chat:1"]})
            for _ in range(50):
                await recv(talker)  # all 50 went out before the rejoin

            async with connect(s.url) as again:
                await send(again, "roomcast:rejoin", [{"room": "chat:1", "epoch": epoch, "offset": 10}])
                assert await recv(again) == {"event": "roomcast:joined", "payload": "chat:1"}
                replay = [await recv(again) for _ in range(50)]
                assert [m["payload"] for m in replay] == [f"missed {i}" for i in range(50)]
                assert [position_of(m)[2] for m in replay] == list(range(11, 61))
                assert await recv(again) == {
                    "event": "roomcast:position",
                    "payload": {"room": "chat:1", "epoch": epoch, "offset": 60, "recovered": True, "missed": 50},
                }
                await send(talker, "say", {"text": "live", "to": ["chat:1"]})
                live = await recv(again)
                assert (live["payload"], position_of(live)) == ("live", ("chat:1", epoch, 61))
                history = await s.app.history("chat:1", since=Position(epoch, 59))
                assert [json.loads(m)["payload"] for _, m in history.events] == ["missed 49", "live"]


async def test_a_position_older_than_the_history_is_not_recovered():
    async with Served(make_app(size=10)) as s:
        async with connect(s.url) as talker:
            epoch = (await join(talker, "chat:2"))["epoch"]
            for i in range(50):
                s.app.broadcast("n", i, to=["chat:2"])
            async with connect(s.url) as again:
                await send(again, "roomcast:rejoin", [{"room": "chat:2", "epoch": epoch, "offset": 5}, "chat:3"])
                assert await recv(again) == {"event": "roomcast:joined", "payload": "chat:2"}
                assert await recv(again) == {
                    "event": "roomcast:position",
                    "payload": {
                        "room": "chat:2",
                        "epoch": epoch,
                        "offset": 50,
                        "recovered": False,
                        "reason": "position too old",
                    },
                }
                # A plain name: joined, told the position, nothing replayed.
                assert await recv(again) == {"event": "roomcast:joined", "payload": "chat:3"}
                status = await recv(again)
                assert status["event"] == "roomcast:position" and "recovered" not in status["payload"]
                s.app.broadcast("n", "live", to=["chat:2"])
                assert (await recv(again))["payload"] == "live"


async def test_a_restarted_server_starts_a_new_epoch():
    async with Served(make_app()) as s:
        async with connect(s.url) as ws:
            epoch = (await join(ws, "chat:4"))["epoch"]
            s.app.broadcast("n", 1, to=["chat:4"])
            assert position_of(await recv(ws)) == ("chat:4", epoch, 1)
    async with Served(make_app()) as s:  # a new process's history: empty
        s.app.broadcast("n", 2, to=["chat:4"])
        async with connect(s.url) as ws:
            await send(ws, "roomcast:rejoin", [{"room": "chat:4", "epoch": epoch, "offset": 1}])
            assert (await recv(ws))["event"] == "roomcast:joined"
            status = (await recv(ws))["payload"]
            assert status["epoch"] != epoch
            assert (status["offset"], status["recovered"], status["reason"]) == (1, False, "epoch changed")


async def test_rejoin_keeps_the_apps_authorization():
    """A position for a room the app's on_rejoin does not let the socket
    into replays nothing: roomcast:left, and no event of the room."""
    async with Served(make_app()) as s:
        s.app.broadcast("secret", "do not leak", to=["chat:secret"])
        epoch = (await s.app.history("chat:secret")).position.epoch
        async with connect(s.url) as ws:
            await send(ws, "roomcast:rejoin", [{"room": "chat:secret", "epoch": epoch, "offset": 0}])
            assert await recv(ws) == {"event": "roomcast:left", "payload": "chat:secret"}
            await send(ws, "join", "chat:5")
            assert await recv(ws) == {"event": "roomcast:joined", "payload": "chat:5"}


async def test_rooms_without_history_are_unchanged_and_a_broadcast_splits_per_history_room():
    async with Served(make_app()) as s:
        async with connect(s.url) as ws:
            await send(ws, "join", "plain")
            assert await recv(ws) == {"event": "roomcast:joined", "payload": "plain"}
            await join(ws, "chat:6")
            await join(ws, "chat:7")
            s.app.broadcast("hello", {"x": 1}, to=["plain", "chat:6", "chat:7", "nobody"])
            got = [await recv(ws) for _ in range(3)]
            got.sort(key=lambda m: m.get("position", {}).get("room", ""))
            assert got[0] == {"event": "hello", "payload": {"x": 1}}
            assert [position_of(m)[0::2] for m in got[1:]] == [("chat:6", 1), ("chat:7", 1)]
            assert all(m["payload"] == {"x": 1} for m in got)


async def replay_past_the_queue_bound(app, url, running, other_url, publish):
    """A client that does not read rejoins from offset 0 of a 2 MB
    history: closed as a slow consumer; another member is unharmed."""
    big = "x" * 20_000
    for _ in range(100):  # 2 MB of history
        app.broadcast("big", big, to=["chat:8"])
    epoch = (await app.history("chat:8", since=Position("", 10**12))).position.epoch
    # A reader with a small receive buffer that does not read while the
    # replay is queued: it cannot fit its queue.
    slow = await asyncio.to_thread(wsraw.WSClient.connect, running.port, "/", rcvbuf=4096)
    with slow:
        rejoin = {"event": "roomcast:rejoin", "payload": [{"room": "chat:8", "epoch": epoch, "offset": 0}]}
        slow.send_text(json.dumps(rejoin))
        async with connect(other_url) as other:
            await join(other, "chat:8")  # unharmed, and live
            publish("small", 1, to=["chat:8"])
            assert (await recv(other))["payload"] == 1
        messages, close = await asyncio.to_thread(slow.recv_until_close)
        assert len(messages) < 100
        assert (close.close_code, close.close_reason) == (1008, "message queue full (client too slow)")
        assert running.stats()["slow_consumer_closes"] == 1


async def test_a_replay_past_the_queue_bound_follows_the_slow_consumer_policy():
    async with Served(make_app(max_queue_bytes=256 * 1024)) as s:
        await replay_past_the_queue_bound(s.app, s.url, s.running, s.url, s.app.broadcast)


async def replays_under_full_rate(app, urls, room, epoch, backlog):
    """A thread broadcasts to ``room`` without pause while eight clients,
    cut off earlier, rejoin through ``urls`` in turn from positions up to
    ``backlog`` + 280 events back: each must get a run of offsets with no
    hole and nothing twice, from its own position to the last broadcast."""
    stop = threading.Event()
    sent = [0]

    def publisher():
        # Without pause, but for a breath every 50 (at most 10,000 a
        # second): enough to overlap every replay, and no flood that would
        # outgrow what a slow (sanitized) run reads back.
        while not stop.is_set():
            app.broadcast("n", sent[0], to=[room])
            sent[0] += 1
            if sent[0] % 50 == 0:
                time.sleep(0.005)

    async def head():
        # Where the history is (with Redis the broadcasts are queued
        # scripts): a position far ahead of it only reads it.
        return (await app.history(room, since=Position(epoch, 10**12))).position.offset

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        await asyncio.sleep(0.3)
        clients = []
        for k in range(8):
            since = max(0, await head() - backlog - 40 * k)
            ws = await connect(urls[k % len(urls)], max_size=None, ping_interval=None)
            await send(ws, "roomcast:rejoin", [{"room": room, "epoch": epoch, "offset": since}])
            clients.append((ws, since))
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    last = await head()
    assert last == sent[0], "every broadcast got a position"
    for ws, since in clients:
        offsets = []
        status = None
        while not offsets or offsets[-1] < last:
            message = await recv(ws)
            if message["event"] == "roomcast:position":
                status = message["payload"]
            elif message["event"] == "n":
                assert message["payload"] == message["position"]["offset"] - 1
                offsets.append(message["position"]["offset"])
        assert status is not None and status["recovered"] is True
        assert offsets == list(range(since + 1, last + 1)), f"rejoined from {since}: a gap or a duplicate"
        assert status["missed"] <= len(offsets)
        await ws.close()


async def test_publishes_at_full_rate_during_replays_leave_no_gap_and_no_duplicate():
    # Queues large enough for what piles up while the clients do not read
    # (this test is about gaps and duplicates, not bounds).
    async with Served(make_app(size=100_000, max_queue_bytes=QUEUE)) as s:
        async with connect(s.url) as probe:
            epoch = (await join(probe, "chat:9"))["epoch"]
        await replays_under_full_rate(s.app, [s.url], "chat:9", epoch, 500)


# -- App with a backplane: the history in Redis ----------------------------------


class Pair:
    """Two Apps (two servers) on one redis-server."""

    def __init__(self, redis_server, size=1000, ttl=None, **options):
        self.apps = [make_app(size, ttl, backplane=redis_server.url, **options) for _ in range(2)]

    async def __aenter__(self):
        self.served = [Served(app) for app in self.apps]
        for s in self.served:
            await s.__aenter__()
        return self.served

    async def __aexit__(self, *exc):
        for s in reversed(self.served):
            await s.__aexit__(*exc)


async def test_across_two_servers_a_client_recovers_through_the_other_one(redis_server):
    async with Pair(redis_server) as (a, b):
        async with connect(a.url) as talker:
            await join(talker, "chat:r1")
            first = await connect(b.url)
            status = await join(first, "chat:r1")
            epoch = status["epoch"]
            for i in range(10):
                await send(talker, "say", {"text": f"before {i}", "to": ["chat:r1"]})
            seen = [await recv(first) for _ in range(10)]
            assert [position_of(m) for m in seen] == [("chat:r1", epoch, i) for i in range(1, 11)]
            assert [m["payload"] for m in seen] == [f"before {i}" for i in range(10)]
            await cut(first)
            for i in range(50):
                await send(talker, "say", {"text": f"missed {i}", "to": ["chat:r1"]})
            got = [await recv(talker) for _ in range(60)]  # its own, through Redis, in order
            assert [position_of(m)[2] for m in got] == list(range(1, 61))

            for server in (b, a):  # back through either server
                async with connect(server.url) as again:
                    await send(again, "roomcast:rejoin", [{"room": "chat:r1", "epoch": epoch, "offset": 10}])
                    assert await recv(again) == {"event": "roomcast:joined", "payload": "chat:r1"}
                    replay = [await recv(again) for _ in range(50)]
                    assert [m["payload"] for m in replay] == [f"missed {i}" for i in range(50)]
                    assert [position_of(m) for m in replay] == [("chat:r1", epoch, i) for i in range(11, 61)]
                    status = (await recv(again))["payload"]
                    assert status == {"room": "chat:r1", "epoch": epoch, "offset": 60, "recovered": True, "missed": 50}
            async with connect(b.url) as again:
                await send(again, "roomcast:rejoin", [{"room": "chat:r1", "epoch": epoch, "offset": 60}])
                assert (await recv(again))["event"] == "roomcast:joined"
                assert (await recv(again))["payload"]["missed"] == 0
                await send(talker, "say", {"text": "live", "to": ["chat:r1"]})
                live = await recv(again)
                assert (live["payload"], position_of(live)) == ("live", ("chat:r1", epoch, 61))
            history = await a.app.history("chat:r1", since=Position(epoch, 59))
            assert [json.loads(m)["payload"] for _, m in history.events] == ["missed 49", "live"]


async def test_with_redis_a_position_too_old_or_from_before_a_restart_is_not_recovered(redis_server):
    async with Pair(redis_server, size=10) as (a, b):
        async with connect(a.url) as ws:
            epoch = (await join(ws, "chat:r2"))["epoch"]
            for i in range(30):
                a.app.broadcast("n", i, to=["chat:r2"])
            assert [(await recv(ws))["payload"] for _ in range(30)] == list(range(30))
        async with connect(b.url) as again:
            await send(again, "roomcast:rejoin", [{"room": "chat:r2", "epoch": epoch, "offset": 5}])
            assert (await recv(again))["event"] == "roomcast:joined"
            assert (await recv(again))["payload"] == {
                "room": "chat:r2",
                "epoch": epoch,
                "offset": 30,
                "recovered": False,
                "reason": "position too old",
            }
            a.app.broadcast("n", "live", to=["chat:r2"])
            live = await recv(again)
            assert (live["payload"], position_of(live)) == ("live", ("chat:r2", epoch, 31))

        # Redis loses everything: a new epoch, and the clients are told.
        redis_server.stop()
        redis_server.start()
        await until(lambda: all(s.running.stats()["backplane_up"] for s in (a, b)), what="both servers back on Redis")
        async with connect(b.url) as again:
            await send(again, "roomcast:rejoin", [{"room": "chat:r2", "epoch": epoch, "offset": 31}])
            assert (await recv(again))["event"] == "roomcast:joined"
            status = (await recv(again))["payload"]
            assert (status["recovered"], status["reason"], status["offset"]) == (False, "epoch changed", 0)
            assert status["epoch"] != epoch
            a.app.broadcast("n", "new", to=["chat:r2"])
            new = await recv(again)
            assert position_of(new) == ("chat:r2", status["epoch"], 1)


async def test_with_redis_away_a_join_says_the_history_is_unavailable(redis_server):
    async with Pair(redis_server) as (a, _):
        redis_server.stop()
        async with connect(a.url) as ws:
            await send(ws, "roomcast:rejoin", [{"room": "chat:r3", "epoch": "0" * 16, "offset": 1}])
            assert (await recv(ws))["event"] == "roomcast:joined"
            assert (await recv(ws))["payload"] == {
                "room": "chat:r3",
                "recovered": False,
                "reason": "history unavailable",
            }
            await send(ws, "join", "plain")  # the socket goes on
            assert await recv(ws) == {"event": "roomcast:joined", "payload": "plain"}
        redis_server.start()


async def test_with_redis_the_sender_is_skipped_and_others_get_it_once(redis_server):
    async with Pair(redis_server) as (a, b):
        app = a.app

        @app.on("shout")
        async def shout(ws):
            await ws.broadcast("shout", ws.payload, to=["chat:r4", "chat:r4"])

        async with connect(a.url) as sender, connect(a.url) as near, connect(b.url) as far:
            for ws in (sender, near, far):
                await join(ws, "chat:r4")
            await send(sender, "shout", "hello")
            for ws in (near, far):
                got = await recv(ws)
                assert (got["payload"], position_of(got)[2]) == ("hello", 1)
            b.app.broadcast("n", "next", to=["chat:r4"])
            got = await recv(sender)  # not its own shout first
            assert (got["payload"], position_of(got)[2]) == ("next", 2)


async def test_with_redis_publishes_at_full_rate_during_replays_leave_no_gap_and_no_duplicate(redis_server):
    async with Pair(redis_server, size=100_000, max_queue_bytes=QUEUE) as (a, b):
        async with connect(a.url) as probe:
            epoch = (await join(probe, "chat:r5"))["epoch"]
        await replays_under_full_rate(a.app, [a.url, b.url], "chat:r5", epoch, 300)


async def test_histories_emptied_by_their_ttl_are_forgotten_as_rooms_come_and_go():
    app = App()
    app.keep_history("chat:gone-*", 10, 0.05)
    app.keep_history("chat:new-*", 10, 60)
    for i in range(1024):
        app.broadcast("n", i, to=[f"chat:gone-{i}"])
    await asyncio.sleep(0.1)
    for i in range(1100):  # the number of histories doubles: a sweep
        app.broadcast("n", i, to=[f"chat:new-{i}"])
    assert len(app._stores) == 1100, "emptied histories were kept"
    assert all(room.startswith("chat:new-") for room in app._stores)
    # A room whose history expired starts a new epoch.
    first = (await app.history("chat:gone-1")).position
    assert first.offset == 0


async def test_with_redis_a_replay_past_the_queue_bound_follows_the_slow_consumer_policy(redis_server):
    apps = [make_app(backplane=redis_server.url, max_queue_bytes=256 * 1024) for _ in range(2)]
    async with Served(apps[0]) as a, Served(apps[1]) as b:
        await replay_past_the_queue_bound(a.app, a.url, a.running, b.url, b.app.broadcast)


async def test_joins_into_history_rooms_are_spread_over_the_loops_iterations():
    """The pacer of the App's history joins: a thousand joins whose
    replays take 0.2 ms each run in their order, and the loop runs other
    callbacks between them (the live events' turn) instead of after the
    last one."""
    from roomcast.app import _Pacer

    pacer = _Pacer()
    loop = asyncio.get_running_loop()
    done, ticks = [], []

    async def join(i):
        await pacer.turn()
        t = time.perf_counter()
        while time.perf_counter() - t < 0.0002:  # a replay's work
            pass
        done.append(i)

    def tick():
        ticks.append(len(done))
        if len(done) < 1000:
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.gather(*(join(i) for i in range(1000)))
    assert done == list(range(1000))
    between = {n for n in ticks if 0 < n < 1000}
    assert len(between) >= 10, f"the loop ran other callbacks at only {sorted(between)} joins done"
