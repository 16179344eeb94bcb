"""permessage-deflate (RFC 7692) in both clients, ``roomcast.WebSocket``
and ``roomcast.connect``, against real peers: the ``websockets`` server
with its default compression (it keeps its context across messages and
asks for 12-bit windows) and without, roomcast's own ``Server`` (its
messages stand alone), and raw servers that answer the offer badly, watch
the client's frames or send a deflate bomb."""

import asyncio
import os
import random
import struct
import zlib

import pytest

import roomcast
from roomcast import ConnectionFailed, WebSocket
from support.clientpeers import (
    RawServer,
    T,
    WebsocketsServer,
    accept_value,
    close_frame,
    idle,
    read_request,
    wait_until,
)
from support.wsraw import OP_BINARY, OP_CLOSE, OP_TEXT, ServerThread, echo_server

OFFER = "permessage-deflate; client_max_window_bits"
RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"

CLIENTS = ["sync", "asyncio"]


# -- the two clients behind one interface ---------------------------------------


def exchange(kind, url, messages, **kw):
    """Sends each message and reads its echo, in turn; returns the echoes
    and the client's ``extensions`` (the sync client's; the server's
    answer from the response headers for the asyncio one)."""
    if kind == "sync":
        with WebSocket(url, **kw) as ws:
            got = []
            for m in messages:
                ws.send(m)
                got.append(ws.recv(T))
            return got, ws.extensions

    async def run():
        async with roomcast.connect(url, **kw) as ws:
            got = []
            for m in messages:
                await ws.send(m)
                got.append(await asyncio.wait_for(ws.recv(), T))
            answer = ", ".join(v for n, v in ws.response_headers if n == "sec-websocket-extensions")
            return got, answer

    return asyncio.run(run())


def open_fails(kind, url, **kw):
    """The reason a connection that must not open gives."""
    if kind == "sync":
        ws = WebSocket(url, **kw)
        errors = []
        ws.onerror = lambda e: errors.append(e.reason)
        ws.wait_closed(T)
        wait_until(lambda: errors)
        return errors[0]

    async def run():
        with pytest.raises(ConnectionFailed) as info:
            await asyncio.wait_for(roomcast.connect(url, **kw), T)
        return info.value.reason

    return asyncio.run(run())


def closed_by_client(kind, url, **kw):
    """Opens, receives until the connection ends; returns (messages, close
    code)."""
    if kind == "sync":
        ws = WebSocket(url, **kw)
        messages = []
        ws.onmessage = messages.append
        ws.wait_closed(T)
        return messages, ws.close_code

    async def run():
        ws = await asyncio.wait_for(roomcast.connect(url, **kw), T)
        messages = []
        try:
            while True:
                messages.append(await asyncio.wait_for(ws.recv(), T))
        except roomcast.ConnectionClosed:
            pass
        return messages, ws.close_code

    return asyncio.run(run())


def payloads():
    """Text and binary, below and above the 128-byte threshold, repetitive
    (they shrink) and random (they do not), up to 256 KiB."""
    rng = random.Random(15)
    out = ["", "hi", "é" * 40, '{"user": "ada", "text": "hello"}' * 40, "tick " * 50_000]
    out += [b"", b"\x00\x01", bytes(range(256)) * 64, os.urandom(3000), b"abc" * 80_000]
    out += ["".join(rng.choice("abcdefgh ") for _ in range(n)) for n in (127, 128, 129, 4096, 40_000)]
    return out


# -- real servers -------------------------------------------------------------------


async def echo(ws):
    async for message in ws:
        await ws.send(message)


