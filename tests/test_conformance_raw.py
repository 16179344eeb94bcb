"""RFC 6455 conformance, case by case, over raw sockets.

The cases follow the categories of the Autobahn TestSuite: 1 framing, 2 pings
and pongs, 3 reserved bits, 4 reserved opcodes, 5 fragmentation, 6 UTF-8,
7 the close handshake, 9 message size limits, plus masking. Each one talks to
an echo server (text back as text, binary back as binary) through
``wsraw.WSClient`` and checks what RFC 6455 makes the server answer: the echo,
the pong, or the close code of a failed connection followed by the end of
the TCP connection. After every case a fresh client checks that the server
still answers.

Where Autobahn sends a good message before a bad frame, these cases wait for
the good message's echo first: the echo passes through the Python handler,
and a server may fail the connection before the handler has answered.
"""

import struct
import threading

import pytest

from support import wsraw
from support.wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    WSClient,
    close_payload,
    encode_frame,
)

MIB = 1 << 20
LIMIT = 4 * MIB  # max_message_size of the server under test


@pytest.fixture(scope="module")
def server():
    # No keepalive pings: every frame a case reads is an answer to it.
    with wsraw.ServerThread(
        wsraw.echo_server(
            max_message_size=LIMIT, max_queue_bytes=4 * LIMIT, max_receive_queue=4 * LIMIT, ping_interval=0
        )
    ) as running:
        yield running


@pytest.fixture
def port(server):
    yield server.port
    wsraw.assert_still_serving(server.port)


@pytest.fixture
def client(port):
    with WSClient.connect(port, "/echo") as c:
        yield c


# --- helpers -------------------------------------------------------------


def recv_raw(c):
    """The next server frame with its header bytes: (header, Frame)."""
    head = c.reader.read_exact(2)
    n = head[1] & 0x7F
    if n == 126:
        ext = c.reader.read_exact(2)
        (n,) = struct.unpack("!H", ext)
        head += ext
    elif n == 127:
        ext = c.reader.read_exact(8)
        (n,) = struct.unpack("!Q", ext)
        head += ext
    assert not head[1] & 0x80, "the server masked a frame"
    payload = c.reader.read_exact(n)
    return head, Frame(bool(head[0] & 0x80), (head[0] >> 4) & 7, head[0] & 0xF, payload)


def frames_until_close(c):
    """Every frame up to and including the server's close frame."""
    frames = []
    while True:
        frame = c.recv_frame()
        frames.append(frame)
        if frame.opcode == OP_CLOSE:
            return frames


def assert_tcp_ends(c):
    try:
        rest = c.reader.read_to_eof()
    except ConnectionResetError:
        rest = b""
    assert rest == b"", rest[:60]


def expect_failure(c, code, before=()):
    """The server fails the connection: after the frames in ``before`` (pairs
    of opcode and payload) comes a close frame with ``code``, nothing else,
    then the end of the TCP connection once the client has answered."""
    frames = frames_until_close(c)
    assert [(f.opcode, f.payload) for f in frames[:-1]] == list(before)
    assert frames[-1].close_code == code, frames[-1]
    try:
        c.send_close(code)
    except OSError:
        pass  # the server may drop TCP right after a protocol error
    assert_tcp_ends(c)


def send_in_background(c, data):
    """Sends from a thread: the server may answer (and stop reading) before
    a large payload is through."""

    def run():
        try:
            c.send_raw(data)
        except OSError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def send_chopped(c, data, size):
    for i in range(0, len(data), size):
        c.send_raw(data[i : i + size])


def echo(c, opcode, payload):
    c.send_frame(opcode, payload)
    frame = c.recv_frame()
    assert (frame.opcode, frame.fin) == (opcode, True)
    assert frame.payload == payload


# --- 1 framing -------------------------------------------------------------

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536, MIB, 3 * MIB]


def expected_header_len(n):
    return 2 if n < 126 else 4 if n < 1 << 16 else 10


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("n", LENGTHS)
def test_message_of_each_length_is_echoed_with_minimal_length_encoding(client, opcode, n):
    # 7-bit lengths up to 125, 16-bit up to 65535, 64-bit beyond.
    payload = (b"*" if opcode == OP_TEXT else b"\xfe") * n
    t = send_in_background(client, encode_frame(opcode, payload))
    head, frame = recv_raw(client)
    t.join(wsraw.TIMEOUT)
    assert (frame.opcode, frame.fin, frame.rsv) == (opcode, True, 0)
    assert len(head) == expected_header_len(n)
    assert frame.payload == payload


