#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/http/,
fuzz/corpus/frames/, fuzz/corpus/rooms/, fuzz/corpus/bpwire/,
fuzz/corpus/utf8/ and fuzz/corpus/tls/ (fuzz/corpus/backplane/ is committed
as it is).

Each seed is two control bytes (see the comment at the top of
fuzz/fuzz_http.c and fuzz/fuzz_frames.c) followed by the bytes a client
sends. The files are committed; run this again after changing a seed here.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(
    target: bytes = b"/chat",
    extra: bytes = b"",
    eol: bytes = b"\r\n",
    method: bytes = b"GET",
    version: bytes = b"HTTP/1.1",
    key: bytes = KEY,
    ws_version: bytes = b"13",
) -> bytes:
    lines = [
        method + b" " + target + b" " + version,
        b"Host: example.com:8080",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: " + ws_version,
    ]
    head = eol.join(lines) + eol
    return head + extra + eol


def http_seeds() -> dict[str, bytes]:
    # control: byte 0 picks the limits (0: the defaults), byte 1 the split.
    d = b"\x00\x80"
    whole = b"\x00\xff"
    s = {
        "upgrade": d + upgrade(),
        "upgrade_one_read": whole + upgrade(),
        "upgrade_split_early": b"\x00\x10" + upgrade(),
        "upgrade_extras": d
        + upgrade(
            target=b"/room/1?name=a%20b&x=",
            extra=b"Origin: http://example.com\r\n"
            b"Sec-WebSocket-Protocol: chat, superchat\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
            b"User-Agent: seed\r\n",
        ),
        "upgrade_bare_lf": d + upgrade(eol=b"\n"),
        "upgrade_token_lists": d + b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket\r\n"
        b"Connection: keep-alive,  Upgrade \r\nConnection: close\r\n"
        b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "upgrade_pipelined": d + upgrade() + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        "missing_key": d + upgrade().replace(b"Sec-WebSocket-Key: " + KEY + b"\r\n", b""),
        "bad_key": d + upgrade(key=b"short=="),
        "key_padding": d + upgrade(key=b"AAAAAAAAAAAAAAAAAAAAA==="),
        "version_8": d + upgrade(ws_version=b"8"),
        "post_upgrade": d + upgrade(method=b"POST"),
        "http10_upgrade": d + upgrade(version=b"HTTP/1.0"),
        "http2": d + upgrade(version=b"HTTP/2.0"),
        "duplicate_host": d + upgrade(extra=b"Host: other\r\n"),
        "duplicate_key": d + upgrade(extra=b"Sec-WebSocket-Key: " + KEY + b"\r\n"),
        "plain_get": d + b"GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n",
        "plain_head": d + b"HEAD / HTTP/1.0\r\n\r\n",
        "obs_fold": d + b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n",
        "space_before_colon": d + b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        "control_char": d + b"GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n",
        "absolute_form": d + b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        "asterisk": d + b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "cr_without_lf": d + b"GET / HTTP/1.1\rHost: h\r\n\r\n",
        "empty_header_value": d + b"GET / HTTP/1.1\r\nHost:\r\nX:   \t \r\n\r\n",
        "high_bytes": d + b"GET /\xc3\xa9 HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        "request_line_only": d + b"GET / HTTP/1.1\r\n",
        "incomplete": d + b"GET /chat HTTP/1.1\r\nHost: exa",
        "many_headers": d + b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(110)) + b"\r\n",
        # limits: 64 bytes, 3 headers
        "small_limits": b"\x09\x80" + upgrade(),
        "zero_headers": b"\x04\x80" + b"GET / HTTP/1.1\r\n\r\n",
        "long_header": d + b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        "big_limit": b"\x03\xff" + upgrade(extra=b"X-Pad: " + b"p" * 2000 + b"\r\n"),
        # Response heads, for the client's parser and upgrade check (the
        # sample key's accept value, a subprotocol, then a frame).
        "response_101": d + b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n\r\n\x81\x02hi",
        "response_404": d + b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "response_no_reason": d + b"HTTP/1.0 101\r\nupgrade: WebSocket\r\n\r\n",
    }
    return s


