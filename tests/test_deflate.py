"""permessage-deflate (RFC 7692) on the server, over real sockets.

The peers are the ``websockets`` library (with and without compression)
and raw clients (support/deflate.py over support/wsraw.py) that check each
frame's RSV1 bit and inflate payloads with zlib themselves: negotiation
(the answer, ``compression=None``, Safari 15.0-15.3 left out), one
compression per push whatever the number of members, the threshold, a
small ``server_max_window_bits``, relay rooms, fragmented compressed
messages, and every way a compressed message can be bad (1009 for one
that inflates past ``max_message_size``, with the server's memory flat;
1007 for bad data or bad UTF-8; 1002 for RSV1 where it is not allowed).
"""

import asyncio
import hashlib
import os
import re
import time
import zlib

import pytest
from websockets.asyncio.client import connect as ws_connect

from roomcast import Room, Server
from support import deflate, wsraw
from support.deflate import RSV1, compress, exact, inflate, ticker
from support.wsraw import OP_BINARY, OP_CONT, OP_PING, OP_TEXT

LIMIT = 1 << 20  # max_message_size of the server under test
THRESHOLD = 128  # the default compression_threshold
T = 30.0


class Seen:
    """What the echo room's handlers received, in order."""

    def __init__(self):
        self.items = []


SEEN = Seen()


def echo_room():
    room = Room()

    @room.on_receive("text")
    async def echo_text(room, ws, msg):
        SEEN.items.append(msg)
        await ws.send_text(msg)

    @room.on_receive("bytes")
    async def echo_bytes(room, ws, msg):
        SEEN.items.append(bytes(msg))
        await ws.send_bytes(msg)

    return room


PUSH_ROOM = Room()
RELAY_ROOM = Room(relay="all")


@pytest.fixture(scope="module")
def server():
    srv = Server(max_message_size=LIMIT, max_queue_bytes=16 * LIMIT, ping_interval=0)
    srv.route("/room", PUSH_ROOM)
    srv.route("/echo", echo_room())
    srv.route("/relay", RELAY_ROOM)
    with wsraw.ServerThread(srv) as running:
        yield running


@pytest.fixture
def port(server):
    yield server.port
    wsraw.assert_still_serving(server.port)


def stat(server, name):
    return server.running.stats()[name]


def wait_until(predicate, what):
    deadline = time.monotonic() + T
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.02)


def wait_members(room, n):
    wait_until(lambda: len(room) == n, f"{n} members in the room (has {len(room)})")


def push(server, room, texts):
    async def go():
        for text in texts:
            await room.push_text(text)

    server.call(go)


def expect_close(client, code):
    """Reads past any data to the server's close frame; checks its code and
    the end of TCP after our answer."""
    while True:
        f = client.recv_frame()
        if f.opcode == wsraw.OP_CLOSE:
            break
    assert f.close_code == code, f"closed with {f.close_code} {f.close_reason!r}, expected {code}"
    wsraw.answer_close_and_expect_eof(client, code)


# --- negotiation -------------------------------------------------------------


def test_the_answer_holds_both_no_context_takeover_parameters(port):
    with deflate.connect(port, "/echo") as c:
        got = deflate.answer(c)
    assert got is not None, "no Sec-WebSocket-Extensions in the 101"
    params = [p.strip() for p in got.split(";")]
    assert params[0] == "permessage-deflate"
    assert set(params[1:]) == {"server_no_context_takeover", "client_no_context_takeover"}


def test_no_offer_no_extension(port):
    with deflate.connect(port, "/echo", offer=None) as c:
        assert deflate.answer(c) is None


def test_compression_none_answers_no_extension():
    srv = Server(compression=None, ping_interval=0)
    srv.route("/echo", echo_room())
    with wsraw.ServerThread(srv) as running:
        with deflate.connect(running.port, "/echo") as c:
            assert deflate.answer(c) is None
            big = ticker(0, 4000)
            c.send_text(big)
            opcode, squeezed, payload = deflate.recv_data(c)
            assert (opcode, squeezed, payload.decode()) == (OP_TEXT, False, big)
        assert running.running.stats()["deflate_connections"] == 0


def test_safari_15_2_gets_no_deflate_and_safari_16_does(port):
    with deflate.connect(port, "/echo", user_agent=deflate.SAFARI_15_2) as c:
        assert deflate.answer(c) is None
    with deflate.connect(port, "/echo", user_agent=deflate.SAFARI_16) as c:
        assert (deflate.answer(c) or "").startswith("permessage-deflate")