@pytest.mark.parametrize("chop", [1, 997])
def test_message_sent_in_small_tcp_writes_is_echoed(client, chop):
    payload = bytes(range(256)) * (65536 // 256) if chop > 1 else b"chopped"
    send_chopped(client, encode_frame(OP_BINARY, payload), chop)
    assert client.recv_frame().payload == payload


def test_many_small_messages_in_one_write_are_echoed_in_order(client):
    texts = ["message %04d" % i for i in range(500)]
    client.send_raw(b"".join(encode_frame(OP_TEXT, t.encode()) for t in texts))
    assert [client.recv_text() for _ in texts] == texts


# --- 2 pings and pongs -----------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"Hello, world!", bytes(range(256))[:125], b"\x00\xff" * 62 + b"!"],
    ids=["empty", "text", "binary-125", "125-bytes"],
)
def test_ping_is_answered_by_a_pong_with_its_payload(client, payload):
    client.send_frame(OP_PING, payload)
    frame = client.recv_frame()
    assert (frame.opcode, frame.fin, frame.payload) == (OP_PONG, True, payload)


def test_ping_sent_one_byte_at_a_time_is_answered(client):
    payload = b"p" * 125
    send_chopped(client, encode_frame(OP_PING, payload), 1)
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_PONG, payload)


def test_ping_over_125_bytes_fails_the_connection_with_1002(client):
    client.send_frame(OP_PING, b"x" * 126)
    expect_failure(client, 1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited"])
def test_unsolicited_pong_is_ignored(client, payload):
    client.send_frame(OP_PONG, payload)
    client.send_text("after the pong")
    # The echo is the very next frame: no answer to the pong.
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"after the pong")


def test_unsolicited_pong_then_ping_gets_one_pong(client):
    client.send_frame(OP_PONG, b"unsolicited")
    client.send_frame(OP_PING, b"solicited")
    client.send_text("end")
    frames = [client.recv_frame() for _ in range(2)]
    assert [(f.opcode, f.payload) for f in frames] == [(OP_PONG, b"solicited"), (OP_TEXT, b"end")]


def test_ten_pings_get_ten_pongs_in_order(client):
    client.send_raw(b"".join(encode_frame(OP_PING, b"ping %d" % i) for i in range(10)))
    for i in range(10):
        frame = client.recv_frame()
        assert (frame.opcode, frame.payload) == (OP_PONG, b"ping %d" % i)


def test_ping_between_fragments_is_answered_before_the_message(client):
    client.send_frame(OP_TEXT, b"frag1 ", fin=False)
    client.send_frame(OP_PING, b"between")
    client.send_frame(OP_CONT, b"frag2")
    pong = client.recv_frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"between")
    assert client.recv_text() == "frag1 frag2"


# --- 3 reserved bits ---------------------------------------------------------

FRAMES_FOR_RSV = {
    "text": (OP_TEXT, b"Hello, world!"),
    "binary": (OP_BINARY, b"\x00\xff\xfe"),
    "ping": (OP_PING, b"ping"),
    "close": (OP_CLOSE, close_payload(1000)),
}


@pytest.mark.parametrize("kind", sorted(FRAMES_FOR_RSV))
@pytest.mark.parametrize("rsv", range(1, 8))
def test_reserved_bits_fail_the_connection_with_1002(client, rsv, kind):
    opcode, payload = FRAMES_FOR_RSV[kind]
    echo(client, OP_TEXT, b"valid first")
    # The ping after the bad frame must not be answered.
    client.send_raw(encode_frame(opcode, payload, rsv=rsv) + encode_frame(OP_PING, b"after"))
    expect_failure(client, 1002)


# --- 4 reserved opcodes ------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"reserved payload"], ids=["empty", "payload"])
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcode_fails_the_connection_with_1002(client, opcode, payload):
    echo(client, OP_TEXT, b"valid first")
    client.send_raw(encode_frame(opcode, payload) + encode_frame(OP_PING, b"after"))
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [3, 11])
def test_reserved_opcode_inside_a_fragmented_message_fails_with_1002(client, opcode):
    client.send_frame(OP_TEXT, b"start ", fin=False)
    client.send_frame(opcode, b"x")
    expect_failure(client, 1002)