@pytest.mark.parametrize("kind", CLIENTS)
def test_websockets_server_with_its_default_compression(kind):
    seen = []

    async def handler(ws):
        seen.append((ws.request.headers.get("Sec-WebSocket-Extensions"), ws.protocol.extensions))
        await echo(ws)

    messages = payloads()
    with WebsocketsServer(handler) as server:
        got, extensions = exchange(kind, server.url, messages)
    assert got == messages
    # websockets keeps its context (no server_no_context_takeover) and asks
    # for 12-bit windows both ways: messages longer than 4 KiB went through.
    assert extensions == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert seen[0][0] == OFFER
    assert [type(e).__name__ for e in seen[0][1]] == ["PerMessageDeflate"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_hundreds_of_messages_from_a_server_that_keeps_its_context(kind):
    # The same 1 KiB message again and again: websockets compresses each
    # after the first into back-references to the ones before, which only
    # a client that keeps its inflate stream can read.
    message = '{"room": "lobby", "users": [%s]}' % ", ".join(f'"user{i}"' for i in range(120))
    count = 500

    async def handler(ws):
        for i in range(count):
            await ws.send(message if i % 2 else message.encode())
        await ws.close()

    with WebsocketsServer(handler) as server:
        got, code = closed_by_client(kind, server.url)
    assert code == 1000
    assert got == [message if i % 2 else message.encode() for i in range(count)]


@pytest.mark.parametrize("kind", CLIENTS)
def test_websockets_server_without_compression(kind):
    seen = []

    async def handler(ws):
        seen.append(ws.request.headers.get("Sec-WebSocket-Extensions"))
        await echo(ws)

    messages = payloads()
    with WebsocketsServer(handler, compression=None) as server:
        got, extensions = exchange(kind, server.url, messages)
    assert got == messages
    assert extensions == ""
    assert seen == [OFFER]  # offered, declined: everything plain


@pytest.mark.parametrize("kind", CLIENTS)
def test_roomcast_server_messages_compressed_both_ways(kind):
    messages = payloads()
    with ServerThread(echo_server()) as srv:
        got, extensions = exchange(kind, f"ws://127.0.0.1:{srv.port}/echo", messages)
        stats = srv.running.stats()
    assert got == messages
    assert extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    # Every message of 128 bytes or more that shrinks (all but the random
    # bytes) came compressed and was echoed compressed.
    sizes = [len(m.encode() if isinstance(m, str) else m) for m in messages]
    shrinks = [m for m, n in zip(messages, sizes, strict=True) if n >= 128 and not (isinstance(m, bytes) and n == 3000)]
    assert len(shrinks) == 8
    assert stats["messages_inflated"] == len(shrinks)
    assert stats["messages_deflated"] == len(shrinks)


@pytest.mark.parametrize("kind", CLIENTS)
def test_compression_none_offers_nothing(kind):
    with ServerThread(echo_server()) as srv:
        url = f"ws://127.0.0.1:{srv.port}/echo"
        got, extensions = exchange(kind, url, ["x" * 1000, b"y" * 1000], compression=None)
        stats = srv.running.stats()
    assert got == ["x" * 1000, b"y" * 1000]
    assert extensions == ""
    assert stats["messages_inflated"] == stats["messages_deflated"] == 0


def test_a_bad_compression_option_is_refused_where_it_is_written():
    with pytest.raises(ValueError, match="compression must be 'deflate' or None, not 'gzip'"):
        WebSocket("ws://127.0.0.1:1/", compression="gzip")
    with pytest.raises(ValueError, match="compression must be 'deflate' or None, not True"):
        roomcast.connect("ws://127.0.0.1:1/", compression=True)


# -- raw servers ----------------------------------------------------------------------


def read_frame(reader):
    """A client frame: (first byte, unmasked payload)."""
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    assert b1 & 0x80, "client frames are masked"
    key = reader.read_exact(4)
    data = reader.read_exact(n)
    return b0, bytes(c ^ key[i % 4] for i, c in enumerate(data))


def answer(sock, req, extensions):
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_value(req.headers['sec-websocket-key'])}\r\n"
    )
    if extensions is not None:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    sock.sendall(head.encode() + b"\r\n")


def server_message(opcode, payload, rsv1=False):
    n = len(payload)
    b0 = 0x80 | opcode | (RSV1 if rsv1 else 0)
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, 127]) + struct.pack("!Q", n)
    return head + payload