def test_deflate_connections_counts_open_negotiated_connections():
    srv = Server(ping_interval=0)
    srv.route("/echo", echo_room())
    with wsraw.ServerThread(srv) as running:
        with deflate.connect(running.port, "/echo") as a, deflate.connect(running.port, "/echo", offer=None) as b:
            for c in (a, b):  # both open on the server's side
                c.send_text("ping")
                assert deflate.recv_data(c)[2] == b"ping"
            assert stat(running, "deflate_connections") == 1
            assert stat(running, "connections") == 2
        wait_until(lambda: stat(running, "deflate_connections") == 0, "deflate_connections back to 0")


# --- pushes --------------------------------------------------------------------


def test_websockets_members_with_and_without_compression_get_the_same_messages(server, port):
    texts = [ticker(i, 200 + 300 * i) for i in range(8)] + ["short", ticker(99, 50_000)]

    async def scenario():
        url = f"ws://127.0.0.1:{port}/room"
        squeezed = [await ws_connect(url, max_size=None, ping_interval=None) for _ in range(3)]
        plain = await ws_connect(url, compression=None, max_size=None, ping_interval=None)
        members = [*squeezed, plain]
        try:
            for ws in squeezed:
                answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                assert answer.startswith("permessage-deflate"), answer
            assert "Sec-WebSocket-Extensions" not in plain.response.headers
            await asyncio.to_thread(wait_members, PUSH_ROOM, len(members))
            before = stat(server, "messages_deflated")
            await asyncio.to_thread(push, server, PUSH_ROOM, texts)
            got = [[await asyncio.wait_for(ws.recv(), T) for _ in texts] for ws in members]
            return got, stat(server, "messages_deflated") - before
        finally:
            await asyncio.gather(*(ws.close() for ws in members))

    got, deflated = asyncio.run(scenario())
    for received in got:
        assert received == texts
    # One compression per push above the threshold, for 3 members.
    assert deflated == sum(len(t) >= THRESHOLD for t in texts)


def test_raw_member_sees_rsv1_on_large_pushes_only_and_inflates_them(server, port):
    texts = ["x" * 20, exact(1, THRESHOLD - 1), ticker(2, 1000), exact(3, 300), ticker(4, 100_000)]
    with deflate.connect(port, "/room") as c:
        wait_members(PUSH_ROOM, 1)
        push(server, PUSH_ROOM, texts)
        got = [deflate.recv_data(c) for _ in texts]
    assert [g[2].decode() for g in got] == texts
    assert all(g[0] == OP_TEXT for g in got)
    assert [g[1] for g in got] == [len(t) >= THRESHOLD for t in texts]


def test_a_member_with_a_9_bit_window_gets_frames_its_window_can_inflate(server, port):
    sizes = [200, 400, 511, 512, 513, 1000, 20_000]
    texts = [exact(i, n) for i, n in enumerate(sizes)]
    offer = "permessage-deflate; server_max_window_bits=9; client_max_window_bits"
    with deflate.connect(port, "/room", offer=offer) as small, deflate.connect(port, "/room") as full:
        assert "server_max_window_bits=9" in (deflate.answer(small) or "")
        wait_members(PUSH_ROOM, 2)
        push(server, PUSH_ROOM, texts)
        for text in texts:
            f = small.recv_frame()
            assert f.fin and f.opcode == OP_TEXT
            compressed = bool(f.rsv & RSV1)
            assert compressed == (len(text) <= 512), (len(text), f.rsv)
            # A 9-bit window inflates it (zlib fails on a distance too far back).
            body = inflate(f.payload, wbits=9) if compressed else f.payload
            assert body.decode() == text
            opcode, squeezed, payload = deflate.recv_data(full)
            assert squeezed and payload.decode() == text


def test_a_push_to_many_raw_members_is_compressed_once(server, port):
    text = ticker(7, 5000)
    clients = [deflate.connect(port, "/room") for _ in range(6)]
    try:
        wait_members(PUSH_ROOM, len(clients))
        before = stat(server, "messages_deflated")
        push(server, PUSH_ROOM, [text])
        frames = [c.recv_frame() for c in clients]
        assert stat(server, "messages_deflated") == before + 1
    finally:
        for c in clients:
            c.close()
    assert len({f.payload for f in frames}) == 1, "members got different compressed frames"
    assert all(f.rsv == RSV1 for f in frames)
    assert inflate(frames[0].payload).decode() == text
    assert len(frames[0].payload) < len(text) // 2


