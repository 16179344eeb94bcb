"""RFC 6455 on the wire, driven byte by byte from raw sockets.

One echo server with the default limits serves the module; after every test
a fresh client checks that the server still answers, because bad input must
never take down the process or another connection.
"""

import struct
import threading
import time

import pytest

from support import wsraw
from support.wsraw import OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, WSClient, handshake_request, http_exchange

MIB = 1 << 20


@pytest.fixture(scope="module")
def server():
    # the defaults are what these tests check
    with wsraw.ServerThread(wsraw.echo_server()) as running:
        yield running


@pytest.fixture
def port(server):
    yield server.port
    wsraw.assert_still_serving(server.port)


def expect_close(client, code):
    """Reads to the server's close frame, checks its code, answers it as a
    client must, and checks that the server then ends the TCP connection."""
    _, frame = client.recv_until_close()
    assert frame.close_code == code, frame
    wsraw.answer_close_and_expect_eof(client, code)


# --- the opening handshake ------------------------------------------------


def upgrade_head(port, request):
    """Sends an upgrade request and returns the answer's head only."""
    sock = wsraw.connect_socket(port)
    try:
        sock.sendall(request)
        return wsraw.read_http_response(wsraw.Reader(sock))
    finally:
        sock.close()


def test_accept_value_of_the_rfc_example(port):
    # RFC 6455 1.3 gives this key and its answer.
    resp = upgrade_head(port, handshake_request("/echo", key="dGhlIHNhbXBsZSBub25jZQ=="))
    assert resp.status == 101
    assert resp.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_missing_key_is_400(port):
    resp = http_exchange(port, handshake_request("/echo", key=None))
    assert resp.status == 400


def test_key_not_16_bytes_is_400(port):
    resp = http_exchange(port, handshake_request("/echo", key="c2hvcnQ="))
    assert resp.status == 400


def test_wrong_version_is_426_naming_13(port):
    resp = http_exchange(port, handshake_request("/echo", key=wsraw.new_key(), version="8"))
    assert resp.status == 426
    assert resp.header("sec-websocket-version") == "13"


def test_missing_version_is_426(port):
    resp = http_exchange(port, handshake_request("/echo", key=wsraw.new_key(), version=None))
    assert resp.status == 426
    assert resp.header("sec-websocket-version") == "13"


def test_post_with_upgrade_headers_is_405(port):
    resp = http_exchange(
        port, handshake_request("/echo", key=wsraw.new_key(), method="POST", extra_headers=[("Content-Length", "0")])
    )
    assert resp.status == 405


def test_headers_over_8_kib_are_431(port):
    resp = http_exchange(port, handshake_request("/echo", key=wsraw.new_key(), extra_headers=[("X-Big", "a" * 9000)]))
    assert resp.status == 431


def test_more_than_100_headers_are_431(port):
    extra = [("X-H%d" % i, "v") for i in range(101)]
    resp = http_exchange(port, handshake_request("/echo", key=wsraw.new_key(), extra_headers=extra))
    assert resp.status == 431


def test_headers_just_under_the_limit_are_accepted(port):
    # About 7 KiB of headers in 60 lines: within both limits.
    extra = [("X-H%d" % i, "b" * 110) for i in range(60)]
    with WSClient.connect(port, "/echo", extra_headers=extra) as c:
        c.send_text("ok")
        assert c.recv_text() == "ok"


