"""Fan-out: one push reaches every member of a room, in order, and a member
that does not read is dropped without holding up the others.

The clients are the ``websockets`` package (an independent implementation)
and, for the member that never reads, a raw socket with a tiny receive
buffer.
"""

import asyncio
import resource

import pytest
from websockets.asyncio.client import connect

from roomcast import Room, Server
from support import wsraw

N_CLIENTS = 500
BURST = 100
CONNECT_BATCH = 50


def burst_message(i):
    # Numbered, with padding so that a burst is more than a few bytes.
    return "%05d:%s" % (i, "p" * 58)


def make_room():
    """A room driven by its own members' commands:
    ``hello`` -> the sender alone gets ``hello`` back (proof that it is a
    member: handlers run only for members); ``burst N`` -> N numbered
    pushes to everyone; ``others X`` -> X to everyone but the sender;
    ``all X`` -> X to everyone."""
    room = Room()

    @room.on_receive("text")
    async def command(room, ws, msg):
        verb, _, arg = msg.partition(" ")
        if verb == "hello":
            await ws.send_text("hello")
        elif verb == "burst":
            for i in range(int(arg)):
                await room.push_text(burst_message(i))
        elif verb == "others":
            await room.push_text(arg, exclude=ws)
        elif verb == "all":
            await room.push_text(arg)

    return room


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors():
    # Client and server sockets both live in this process: 2 per client.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * N_CLIENTS + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def room_server():
    server = Server()
    server.route("/room", make_room())
    with wsraw.ServerThread(server) as running:
        yield running


async def open_member(port):
    ws = await connect(
        "ws://127.0.0.1:%d/room" % port, open_timeout=60, close_timeout=30, ping_interval=None, max_queue=None
    )
    await ws.send("hello")
    assert await asyncio.wait_for(ws.recv(), 60) == "hello"
    return ws


async def open_members(port, n):
    members = []
    for start in range(0, n, CONNECT_BATCH):
        batch = range(start, min(n, start + CONNECT_BATCH))
        members += await asyncio.gather(*(open_member(port) for _ in batch))
    return members


async def receive(ws, n):
    return [await asyncio.wait_for(ws.recv(), 120) for _ in range(n)]


def test_500_members_each_receive_every_message_of_a_burst_in_order(room_server):
    async def scenario():
        members = await open_members(room_server.port, N_CLIENTS)
        try:
            readers = [asyncio.create_task(receive(ws, BURST)) for ws in members]
            await members[0].send("burst %d" % BURST)
            return await asyncio.gather(*readers)
        finally:
            await asyncio.gather(*(ws.close() for ws in members))

    received = asyncio.run(scenario())
    expected = [burst_message(i) for i in range(BURST)]
    assert len(received) == N_CLIENTS
    for got in received:
        assert got == expected


def test_exclude_skips_exactly_the_sender(room_server):
    async def scenario():
        members = await open_members(room_server.port, 5)
        try:
            sender, others = members[0], members[1:]
            await sender.send("others only-for-the-others")
            got_others = [await asyncio.wait_for(ws.recv(), 60) for ws in others]
            # The sender's next message is the one pushed to all, which
            # proves it did not get the first.
            await sender.send("all for-everyone")
            got_all = [await asyncio.wait_for(ws.recv(), 60) for ws in members]
            return got_others, got_all
        finally:
            await asyncio.gather(*(ws.close() for ws in members))

    got_others, got_all = asyncio.run(scenario())
    assert got_others == ["only-for-the-others"] * 4
    assert got_all == ["for-everyone"] * 5


QUEUE_LIMIT = 64 * 1024
ROUND = 32  # 1 KiB messages per round: half the queue limit
# The kernel buffers some of what the slow member is sent (megabytes, when
# it grows the socket's send buffer), so rounds go on until the server
# reports the slow member dropped, up to this many (64 MiB).
MAX_ROUNDS = 2048


def slow_message(i):
    return "%05d:%s" % (i, "s" * 1018)  # 1 KiB each


