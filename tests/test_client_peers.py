"""The clients against peers that are not roomcast: the ``websockets``
library's server (plain and TLS, with a certificate made here by the
``openssl`` command), and raw servers that answer badly, vanish or watch
the client's frames."""

import asyncio
import socket
import struct
import threading
import time

import pytest

import roomcast
from roomcast import TLS, WebSocket
from support.clientpeers import (
    RawServer,
    T,
    WebsocketsServer,
    accept,
    close_frame,
    idle,
    make_certificate,
    read_client_frame,
    read_request,
    server_context,
    server_frame,
    wait_until,
)
from support.wsraw import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, encode_frame


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    return {
        "local": make_certificate(d, "local", "DNS:localhost,IP:127.0.0.1"),
        "other": make_certificate(d, "other", "DNS:other.test"),
    }


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def fail_reason(url, **kw):
    """Opens a WebSocket that must fail; returns (onerror reasons, onclose)."""
    ws = WebSocket(url, **kw)
    errors, closes = [], []
    ws.onerror = lambda e: errors.append(e.reason)
    ws.onclose = lambda code, reason: closes.append((code, reason))
    ws.wait_closed(T)
    wait_until(lambda: closes)
    return errors, closes


# -- an independent server ----------------------------------------------------


def test_request_path_query_headers_and_subprotocol_reach_the_server():
    seen = {}

    async def handler(ws):
        seen["path"] = ws.request.path
        seen["token"] = ws.request.headers.get("X-Token")
        seen["host"] = ws.request.headers.get("Host")
        seen["protocols"] = ws.request.headers.get("Sec-WebSocket-Protocol")
        await ws.send(ws.subprotocol or "none")
        await echo(ws)

    with WebsocketsServer(handler, subprotocols=["v2.chat"]) as server:
        url = f"ws://127.0.0.1:{server.port}/feed/a%20b?room=1&x=%C3%A9"
        with WebSocket(url, ["v1.chat", "v2.chat"], headers={"X-Token": "s3cret"}) as ws:
            assert ws.recv(T) == "v2.chat"
            assert ws.protocol == "v2.chat"
            assert ("sec-websocket-protocol", "v2.chat") in ws.response_headers
            ws.send("round trip")
            assert ws.recv(T) == "round trip"
        assert seen == {
            "path": "/feed/a%20b?room=1&x=%C3%A9",
            "token": "s3cret",
            "host": f"127.0.0.1:{server.port}",
            "protocols": "v1.chat, v2.chat",
        }


def test_a_host_header_replaces_the_clients_own():
    seen = []

    async def handler(ws):
        seen.append(ws.request.headers["Host"])
        await ws.close()

    with WebsocketsServer(handler) as server:
        ws = WebSocket(server.url, headers=[("Host", "chat.example:8443")])
        ws.wait_closed(T)
        assert seen == ["chat.example:8443"]


def test_the_client_answers_the_servers_pings():
    rtts = []

    async def handler(ws):
        for _ in range(3):
            waiter = await ws.ping(b"are you there")
            rtts.append(await asyncio.wait_for(waiter, T))
        await ws.send("pinged")
        await echo(ws)

    with WebsocketsServer(handler, ping_interval=None) as server:
        with WebSocket(server.url) as ws:
            assert ws.recv(T) == "pinged"
        assert len(rtts) == 3


async def test_asyncio_client_against_websockets_with_tls(certs):
    cert, key = certs["local"]
    with WebsocketsServer(echo, ssl=server_context(cert, key)) as server:
        url = f"wss://localhost:{server.port}/tls"
        async with roomcast.connect(url, ssl=TLS(cafile=cert)) as ws:
            await ws.send("over TLS" * 10000)
            assert await asyncio.wait_for(ws.recv(), T) == "over TLS" * 10000
            await ws.send(b"\x00" * 300000)
            assert await asyncio.wait_for(ws.recv(), T) == b"\x00" * 300000
        assert ws.close_code == 1000


# -- TLS verification ------------------------------------------------------------


def test_tls_trusted_by_a_given_root_works_for_the_name_and_the_address(certs):
    cert, key = certs["local"]
    with WebsocketsServer(echo, ssl=server_context(cert, key)) as server:
        for host in ("localhost", "127.0.0.1"):
            with WebSocket(f"wss://{host}:{server.port}/", ssl={"cafile": cert}) as ws:
                ws.send(f"hello {host}")
                assert ws.recv(T) == f"hello {host}"