def mask_frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length: int | None = None,
) -> bytes:
    """A client frame; length overrides the declared payload length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n <= 0xFFFF:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + body


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack(">H", code) + reason


RAW_HANDSHAKE = (
    b"GET /fuzz HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def frames_seeds() -> dict[str, bytes]:
    # Control bytes: see fuzz_frames.c. 0x00 0x00: everything in one read,
    # default limits, no embedder actions.
    one = b"\x00\x00"
    text = mask_frame(0x1, b"hello")
    close = mask_frame(0x8, close_payload(1000, b"bye"))
    s = {
        "text": one + text,
        "text_bytewise": b"\x01\x00" + text + close,
        "binary": one + mask_frame(0x2, bytes(range(256))),
        "empty_text": one + mask_frame(0x1, b""),
        "utf8_text": one + mask_frame(0x1, "héllo wörld ✓ 🎉".encode()),
        "invalid_utf8": one + mask_frame(0x1, b"abc\xed\xa0\x80def"),
        "overlong_utf8": one + mask_frame(0x1, b"\xc0\xaf"),
        "fragmented": b"\x03\x00"
        + mask_frame(0x1, b"frag", fin=False)
        + mask_frame(0x9, b"ping in between")
        + mask_frame(0x0, b"men", fin=False)
        + mask_frame(0x0, b"ted"),
        "utf8_split_across_fragments": b"\x02\x00"
        + mask_frame(0x1, "é".encode()[:1], fin=False)
        + mask_frame(0x0, "é".encode()[1:]),
        "ping": one + mask_frame(0x9, b"are you there"),
        "ping_125": one + mask_frame(0x9, b"p" * 125),
        "unsolicited_pong": one + mask_frame(0xA, b"x"),
        "close_normal": one + close,
        "close_empty": one + mask_frame(0x8, b""),
        "close_one_byte": one + mask_frame(0x8, b"\x03"),
        "close_invalid_code": one + mask_frame(0x8, close_payload(999)),
        "close_1005": one + mask_frame(0x8, close_payload(1005)),
        "close_4999": one + mask_frame(0x8, close_payload(4999, b"app")),
        "close_bad_utf8_reason": one + mask_frame(0x8, close_payload(1000, b"\xff")),
        "data_after_close": one + close + text,
        "unmasked": one + mask_frame(0x1, b"hello", mask=None),
        "rsv_bits": one + mask_frame(0x1, b"hello", rsv=4),
        "reserved_opcode": one + mask_frame(0x3, b"x"),
        "reserved_control": one + mask_frame(0xB, b"x"),
        "long_control": one + mask_frame(0x9, b"p" * 126),
        "fragmented_ping": one + mask_frame(0x9, b"p", fin=False),
        "orphan_continuation": one + mask_frame(0x0, b"x"),
        "text_inside_fragmented": one + mask_frame(0x1, b"a", fin=False) + mask_frame(0x1, b"b"),
        "length_16bit": b"\x07\x00" + mask_frame(0x2, b"z" * 300),
        "length_64bit_huge": one + mask_frame(0x2, b"", length=0x7FFFFFFFFFFFFFFF),
        "length_64bit_msb": one + mask_frame(0x2, b"", length=0xFFFFFFFFFFFFFFFF),
        "length_over_limit": b"\x00\x01" + mask_frame(0x2, b"y" * 126),
        "length_declared_short_payload": one + mask_frame(0x2, b"abc", length=65535),
        "two_messages": one + text + mask_frame(0x2, b"\x00\x01"),
        "tiny_fragments": b"\x00\x02"
        + mask_frame(0x1, b"a", fin=False)
        + b"".join(mask_frame(0x0, b"b", fin=False) for _ in range(120))
        + mask_frame(0x0, b"c"),
        "empty_fragments": b"\x00\x01"
        + mask_frame(0x2, b"", fin=False)
        + b"".join(mask_frame(0x0, b"", fin=False) for _ in range(40))
        + mask_frame(0x0, b""),
        # embedder actions and timing
        # 8-byte frames in 8-byte reads: the stream rests after each one
        "sweep_between_messages": b"\x0c\x00"
        + mask_frame(0x1, b"ab")
        + mask_frame(0x9, b"pi")
        + mask_frame(0x2, b"cd")
        + mask_frame(0x8, close_payload(1000)),
        "sweep_mid_fragment": b"\x0c\x00" + mask_frame(0x1, b"part", fin=False) + mask_frame(0x0, b"rest"),
        "server_sends": b"\x23\x00" + text + text,
        "server_closes": b"\x42\x00" + text + text + text + close,
        "keepalive": b"\x85\x00" + text + mask_frame(0xA, b"rc") + text,
        "keepalive_silent": b"\x80\x00" + b"",
        "pause_resume": b"\x03\x10" + text + text + text,
        "slow_client": b"\x21\x24" + text * 8,
        "slow_drop_oldest": b"\x21\xa4" + text * 8,
        "server_stops": b"\x00\x40" + text,
        "subprotocol": b"\x00\x08" + text,
        # raw: the handshake is part of the input
        "raw_handshake": b"\x10\x00" + RAW_HANDSHAKE,
        "raw_pipelined": b"\x10\x00" + RAW_HANDSHAKE + text + close,
        "raw_split": b"\x15\x00" + RAW_HANDSHAKE + text,
        "raw_bad_request": b"\x10\x00" + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "raw_garbage": b"\x10\x00" + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "raw_refused": b"\x50\x00" + RAW_HANDSHAKE + text,
        "raw_stop_while_pending": b"\x10\x40" + RAW_HANDSHAKE + text,
        "raw_small_limits_pipelined": b"\x10\x04" + RAW_HANDSHAKE + mask_frame(0x2, b"q" * 2000),
        "slow_default_queue": b"\x23\x20" + text * 20,
        "raw_header_flood": b"\x17\x00" + b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n",
    }
    # permessage-deflate (byte 1, bit 3 offers it): compressed messages,
    # whole and fragmented (RSV1 on the first frame only), a bomb past the
    # 1024-byte limit, data that is not DEFLATE, RSV1 where it is not
    # allowed, and the embedder's sends compressed back.
    js = b'{"user":"ada","text":"hello hello hello hello","room":"lobby"}' * 8
    zjs = deflate(js)
    s.update(
        {
            "deflate_text": b"\x00\x08" + mask_frame(0x1, zjs, rsv=4) + text,
            "deflate_fragmented": b"\x00\x08"
            + mask_frame(0x1, zjs[:7], fin=False, rsv=4)
            + mask_frame(0x9, b"ping in between")
            + mask_frame(0x0, zjs[7:]),
            "deflate_bomb": b"\x00\x0a" + mask_frame(0x2, deflate(b"\x00" * 100000), rsv=4),
            "deflate_bad_data": b"\x00\x08" + mask_frame(0x2, b"\xff\xfe\xfd", rsv=4),
            "deflate_bad_utf8": b"\x00\x08" + mask_frame(0x1, deflate(b"abc\xed\xa0\x80" * 40), rsv=4),
            "deflate_rsv1_continuation": b"\x00\x08" + mask_frame(0x1, b"a", fin=False) + mask_frame(0x0, b"b", rsv=4),
            "deflate_rsv1_ping": b"\x00\x08" + mask_frame(0x9, b"p", rsv=4),
            "deflate_server_sends": b"\x23\x08" + text + text,
            "deflate_slow_client": b"\x21\x28" + text * 8,
        }
    )
    return s


def deflate(data: bytes) -> bytes:
    """A message compressed alone as RFC 7692 7.2.1 says: raw DEFLATE ending
    with an empty stored block, whose 4 bytes are then left out."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