def test_member_that_never_reads_is_closed_with_1008_and_others_get_everything():
    # A long close_timeout: the slow member reads its close frame only after
    # the fast ones are done, and the server must still be waiting for it.
    server = Server(max_queue_bytes=QUEUE_LIMIT, close_timeout=120)
    room = Room()

    @room.on_receive("text")
    async def command(room, ws, msg):
        verb, _, arg = msg.partition(" ")
        if verb == "hello":
            await ws.send_text("hello")
        elif verb == "round":
            first = int(arg) * ROUND
            for i in range(first, first + ROUND):
                await room.push_text(slow_message(i))

    server.route("/room", room)

    with wsraw.ServerThread(server) as st:
        # The slow member: a receive buffer of a few KiB that it never reads
        # (past the handshake and the hello that proves it is a member).
        slow = wsraw.WSClient.connect(st.port, "/room", rcvbuf=4096)
        with slow:
            slow.send_text("hello")
            assert slow.recv_text() == "hello"

            async def fast_members():
                # The fast members read each round before the next is
                # pushed, so their queues stay below the limit: the data
                # piles up only for the member that does not read.
                members = await open_members(st.port, 3)
                received = [[] for _ in members]
                try:
                    for k in range(MAX_ROUNDS):
                        if st.running.stats()["slow_consumer_closes"] > 0:
                            break
                        await members[0].send("round %d" % k)
                        rounds = await asyncio.gather(*(receive(ws, ROUND) for ws in members))
                        for got, more in zip(received, rounds, strict=True):
                            got += more
                    return received
                finally:
                    await asyncio.gather(*(ws.close() for ws in members))

            received = asyncio.run(fast_members())
            # Exactly one member was dropped, and not for lack of data.
            assert st.running.stats()["slow_consumer_closes"] == 1
            expected = [slow_message(i) for i in range(len(received[0]))]
            for got in received:
                assert got == expected

            # Now read what the slow member was sent: a prefix of the
            # messages, in order, then the close frame with 1008.
            messages, close = slow.recv_until_close()
            assert close.close_code == 1008
            texts = [payload.decode() for _, payload in messages]
            assert len(texts) < len(expected)
            assert texts == expected[: len(texts)]
            try:
                slow.send_close(1008)
            except (BrokenPipeError, ConnectionResetError):
                pass


MIXED = 6000  # 1 KiB each: more than the kernel buffers for a member that does not read (4 MiB)
MIXED_MEMBERS = 6


def mixed_message(burst, i):
    return "%d:%05d:%s" % (burst, i, "m" * 1016)


def left_out(burst, i):
    """Which member (by join order) message i of a burst leaves out, if any.
    Burst 0 leaves out only the last member, every third message; burst 1
    each of the six in turn, more excluded members than the core tracks one
    by one."""
    if burst == 0:
        return MIXED_MEMBERS - 1 if i % 3 == 0 else None
    k = i % (MIXED_MEMBERS + 1)
    return None if k == MIXED_MEMBERS else k


def test_bursts_with_exclusions_reach_a_slow_reader_whole_and_in_order():
    """Bursts pushed in one go: members that keep up get each written at
    once, a member with a tiny receive window gets the rest queued behind a
    partly written frame; each member gets exactly the messages that do not
    leave it out, in order, and every frame is intact."""
    server = Server(max_queue_bytes=16 * 2**20, close_timeout=60)
    room = Room()
    order = []

    @room.on_receive("text")
    async def command(room, ws, msg):
        verb, _, arg = msg.partition(" ")
        if verb == "hello":
            order.append(ws)
            await ws.send_text("hello")
        elif verb == "burst":
            burst = int(arg)
            for i in range(MIXED):
                k = left_out(burst, i)
                await room.push_text(mixed_message(burst, i), exclude=None if k is None else order[k])

    server.route("/room", room)

    def expected(burst, k):
        return [mixed_message(burst, i) for i in range(MIXED) if left_out(burst, i) != k]

    with wsraw.ServerThread(server) as st:
        # Member 0 reads nothing until each burst has been pushed.
        slow = wsraw.WSClient.connect(st.port, "/room", rcvbuf=4096)
        with slow:
            slow.send_text("hello")
            assert slow.recv_text() == "hello"

            async def the_others(members, burst):
                readers = [
                    asyncio.create_task(receive(ws, len(expected(burst, k + 1)))) for k, ws in enumerate(members)
                ]
                await members[0].send("burst %d" % burst)
                return await asyncio.gather(*readers)

            async def scenario():
                members = []
                for _ in range(MIXED_MEMBERS - 1):  # one by one: join order
                    members.append(await open_member(st.port))
                try:
                    for burst in (0, 1):
                        received = await the_others(members, burst)
                        for k, got in enumerate(received, start=1):
                            assert got == expected(burst, k), "burst %d, member %d" % (burst, k)
                        slow_got = [slow.recv_text() for _ in range(len(expected(burst, 0)))]
                        assert slow_got == expected(burst, 0), "burst %d, slow member" % burst
                finally:
                    await asyncio.gather(*(ws.close() for ws in members))

            asyncio.run(scenario())
            assert st.running.stats()["slow_consumer_closes"] == 0