# --- 5 fragmentation ---------------------------------------------------------


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_continuation_without_a_message_fails_with_1002(client, fin):
    client.send_frame(OP_CONT, b"orphan", fin=fin)
    expect_failure(client, 1002)


def test_continuation_after_the_final_fragment_fails_with_1002(client):
    client.send_frame(OP_TEXT, b"one ", fin=False)
    client.send_frame(OP_CONT, b"two", fin=True)
    assert client.recv_text() == "one two"
    client.send_frame(OP_CONT, b"three", fin=True)
    expect_failure(client, 1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("first", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_new_data_frame_inside_a_fragmented_message_fails_with_1002(client, first, second):
    client.send_frame(first, b"first half", fin=False)
    client.send_frame(second, b"a new message", fin=True)
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_fragmented_control_frame_fails_with_1002(client, opcode):
    payload = close_payload(1000) if opcode == OP_CLOSE else b"frag"
    client.send_frame(opcode, payload[:2], fin=False)
    client.send_frame(OP_CONT, payload[2:], fin=True)
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_message_in_many_fragments_is_reassembled(client, opcode):
    parts = [b"%04d," % i for i in range(1000)]
    frames = [encode_frame(opcode, parts[0], fin=False)]
    frames += [encode_frame(OP_CONT, p, fin=False) for p in parts[1:]]
    frames.append(encode_frame(OP_CONT, b"", fin=True))
    client.send_raw(b"".join(frames))
    frame = client.recv_frame()
    assert (frame.opcode, frame.fin) == (opcode, True)
    assert frame.payload == b"".join(parts)


def test_empty_fragments_make_an_empty_message(client):
    client.send_frame(OP_TEXT, b"", fin=False)
    client.send_frame(OP_CONT, b"", fin=False)
    client.send_frame(OP_CONT, b"", fin=True)
    assert client.recv_text() == ""


def test_fragmented_message_sent_one_byte_at_a_time(client):
    data = encode_frame(OP_TEXT, b"fragment1", fin=False) + encode_frame(OP_CONT, b"fragment2", fin=True)
    send_chopped(client, data, 1)
    assert client.recv_text() == "fragment1fragment2"


def test_pings_interleaved_with_every_fragment(client):
    data = b""
    for i in range(5):
        opcode = OP_TEXT if i == 0 else OP_CONT
        data += encode_frame(opcode, b"frag%d " % i, fin=i == 4)
        if i < 4:
            data += encode_frame(OP_PING, b"pongme %d" % i)
    client.send_raw(data)
    for i in range(4):
        frame = client.recv_frame()
        assert (frame.opcode, frame.payload) == (OP_PONG, b"pongme %d" % i)
    assert client.recv_text() == "frag0 frag1 frag2 frag3 frag4 "


def test_unsolicited_pong_between_fragments_is_ignored(client):
    client.send_frame(OP_BINARY, b"\x01", fin=False)
    client.send_frame(OP_PONG, b"unsolicited")
    client.send_frame(OP_CONT, b"\x02", fin=True)
    frame = client.recv_frame()
    assert (frame.opcode, frame.payload) == (OP_BINARY, b"\x01\x02")


# --- 6 UTF-8 -----------------------------------------------------------------

VALID_TEXTS = [
    "Hello-µ@ßöäüàá-UTF-8!!",
    "κόσμε",
    "\u0080\u07ff\u0800\ud7ff\ue000\ufeff\ufffd\uffff",  # boundaries, U+FFFF
    "\U00010000\U0010ffff",
    "\ufdd0\ufffe\U0001fffe",  # noncharacters are well-formed
    "\x00 NUL is valid",
]


@pytest.mark.parametrize("text", VALID_TEXTS, ids=range(len(VALID_TEXTS)))
def test_valid_utf8_is_echoed(client, text):
    client.send_text(text)
    assert client.recv_text() == text


@pytest.mark.parametrize("text", VALID_TEXTS[:4], ids=range(4))
def test_valid_utf8_in_one_byte_fragments_is_accepted(client, text):
    # Every code point of several bytes is split across fragments.
    data = text.encode("utf-8")
    frames = [
        encode_frame(OP_TEXT if i == 0 else OP_CONT, data[i : i + 1], fin=i == len(data) - 1) for i in range(len(data))
    ]
    client.send_raw(b"".join(frames))
    assert client.recv_text() == text


INVALID_UTF8 = {
    "lone-continuation": b"ab\x80cd",
    "continuation-bf": b"\xbf",
    "lonely-2-byte-start": b"\xc3 x",
    "lonely-3-byte-start": b"\xe0 x",
    "lonely-4-byte-start": b"\xf0 x",
    "truncated-at-end": "κόσμ".encode() + b"\xce",
    "truncated-4-byte": b"\xf4\x8f\xbf",
    "impossible-fe": b"\xfe",
    "impossible-ff": b"\xff",
    "impossible-fe-fe-ff-ff": b"\xfe\xfe\xff\xff",
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-slash-5": b"\xf8\x80\x80\x80\xaf",
    "overlong-nul-2": b"\xc0\x80",
    "overlong-nul-3": b"\xe0\x80\x80",
    "max-overlong-2": b"\xc1\xbf",
    "max-overlong-3": b"\xe0\x9f\xbf",
    "max-overlong-4": b"\xf0\x8f\xbf\xbf",
    "surrogate-d800": b"\xed\xa0\x80",
    "surrogate-dfff": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5-lead": b"\xf5\x80\x80\x80",
    # Autobahn 6.3.1: valid text with a surrogate in the middle.
    "kosme-with-surrogate": b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
}


@pytest.mark.parametrize("data", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_invalid_utf8_fails_the_connection_with_1007(client, data):
    client.send_frame(OP_TEXT, data)
    expect_failure(client, 1007)


@pytest.mark.parametrize(
    "data", [b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"], ids=["surrogate", "overlong", "above-10ffff"]
)
def test_invalid_utf8_in_one_byte_fragments_fails_with_1007(client, data):
    frames = [
        encode_frame(OP_TEXT if i == 0 else OP_CONT, data[i : i + 1], fin=i == len(data) - 1) for i in range(len(data))
    ]
    client.send_raw(b"".join(frames))
    expect_failure(client, 1007)


def test_invalid_utf8_split_across_fragments_fails_with_1007(client):
    client.send_frame(OP_TEXT, "κόσμε".encode() + b"\xe2\x82", fin=False)
    client.send_frame(OP_CONT, b"AB", fin=True)  # not continuation bytes
    expect_failure(client, 1007)


def test_valid_code_point_split_across_fragments_is_accepted(client):
    euro = "€".encode()  # three bytes
    client.send_frame(OP_TEXT, b"price: " + euro[:1], fin=False)
    client.send_frame(OP_CONT, euro[1:2], fin=False)
    client.send_frame(OP_CONT, euro[2:] + b"5", fin=True)
    assert client.recv_text() == "price: €5"


def test_invalid_utf8_is_caught_in_the_first_fragment(client):
    # The rest of the message never comes: the server must not wait for it.
    client.send_frame(OP_TEXT, "κόσμε".encode() + b"\xed\xa0\x80", fin=False)
    expect_failure(client, 1007)


def test_invalid_utf8_in_a_middle_fragment_fails_with_1007(client):
    client.send_frame(OP_TEXT, b"start ", fin=False)
    client.send_frame(OP_CONT, b"\xff", fin=False)
    expect_failure(client, 1007)


def test_binary_messages_are_not_checked_for_utf8(client):
    echo(client, OP_BINARY, b"\xff\xfe\xed\xa0\x80\xc0\xaf")


# --- 7 the close handshake ---------------------------------------------------


def close_and_read(c, payload):
    """Sends a close frame with ``payload`` and returns the server's frames
    up to its close; checks that TCP then ends."""
    c.send_frame(OP_CLOSE, payload)
    frames = frames_until_close(c)
    assert_tcp_ends(c)
    return frames


def test_close_after_an_echo(client):
    echo(client, OP_TEXT, b"Hello")
    frames = close_and_read(client, close_payload(1000))
    assert [f.opcode for f in frames] == [OP_CLOSE]
    assert frames[0].close_code == 1000


def test_close_without_payload_is_answered(client):
    frames = close_and_read(client, b"")
    assert [f.opcode for f in frames] == [OP_CLOSE]
    assert frames[0].close_code in (None, 1000)


# RFC 6455 7.4 and IANA's registry: 1012 service restart, 1013 try again
# later, 1014 bad gateway were registered after the RFC.
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_echoed(client, code):
    frames = close_and_read(client, close_payload(code, "reason"))
    assert frames[-1].close_code == code


def test_close_with_a_123_byte_reason_is_echoed(client):
    frames = close_and_read(client, close_payload(1000, "r" * 123))
    assert frames[-1].close_code == 1000


def test_close_with_a_124_byte_reason_fails_with_1002(client):
    client.send_frame(OP_CLOSE, close_payload(1000, "r" * 124))  # 126 bytes
    expect_failure(client, 1002)


INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_fails_with_1002(client, code):
    client.send_frame(OP_CLOSE, struct.pack("!H", code))
    expect_failure(client, 1002)


def test_close_with_a_one_byte_payload_fails_with_1002(client):
    client.send_frame(OP_CLOSE, b"\x03")
    expect_failure(client, 1002)


def test_close_reason_with_invalid_utf8_fails_with_1007(client):
    client.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bad \xce\xba\xe1\xbd")
    expect_failure(client, 1007)


def test_data_and_pings_after_close_are_ignored(client):
    client.send_raw(
        encode_frame(OP_CLOSE, close_payload(1000))
        + encode_frame(OP_TEXT, b"after close")
        + encode_frame(OP_PING, b"after close")
    )
    frames = frames_until_close(client)
    assert [f.opcode for f in frames] == [OP_CLOSE]
    assert frames[0].close_code == 1000
    assert_tcp_ends(client)


def test_second_close_is_ignored(client):
    client.send_raw(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_CLOSE, close_payload(1001)))
    frames = frames_until_close(client)
    assert [(f.opcode, f.close_code) for f in frames] == [(OP_CLOSE, 1000)]
    assert_tcp_ends(client)


def test_close_in_the_middle_of_a_fragmented_message(client):
    client.send_frame(OP_TEXT, b"never ", fin=False)
    client.send_frame(OP_CLOSE, close_payload(1000))
    client.send_frame(OP_CONT, b"finished", fin=True)
    frames = frames_until_close(client)
    assert [(f.opcode, f.close_code) for f in frames] == [(OP_CLOSE, 1000)]
    assert_tcp_ends(client)


def test_server_ends_tcp_after_the_close_handshake(client):
    # No reading of ours in between: the server must end TCP by itself.
    client.send_close(1000, "bye")
    frame = client.recv_frame()
    assert (frame.opcode, frame.close_code) == (OP_CLOSE, 1000)
    assert client.at_eof()


# --- 9 limits ----------------------------------------------------------------


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_message_of_exactly_the_limit_is_echoed(client, opcode):
    payload = b"L" * LIMIT
    t = send_in_background(client, encode_frame(opcode, payload))
    frame = client.recv_frame()
    t.join(wsraw.TIMEOUT)
    assert frame.opcode == opcode and frame.payload == payload


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_message_one_byte_over_the_limit_fails_with_1009(client, opcode):
    t = send_in_background(client, encode_frame(opcode, b"O" * (LIMIT + 1)))
    expect_failure(client, 1009)
    t.join(wsraw.TIMEOUT)


def test_fragmented_message_one_byte_over_the_limit_fails_with_1009(client):
    half = LIMIT // 2
    t = send_in_background(
        client,
        encode_frame(OP_BINARY, b"a" * half, fin=False)
        + encode_frame(OP_CONT, b"b" * half, fin=False)
        + encode_frame(OP_CONT, b"c", fin=True),
    )
    expect_failure(client, 1009)
    t.join(wsraw.TIMEOUT)


def test_fragmented_message_of_exactly_the_limit_is_echoed(client):
    quarter = LIMIT // 4
    data = b"".join(
        encode_frame(OP_TEXT if i == 0 else OP_CONT, bytes([65 + i]) * quarter, fin=i == 3) for i in range(4)
    )
    t = send_in_background(client, data)
    frame = client.recv_frame()
    t.join(wsraw.TIMEOUT)
    assert len(frame.payload) == LIMIT
    assert frame.payload == b"A" * quarter + b"B" * quarter + b"C" * quarter + b"D" * quarter


# --- masking -----------------------------------------------------------------


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE], ids=["text", "binary", "ping", "close"])
def test_unmasked_client_frame_fails_with_1002(client, opcode):
    payload = close_payload(1000) if opcode == OP_CLOSE else b"unmasked"
    client.send_frame(opcode, payload, mask=False)
    expect_failure(client, 1002)


def test_unmasked_continuation_fails_with_1002(client):
    client.send_frame(OP_TEXT, b"masked ", fin=False)
    client.send_frame(OP_CONT, b"unmasked", mask=False)
    expect_failure(client, 1002)