# --- messages from clients -----------------------------------------------------


def test_handlers_see_inflated_text_and_bytes(server, port):
    text = ticker(5, 3000)
    data = bytes(range(256)) * 40
    with deflate.connect(port, "/echo") as c:
        before = stat(server, "messages_inflated")
        deflate.send_compressed(c, text.encode())
        assert deflate.recv_data(c)[::2] == (OP_TEXT, text.encode())
        assert SEEN.items[-1] == text
        deflate.send_compressed(c, data, OP_BINARY)
        assert deflate.recv_data(c)[::2] == (OP_BINARY, data)
        assert SEEN.items[-1] == data
        # A short message may come compressed too.
        deflate.send_compressed(c, b"hi")
        assert deflate.recv_data(c) == (OP_TEXT, False, b"hi")
        assert SEEN.items[-1] == "hi"
        assert stat(server, "messages_inflated") == before + 3


def test_a_fragmented_compressed_message_is_inflated(port):
    text = ticker(11, 10_000)
    z = compress(text.encode())
    cut = [0, len(z) // 3, 2 * len(z) // 3, len(z)]
    with deflate.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, z[cut[0] : cut[1]], fin=False, rsv=RSV1)
        c.send_frame(OP_CONT, z[cut[1] : cut[2]], fin=False)
        c.send_frame(OP_PING, b"between")  # a control frame inside is fine
        c.send_frame(OP_CONT, z[cut[2] : cut[3]], fin=True)
        pong = c.recv_frame()
        assert (pong.opcode, pong.payload) == (wsraw.OP_PONG, b"between")
        assert deflate.recv_data(c)[::2] == (OP_TEXT, text.encode())
    assert SEEN.items[-1] == text


def test_invalid_compressed_data_is_closed_with_1007(port):
    with deflate.connect(port, "/echo") as c:
        # BFINAL=1, BTYPE=11: a block type deflate reserves.
        c.send_frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=RSV1)
        expect_close(c, 1007)


def test_compressed_text_that_is_not_utf8_once_inflated_is_closed_with_1007(port):
    with deflate.connect(port, "/echo") as c:
        deflate.send_compressed(c, "caf\u00e9 ".encode() * 50 + b"\xc3\x28 bad")
        expect_close(c, 1007)


def test_rsv1_without_negotiation_is_closed_with_1002(port):
    with deflate.connect(port, "/echo", offer=None) as c:
        c.send_frame(OP_TEXT, compress(b"hello"), rsv=RSV1)
        expect_close(c, 1002)


def test_rsv1_on_a_continuation_frame_is_closed_with_1002(port):
    z = compress(ticker(3, 2000).encode())
    with deflate.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, z[:10], fin=False, rsv=RSV1)
        c.send_frame(OP_CONT, z[10:], fin=True, rsv=RSV1)
        expect_close(c, 1002)


def test_rsv1_on_a_control_frame_is_closed_with_1002(port):
    with deflate.connect(port, "/echo") as c:
        c.send_frame(OP_PING, compress(b"ping"), rsv=RSV1)
        expect_close(c, 1002)


def test_rsv2_is_closed_with_1002_even_with_deflate(port):
    with deflate.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"hello", rsv=0x2)
        expect_close(c, 1002)


# --- deflate bombs -------------------------------------------------------------


# AddressSanitizer keeps freed memory in quarantine (the inflate buffer a
# bomb grew is freed after each one) and pads every block: resident-set
# figures under it say nothing about the server's own use.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def vm_rss_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def test_a_deflate_bomb_is_closed_with_1009_and_memory_stays_flat(server, port):
    # 256 MiB of zeros compress to about 256 KiB, under max_message_size
    # (1 MiB) on the wire, 256 times past it inflated.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    bomb = b"".join(c.compress(chunk) for _ in range(256)) + c.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[: -len(deflate.TAIL)]
    assert len(bomb) < LIMIT // 2
    frame = wsraw.encode_frame(OP_BINARY, bomb, rsv=RSV1)
    del chunk

    def one_bomb():
        with deflate.connect(port, "/echo") as client:
            client.send_raw(frame)
            expect_close(client, 1009)

    for _ in range(10):  # the server's buffers reach their size
        one_bomb()
    before = vm_rss_kib()
    inflated_before = stat(server, "messages_inflated")
    for _ in range(100):
        one_bomb()
    grown = vm_rss_kib() - before
    assert stat(server, "messages_inflated") == inflated_before  # none got through
    # 100 bombs of 256 MiB each: a leak of even one inflated megabyte each
    # would show as 100 MiB.
    if not UNDER_ASAN:
        assert grown < 16 * 1024, f"RSS grew by {grown} KiB over 100 deflate bombs"