def deflated(data, wbits=15):
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("window", [15, 12, 9])
def test_the_clients_frames_inflate_alone_within_the_window_it_was_given(kind, window):
    # Each compressed message must inflate alone (a fresh decompressor)
    # with the server's client_max_window_bits; short and incompressible
    # ones go plain (RSV1 clear).
    frames = []
    big = ("0123456789abcdef" * 64 + "".join(chr(65 + i % 26) for i in range(1000))) * 40
    sent = ["short", big, "word " * 100, os.urandom(2000), b"\x01\x02" * 5000]

    def script(sock, reader):
        req = read_request(reader)
        assert req.headers["sec-websocket-extensions"] == OFFER
        answer(sock, req, f"permessage-deflate; client_max_window_bits={window}")
        for _ in sent:
            b0, payload = read_frame(reader)
            if b0 & RSV1:
                payload = zlib.decompressobj(-window).decompress(payload + TAIL)
            frames.append((b0 & RSV1, b0 & 0x0F, payload))
            sock.sendall(server_message(OP_TEXT, b"ok"))
        idle(sock)

    with RawServer(script) as server:
        exchange(kind, server.url, sent)
    assert [f[2] for f in frames] == [m.encode() if isinstance(m, str) else m for m in sent]
    assert [f[1] for f in frames] == [OP_TEXT, OP_TEXT, OP_TEXT, OP_BINARY, OP_BINARY]
    assert [bool(f[0]) for f in frames] == [False, True, True, False, True]


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_8_bit_window_compresses_only_what_fits_in_it(kind):
    frames = []
    sent = ["a" * 200, "b" * 300]

    def script(sock, reader):
        req = read_request(reader)
        answer(sock, req, "permessage-deflate; client_max_window_bits=8")
        for _ in sent:
            b0, payload = read_frame(reader)
            if b0 & RSV1:
                payload = zlib.decompressobj(-9).decompress(payload + TAIL)
            frames.append((bool(b0 & RSV1), payload))
            sock.sendall(server_message(OP_TEXT, b"ok"))
        idle(sock)

    with RawServer(script) as server:
        exchange(kind, server.url, sent)
    assert frames == [(True, b"a" * 200), (False, b"b" * 300)]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(
    "extensions, reason",
    [
        ("permessage-deflate; foo=1", "handshake: permessage-deflate: unknown parameter"),
        ("x-webkit-deflate-frame", "handshake: Sec-WebSocket-Extensions: an extension that was not offered"),
        ("permessage-deflate, permessage-deflate", "handshake: permessage-deflate: accepted twice"),
        (
            "permessage-deflate; client_max_window_bits",
            "handshake: permessage-deflate: client_max_window_bits without a value in the response",
        ),
        ("permessage-deflate; server_max_window_bits=16", "handshake: permessage-deflate: "),
        ("permessage-deflate;", "handshake: Sec-WebSocket-Extensions: malformed value"),
    ],
)
def test_a_bad_answer_to_the_offer_fails_the_connection(kind, extensions, reason):
    def script(sock, reader):
        answer(sock, read_request(reader), extensions)
        idle(sock)

    with RawServer(script) as server:
        got = open_fails(kind, server.url)
    assert got.startswith(reason)


@pytest.mark.parametrize("kind", CLIENTS)
def test_an_extension_answered_to_a_client_that_offered_none_fails(kind):
    def script(sock, reader):
        req = read_request(reader)
        assert "sec-websocket-extensions" not in req.headers
        answer(sock, req, "permessage-deflate")
        idle(sock)

    with RawServer(script) as server:
        got = open_fails(kind, server.url, compression=None)
    assert got == "handshake: the server accepted an extension that was not offered"


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("answer_with", ["permessage-deflate; server_no_context_takeover", "permessage-deflate"])
def test_a_deflate_bomb_is_closed_with_1009(kind, answer_with):
    # 64 MiB of zeros compress to about 64 KiB; the client accepts 1 MiB.
    # With and without server_no_context_takeover (the loop's inflater or
    # the connection's stream).
    bomb = deflated(b"\x00" * (64 << 20))
    closes = []

    def script(sock, reader):
        answer(sock, read_request(reader), answer_with)
        sock.sendall(server_message(OP_TEXT, deflated(b"fine " * 100), rsv1=True))
        sock.sendall(server_message(OP_BINARY, bomb, rsv1=True))
        b0, payload = read_frame(reader)
        closes.append((b0 & 0x0F, struct.unpack("!H", payload[:2])[0], payload[2:].decode()))
        sock.sendall(close_frame(1009))
        idle(sock)

    with RawServer(script) as server:
        messages, code = closed_by_client(kind, server.url, max_message_size=1 << 20)
    assert messages == ["fine " * 100]
    assert code == 1009
    assert closes == [(OP_CLOSE, 1009, "message too big once inflated")]
    assert len(bomb) < (1 << 20)  # the frame itself was within the bound


@pytest.mark.parametrize("kind", CLIENTS)
def test_invalid_compressed_data_is_closed_with_1007(kind):
    closes = []

    def script(sock, reader):
        answer(sock, read_request(reader), "permessage-deflate")
        sock.sendall(server_message(OP_TEXT, b"\xff\xff\xff\xff not deflate", rsv1=True))
        b0, payload = read_frame(reader)
        closes.append((b0 & 0x0F, struct.unpack("!H", payload[:2])[0]))
        sock.sendall(close_frame(1007))
        idle(sock)

    with RawServer(script) as server:
        messages, code = closed_by_client(kind, server.url)
    assert messages == []
    assert code == 1007
    assert closes == [(OP_CLOSE, 1007)]


@pytest.mark.parametrize("kind", CLIENTS)
def test_rsv1_without_deflate_is_a_protocol_error(kind):
    closes = []

    def script(sock, reader):
        answer(sock, read_request(reader), None)  # declined
        sock.sendall(server_message(OP_TEXT, deflated(b"hello " * 50), rsv1=True))
        b0, payload = read_frame(reader)
        closes.append(struct.unpack("!H", payload[:2])[0])
        sock.sendall(close_frame(1002))
        idle(sock)

    with RawServer(script) as server:
        messages, code = closed_by_client(kind, server.url)
    assert messages == []
    assert code == 1002
    assert closes == [1002]