def test_tls_refuses_an_untrusted_certificate_and_a_wrong_name(certs):
    cert, key = certs["local"]
    other_cert, other_key = certs["other"]
    with WebsocketsServer(echo, ssl=server_context(cert, key)) as server:
        url = f"wss://localhost:{server.port}/"
        # Not in the system's roots: verification is on by default.
        errors, closes = fail_reason(url)
        assert closes == [(1006, "TLS: certificate verify failed: self-signed certificate")]
        assert errors == [closes[0][1]]
        # Trusted, but made for another name.
        _, closes = fail_reason(url, ssl=TLS(cafile=cert, server_hostname="wrong.example"))
        assert closes == [(1006, "TLS: certificate verify failed: hostname mismatch")]
        # A root that did not sign it.
        _, closes = fail_reason(url, ssl=TLS(cafile=other_cert))
        assert closes[0][1].startswith("TLS: certificate verify failed: ")
        # Verification off: anything is accepted.
        with WebSocket(url, ssl=TLS(verify=False)) as ws:
            ws.send("unverified")
            assert ws.recv(T) == "unverified"
        _, closes = fail_reason(url, ssl=TLS(cafile="/nonexistent/ca.pem"))
        assert closes == [(1006, "TLS: cannot load CA file /nonexistent/ca.pem (No such file or directory)")]
    with WebsocketsServer(echo, ssl=server_context(other_cert, other_key)) as server:
        _, closes = fail_reason(f"wss://127.0.0.1:{server.port}/", ssl=TLS(cafile=other_cert))
        assert closes == [(1006, "TLS: certificate verify failed: IP address mismatch")]


def test_wss_to_a_plain_server_fails_in_the_tls_handshake():
    with WebsocketsServer(echo) as server:
        _, closes = fail_reason(f"wss://127.0.0.1:{server.port}/", ssl=TLS(verify=False))
        # It may answer the ClientHello with an HTTP 400 or just hang up.
        assert closes[0][0] == 1006 and "TLS" in closes[0][1], closes


# -- the raw server itself -----------------------------------------------------------


def test_a_raw_server_script_that_fails_fails_the_test():
    """A failing script is raised when the block ends, without check():
    a broken client request (a KeyError reading its key) cannot pass
    unseen behind a test that only looks at the client."""

    def script(sock, reader):
        read_request(reader).headers["x-not-sent"]

    with pytest.raises(KeyError, match="x-not-sent"):
        with RawServer(script) as server:
            socket.create_connection(("127.0.0.1", server.port)).sendall(b"GET / HTTP/1.1\r\n\r\n")
            wait_until(lambda: server.connections == 1, what="the connection")

    def stuck(sock, reader):
        read_client_frame(reader)  # a frame that never comes

    with pytest.raises(EOFError):  # woken by the block's end, not idle()
        with RawServer(stuck) as server:
            with socket.create_connection(("127.0.0.1", server.port)):
                wait_until(lambda: server.connections == 1, what="the connection")


# -- bad answers -------------------------------------------------------------------


def answering(response: bytes, *, then_close=True):
    def script(sock, reader):
        read_request(reader)
        sock.sendall(response)
        if not then_close:
            idle(sock)

    return script


@pytest.mark.parametrize(
    "response, reason",
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP 404 in handshake: Not Found"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "HTTP 200 in handshake: OK"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "handshake: wrong Sec-WebSocket-Accept",
        ),
        (b"\x16\x03\x01garbage that is not HTTP\r\n\r\n", "handshake: malformed HTTP response"),
        (b"HTTP/1.1 101 OK\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n", "handshake: the response head is too large"),
        (b"HTTP/1.1 101", "the server closed the connection waiting for the HTTP 101 response"),
    ],
)
def test_bad_responses_fail_with_the_reason(response, reason):
    with RawServer(answering(response)) as server:
        errors, closes = fail_reason(server.url)
        assert closes == [(1006, reason)]
        assert errors == [reason]


def test_a_subprotocol_that_was_not_offered_is_refused():
    def script(sock, reader):
        accept(sock, read_request(reader), protocol="mqtt")
        idle(sock)

    with RawServer(script) as server:
        _, closes = fail_reason(server.url, protocols=["chat"])
        assert closes == [(1006, "handshake: the server chose subprotocol mqtt, which was not offered")]