# fuzz_rooms.c operations: (op, arg) pairs after one control byte.
JOIN, LEAVE, PUBLISH, BROADCAST, SEND, CLIENT_MSG = 0, 1, 2, 3, 4, 5
CLOSE, ROOM_FREE, END, CLIENT_CLOSE, HANG_UP, TOGGLE_READ = 6, 7, 8, 9, 10, 11
NONE, ALL, OTHERS = 0, 1, 2


def control(small: int = 0, drop_oldest: int = 0, modes: tuple[int, ...] = ()) -> bytes:
    """The control byte: the limits, then the relay mode of rooms 0-2 (a
    room's id carries its mode; room 3 relays nothing)."""
    byte = small | drop_oldest << 1
    for room, mode in enumerate(modes):
        byte |= mode << (2 + 2 * room)
    return bytes([byte])


def join(conn: int, room: int) -> bytes:
    return bytes([JOIN, conn | room << 2])


def publish(room: int, exclude: int = -1, pad16: int = 0) -> bytes:
    return bytes([PUBLISH, room | (exclude + 1) << 2 | pad16 << 4])


def rooms_seeds() -> dict[str, bytes]:
    everyone = b"".join(join(c, 0) for c in range(4))
    s = {
        "join_publish_leave": b"\x00"
        + everyone
        + publish(0)
        + bytes([END, 0])
        + bytes([LEAVE, 1])
        + publish(0, exclude=2)
        + bytes([END, 0]),
        "send_mixed_with_a_run": b"\x00"
        + everyone
        + bytes([SEND, 0])
        + publish(0)
        + bytes([SEND, 1])
        + publish(0)
        + publish(0)
        + bytes([END, 0]),
        "broadcast_overlapping_rooms": b"\x00"
        + everyone
        + join(0, 1)
        + join(2, 1)
        + bytes([BROADCAST, 0b0011 | 2 << 4])
        + bytes([END, 0]),
        # clients 0 and 2 negotiate permessage-deflate, 1 and 3 do not
        "deflate_mixed_room": b"\x00"
        + everyone
        + publish(0, pad16=15)
        + publish(0, pad16=15)
        + bytes([END, 0])
        + publish(0, pad16=15, exclude=1)
        + bytes([SEND, 2 | 60 << 2])
        + bytes([END, 0]),
        "deflate_relay_forwarded": control(modes=(ALL, NONE, NONE))
        + everyone
        + bytes([END, 0])
        + bytes([CLIENT_MSG, 0 | 50 << 2])
        + bytes([CLIENT_MSG, 1 | 50 << 2])
        + bytes([CLIENT_MSG, 2 | 3 << 2])
        + bytes([END, 0]),
        "relay_all_and_others": control(modes=(NONE, ALL, OTHERS))
        + join(0, 1)
        + join(1, 1)
        + join(1, 2)
        + join(2, 2)
        + bytes([END, 0])
        + bytes([CLIENT_MSG, 1 | 5 << 2])
        + bytes([CLIENT_MSG, 3])
        + bytes([END, 0]),
        "closes_and_room_free": b"\x00"
        + everyone
        + bytes([CLOSE, 2])
        + publish(0)
        + bytes([CLIENT_CLOSE, 1])
        + publish(0)
        + bytes([HANG_UP, 3])
        + publish(0)
        + bytes([ROOM_FREE, 0])
        + publish(0)
        + bytes([END, 0]),
        "slow_member_closed": b"\x01"
        + everyone
        + bytes([TOGGLE_READ, 3])
        + publish(0, pad16=15) * 100
        + bytes([END, 0])
        + join(3, 1)
        + bytes([TOGGLE_READ, 3])
        + publish(0)
        + bytes([END, 0]),
        "slow_member_drops_oldest": b"\x03"
        + everyone
        + bytes([TOGGLE_READ, 3])
        + publish(0, pad16=15) * 100
        + bytes([END, 0])
        + bytes([TOGGLE_READ, 3])
        + publish(0)
        + bytes([END, 0]),
    }
    return s


