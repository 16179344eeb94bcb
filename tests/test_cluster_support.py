"""The groundwork of the Redis Cluster backplane (issue 19), against a real
cluster (tests/support/rediscluster.py: three masters, a replica each):
the core's key slot (``_core.key_slot``, csrc/proto/rc_slot.c) is Redis's
own (``CLUSTER KEYSLOT``); sharded pub/sub is served by the master owning a
channel's slot and every other node answers ``-MOVED``; and the harness
itself moves a slot and survives a master's failover, which the backplane's
tests will lean on. One cluster serves the whole file; the tests that
change it (marked ``slow``) run last and ask it where things are rather
than remembering."""

import random

import pytest

from roomcast import _core
from support.rediscluster import SLOTS, RedisCluster
from support.redisproc import RespClient, RespError


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield c
    c.stop()


def varied_keys(n=400, seed=19):
    """Keys meant to trip a slot function: random bytes (NULs and braces
    included), braces in odd places, empty tags, UTF-8 and roomcast-like
    channel names."""
    rnd = random.Random(seed)
    fixed = [
        b"",
        b"{",
        b"}",
        b"{}",
        b"}{",
        b"{{}}",
        b"{}{x}",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{user1000}.following",
        b"a{b",
        b"a}b{c",
        b"{\x00}",
        b"\x00{x}\x00",
        "sal\u00f3n{caf\u00e9}".encode(),
        "\U0001f600{\U0001f600}".encode(),
        "{}\u4e2d\u6587".encode(),
        b"rc|lobby",
        b"rc\\|x|{room}",
        b"{CALC}rc|{x}:presence",
    ]
    keys = list(fixed)
    alphabet = b"ab{}{}\x00\xff|"
    while len(keys) < n:
        kind = len(keys) % 4
        length = rnd.randrange(0, 40)
        if kind == 0:
            key = bytes(rnd.randrange(256) for _ in range(length))
        elif kind == 1:
            key = bytes(rnd.choice(alphabet) for _ in range(length))
        elif kind == 2:
            text = "".join(
                chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0xA0, 0x3000)])) for _ in range(length)
            )
            at = rnd.randrange(len(text) + 1)
            key = (text[:at] + rnd.choice(["{", "{}", "}", "{" + text[:3] + "}"]) + text[at:]).encode()
        else:
            key = b"rc|room-%d" % rnd.randrange(10**6)
        keys.append(key)
    return keys


def test_key_slot_is_cluster_keyslot(cluster):
    client = RespClient(cluster.ports[0])
    try:
        for key in varied_keys():
            assert _core.key_slot(key) == client.command("CLUSTER", "KEYSLOT", key), key
    finally:
        client.close()


def test_key_slot_takes_bytes_only():
    assert _core.key_slot(b"foo") == 12182
    with pytest.raises(TypeError):
        _core.key_slot("foo")  # type: ignore[arg-type]


def channel_on(cluster, master, taken=()):
    """A roomcast-like channel whose slot ``master`` owns."""
    for i in range(100_000):
        channel = b"rc|room-%d" % i
        if channel not in taken and master.owns(_core.key_slot(channel)):
            return channel
    raise AssertionError(f"no channel lands on {master.address}")


def command_on(port, *args):
    client = RespClient(port)
    try:
        return client.command(*args)
    finally:
        client.close()


def subscribe(port, channel):
    sub = RespClient(port)
    assert sub.command("SSUBSCRIBE", channel) == [b"ssubscribe", channel, 1]
    return sub


def publish_reaches(cluster, channel, payload):
    """SPUBLISH on the owner of channel's slot, and what a subscriber there
    receives."""
    slot = _core.key_slot(channel)
    sub = subscribe(cluster.master_of(slot).port, channel)
    try:
        pub = cluster.client_for(slot)
        try:
            assert pub.command("SPUBLISH", channel, payload) == 1
        finally:
            pub.close()
        return sub.read()
    finally:
        sub.close()


def test_sharded_pubsub_on_each_masters_slots(cluster):
    masters = [n for n in cluster.nodes() if n.role == "master"]
    assert len(masters) == 3
    assert sum(b - a + 1 for m in masters for a, b in m.slots) == SLOTS
    for master in masters:
        channel = channel_on(cluster, master)
        assert publish_reaches(cluster, channel, b"hi " + channel) == [b"smessage", channel, b"hi " + channel]


