"""The Redis Cluster backplane (``redis+cluster://``) against a real cluster
(support/rediscluster.py: three masters, a replica each), with roomcast
servers in this process and ``websockets`` clients: rooms whose channels
fall on every shard are each published (SPUBLISH) and subscribed
(SSUBSCRIBE) on their own shard; every member gets every message once, in
each publisher's order; presence and ``exclude=`` work across servers;
and a slot that moves or a master that fails costs at most the messages
in flight at that moment, after which delivery resumes. One cluster serves
the whole file; the tests that change it (marked ``slow``) ask it where
things are rather than remembering."""

import asyncio
import json
import logging
import re
from contextlib import AsyncExitStack
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect

from roomcast import Room, Server, _core
from roomcast.backplane import escape_prefix, parse_url
from support.certs import tls_certs_fixture  # noqa: F401 (a fixture)
from support.crossserver import Collector, drained, refused, three_servers_exactly_once, warm_up
from support.polling import until
from support.rediscluster import RedisCluster
from support.redisproc import FakeRedis, RedisServer, RedisTLS, RespClient, free_port

T = 30  # seconds: generous, the machine is shared
PREFIX = "roomcast:"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


def url_of(cluster, *ports):
    return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports or cluster.ports[:1])


def slot_of(name, prefix=PREFIX):
    """The slot of Room(name=name)'s channel on a cluster: its tag's."""
    channel = f"{escape_prefix(prefix)}|{name}".encode()
    return _core.key_slot(_core.room_tag(channel))


def rooms_on_every_shard(cluster, per_shard=2, stem="room"):
    """Room names, ``per_shard`` on each master's slots."""
    by_master = {}
    for i in range(10000):
        name = f"{stem}{i}"
        owner = cluster.master_of(slot_of(name)).id
        if len(by_master.setdefault(owner, [])) < per_shard:
            by_master[owner].append(name)
        if len(by_master) == cluster.masters and all(len(v) == per_shard for v in by_master.values()):
            return [name for names in by_master.values() for name in names]
    raise AssertionError("no room names for every shard")


def echo_room(name, exclude_sender=False):
    room = Room(name=name)

    @room.on_receive("text")
    async def push(room, websocket, message):
        if message == "/count":
            await websocket.send_text(f"count {await room.count()}")
        elif message == "/members":
            await websocket.send_text(f"members {len(await room.members())}")
        else:
            await room.push_text(message, exclude=websocket if exclude_sender else None)

    return room


async def serve_all(stack, url, names, servers=3, presence_ttl=30.0, **room_options):
    """``servers`` servers on the cluster, each routing /<name> to an echo
    room of each name; their running handles."""
    running = []
    for _ in range(servers):
        server = Server(backplane=url, presence_ttl=presence_ttl)
        for name in names:
            server.route(f"/{name}", echo_room(name, **room_options))
        running.append(await stack.enter_async_context(server.serve("127.0.0.1", 0)))
    return running


async def join_everywhere(stack, running, name, query=""):
    """A client of room name on each server."""
    return [
        await stack.enter_async_context(connect(f"ws://127.0.0.1:{r.port}/{name}{query}", open_timeout=T))
        for r in running
    ]


def shard_channels(cluster):
    """Each master's sharded channels subscribed now: port -> count."""
    out = {}
    for node in cluster.nodes():
        if node.role == "master" and not node.failed:
            client = RespClient(node.port)
            try:
                out[node.port] = len(client.command("PUBSUB", "SHARDCHANNELS"))
            finally:
                client.close()
    return out