def test_a_compressed_message_just_under_the_limit_gets_through(port):
    data = bytes(LIMIT - 1000)
    with deflate.connect(port, "/echo") as c:
        deflate.send_compressed(c, data, OP_BINARY)
        opcode, squeezed, payload = deflate.recv_data(c)
    assert opcode == OP_BINARY and hashlib.sha256(payload).digest() == hashlib.sha256(data).digest()


# --- relay rooms ---------------------------------------------------------------


def test_a_relay_room_forwards_compressed_messages_as_sent_and_plain_to_plain_members(server, port):
    text = ticker(21, 6000)
    z = compress(text.encode())
    with (
        deflate.connect(port, "/relay") as sender,
        deflate.connect(port, "/relay") as squeezed,
        deflate.connect(port, "/relay", offer=None) as plain,
    ):
        wait_members(RELAY_ROOM, 3)
        before = stat(server, "messages_deflated")
        sender.send_frame(OP_TEXT, z, rsv=RSV1)
        for c in (sender, squeezed):  # relay="all": the sender too
            f = c.recv_frame()
            assert (f.fin, f.rsv, f.opcode) == (True, RSV1, OP_TEXT)
            assert f.payload == z, "the compressed message was not forwarded as sent"
        opcode, was_squeezed, payload = deflate.recv_data(plain)
        assert (opcode, was_squeezed, payload.decode()) == (OP_TEXT, False, text)
        assert stat(server, "messages_deflated") == before  # nothing compressed again

        # A plain member's message reaches the deflate members compressed,
        # compressed once.
        other = ticker(22, 6000)
        plain.send_text(other)
        for c in (sender, squeezed, plain):
            opcode, was_squeezed, payload = deflate.recv_data(c)
            assert payload.decode() == other
            assert was_squeezed == (c is not plain)
        assert stat(server, "messages_deflated") == before + 1


def test_websockets_clients_in_a_relay_room(port):
    texts = [ticker(i, 100 + 700 * i) for i in range(6)]

    async def scenario():
        url = f"ws://127.0.0.1:{port}/relay"
        a = await ws_connect(url, max_size=None, ping_interval=None)
        b = await ws_connect(url, compression=None, max_size=None, ping_interval=None)
        try:
            await asyncio.to_thread(wait_members, RELAY_ROOM, 2)
            for t in texts:
                await a.send(t)
            for t in texts:
                await b.send(t.upper())
            want = texts + [t.upper() for t in texts]
            return [[await asyncio.wait_for(ws.recv(), T) for _ in want] for ws in (a, b)], want
        finally:
            await asyncio.gather(a.close(), b.close())

    (got_a, got_b), want = asyncio.run(scenario())
    # Each sender's messages in order; the two senders may interleave.
    for got in (got_a, got_b):
        assert sorted(got) == sorted(want)
        assert [m for m in got if m in texts] == texts


@pytest.mark.parametrize("after", [b"\xff\xfe\xfd", b""], ids=["junk", "no-empty-block"])
def test_a_relay_room_forwards_only_well_formed_compressed_messages(port, after):
    # A compressed message whose last block is final (BFINAL=1) must be
    # followed by exactly one 0x00, the start of the empty stored block
    # that RFC 7692 7.2.1 ends every message with (7.2.3.3's example). An
    # inflater that stops at the final block ignores anything else there;
    # one that resets and goes on past it (Chromium's) fails on it. So a
    # relay room must not forward such bytes as they came: either the
    # sender is refused (1007) or every deflate member gets a frame that
    # inflates strictly.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    text = ticker(23, 3000)
    z = c.compress(text.encode()) + c.flush(zlib.Z_FINISH)  # ends with BFINAL=1
    junk = after
    with (
        deflate.connect(port, "/relay") as sender,
        deflate.connect(port, "/relay") as member,
    ):
        wait_members(RELAY_ROOM, 2)
        sender.send_frame(OP_TEXT, z + junk, rsv=RSV1)
        f = sender.recv_frame()
        if f.opcode == wsraw.OP_CLOSE:
            assert f.close_code == 1007
            return
        f = member.recv_frame()
        assert f.opcode == OP_TEXT
        if f.rsv & RSV1:
            assert inflate(f.payload).decode() == text, "forwarded bytes after the final block"
        else:
            assert f.payload.decode() == text