def envelope(flags: int, sender: int, seq: int, rooms: tuple[bytes, ...] = (), payload: bytes = b"") -> bytes:
    """A roomcast message on a Redis channel (csrc/proto/rc_bpwire.h)."""
    head = b"\0rc" + bytes([flags]) + struct.pack(">QQ", sender, seq)
    if rooms:
        head += struct.pack(">H", len(rooms))
        head += b"".join(struct.pack(">H", len(r)) + r for r in rooms)
    return head + payload


def resp(*items: bytes) -> bytes:
    """An array of bulk strings in RESP."""
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)


def bpwire_seeds() -> dict[str, bytes]:
    """One control byte (fuzz/fuzz_bpwire.c: the part, then max_payload for
    messages), then that part's bytes."""
    message, names, command, replies = 0, 1, 2, 3
    unbounded, small = 3 << 2, 1 << 2
    s = {
        "msg_text_one_room": bytes([message | unbounded]) + envelope(0x11, 1, 2, payload=b"hello"),
        "msg_binary_rooms": bytes([message | unbounded]) + envelope(0x12, 7, 9, (b"lobby", b"b|c"), b"\x00\xff"),
        "msg_rooms_cut_short": bytes([message | unbounded]) + envelope(0x12, 7, 9, (b"lobby", b"x"))[:-1],
        "msg_other_version": bytes([message | unbounded]) + envelope(0x31, 1, 1, payload=b"x"),
        "msg_history": bytes([message | unbounded])
        + envelope(0x25, 1, 0, payload=b"0123456789abcdef" + b"%020d" % 42 + b'{"event":"e"}'),
        "msg_history_excluding": bytes([message | small])
        + envelope(0x2C, 2, 0, payload=struct.pack(">Q", 7) + b"e" * 16 + b"%020d" % (2**64 - 1) + b"\x00"),
        "msg_history_bad_offset": bytes([message | unbounded])
        + envelope(0x24, 1, 0, payload=b"e" * 16 + b"1" * 19 + b"x"),
        "msg_over_the_bound": bytes([message | small]) + envelope(0x10, 1, 1) + b"p" * 17,
        "msg_text_not_utf8": bytes([message | unbounded]) + envelope(0x11, 3, 4, payload=b"\xc3"),
        "msg_foreign": bytes([message | unbounded]) + "h\u00e9".encode(),
        "names_default": bytes([names]) + b"roomcast:\0lobby",
        "names_escaped": bytes([names]) + b"a|b\\c:\0x|y",
        "names_long_prefix": bytes([names]) + b"x|y\\z:" * 34 + b"\0r",
        "command_publish": bytes([command]) + b"PUBLISH\0ch\0\0rc\x10",
        "command_get": bytes([command]) + b"GET\0k",
        "reply_message": bytes([replies]) + resp(b"message", b"roomcast:|lobby", b"hi"),
        "reply_subscribe": bytes([replies]) + b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
        "reply_error_and_status": bytes([replies]) + b"-ERR no\r\n+OK\r\n",
        "reply_nested": bytes([replies]) + b"*3\r\n:-5\r\n$-1\r\n*2\r\n$2\r\nab\r\n*0\r\n",
        "reply_huge_array": bytes([replies]) + b"*2147483647\r\n",
        "reply_smessage": bytes([replies]) + resp(b"smessage", b"{@ABC}roomcast:|lobby", b"hi"),
        "reply_cluster_slots": bytes([replies])
        + b"*2\r\n*4\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
        + b"*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n*3\r\n:8192\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n",
        "reply_cluster_slots_bad_range": bytes([replies]) + b"*1\r\n*3\r\n:9\r\n:4\r\n*2\r\n$1\r\na\r\n:1\r\n",
    }
    return s