async def test_rooms_on_every_shard_are_delivered_exactly_once_in_order_across_three_servers(cluster):
    names = rooms_on_every_shard(cluster)
    n = 100
    async with AsyncExitStack() as stack:
        running = await serve_all(stack, url_of(cluster), names)
        clients = {name: await join_everywhere(stack, running, name) for name in names}
        collectors = {name: [Collector(ws) for ws in clients[name]] for name in names}
        for name in names:
            await warm_up(clients[name], collectors[name], f"probe-{name}-")
        # Each shard serves its rooms' channels: every master has some.
        channels = shard_channels(cluster)
        assert len(channels) == 3 and all(count >= 2 for count in channels.values()), channels
        for r in running:
            assert r.stats()["backplane_channels"] == len(names)
        for k in range(n):
            for name in names:
                for i, ws in enumerate(clients[name]):
                    await ws.send(f"{name}:{i}:{k}")
        for name in names:
            await drained(clients[name], collectors[name], f"done-{name}-")
            for c in collectors[name]:
                got = [m for m in c.got if not m.startswith("done-")]
                assert len(got) == 3 * n, f"{name}: a message was lost or delivered twice"
                for i in range(3):
                    mine = [m for m in got if m.startswith(f"{name}:{i}:")]
                    assert mine == [f"{name}:{i}:{k}" for k in range(n)], f"{name}: lost, duplicated or out of order"
                c.stop()
        assert all(r.stats()["backplane_dropped"] == 0 for r in running)


async def test_three_server_processes_on_a_cluster_deliver_exactly_once_in_order(examples, cluster):
    servers = [await examples("scale_out.py", "--port", "0", "--backplane", url_of(cluster)) for _ in range(3)]
    await three_servers_exactly_once([s.port for s in servers], 300)


async def test_presence_and_exclude_across_servers_on_every_shard(cluster):
    names = rooms_on_every_shard(cluster, per_shard=1, stem="presence")
    async with AsyncExitStack() as stack:
        # Heartbeats every 0.2 s: each server's members stay counted only
        # if the heartbeat reaches every room's shard.
        running = await serve_all(stack, url_of(cluster), names, servers=2, presence_ttl=0.6, exclude_sender=True)
        for name in names:
            a, b = await join_everywhere(stack, running, name)
            extra = await stack.enter_async_context(connect(f"ws://127.0.0.1:{running[1].port}/{name}"))

            async def ask(ws, what):
                await ws.send(what)
                return await asyncio.wait_for(ws.recv(), T)

            assert await ask(a, "/count") == "count 3"
            await asyncio.sleep(1.5)  # past the TTL: the heartbeats kept them
            assert await ask(b, "/count") == "count 3"
            assert await ask(a, "/members") == "members 3"
            # exclude=: the sender's server skips it; the others have it.
            await until(lambda: all(r.stats()["backplane_channels"] >= 1 for r in running), what="subscribed")
            for _ in range(100):
                await a.send("hello")
                got = await asyncio.wait_for(b.recv(), T)
                if got == "hello":
                    break
            assert await asyncio.wait_for(extra.recv(), T) == "hello"
            await extra.close()
            for _ in range(100):  # its leaving reaches Redis soon after
                if await ask(b, "/count") == "count 2":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{name}: a member that left is still counted")


async def test_a_cluster_url_to_a_redis_without_cluster_support_is_refused_and_retried(redis_server, caplog):
    await refused(f"redis+cluster://127.0.0.1:{redis_server.port}", caplog, "cluster support disabled")


async def test_through_tls_a_cluster_is_reached_and_its_certificates_checked(tmp_path, tls_certs, caplog):
    # A one-node cluster that speaks TLS only (its bus too), owning every
    # slot: its map names its TLS port, and each of its links is checked.
    redis = RedisServer(tmp_path)
    cluster_options = ["--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-port", str(free_port())]
    cluster_options += ["--cluster-config-file", str(tmp_path / "nodes.conf")]
    redis.start(tls=RedisTLS(tls_certs.server, tls_certs.server_key, tls_certs.ca), extra=cluster_options)
    try:
        redis.command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        await until(lambda: b"cluster_state:ok" in redis.command("CLUSTER", "INFO"), what="the cluster ok")
        url = f"rediss+cluster://127.0.0.1:{redis.port}?ssl_ca_certs={quote(tls_certs.ca)}"
        async with AsyncExitStack() as stack:
            running = await serve_all(stack, url, ["secret"], servers=2)
            a, b = await join_everywhere(stack, running, "secret")
            await until(lambda: all(r.stats()["backplane_channels"] == 1 for r in running), what="subscribed")
            for _ in range(100):
                await a.send("through tls")
                if await asyncio.wait_for(b.recv(), T) == "through tls":
                    break
            await a.send("/count")
            while (reply := await asyncio.wait_for(a.recv(), T)) != "count 2":
                assert reply == "through tls", reply
        # The system's roots do not know the test CA: refused, retried.
        await refused(f"rediss+cluster://127.0.0.1:{redis.port}", caplog, "certificate verify failed")
    finally:
        redis.stop()


