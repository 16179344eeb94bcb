"""permessage-deflate (RFC 7692) on the wire, for the tests: what a raw
client offers, compressing a message as a client sends it, inflating what
the server sent, and realistic JSON payloads that shrink.

A compressed message is raw DEFLATE (no zlib header) whose final empty
stored block's four bytes ``00 00 ff ff`` are left off (RFC 7692 7.2.1);
the receiver appends them before inflating (7.2.2). roomcast's server ends
its messages with a final block instead (BFINAL=1, which 7.2.3.3 allows:
libdeflate compresses whole buffers, without a sync flush) and one 0x00
byte, after which the appended bytes make an empty stored block.
"""

import json
import zlib

from support.wsraw import OP_TEXT, WSClient

RSV1 = 0x4  # Frame.rsv holds RSV1..RSV3 as bits 2..0
TAIL = b"\x00\x00\xff\xff"
OFFER = "permessage-deflate; client_max_window_bits"
SAFARI_15_2 = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/15.2 Safari/605.1.15"
)
SAFARI_16 = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/16.0 Safari/605.1.15"
)


def compress(data: bytes, wbits: int = 15) -> bytes:
    """``data`` as one compressed message: raw deflate, sync-flushed, the
    trailing ``00 00 ff ff`` removed."""
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[: -len(TAIL)]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    """A compressed message's payload inflated with a ``wbits`` window.
    Raises zlib.error when the data reaches further back than the window
    or is not a complete deflate stream."""
    d = zlib.decompressobj(-wbits)
    out = d.decompress(payload + TAIL)
    # A sender may end the message with a final block (BFINAL=1, RFC 7692
    # 7.2.3.3): then what follows the stream must be the header byte of an
    # empty stored block (0x00, as in 7.2.3.3's example) and the tail, which
    # together make that block (7.2.1). An inflater that goes on after a
    # final block, as Chromium's does, fails on anything else.
    if d.unconsumed_tail or (d.unused_data if not d.eof else d.unused_data != b"\x00" + TAIL):
        raise zlib.error("data after the end of the compressed message")
    return out


def connect(port: int, path: str, offer: str | None = OFFER, user_agent: str | None = None) -> WSClient:
    """A raw client that offers ``offer`` (None: no extension at all)."""
    headers = []
    if offer is not None:
        headers.append(("Sec-WebSocket-Extensions", offer))
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    return WSClient.connect(port, path, extra_headers=headers)


def answer(client: WSClient) -> str | None:
    """The Sec-WebSocket-Extensions of the server's 101, or None."""
    return client.response.header("sec-websocket-extensions")


def recv_data(client: WSClient):
    """The next data message as (opcode, compressed?, inflated payload):
    fragmented messages reassembled, RSV1 taken from the first frame."""
    first = client.recv_frame()
    if first.opcode >= 0x8:
        raise AssertionError(f"expected a data message, got a control frame {first!r}")
    parts, f = [first.payload], first
    while not f.fin:
        f = client.recv_frame()
        assert f.opcode == 0 and f.rsv == 0, f"bad continuation frame {f!r}"
        parts.append(f.payload)
    payload = b"".join(parts)
    squeezed = bool(first.rsv & RSV1)
    assert first.rsv & ~RSV1 == 0, f"RSV2/RSV3 set: {first!r}"
    return first.opcode, squeezed, inflate(payload) if squeezed else payload


def send_compressed(client: WSClient, data: bytes, opcode: int = OP_TEXT) -> None:
    client.send_frame(opcode, compress(data), rsv=RSV1)


def ticker(i: int, size: int) -> str:
    """A JSON message of at least ``size`` bytes (a few dozen more at
    most), the kind a ticker or chat pushes: repetitive keys, varied
    values."""
    rows = []
    message = {"type": "ticker", "seq": i, "rows": rows}
    length = len(json.dumps(message, separators=(",", ":")))
    n = 0
    while length < size:
        row = {"symbol": f"SYM{(i * 7 + n) % 97:02d}", "price": round(100 + (i * 31 + n * 17) % 977 / 7, 2)}
        rows.append(row)
        length += len(json.dumps(row, separators=(",", ":"))) + (1 if n else 0)
        n += 1
    text = json.dumps(message, separators=(",", ":"))
    assert len(text) == length
    return text


def exact(i: int, size: int) -> str:
    """A JSON text message of exactly ``size`` bytes (size >= 40) that
    deflate shrinks."""
    head = {"type": "chat", "seq": i, "text": ""}
    room = size - len(json.dumps(head, separators=(",", ":")))
    assert room >= 0, size
    words = "the quick brown fox jumps over the lazy dog %d " % i
    head["text"] = (words * (room // len(words) + 1))[:room]
    text = json.dumps(head, separators=(",", ":"))
    assert len(text) == size
    return text
