"""Rooms across servers through Redis: a real ``redis-server`` (the
``redis_server`` fixture) and real roomcast servers, in other processes
(``examples/scale_out.py``) or in this one, with ``websockets`` clients."""

import asyncio
import json
import logging
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import App, BackplaneError, Room, Server
from support.crossserver import Collector, drained, echo_room, three_servers_exactly_once, warm_up
from support.redisproc import RespClient, resp_encode

T = 30  # seconds: generous, the machine is shared


async def recv(ws, timeout=T):
    return await asyncio.wait_for(ws.recv(), timeout)


async def until(predicate, timeout=T, what="condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def settles(coroutine_function, value, timeout=T):
    """Polls an async query until it returns value: updates made through
    another server's connection to Redis are not ordered with this one's."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await coroutine_function()
        if got == value:
            return
        assert asyncio.get_running_loop().time() < deadline, f"still {got!r}, not {value!r}"
        await asyncio.sleep(0.05)


async def test_three_server_processes_share_rooms_exactly_once_in_order(examples, redis_server):
    servers = [await examples("scale_out.py", "--port", "0", "--backplane", redis_server.url) for _ in range(3)]
    await three_servers_exactly_once([s.port for s in servers], 200)

    # exclude= across servers: the sender alone does not get its message.
    async with (
        connect(f"ws://127.0.0.1:{servers[0].port}/others") as a,
        connect(f"ws://127.0.0.1:{servers[1].port}/others") as b,
        connect(f"ws://127.0.0.1:{servers[2].port}/others") as c,
    ):
        collectors = [Collector(ws) for ws in (a, b, c)]
        # a's probes reach b and c; b's reach a and c: all subscribed then.
        for _ in range(200):
            await a.send("probe-a")
            await b.send("probe-b")
            await asyncio.sleep(0.1)
            if "probe-a" in collectors[1].got and "probe-a" in collectors[2].got and "probe-b" in collectors[0].got:
                break
        others = [[1, 2], [0, 2], [0, 1]]  # whom each one hears
        await drained([a, b, c], collectors, "warm-", others)
        for col in collectors:
            col.got.clear()
        await a.send("from a")
        await b.send("from b")
        await drained([a, b, c], collectors, "end-", others)
        got = [[m for m in col.got if not m.startswith("end-")] for col in collectors]
        assert got[0] == ["from b"]
        assert got[1] == ["from a"]
        assert sorted(got[2]) == ["from a", "from b"]
        for col in collectors:
            col.stop()

    # A relay room relays in C on every server.
    async with (
        connect(f"ws://127.0.0.1:{servers[1].port}/relay") as x,
        connect(f"ws://127.0.0.1:{servers[2].port}/relay") as y,
    ):
        cx, cy = Collector(x), Collector(y)
        await warm_up([x, y], [cx, cy], "probe-")
        await x.send(b"\x00binary stays binary")
        # Once y has it, Redis has carried it: y's next ones come after it
        # everywhere, and so would a copy of x's own message sent back to x.
        await until(lambda: cy.got == [b"\x00binary stays binary"], what="x's message at y")
        await y.send("text stays text")
        await y.send("end")
        await until(lambda: "end" in cx.got and "end" in cy.got, what="the end marker")
        for col in (cx, cy):
            assert col.got == [b"\x00binary stays binary", "text stays text", "end"]
        cx.stop()
        cy.stop()
    for s in servers:
        assert await s.stop(signal.SIGTERM) == 0


async def test_a_killed_server_leaves_presence_within_the_ttl(examples, redis_server):
    ttl = 3
    a = await examples("scale_out.py", "--port", "0", "--backplane", redis_server.url, "--presence-ttl", str(ttl))
    b = await examples("scale_out.py", "--port", "0", "--backplane", redis_server.url, "--presence-ttl", str(ttl))
    async with (
        connect(f"ws://127.0.0.1:{a.port}/chat?name=alice") as alice,
        connect(f"ws://127.0.0.1:{b.port}/chat?name=bob") as bob,
    ):

        async def who():
            await alice.send("/who")
            while True:
                answer = json.loads(await recv(alice))
                if isinstance(answer, dict) and "members" in answer:
                    return answer

        deadline = asyncio.get_running_loop().time() + T
        while True:
            answer = await who()
            if sorted(answer["members"].values()) == ["alice", "bob"]:
                break
            assert asyncio.get_running_loop().time() < deadline, answer
            await asyncio.sleep(0.1)
        assert answer["count"] == 2
        ids = list(answer["members"])
        assert len({i.split(":")[0] for i in ids}) == 2  # two servers' ids

        b.proc.send_signal(signal.SIGKILL)
        await b.proc.wait()
        killed = asyncio.get_running_loop().time()
        while True:
            answer = await who()
            if list(answer["members"].values()) == ["alice"]:
                break
            await asyncio.sleep(0.2)
            assert asyncio.get_running_loop().time() - killed < ttl + 10, answer
        assert answer["count"] == 1
        del bob
    assert await a.stop(signal.SIGTERM) == 0


# -- servers in this process --------------------------------------------------


def publish_size(channel, payload):
    """Bytes of the PUBLISH command the core buffers for one message of
    one room: the envelope is 20 bytes of header, then the payload."""
    return len(resp_encode(["PUBLISH", channel, b"h" * 20 + payload.encode()]))


def accounted(running, each):
    """Publishes the backplane has buffered (each ``each`` bytes) or
    dropped so far."""
    stats = running.stats()
    return stats["backplane_buffered"] // each + stats["backplane_dropped"]


async def subscribed(running, n=1):
    await until(lambda: running.stats()["backplane_channels"] >= n, what="a subscription")


async def test_redis_restart_local_delivery_goes_on_then_cross_server_resumes(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="roomcast")
    s1 = Server(backplane=redis_server.url)
    s1.route("/r", echo_room("restart"))
    s2 = Server(backplane=redis_server.url)
    s2.route("/r", echo_room("restart"))
    async with s1.serve("127.0.0.1", 0) as r1, s2.serve("127.0.0.1", 0) as r2:
        async with connect(f"ws://127.0.0.1:{r1.port}/r") as a, connect(f"ws://127.0.0.1:{r2.port}/r") as b:
            await subscribed(r1)
            await subscribed(r2)
            await a.send("before")
            assert await recv(a) == "before"
            assert await recv(b) == "before"

            redis_server.stop()
            await until(
                lambda: r1.stats()["backplane_up"] == 0 and r2.stats()["backplane_up"] == 0,
                what="the servers to see Redis gone",
            )
            await a.send("while down")  # local members still get it
            assert await recv(a) == "while down"
            await b.send("on b")
            assert await recv(b) == "on b"

            redis_server.start()
            await until(
                lambda: r1.stats()["backplane_up"] == 1 and r2.stats()["backplane_up"] == 1, what="reconnection"
            )
            await subscribed(r1)
            await subscribed(r2)
            # What was buffered while down may have gone out before the
            # other server resubscribed (see the next test for a sure
            # order); from now on both see everything.
            await a.send("after")
            seen = []
            while "after" not in seen:
                seen.append(await recv(b))
            assert r1.stats()["backplane_reconnects"] >= 2  # both connections
            assert r2.stats()["backplane_reconnects"] >= 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost Redis" in m for m in messages), messages
    assert sum("backplane: connected to" in m for m in messages) >= 4, messages


async def test_pushes_buffered_while_redis_was_away_arrive_once_in_order_and_not_back_home(redis_server):
    # Redis comes back asking the default user for a password: the server
    # that logs in as the ACL user "two" resubscribes at once, the other
    # keeps its pushes buffered until the password goes.
    redis_server.stop()
    redis_server.start(users=[("two", "pw2")])
    s1 = Server(backplane=redis_server.url)
    s1.route("/q", echo_room("q"))
    s2 = Server(backplane=f"redis://two:pw2@127.0.0.1:{redis_server.port}/0")
    s2.route("/q", echo_room("q"))
    async with s1.serve("127.0.0.1", 0) as r1, s2.serve("127.0.0.1", 0) as r2:
        async with connect(f"ws://127.0.0.1:{r1.port}/q") as a, connect(f"ws://127.0.0.1:{r2.port}/q") as b:
            await subscribed(r1)
            await subscribed(r2)
            await a.send("warm")
            assert await recv(a) == "warm"
            assert await recv(b) == "warm"

            redis_server.stop()
            await until(lambda: r1.stats()["backplane_up"] == 0 and r2.stats()["backplane_up"] == 0)
            redis_server.start(password="secret", users=[("two", "pw2")])
            await until(lambda: r2.stats()["backplane_up"] == 1, what="the ACL user back in")
            await subscribed(r2)
            sent = [f"m{k}" for k in range(20)]
            for m in sent:
                await a.send(m)
                assert await recv(a) == m  # local members at once
            assert r1.stats()["backplane_up"] == 0 and r1.stats()["backplane_buffered"] > 0

            admin = redis_server.client()
            assert admin.command("AUTH", "secret") == "OK"
            admin.command("CONFIG", "SET", "requirepass", "")
            admin.close()
            assert [await recv(b) for _ in sent] == sent, "once each, in order"
            await subscribed(r1)
            # Resubscribed, s1 hears its own messages from Redis again and
            # must skip them: had it not, a would get "n" twice before "end".
            await a.send("n")
            assert await recv(a) == "n"
            assert await recv(b) == "n"  # not a second copy of a buffered one
            await b.send("end")
            assert await recv(b) == "end"
            assert await recv(a) == "end"
            assert r1.stats()["backplane_dropped"] == 0


async def test_publishes_while_redis_is_down_are_buffered_to_a_bound_then_dropped(redis_server):
    prefix = "buf:"
    server = Server(backplane=redis_server.url, backplane_prefix=prefix, backplane_buffer=2000)
    room = Room(name="b")
    server.route("/b", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/b") as member:
            await subscribed(running)
            redis_server.stop()
            await until(lambda: running.stats()["backplane_up"] == 0)
            # Redis comes back asking for a password the server does not
            # have (from its first connection on, so that the server cannot
            # get in before it is set): it stays down while a subscriber of
            # ours gets ready.
            redis_server.start(password="secret")
            admin = redis_server.client()
            assert admin.command("AUTH", "secret") == "OK"
            payload = "x" * 100
            for k in range(40):
                await room.push_text(f"{k:02d}{payload}")
            for k in range(40):
                assert await recv(member) == f"{k:02d}{payload}"  # local: all of them
            # The core writes to its members before it hands a batch of
            # publishes to the backplane: wait until all 40 are accounted.
            each = publish_size(prefix + "|b", f"00{payload}")
            await until(lambda: accounted(running, each) == 40, what="40 publishes buffered or dropped")
            stats = running.stats()
            assert 0 < stats["backplane_buffered"] <= 2000
            dropped = stats["backplane_dropped"]
            kept = 40 - dropped
            assert 10 <= kept < 40, stats

            listener = RespClient(redis_server.port)
            assert listener.command("AUTH", "secret") == "OK"
            assert listener.command("SUBSCRIBE", prefix + "|b")[0] == b"subscribe"
            admin.command("CONFIG", "SET", "requirepass", "")
            got = []
            while len(got) < kept:
                kind, channel, data = listener.read()
                assert (kind, channel) == (b"message", (prefix + "|b").encode())
                assert data[:3] == b"\x00rc"  # roomcast's header
                got.append(data[20:].decode())
            assert got == [f"{k:02d}{payload}" for k in range(kept)], "the first ones, in order"
            assert running.stats()["backplane_buffered"] == 0
            listener.close()
            admin.close()


async def test_publishes_wait_while_the_subscriber_connection_is_down_even_with_the_command_one_up(redis_server):
    """The backplane is down as soon as one of its two connections is: a
    publish then waits in the buffer, not on the command connection, whose
    own loss may not have been read yet when Redis has gone (a publish
    written to it would be lost, uncounted). Here only the subscriber
    connection goes and cannot come back (Redis now wants a password that
    connections already in keep): the publishes wait, then go once, in
    order, when it is back."""
    prefix = "half:"
    server = Server(backplane=redis_server.url, backplane_prefix=prefix)
    room = Room(name="h")
    server.route("/h", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/h") as member:
            await subscribed(running)
            admin = redis_server.client()
            admin.command("CONFIG", "SET", "requirepass", "secret")
            assert admin.command("AUTH", "secret") == "OK"
            assert admin.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            await until(lambda: running.stats()["backplane_up"] == 0, what="the backplane down")
            listener = RespClient(redis_server.port)
            assert listener.command("AUTH", "secret") == "OK"
            assert listener.command("SUBSCRIBE", prefix + "|h")[0] == b"subscribe"
            published = running.stats()["backplane_published"]
            for k in range(5):
                await room.push_text(f"half {k}")
            for k in range(5):
                assert await recv(member) == f"half {k}"  # local at once
            # Written to the member first, then handed to the backplane.
            each = publish_size(prefix + "|h", "half 0")
            await until(lambda: accounted(running, each) + running.stats()["backplane_published"] - published >= 5)
            stats = running.stats()
            assert stats["backplane_buffered"] == 5 * each, "the publishes must wait, not go on the command connection"
            assert stats["backplane_published"] == published
            admin.command("CONFIG", "SET", "requirepass", "")
            got = []
            while len(got) < 5:
                kind, channel, data = listener.read()
                assert (kind, channel) == (b"message", (prefix + "|h").encode())
                got.append(data[20:].decode())
            assert got == [f"half {k}" for k in range(5)]
            await until(lambda: running.stats()["backplane_buffered"] == 0)
            listener.close()
            admin.close()


async def test_subscriptions_follow_local_membership(redis_server):
    server = Server(backplane=redis_server.url, backplane_prefix="sub:")
    server.route("/x", Room(name="x"))
    async with server.serve("127.0.0.1", 0) as running:

        def rooms():
            return sorted(c for c in redis_server.command("PUBSUB", "CHANNELS", "sub:*") if b"\x00" not in c)

        await until(lambda: running.stats()["backplane_up"] == 1)
        assert rooms() == []
        async with connect(f"ws://127.0.0.1:{running.port}/x"), connect(f"ws://127.0.0.1:{running.port}/x"):
            await until(lambda: rooms() == [b"sub:|x"], what="SUBSCRIBE on the first member")
            assert running.stats()["backplane_channels"] == 1
        await until(lambda: rooms() == [], what="UNSUBSCRIBE after the last member")
        # Join and leave in quick succession, many times: it settles right.
        for _ in range(20):
            async with connect(f"ws://127.0.0.1:{running.port}/x"):
                pass
        async with connect(f"ws://127.0.0.1:{running.port}/x"):
            await until(lambda: rooms() == [b"sub:|x"] and running.stats()["backplane_channels"] == 1)
        await until(lambda: rooms() == [] and running.stats()["backplane_channels"] == 0)


async def test_a_push_with_no_member_here_still_reaches_the_other_servers(redis_server):
    announcements = Room(name="news")
    receiving = Server(backplane=redis_server.url)
    receiving.route("/news", announcements)
    sending = Server(backplane=redis_server.url)  # no member of "news" here
    sending_room = Room(name="news")
    async with receiving.serve("127.0.0.1", 0) as r, sending.serve("127.0.0.1", 0) as s:
        async with connect(f"ws://127.0.0.1:{r.port}/news") as member:
            await subscribed(r)
            await until(lambda: s.stats()["backplane_up"] == 1)
            await sending_room.push_json({"headline": "hello"})
            await sending_room.push_json({"headline": "next"})
            # Both Rooms named "news" in this process are one room: the
            # member gets each push once, from whichever server carried it
            # (both the same way, in order: a second copy of the first
            # would come before the next).
            assert json.loads(await recv(member)) == {"headline": "hello"}
            assert json.loads(await recv(member)) == {"headline": "next"}


async def test_app_broadcast_to_several_rooms_reaches_each_socket_once(redis_server):
    apps = [App(backplane=redis_server.url, room_notices=False) for _ in range(2)]

    @apps[0].on("say")
    async def say(ws):
        ws.app.broadcast("said", ws.payload, to=["a", "b", "nobody-here"])

    async with apps[0].serve("127.0.0.1", 0) as r0, apps[1].serve("127.0.0.1", 0) as r1:
        for app in apps:

            @app.on("enter")
            async def enter(ws):
                for room in ws.payload:
                    await ws.join(room)
                await ws.emit("entered")

        async with (
            connect(f"ws://127.0.0.1:{r0.port}/") as speaker,
            connect(f"ws://127.0.0.1:{r1.port}/") as both,
            connect(f"ws://127.0.0.1:{r1.port}/") as only_b,
            connect(f"ws://127.0.0.1:{r0.port}/") as local_both,
        ):
            for ws, rooms in ((both, ["a", "b"]), (only_b, ["b"]), (local_both, ["a", "b"])):
                await ws.send(json.dumps({"event": "enter", "payload": rooms}))
                assert json.loads(await recv(ws))["event"] == "entered"
            await subscribed(r1, 2)
            for k in range(21):
                await speaker.send(json.dumps({"event": "say", "payload": k}))
            for ws in (both, only_b, local_both):
                # Each once, not once per room: a second copy of a message
                # comes right after the first, before the next one.
                got = [json.loads(await recv(ws)) for _ in range(21)]
                assert got == [{"event": "said", "payload": k} for k in range(21)]


async def test_servers_of_one_process_on_one_redis_spelled_differently_publish_once(redis_server):
    # 127.0.0.1 and localhost are one Redis: the process publishes each
    # push once, and each member gets it once, from this process.
    urls = [f"redis://127.0.0.1:{redis_server.port}/0", f"redis://localhost:{redis_server.port}/0"]
    servers = [Server(backplane=url) for url in urls]
    for server in servers:
        server.route("/r", echo_room("spelled"))
    async with servers[0].serve("127.0.0.1", 0) as r1, servers[1].serve("127.0.0.1", 0) as r2:
        # Each has asked Redis who it is (INFO) once connected.
        await until(
            lambda: all(s._hub.backplane is not None and s._hub.backplane.identity for s in servers),
            what="Redis's run id",
        )
        async with connect(f"ws://127.0.0.1:{r1.port}/r") as a, connect(f"ws://127.0.0.1:{r2.port}/r") as b:
            collectors = [Collector(a), Collector(b)]
            await warm_up([a, b], collectors, "probe-")
            before = r1.stats()["backplane_published"] + r2.stats()["backplane_published"]
            for k in range(100):
                await (a if k % 2 else b).send(f"m{k}")
            await drained([a, b], collectors, "done-")
            # The copies from Redis, were there any, come after the marker
            # of the publish that made them: a second round of markers lets
            # them arrive.
            await drained([a, b], collectors, "again-")
            published = r1.stats()["backplane_published"] + r2.stats()["backplane_published"] - before
            assert published == 100 + 4, "the process published a push more than once"  # and 4 markers
            for c in collectors:
                got = [m for m in c.got if m.startswith("m")]
                assert sorted(got) == sorted(f"m{k}" for k in range(100)), "lost or delivered twice"
                c.stop()


async def test_a_message_published_by_another_program_reaches_the_members(redis_server):
    server = Server(backplane=redis_server.url)
    server.route("/feed", Room(name="feed"))
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/feed") as member:
            await subscribed(running)
            redis_server.command("PUBLISH", "roomcast:|feed", "plain text from a worker")
            assert await recv(member) == "plain text from a worker"
            redis_server.command("PUBLISH", "roomcast:|feed", b"\xff\xfe not UTF-8")
            assert await recv(member) == b"\xff\xfe not UTF-8"
            # Our header with a version we do not know: dropped, counted.
            redis_server.command("PUBLISH", "roomcast:|feed", b"\x00rc\x71" + bytes(16) + b"x")
            # Our header, text flag, invalid UTF-8: dropped, counted.
            redis_server.command(
                "PUBLISH", "roomcast:|feed", b"\x00rc\x11" + bytes(8) + b"\x00" * 7 + b"\x01" + b"\xff"
            )
            redis_server.command("PUBLISH", "roomcast:|feed", "after")
            assert await recv(member) == "after"
            assert running.stats()["backplane_invalid"] == 2
            assert running.stats()["backplane_received"] == 3


async def test_presence_counts_members_of_every_server_with_their_identity(redis_server):
    rooms = [Room(name="p") for _ in range(2)]
    # A member that leaves goes at once: with a TTL far beyond the test's
    # deadline, only its leave can take it out.
    servers = [Server(backplane=redis_server.url, presence_ttl=600) for _ in range(2)]
    for server, room in zip(servers, rooms, strict=True):

        @server.websocket("/p/{name}")
        async def endpoint(websocket, name: str, room=room):
            await room.connect(websocket, identity={"user": name})

    async with servers[0].serve("127.0.0.1", 0) as r0, servers[1].serve("127.0.0.1", 0) as r1:
        await until(lambda: r0.stats()["backplane_up"] == 1 and r1.stats()["backplane_up"] == 1)
        assert await rooms[0].count() == 0
        async with (
            connect(f"ws://127.0.0.1:{r0.port}/p/ann"),
            connect(f"ws://127.0.0.1:{r1.port}/p/ben"),
            connect(f"ws://127.0.0.1:{r1.port}/p/cat") as cat,
        ):
            await until(lambda: len(rooms[1]) == 2 and len(rooms[0]) == 1)
            for room in rooms:
                await settles(room.count, 3)
                members = await room.members()
                assert sorted(m["user"] for m in members.values()) == ["ann", "ben", "cat"]
                assert {i.split(":")[0] for i in members} == {r0.server_id, r1.server_id}
            await cat.close()
            await until(lambda: len(rooms[1]) == 1)
            await settles(rooms[0].count, 2)
        await until(lambda: len(rooms[0]) == 0 and len(rooms[1]) == 0)
        await settles(rooms[1].count, 0)
        await settles(rooms[0].count, 0)
        # A server that stops gracefully takes its members out at once.
        async with connect(f"ws://127.0.0.1:{r1.port}/p/dan"):
            await until(lambda: len(rooms[1]) == 1)
            await settles(rooms[0].count, 1)
    keys = [k for k in redis_server.command("KEYS", "roomcast:|presence*")]
    assert keys == []
    assert redis_server.command("KEYS", "*") == []  # nothing else was written


async def test_presence_without_a_backplane_is_this_process(redis_server):
    room = Room()
    server = Server()

    @server.websocket("/local")
    async def endpoint(websocket):
        await room.connect(websocket, identity="me")

    @server.websocket("/nameless")
    async def bad_identity(websocket):
        try:
            await room.connect(websocket, identity=object())
        except TypeError:  # said before the handshake is answered
            await websocket.close()

    async with server.serve("127.0.0.1", 0) as running:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{running.port}/nameless")
        assert refused.value.response.status_code == 403
        async with connect(f"ws://127.0.0.1:{running.port}/local"):
            await until(lambda: len(room) == 1)
            assert await room.count() == 1
            members = await room.members()
            assert list(members.values()) == ["me"]
            assert list(members)[0].startswith(running.server_id + ":")


async def test_unreachable_redis_local_rooms_work_presence_raises(caplog):
    from support.redisproc import free_port

    caplog.set_level(logging.WARNING, logger="roomcast")
    server = Server(backplane=f"redis://127.0.0.1:{free_port()}/0")
    room = echo_room("nowhere")
    server.route("/n", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/n") as ws:
            await ws.send("still served")
            assert await recv(ws) == "still served"
            with pytest.raises(BackplaneError, match="not connected"):
                await room.count()
            assert running.stats()["backplane_up"] == 0
    assert any("cannot reach Redis" in r.getMessage() for r in caplog.records)


def test_backplane_options_are_checked():
    for url, message in [
        ("http://x", "redis://"),
        ("rediss://x?ssl_ca_certs=/nonexistent", "/nonexistent"),
        ("redis://", "no host"),
        ("redis://h:99999", "port"),
        ("redis://h/db", "number"),
        ("redis://h/0?x=1", "only with rediss://"),
    ]:
        with pytest.raises(ValueError, match=message):
            Server(backplane=url)
    with pytest.raises(ValueError, match="backplane_buffer"):
        Server(backplane="redis://h", backplane_buffer=-1)
    with pytest.raises(ValueError, match="presence_ttl"):
        Server(backplane="redis://h", presence_ttl=0)
    for name in ["", "a\x00b", "x" * 1025]:
        with pytest.raises(ValueError, match="room name"):
            Room(name=name)
    with pytest.raises(TypeError):
        Room(name=7)  # type: ignore[arg-type]


async def test_commands_that_would_change_the_shared_connection_are_refused(redis_server):
    server = Server(backplane=redis_server.url)
    async with server.serve("127.0.0.1", 0) as running:
        await until(lambda: running.stats()["backplane_up"] == 1)
        backplane = server._backplane
        assert await backplane.command("SET", "k", "v") == "OK"
        assert await backplane.command("GET", "k") == b"v"
        with pytest.raises(BackplaneError, match="WRONGTYPE|ERR"):
            await backplane.command("HGET", "k", "f")
        for verb in ["SUBSCRIBE", "select", "MULTI", "BLPOP", "QUIT", "WAITAOF", "debug"]:
            with pytest.raises(ValueError, match="not allowed"):
                server._core.redis(1, verb, "x")


# -- prefixes, names, hostile input --------------------------------------------


async def test_long_prefixes_work_end_to_end_with_two_servers(redis_server):
    # The channel head and the sentinel channel are sized from the prefix
    # (up to 200 bytes): a fixed 64-byte sentinel crashed or sent heap bytes.
    for size in (41, 60, 100, 150, 200):
        prefix = ("p%d-" % size + "x" * size)[:size]
        rooms = [echo_room("long") for _ in range(2)]
        servers = [Server(backplane=redis_server.url, backplane_prefix=prefix) for _ in range(2)]
        for server, room in zip(servers, rooms, strict=True):
            server.route("/l", room)
        async with servers[0].serve("127.0.0.1", 0) as r0, servers[1].serve("127.0.0.1", 0) as r1:
            async with connect(f"ws://127.0.0.1:{r0.port}/l") as a, connect(f"ws://127.0.0.1:{r1.port}/l") as b:
                await subscribed(r0)
                await subscribed(r1)
                channels = set(redis_server.command("PUBSUB", "CHANNELS", "*"))
                assert (prefix + "|long").encode() in channels
                for running in (r0, r1):
                    assert (prefix + "\0server:" + running.server_id).encode() in channels, size
                await a.send(f"hello {size}")
                assert await recv(b) == f"hello {size}"
                assert await recv(a) == f"hello {size}"


async def test_nested_prefixes_and_room_names_with_colons_do_not_collide(redis_server):
    # Prefix "a:" with room "b:x" and prefix "a:b:" with room "x" were both
    # the channel "a:b:x".
    outer, inner = echo_room("b:x"), echo_room("x")
    s_outer = Server(backplane=redis_server.url, backplane_prefix="a:")
    s_outer.route("/r", outer)
    s_inner = Server(backplane=redis_server.url, backplane_prefix="a:b:")
    s_inner.route("/r", inner)
    async with s_outer.serve("127.0.0.1", 0) as ro, s_inner.serve("127.0.0.1", 0) as ri:
        async with connect(f"ws://127.0.0.1:{ro.port}/r") as wo, connect(f"ws://127.0.0.1:{ri.port}/r") as wi:
            await subscribed(ro)
            await subscribed(ri)
            listener = RespClient(redis_server.port)
            outer_channel = listener.command("PUBSUB", "CHANNELS", "a:|*")
            assert outer_channel == [b"a:|b:x"]
            assert listener.command("SUBSCRIBE", outer_channel[0])[0] == b"subscribe"
            await wo.send("outer only")
            assert await recv(wo) == "outer only"
            assert listener.read()[2][20:] == b"outer only"  # Redis has dispatched it
            # Published after it: if the inner server had the outer message,
            # it would come first.
            redis_server.command("PUBLISH", "a:b:|x", "marker")
            assert await recv(wi) == "marker"
            listener.close()
            assert await outer.count() == 1
            assert await inner.count() == 1

    # Presence: a room named "p:<server id>" is not the hash of room "p".
    room = Room(name="p")
    server = Server(backplane=redis_server.url)
    server.route("/p", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/p"):
            await until(lambda: len(room) == 1)
            await settles(room.count, 1)
            assert await Room(name=f"p:{running.server_id}").count() == 0
            assert await Room(name=f"p:{running.server_id}").members() == {}


async def test_a_broken_redis_costs_a_reconnect_never_the_process(examples):
    # hiredis 0.14's async layer aborted the process (rc 134) on each of these.
    from support.redisproc import FakeRedis

    sub_bad = [
        b"*2\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n",  # a short subscribe array
        b"*3\r\n:7\r\n$1\r\nx\r\n:1\r\n",  # a kind that is not a string
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n$1\r\ny\r\n",  # a count that is not a number
        b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n*0\r\n",  # a message that is not a string
        b"-ERR no such thing\r\n",  # an error nobody asked for
        b"?not RESP\r\n",  # a protocol error
        b"*1\r\n" * 12 + b":1\r\n",  # nested too deep for the reader
        b"*2147483647\r\n:1\r\n",  # an array announced with 2^31 - 1 elements
    ]
    cmd_bad = [
        b"+OK\r\n",
        b":1\r\n",
        b"*1\r\n$1\r\nx\r\n",  # replies to no command
        b"*1\r\n*2000000\r\n",
    ]  # an inner array past the bound
    fake = await FakeRedis(
        lambda kind, n: (sub_bad if kind == "sub" else cmd_bad)[
            (n - 1) % (len(sub_bad) if kind == "sub" else len(cmd_bad))
        ]
    ).start()
    try:
        server = await examples("scale_out.py", "--port", "0", "--backplane", fake.url)
        async with connect(f"ws://127.0.0.1:{server.port}/chat") as ws:
            deadline = asyncio.get_running_loop().time() + 60
            k = 0
            while fake.connections["sub"] <= len(sub_bad) or fake.connections["cmd"] <= len(cmd_bad):
                assert asyncio.get_running_loop().time() < deadline, fake.connections
                await ws.send(f"local {k}")  # local delivery goes on meanwhile
                assert await recv(ws) == f"local {k}"
                k += 1
                await asyncio.sleep(0.1)
        assert server.proc.returncode is None
        assert await server.stop(signal.SIGTERM) == 0
        log = "".join(server.log)
        assert "Redis sent an unexpected" in log or "a reply to no command" in log, log
    finally:
        await fake.close()


async def test_messages_from_redis_over_max_message_size_are_dropped(redis_server):
    server = Server(backplane=redis_server.url, max_message_size=1000)
    server.route("/feed", Room(name="feed"))
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/feed") as member:
            await subscribed(running)
            redis_server.command("PUBLISH", "roomcast:|feed", "x" * 1000)
            assert await recv(member) == "x" * 1000  # at the bound: delivered
            redis_server.command("PUBLISH", "roomcast:|feed", "y" * 1001)
            header = b"\x00rc\x11" + bytes(7) + b"\x05" + bytes(7) + b"\x01"
            redis_server.command("PUBLISH", "roomcast:|feed", header + b"z" * 1001)
            redis_server.command("PUBLISH", "roomcast:|feed", "after")
            assert await recv(member) == "after"
            assert running.stats()["backplane_invalid"] == 2


def test_backplane_url_errors_do_not_show_the_password():
    for url in ["redis://user:hunter2@h:99999", "redis://:hunter2@h/db", "redis://:hunter2@/0"]:
        with pytest.raises(ValueError) as raised:
            Server(backplane=url)
        assert "hunter2" not in str(raised.value)
        assert "***" in str(raised.value) or "db" in str(raised.value)


async def test_a_member_that_left_while_redis_was_away_leaves_presence_on_reconnection(redis_server):
    # Its leave could not reach Redis; Redis comes back with its data (saved
    # before it stopped): the member must go at reconnection, not after
    # presence_ttl (10 minutes here, far beyond the test's deadline).
    room = Room(name="away")
    server = Server(backplane=redis_server.url, presence_ttl=600)
    server.route("/a", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/a") as stays:
            async with connect(f"ws://127.0.0.1:{running.port}/a"):
                await until(lambda: len(room) == 2)
                await settles(room.count, 2)
                assert redis_server.command("SAVE") == "OK"
                redis_server.stop()
                await until(lambda: running.stats()["backplane_up"] == 0)
            await until(lambda: len(room) == 1)
            await stays.close()
            await until(lambda: len(room) == 0)
        redis_server.start()
        assert redis_server.command("EXISTS", "roomcast:|presence|away") == 1  # the saved data
        await until(lambda: running.stats()["backplane_up"] == 1)
        await settles(room.count, 0)
        await settles(room.members, {})


async def test_a_message_from_another_server_is_compressed_once_here(redis_server):
    # Three members with permessage-deflate and one without: a message that
    # arrives through Redis is compressed once on this server, and all four
    # get it intact.
    server = Server(backplane=redis_server.url)
    server.route("/feed", Room(name="feed"))
    ticker = [{"symbol": f"S{i:03d}", "bid": 100 + i / 7, "ask": 101 + i / 9, "venue": "XPAR"} for i in range(20)]
    async with server.serve("127.0.0.1", 0) as running:
        url = f"ws://127.0.0.1:{running.port}/feed"
        deflating = [await connect(url) for _ in range(3)]
        plain = await connect(url, compression=None)
        try:
            assert all("permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"] for ws in deflating)
            assert "Sec-WebSocket-Extensions" not in plain.response.headers
            await subscribed(running)
            for n in range(5):
                redis_server.command("PUBLISH", "roomcast:|feed", json.dumps({"n": n, "quotes": ticker}))
            for ws in [*deflating, plain]:
                for n in range(5):
                    assert json.loads(await recv(ws)) == {"n": n, "quotes": ticker}
            stats = running.stats()
            assert stats["backplane_received"] == 5
            assert stats["messages_deflated"] == 5  # not 15: once per message
            assert stats["deflate_connections"] == 3
        finally:
            for ws in [*deflating, plain]:
                await ws.close()