def test_cluster_urls_are_parsed_and_checked():
    options = parse_url("redis+cluster://u:p%40ss@127.0.0.1:7000,[::1]:7001,node:7002")
    assert options["backplane_cluster"] is True
    assert options["backplane_host"] == "127.0.0.1:7000,[::1]:7001,node:7002"
    assert (options["backplane_username"], options["backplane_password"]) == ("u", "p@ss")
    for bad, says in [
        ("redis+cluster://127.0.0.1", "host:port"),
        ("redis+cluster://a:1,,b:2", "host:port"),
        ("redis+cluster://a:99999", "invalid node"),
        ("redis+cluster://a:1/3", "database 0 only"),
        ("redis+cluster://a:1?ssl_ca_certs=x", "only with rediss+cluster://"),
        ("redis+clusters://a:1", "must start with"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_url(bad)
    with pytest.raises(ValueError, match="backplane_cluster"):
        _core.Core(backplane_host="a", backplane_cluster=True)


async def test_app_broadcast_to_rooms_on_several_shards_reaches_each_socket_once_in_order(cluster):
    from roomcast import App
    from roomcast._hub import core_name
    from roomcast.app import APP_KIND

    def app_slot(room):
        channel = f"{escape_prefix(PREFIX)}|".encode() + core_name(APP_KIND, room)
        return _core.key_slot(_core.room_tag(channel))

    # One room on each master, listed in this order.
    rooms, owners = [], set()
    for i in range(10000):
        owner = cluster.master_of(app_slot(f"r{i}")).id
        if owner not in owners:
            owners.add(owner)
            rooms.append(f"r{i}")
        if len(rooms) == 3:
            break
    apps = [App(backplane=url_of(cluster), room_notices=False) for _ in range(2)]

    @apps[0].on("say")
    async def say(ws):
        ws.app.broadcast("said", ws.payload, to=rooms)

    for app in apps:

        @app.on("enter")
        async def enter(ws):
            for room in ws.payload:
                await ws.join(room)
            await ws.emit("entered")

    async with apps[0].serve("127.0.0.1", 0) as r0, apps[1].serve("127.0.0.1", 0) as r1:
        async with (
            connect(f"ws://127.0.0.1:{r0.port}/") as speaker,
            connect(f"ws://127.0.0.1:{r1.port}/") as every,
            connect(f"ws://127.0.0.1:{r1.port}/") as middle,
            connect(f"ws://127.0.0.1:{r1.port}/") as outer,
            connect(f"ws://127.0.0.1:{r0.port}/") as local,
        ):
            members = ((every, rooms), (middle, rooms[1:2]), (outer, [rooms[2], rooms[0]]), (local, rooms))
            for ws, joined in members:
                await ws.send(json.dumps({"event": "enter", "payload": joined}))
                assert json.loads(await asyncio.wait_for(ws.recv(), T))["event"] == "entered"
            # The three rooms, and the App's room of all its sockets.
            await until(lambda: r1.stats()["backplane_channels"] == 4, what="subscribed on every shard")
            assert len([c for c in shard_channels(cluster).values() if c > 0]) == 3
            for k in range(50):
                await speaker.send(json.dumps({"event": "say", "payload": k}))
            for ws, _ in members:
                got = [json.loads(await asyncio.wait_for(ws.recv(), T)) for _ in range(50)]
                assert got == [{"event": "said", "payload": k} for k in range(50)]
            # Nothing more: no second copy from another room's shard.
            await speaker.send(json.dumps({"event": "say", "payload": "end"}))
            for ws, _ in members:
                assert json.loads(await asyncio.wait_for(ws.recv(), T))["payload"] == "end"


async def test_rooms_with_history_on_every_shard_keep_one_sequence_for_every_server(cluster):
    # Each room's stream, its hash and its channel share its tag: one
    # script (routed by its hash) stores and SPUBLISHes on its shard.
    names = rooms_on_every_shard(cluster, per_shard=1, stem="kept")
    rooms = {name: Room(name=name, history=5) for name in names}
    servers = [Server(backplane=url_of(cluster)) for _ in range(2)]
    for server in servers:
        for name, room in rooms.items():
            server.route(f"/{name}", room)
    async with servers[0].serve("127.0.0.1", 0) as one, servers[1].serve("127.0.0.1", 0) as two:
        for name, room in rooms.items():
            async with (
                connect(f"ws://127.0.0.1:{one.port}/{name}") as a,
                connect(f"ws://127.0.0.1:{two.port}/{name}") as b,
            ):
                await until(lambda room=room: len(room) == 2, what="both members")
                positions = [await room.push_text(f"m{i}") for i in range(1, 8)]
                assert [p.offset for p in positions] == list(range(1, 8))
                for ws in (a, b):
                    got = [await asyncio.wait_for(ws.recv(), T) for _ in range(7)]
                    assert got == [f"m{i}" for i in range(1, 8)], name
                history = await room.history(since=positions[3])
                assert [(p.offset, m) for p, m in history.events] == [(5, "m5"), (6, "m6"), (7, "m7")]
        keys = []
        for node in cluster.nodes():
            if node.role == "master" and not node.failed:
                client = RespClient(node.port)
                try:
                    keys += [(node.id, k) for k in client.command("KEYS", "*history*")]
                finally:
                    client.close()
        # Each room's keys on the master of its channel's slot.
        for name in names:
            owner = cluster.master_of(slot_of(name)).id
            mine = [node for node, k in keys if k.endswith(name.encode())]
            assert mine == [owner, owner], (name, mine)


def node_entry(port, host=b"127.0.0.1"):
    return b"*2\r\n$%d\r\n%s\r\n:%d\r\n" % (len(host), host, port)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"*1\r\n*3\r\n:9\r\n:4\r\n" + node_entry(1), "range 1 is malformed"),
        (b"*1\r\n*3\r\n:0\r\n:16384\r\n" + node_entry(1), "range 1 is malformed"),
        (b":7\r\n", "not an array"),
        (b"?not RESP\r\n", "Protocol error"),
        # More nodes than a cluster has (1,024 at most are met).
        (
            b"*1100\r\n" + b"".join(b"*3\r\n:%d\r\n:%d\r\n" % (i, i) + node_entry(20000 + i) for i in range(1100)),
            "too many nodes",
        ),
    ],
    ids=["range-backwards", "slot-out-of-range", "not-an-array", "not-resp", "too-many-nodes"],
)
async def test_a_node_that_answers_a_bad_map_costs_a_retry_never_the_process(answer, says, caplog):
    fake = await FakeRedis(lambda kind, n: None, answers={b"CLUSTER": answer}).start()
    try:
        await refused(f"redis+cluster://127.0.0.1:{fake.port}", caplog, says)
    finally:
        await fake.close()