def test_a_server_that_never_answers_hits_the_handshake_timeout():
    with RawServer(answering(b"", then_close=False)) as server:
        start = time.monotonic()
        errors, closes = fail_reason(server.url, open_timeout=0.5)
        assert closes == [(1006, "handshake timeout (waiting for the HTTP 101 response)")]
        assert time.monotonic() - start < T


def test_a_server_that_vanishes_mid_message():
    for rst in (False, True):
        got_whole = threading.Event()

        def script(sock, reader):
            accept(sock, read_request(reader))
            # One write (one segment): the read that gives the client
            # "whole" takes the cut frame too, a binary frame announcing
            # 1000 bytes with 100 of them.
            sock.sendall(server_frame(OP_TEXT, b"whole") + b"\x82\x7e\x03\xe8" + b"x" * 100)
            # Then gone, once the client has read them: a reset would
            # discard what the client's kernel holds unread.
            assert got_whole.wait(T)
            if rst:  # a reset instead of a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        with RawServer(script) as server:
            ws = WebSocket(server.url)
            messages, errors, closes = [], [], []
            ws.onmessage = lambda m: (messages.append(m), got_whole.set())
            ws.onerror = lambda e: errors.append(e.reason)
            ws.onclose = lambda code, reason: closes.append((code, reason))
            ws.wait_closed(T)
            assert messages == ["whole"]  # no part of the cut message
            expected = (
                "connection lost: connection reset by peer"
                if rst
                else "connection closed by the server without a close frame"
            )
            assert closes == [(1006, expected)]
            assert errors == [expected]


# -- what the client sends ---------------------------------------------------------


def test_client_frames_are_masked_with_a_fresh_key_each():
    frames = []

    def script(sock, reader):
        accept(sock, read_request(reader))
        while True:
            frame = read_client_frame(reader)
            frames.append(frame)
            if frame.opcode == OP_CLOSE:
                sock.sendall(close_frame(1000))
                return

    with RawServer(script) as server:
        with WebSocket(server.url) as ws:
            for _ in range(20):
                ws.send("same text")
            ws.send(b"\x01" * 70000)
        wait_until(lambda: frames and frames[-1].opcode == OP_CLOSE)
    data = [f for f in frames if f.opcode in (OP_TEXT, OP_BINARY)]
    assert [f.payload for f in data] == [b"same text"] * 20 + [b"\x01" * 70000]
    assert all(f.masked and f.fin for f in frames)
    assert len({f.key for f in frames}) == len(frames)  # 22 frames, 22 keys


def test_keepalive_pings_and_the_ping_timeout():
    pings = []

    def script(sock, reader):
        accept(sock, read_request(reader))
        frame = read_client_frame(reader)  # the first keepalive ping
        pings.append(frame)
        sock.sendall(server_frame(OP_PONG, frame.payload))
        frame = read_client_frame(reader)  # the next one goes unanswered
        pings.append(frame)
        frame = read_client_frame(reader)
        pings.append(frame)
        sock.sendall(close_frame(1000))
        reader.read_to_eof()

    with RawServer(script) as server:
        ws = WebSocket(server.url, ping_interval=0.3, ping_timeout=0.5)
        ws.wait_closed(T)
        server.check()
        assert [p.opcode for p in pings] == [OP_PING, OP_PING, OP_CLOSE]
        assert pings[2].payload[:2] == (1011).to_bytes(2, "big")
        assert pings[2].payload[2:] == b"keepalive ping timeout"


@pytest.mark.parametrize(
    "frame, code",
    [
        (encode_frame(OP_TEXT, b"masked by a server", mask=True), 1002),
        (server_frame(OP_TEXT, b"\xc3\x28 not UTF-8"), 1007),
        (server_frame(0x3, b"reserved opcode"), 1002),
    ],
)
def test_a_server_breaking_the_protocol_gets_the_rfc_close_code(frame, code):
    replies = []

    def script(sock, reader):
        accept(sock, read_request(reader))
        sock.sendall(frame)
        replies.append(read_client_frame(reader))
        sock.sendall(close_frame(1000))
        idle(sock)

    with RawServer(script) as server:
        ws = WebSocket(server.url)
        messages = []
        ws.onmessage = messages.append
        ws.wait_closed(T)
        server.check()
        assert replies[0].opcode == OP_CLOSE
        assert int.from_bytes(replies[0].payload[:2], "big") == code
        assert messages == []