def test_plain_get_without_static_files_is_426(port):
    resp = http_exchange(port, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert resp.status == 426


def test_garbage_request_line_is_400(port):
    resp = http_exchange(port, b"HELLO\r\n\r\n")
    assert resp.status == 400


# --- frames ------------------------------------------------------------------


def test_text_and_binary_frames_are_unmasked_and_echoed(port):
    with WSClient.connect(port, "/echo") as c:
        for text in ["", "a", "é" * 100, "x" * 70000]:
            c.send_text(text)
            assert c.recv_text() == text


def test_unmasked_client_frame_is_closed_with_1002(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"hello", mask=False)
        expect_close(c, 1002)


def test_reserved_bits_without_extension_are_closed_with_1002(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"hello", rsv=0b100)
        expect_close(c, 1002)


def test_unknown_opcode_is_closed_with_1002(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(0x3, b"hello")
        expect_close(c, 1002)


def test_continuation_without_a_message_is_closed_with_1002(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_CONT, b"hello")
        expect_close(c, 1002)


def _send_in_background(client, data):
    """Sends data from a thread while the test reads: the server may answer
    (and stop reading) long before a large payload is through."""

    def run():
        try:
            client.send_raw(data)
        except OSError:
            pass  # the server closed first, as it may

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_message_of_exactly_max_message_size_is_accepted(port):
    with WSClient.connect(port, "/echo") as c:
        text = "m" * MIB
        t = _send_in_background(c, wsraw.encode_frame(OP_TEXT, text.encode()))
        assert c.recv_text() == text
        t.join(wsraw.TIMEOUT)


def test_oversized_message_is_closed_with_1009(port):
    with WSClient.connect(port, "/echo") as c:
        t = _send_in_background(c, wsraw.encode_frame(OP_TEXT, b"o" * (MIB + 1)))
        expect_close(c, 1009)
        t.join(wsraw.TIMEOUT)


def test_oversized_fragmented_message_is_closed_with_1009(port):
    # Each fragment is within the limit; the message is not.
    half = b"f" * (MIB // 2 + 1)
    with WSClient.connect(port, "/echo") as c:
        t = _send_in_background(
            c, wsraw.encode_frame(OP_TEXT, half, fin=False) + wsraw.encode_frame(OP_CONT, half, fin=True)
        )
        expect_close(c, 1009)
        t.join(wsraw.TIMEOUT)


def test_invalid_utf8_text_is_closed_with_1007(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"abc\xff\xfedef")
        expect_close(c, 1007)


def test_overlong_utf8_text_is_closed_with_1007(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"\xc0\xaf")  # '/' in two bytes: forbidden
        expect_close(c, 1007)


def test_invalid_utf8_across_fragments_is_closed_with_1007(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"ab\xe2\x82", fin=False)  # first 2 of 3 bytes
        c.send_frame(OP_CONT, b"cd", fin=True)  # not a continuation byte
        expect_close(c, 1007)


def test_ping_is_answered_with_pong_with_the_same_payload(port):
    with WSClient.connect(port, "/echo") as c:
        payload = b"ping \x00\xff payload"
        c.send_frame(OP_PING, payload)
        frame = c.recv_frame()
        assert (frame.opcode, frame.fin, frame.payload) == (OP_PONG, True, payload)


def test_fragmented_message_is_reassembled(port):
    # Fragment boundaries cut through the 2-byte 'é' and the 4-byte emoji.
    text = "héllo wörld 🎉!"
    data = text.encode("utf-8")
    cut1 = data.index("é".encode()) + 1
    cut2 = data.index("🎉".encode()) + 2
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, data[:cut1], fin=False)
        c.send_frame(OP_CONT, data[cut1:cut2], fin=False)
        c.send_frame(OP_CONT, data[cut2:], fin=True)
        assert c.recv_text() == text


def test_ping_between_fragments_is_answered_and_message_reassembled(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_TEXT, b"one ", fin=False)
        c.send_frame(OP_PING, b"p")
        c.send_frame(OP_CONT, b"two ", fin=False)
        c.send_frame(OP_CONT, b"three", fin=True)
        pong = c.recv_frame()
        assert (pong.opcode, pong.payload) == (OP_PONG, b"p")
        assert c.recv_text() == "one two three"


def test_close_handshake(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_text("before")
        assert c.recv_text() == "before"
        c.send_close(1000, "bye")
        messages, frame = c.recv_until_close()
        assert messages == []
        assert frame.close_code == 1000
        # The server closes TCP after the handshake (RFC 6455 7.1.1).
        assert c.at_eof()


def test_close_with_invalid_code_is_closed_with_1002(port):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_CLOSE, struct.pack("!H", 1005))  # may not be sent
        expect_close(c, 1002)


def test_bad_clients_do_not_disturb_a_good_one(port):
    with WSClient.connect(port, "/echo") as good:
        good.send_text("1")
        assert good.recv_text() == "1"
        with WSClient.connect(port, "/echo") as bad:
            bad.send_frame(OP_TEXT, b"x", mask=False)
            expect_close(bad, 1002)
        http_exchange(port, handshake_request("/echo", key=None))
        good.send_text("2")
        assert good.recv_text() == "2"


def test_frames_sent_with_the_request_in_one_write_are_all_read(port):
    # A client that does not wait for the 101 (RFC 6455 4.1 says it should)
    # still gets its message, even when it is larger than the request head
    # buffer.
    import socket

    sock = socket.create_connection(("127.0.0.1", port))
    with sock:
        big = "x" * 12000
        sock.sendall(handshake_request("/echo", key=wsraw.new_key()) + wsraw.encode_frame(wsraw.OP_TEXT, big.encode()))
        reader = wsraw.Reader(sock)
        head = wsraw.read_http_response(reader)
        assert head.status == 101
        first = reader.read_exact(4)
        assert first[0] == 0x81 and first[1] == 126
        assert int.from_bytes(first[2:4], "big") == len(big)
        assert reader.read_exact(len(big)) == big.encode()


# --- close codes: RFC 6455 7.4 and IANA's registry --------------------------


@pytest.mark.parametrize("code", [1012, 1013, 1014, 1000, 1003, 1011, 3000, 4999])
def test_registered_close_codes_are_echoed(port, code):
    # 1012 service restart, 1013 try again later, 1014 bad gateway: in
    # IANA's registry since RFC 6455; wslay 1.1.1 answered them with 1002.
    with WSClient.connect(port, "/echo") as c:
        c.send_close(code, "later")
        messages, frame = c.recv_until_close()
        assert messages == []
        assert (frame.close_code, frame.close_reason) == (code, "later")
        assert c.at_eof()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_codes_no_one_may_send_are_closed_with_1002(port, code):
    with WSClient.connect(port, "/echo") as c:
        c.send_frame(OP_CLOSE, struct.pack("!H", code))
        expect_close(c, 1002)


def test_a_close_frame_split_across_reads_is_read_whole(port):
    with WSClient.connect(port, "/echo") as c:
        frame = wsraw.encode_frame(OP_CLOSE, wsraw.close_payload(1013, "try again later"))
        for i in range(len(frame)):
            c.sock.sendall(frame[i : i + 1])
        _, reply = c.recv_until_close()
        assert (reply.close_code, reply.close_reason) == (1013, "try again later")


def test_the_endpoint_sees_the_peers_registered_close_code():
    from roomcast import Server, WebSocketDisconnect

    server = Server()
    seen = []

    @server.websocket("/ws")
    async def endpoint(ws):
        await ws.accept()
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect as gone:
            seen.append((gone.code, gone.reason))

    with wsraw.ServerThread(server) as running:
        with WSClient.connect(running.port, "/ws") as c:
            c.send_close(1012, "service restart")
            _, frame = c.recv_until_close()
            assert frame.close_code == 1012
        end = time.monotonic() + 30  # hang guard only
        while not seen and time.monotonic() < end:
            time.sleep(0.01)
    assert seen == [(1012, "service restart")]


# --- a request nobody answers -------------------------------------------------


def test_an_upgrade_the_endpoint_never_answers_gets_503_after_handshake_timeout():
    # The endpoint neither accepts nor refuses: the core's own deadline
    # (handshake_timeout from the request head) answers for it.
    import asyncio

    from roomcast import Server

    server = Server(handshake_timeout=0.5)

    @server.websocket("/hang")
    async def hang(ws):
        while ws.close_code is None:  # set by the core's close event
            await asyncio.sleep(0.05)

    with wsraw.ServerThread(server) as running:
        start = time.monotonic()
        sock = wsraw.connect_socket(running.port)
        with sock:
            sock.sendall(handshake_request("/hang", key=wsraw.new_key()))
            reader = wsraw.Reader(sock)
            head = wsraw.read_http_response(reader)
            waited = time.monotonic() - start
            assert head.status == 503
            assert head.header("retry-after") == "1"
            assert head.body == b"the application did not answer in time\n"
            assert reader.read_to_eof() == b""  # then the core closes
        assert waited >= 0.45  # not before the deadline