# --- the cluster changes (run last) ------------------------------------------


def channel_of(name, prefix=PREFIX):
    channel = f"{escape_prefix(prefix)}|{name}".encode()
    return _core.room_tag(channel) + channel


def subscribers_on_owner(cluster, name):
    """How many connections the master owning room name's slot has
    subscribed to its channel."""
    client = cluster.client_for(slot_of(name))
    try:
        reply = client.command("PUBSUB", "SHARDNUMSUB", channel_of(name))
    finally:
        client.close()
    return int(reply[1])


class Stream:
    """A publisher sending numbered messages every few milliseconds until
    stopped, and a listener on another server collecting them."""

    def __init__(self, publisher, listener):
        self.publisher = publisher
        self.listener = Collector(listener)
        self.sent = 0
        self.task = asyncio.create_task(self._send())

    async def _send(self):
        while True:
            await self.publisher.send(f"s{self.sent}")
            self.sent += 1
            await asyncio.sleep(0.005)

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def numbers(self):
        return [int(m[1:]) for m in self.listener.got if m.startswith("s")]

    async def resumed(self, count=50):
        """Until ``count`` messages sent from now on have all arrived."""
        first = self.sent
        await until(lambda: set(range(first, first + count)) <= set(self.numbers()), timeout=T, what="delivery resumed")