def test_a_node_outside_the_slots_shard_answers_moved(cluster):
    channel = b"rc|lobby"
    slot = _core.key_slot(channel)
    owner = cluster.master_of(slot)
    outside = [n for n in cluster.nodes() if owner.id not in (n.id, n.master_id)]
    assert len(outside) == 4  # the other two masters and their replicas
    for node in outside:
        for args in (("SPUBLISH", channel, b"x"), ("SSUBSCRIBE", channel)):
            with pytest.raises(RespError) as e:
                command_on(node.port, *args)
            assert str(e.value) == f"MOVED {slot} {owner.address}", (node.address, args[0])


def test_the_owners_replica_serves_the_shards_channels_too(cluster):
    # Redis 7.0 runs sharded pub/sub on every node of a shard: a replica
    # takes SSUBSCRIBE and SPUBLISH of its master's slots (no MOVED), and a
    # message published on either node reaches the subscribers of both.
    channel = b"rc|lobby"
    slot = _core.key_slot(channel)
    owner = cluster.master_of(slot)
    replica = next(n for n in cluster.nodes() if n.master_id == owner.id)
    on_owner = subscribe(owner.port, channel)
    on_replica = subscribe(replica.port, channel)
    try:
        for node in (owner, replica):
            command_on(node.port, "SPUBLISH", channel, node.address)
            expected = [b"smessage", channel, node.address.encode()]
            assert on_owner.read() == expected
            assert on_replica.read() == expected
    finally:
        on_owner.close()
        on_replica.close()


def test_channels_of_different_shards_in_one_ssubscribe_are_refused(cluster):
    masters = [n for n in cluster.nodes() if n.role == "master"]
    a = channel_on(cluster, masters[0])
    b = channel_on(cluster, masters[1])
    client = RespClient(masters[0].port)
    try:
        with pytest.raises(RespError, match="CROSSSLOT"):
            client.command("SSUBSCRIBE", a, b)
    finally:
        client.close()


@pytest.mark.slow
def test_a_migrated_slot_is_served_by_its_new_owner(cluster):
    channel = b"rc|migrating"
    slot = _core.key_slot(channel)
    source = cluster.master_of(slot)
    target = next(n for n in cluster.nodes() if n.role == "master" and not n.failed and n.id != source.id)
    key = b"{" + channel + b"}:presence"
    assert _core.key_slot(key) == slot
    assert command_on(source.port, "SET", key, b"kept") == "OK"
    sub = subscribe(source.port, channel)
    try:
        cluster.migrate_slot(slot, target)
        # Redis drops the shard channels of a slot it gives away.
        assert sub.read() == [b"sunsubscribe", channel, 0]
    finally:
        sub.close()
    assert cluster.master_of(slot).id == target.id
    assert command_on(target.port, "GET", key) == b"kept"
    with pytest.raises(RespError, match=f"MOVED {slot} {target.address}"):
        command_on(source.port, "SPUBLISH", channel, b"x")
    assert publish_reaches(cluster, channel, b"after") == [b"smessage", channel, b"after"]


@pytest.mark.slow
def test_a_killed_masters_slot_is_served_by_its_promoted_replica_and_it_rejoins(cluster):
    channel = b"rc|failover"
    slot = _core.key_slot(channel)
    old = cluster.master_of(slot)
    replica = next(n for n in cluster.nodes() if n.master_id == old.id)
    sub = subscribe(old.port, channel)
    try:
        cluster.kill_master(slot)
        with pytest.raises((ConnectionError, OSError)):
            sub.read()
    finally:
        sub.close()
    new = cluster.wait_promoted(slot)
    assert (new.id, new.port) == (replica.id, replica.port)
    assert publish_reaches(cluster, channel, b"after") == [b"smessage", channel, b"after"]
    for node in cluster.nodes():
        if node.id != new.id and not node.failed:
            with pytest.raises(RespError, match=f"MOVED {slot} {new.address}"):
                command_on(node.port, "SPUBLISH", channel, b"x")
    assert cluster.node(old.id).failed
    # The stopped master rejoins, as the replica of the one that took its
    # slots over: the cluster is whole again.
    cluster.restart(old)
    back = cluster.node(old.id)
    assert (back.role, back.master_id, back.failed, back.slots) == ("replica", new.id, False, [])
    assert len(cluster.ports) == 6