# -- the fragment bound follows the client's own max_message_size -----------------

BIG = bytes(range(256)) * (4 << 12)  # 4 MiB


def fragments(data: bytes, size: int) -> list:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [64, 256])
async def test_asyncio_client_takes_a_large_message_in_small_fragments(size):
    # Autobahn 9.3.1 / 9.3.2: 4 MiB in 64- or 256-byte fragments (65,536 or
    # 16,384 frames) to a client that accepts 64 MiB. The bound used to be
    # the hub's own server-side one (1 MiB / 128 + 16 = 8,208 fragments).
    async def handler(ws):
        await ws.send(fragments(BIG, size))
        await echo(ws)

    with WebsocketsServer(handler, ping_interval=None) as server:
        async with roomcast.connect(server.url, max_message_size=64 << 20) as ws:
            got = await asyncio.wait_for(ws.recv(), T)
        assert got == BIG
        assert ws.close_code == 1000


def test_sync_client_takes_a_large_message_in_small_fragments():
    async def handler(ws):
        await ws.send(fragments(BIG, 64))
        await echo(ws)

    with WebsocketsServer(handler, ping_interval=None) as server:
        with WebSocket(server.url, max_message_size=64 << 20) as ws:
            assert ws.recv(T) == BIG
        assert ws.close_code == 1000


def test_the_fragment_bound_is_the_clients_own():
    # 4 KiB in 4-byte fragments is 1,024 fragments: within the hub's 1 MiB
    # server-side bound, past the one of a client that accepts 64 KiB
    # (64 KiB / 128 + 16 = 528): that client closes with 1009.
    seen = []

    async def handler(ws):
        await ws.send(fragments(BIG[:4096], 4))
        await ws.wait_closed()
        seen.append((ws.close_code, ws.close_reason))

    with WebsocketsServer(handler, ping_interval=None) as server:
        ws = WebSocket(server.url, max_message_size=64 << 10)
        messages = []
        ws.onmessage = messages.append
        ws.wait_closed(T)
        assert messages == []
        assert ws.close_code == 1009
        wait_until(lambda: seen)
        assert seen == [(1009, "message in too many fragments")]


# -- registered close codes (IANA: 1012 service restart, 1013 try again later,
#    1014 bad gateway): wslay 1.1.1 answered them with 1002 ------------------------


def closing_with(code, echoes):
    async def handler(ws):
        await ws.close(code, "see you")
        rcvd = ws.protocol.close_rcvd  # the client's close frame
        echoes.append(None if rcvd is None else rcvd.code)

    return handler


@pytest.mark.parametrize("code", [1012, 1013, 1014])
async def test_asyncio_client_reports_a_registered_close_code(code):
    echoes = []
    with WebsocketsServer(closing_with(code, echoes)) as server:
        ws = await roomcast.connect(server.url)
        assert [m async for m in ws] == []
        assert (ws.close_code, ws.close_reason) == (code, "see you")
        wait_until(lambda: echoes)
        assert echoes == [code]  # the client echoed it, not 1002


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_sync_client_reports_a_registered_close_code(code):
    echoes = []
    with WebsocketsServer(closing_with(code, echoes)) as server:
        ws = WebSocket(server.url)
        closes = []
        ws.onclose = lambda c, reason: closes.append((c, reason))
        ws.wait_closed(T)
        wait_until(lambda: closes)
        assert closes == [(code, "see you")]
        wait_until(lambda: echoes)
        assert echoes == [code]


async def test_a_roomcast_endpoint_closing_with_1013_reaches_every_client():
    from websockets.asyncio.client import connect

    from roomcast import Server
    from support.wsraw import ServerThread

    server = Server()

    @server.websocket("/busy")
    async def busy(ws):
        await ws.accept()
        await ws.close(1013, "try again later")

    with ServerThread(server) as running:
        url = f"ws://127.0.0.1:{running.port}/busy"
        async with connect(url) as peer:
            await asyncio.wait_for(peer.wait_closed(), T)
            assert (peer.close_code, peer.close_reason) == (1013, "try again later")
        ws = await roomcast.connect(url)
        assert [m async for m in ws] == []
        assert (ws.close_code, ws.close_reason) == (1013, "try again later")
        sync = WebSocket(url)
        sync.wait_closed(T)
        assert (sync.close_code, sync.close_reason) == (1013, "try again later")