def once_in_order(numbers):
    assert numbers == sorted(set(numbers)), "a message was delivered twice or out of order"


async def moved_under_traffic(cluster, name, move):
    """Two servers share room name while one of its members publishes all
    along; ``move()`` changes the shard that owns its slot. Delivery
    resumes once both servers have subscribed on the new owner; nothing
    arrives twice or out of order; what is lost is the messages in flight
    while the slot moved."""
    async with AsyncExitStack() as stack:
        running = await serve_all(stack, url_of(cluster), [name], servers=2)
        a, b = await join_everywhere(stack, running, name)
        await until(lambda: subscribers_on_owner(cluster, name) == 2, timeout=T, what="both subscribed")
        stream = Stream(a, b)
        await stream.resumed()
        before = stream.sent
        await asyncio.get_running_loop().run_in_executor(None, move)
        await until(lambda: subscribers_on_owner(cluster, name) == 2, timeout=T, what="both subscribed again")
        await stream.resumed()
        await stream.stop()
        got = stream.numbers()
        once_in_order(got)
        assert set(range(before)) <= set(got), "a message sent before the move was lost"
        lost = stream.sent - len(got)
        stats = [r.stats() for r in running]
        return lost, stream.sent, stats


@pytest.mark.slow
async def test_a_slot_that_moves_under_traffic_is_followed(cluster):
    name = rooms_on_every_shard(cluster, per_shard=1, stem="moving")[0]
    slot = slot_of(name)
    source = cluster.master_of(slot)
    target = next(n for n in cluster.nodes() if n.role == "master" and not n.failed and n.id != source.id)
    lost, sent, stats = await moved_under_traffic(cluster, name, lambda: cluster.migrate_slot(slot, target))
    assert cluster.master_of(slot).id == target.id
    assert lost < sent / 2, (lost, sent)
    assert all(s["backplane_up"] == 1 for s in stats)


@pytest.mark.slow
async def test_a_failed_master_is_replaced_by_its_replica_under_traffic(cluster, caplog):
    caplog.set_level(logging.INFO, logger="roomcast")
    name = rooms_on_every_shard(cluster, per_shard=1, stem="failing")[0]
    slot = slot_of(name)
    killed = []

    def fail():
        killed.append(cluster.kill_master(slot))
        cluster.wait_promoted(slot)

    try:
        lost, sent, stats = await moved_under_traffic(cluster, name, fail)
    finally:
        if killed:
            cluster.restart(killed[0])
    # What was published while no master owned the slot waited in the
    # publisher's buffer (nothing dropped) and went to the new master as
    # soon as the publisher's server reached it, before the other server
    # had subscribed there: the guarantees allow losing it, as when one
    # Redis restarts (docs/scaling-out.md).
    assert all(s["backplane_up"] == 1 and s["backplane_dropped"] == 0 for s in stats)
    assert lost < sent, (lost, sent)
    # The servers said which shard went away, and that they are back.
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"lost Redis (shard {killed[0].address}" in text, text
    assert "connected to a Redis Cluster of 3 shards" in text, text