def utf8_seeds() -> dict[str, bytes]:
    # fuzz_utf8 takes the text as it is: no control byte.
    return {
        "ascii": b"hello, world",
        "ascii_long_then_multibyte": b"q" * 37 + "\u00e9".encode(),
        "mixed": "caf\u00e9 \u20ac \U0001f600 z".encode(),
        "edges_valid": b"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
        b"\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        "overlongs": b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf",
        "surrogate": b"ab\xed\xa0\x80cd",
        "above_max": b"\xf4\x90\x80\x80",
        "cut_short": b"abcdefgh\xf0\x9f\x98",
        "stray_continuation": b"abcdefg\x80",
    }


def tls_record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + struct.pack(">H", len(body)) + body


def server_hello(extensions: bytes, suite: int) -> bytes:
    body = b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32)
    body += struct.pack(">HB", suite, 0) + struct.pack(">H", len(extensions)) + extensions
    return tls_record(22, b"\x02" + struct.pack(">I", len(body))[1:] + body)


def tls_seeds() -> dict[str, bytes]:
    # byte 0: bit 0 verify (a server filter: client certificate required),
    # bits 1-2 piece size (3: whole), bit 3 a real peer (then 2-byte
    # operations), bit 4 TLS 1.2 only, bit 5 the filter is the server, bit 6
    # its output taken as blocks.
    # bit 7 (with 3 and 5): the client resumes a session of a first one.
    whole, byte, server, tls12, role_server, block, resume = 3 << 1, 0, 8, 16, 32, 64, 128
    peer = server
    carry, inject, flip, drop, s_write, s_ctl, c_write, c_shut = range(8)

    def ops(*pairs: tuple[int, int]) -> bytes:
        return b"".join(bytes(p) for p in pairs)

    session = ops((s_write, 99), (c_write, 49), (s_ctl, 3), (s_write, 9), (c_write, 200), (c_shut, 0), (s_ctl, 0))
    tls12_hello = server_hello(b"\xff\x01\x00\x01\x00\x00\x0b\x00\x02\x01\x00", 0xC02F)
    # A TLS 1.3 ClientHello (x25519 key share, TLS_AES_128_GCM_SHA256, ALPN).
    hello_ext = (
        b"\x00\x2b\x00\x03\x02\x03\x04"
        + b"\x00\x0a\x00\x04\x00\x02\x00\x1d"
        + b"\x00\x0d\x00\x04\x00\x02\x04\x03"
        + b"\x00\x33\x00\x26\x00\x24\x00\x1d\x00\x20"
        + bytes(range(7, 39))
        + b"\x00\x10\x00\x0b\x00\x09\x08http/1.1"
    )

    def client_hello_of(extensions: bytes) -> bytes:
        body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
        body += struct.pack(">H", len(extensions)) + extensions
        return b"\x01" + struct.pack(">I", len(body))[1:] + body

    client_hello = client_hello_of(hello_ext)
    # The same offering a forged ticket (psk_key_exchange_modes, then
    # pre_shared_key last: one identity of 96 bytes, one 32-byte binder).
    identity = struct.pack(">H", 96) + bytes(range(96)) + struct.pack(">I", 0)
    binder = b"\x20" + bytes(32)
    psk = struct.pack(">H", len(identity)) + identity + struct.pack(">H", len(binder)) + binder
    psk_hello = client_hello_of(
        hello_ext + b"\x00\x2d\x00\x02\x01\x01" + b"\x00\x29" + struct.pack(">H", len(psk)) + psk
    )
    tls13_hello = server_hello(
        b"\x00\x2b\x00\x02\x03\x04\x00\x33\x00\x24\x00\x1d\x00\x20" + bytes(range(9, 41)), 0x1301
    )
    return {
        "alone_alert": bytes([whole]) + tls_record(21, b"\x02\x28"),
        "alone_http": bytes([whole]) + b"HTTP/1.1 400 Bad Request\r\n\r\n",
        "alone_hello_tls12": bytes([whole]) + tls12_hello + tls_record(22, b"\x0e\x00\x00\x00"),
        "alone_hello_tls13": bytes([byte]) + tls13_hello + tls_record(20, b"\x01") + tls_record(23, bytes(40)),
        "server_session_tls13": bytes([server | whole]) + session,
        "server_session_tls12": bytes([server | tls12 | whole]) + session,
        "server_one_byte_pieces": bytes([server | byte]) + ops((s_write, 200), (c_write, 7)),
        "server_verifying": bytes([server | whole | 1]) + ops((s_write, 5)),
        "server_flip": bytes([server | whole]) + ops((s_write, 30), (carry, 0), (s_write, 20), (flip, 3)),
        "server_drop": bytes([server | whole]) + ops((s_write, 30), (drop, 5)),
        "server_inject": bytes([server | whole]) + ops((inject, 7)) + tls_record(23, bytes(2)) + ops((s_write, 3)),
        # The filter as the server: a ClientHello and worse from nobody, then
        # a real client (certificate and all, or not) tampered with.
        "srv_alone_hello": bytes([role_server | whole]) + tls_record(22, client_hello),
        "srv_alone_hello_pieces": bytes([role_server | byte]) + tls_record(22, client_hello) + tls_record(20, b"\x01"),
        "srv_alone_http": bytes([role_server | whole]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "srv_alone_sslv2": bytes([role_server | whole]) + b"\x80\x2e\x01\x00\x02\x00\x15" + bytes(46),
        "srv_alone_appdata": bytes([role_server | whole]) + tls_record(23, bytes(64)),
        "srv_session_tls13": bytes([role_server | peer | whole]) + session,
        "srv_session_tls12": bytes([role_server | peer | tls12 | whole]) + session,
        "srv_session_block": bytes([role_server | peer | block | whole]) + session,
        "srv_client_cert": bytes([role_server | peer | whole | 1]) + session,
        "srv_client_cert_tls12": bytes([role_server | peer | tls12 | block | 1]) + ops((s_write, 5), (c_write, 70)),
        "srv_resume_tls13": bytes([resume | role_server | peer | whole]) + session,
        "srv_resume_tls12": bytes([resume | role_server | peer | tls12 | whole]) + session,
        "srv_resume_client_cert": bytes([resume | role_server | peer | block | whole | 1]) + session,
        "srv_resume_flip": bytes([resume | role_server | peer | whole]) + ops((flip, 9)),
        "srv_alone_hello_psk": bytes([role_server | whole]) + tls_record(22, psk_hello),
        "srv_flip": bytes([role_server | peer | whole]) + ops((s_write, 30), (carry, 0), (s_write, 20), (flip, 3)),
        "srv_drop": bytes([role_server | peer | whole]) + ops((s_write, 30), (drop, 5)),
        "srv_inject": bytes([role_server | peer | whole])
        + ops((inject, 7))
        + tls_record(23, bytes(2))
        + ops((c_write, 3)),
    }


def write(kind: str, seeds: dict[str, bytes]) -> None:
    out = HERE / "corpus" / kind
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, data in sorted(seeds.items()):
        (out / name).write_bytes(data)
    digest = hashlib.sha1(b"".join(seeds[k] for k in sorted(seeds))).hexdigest()
    print(f"{kind}: {len(seeds)} seeds ({digest[:12]})")


if __name__ == "__main__":
    write("http", http_seeds())
    write("frames", frames_seeds())
    write("rooms", rooms_seeds())
    write("bpwire", bpwire_seeds())
    write("utf8", utf8_seeds())
    write("tls", tls_seeds())
