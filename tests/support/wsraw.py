"""A raw RFC 6455 client on a plain blocking socket, for the tests.

A client library refuses to send what these tests must send (unmasked
frames, broken UTF-8, oversized handshakes), and hides what they must see
(the exact close code, the HTTP status of a refused upgrade). This module
does only the wire format: build a handshake, build client frames (masked
unless told otherwise), parse server frames, and check that the server never
masks its own.

It also holds ``ServerThread``, which runs a roomcast ``Server`` on its own
asyncio loop in a thread so that a synchronous test can talk to it with
blocking sockets.
"""

import asyncio
import base64
import hashlib
import os
import socket
import struct
import threading
from typing import NamedTuple

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Generous: a loaded 2-core machine runs the suite; nothing here measures time.
TIMEOUT = 30.0


class ProtocolError(Exception):
    """The server sent something RFC 6455 forbids a server to send."""


def accept_value(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to key (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


def handshake_request(
    path: str = "/",
    *,
    host: str = "127.0.0.1",
    key: str | None = None,
    version: str | None = "13",
    method: str = "GET",
    extra_headers=(),
) -> bytes:
    """An opening handshake as bytes. A header given as None is left out
    (key=None sends no Sec-WebSocket-Key); extra_headers are appended."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    lines.extend("%s: %s" % (name, value) for name, value in extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HTTPResponse(NamedTuple):
    status: int
    reason: str
    headers: list  # [(lower-cased name, value)] in order
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _parse_head(head: bytes) -> HTTPResponse:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("bad header line %r" % line)
        headers.append((name.strip().lower(), value.strip()))
    return HTTPResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"")


def connect_socket(port: int, *, rcvbuf: int | None = None, timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so that the window offered in the SYN is small too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Buffered exact reads from a blocking socket."""

    def __init__(self, sock: socket.socket, data: bytes = b""):
        self.sock = sock
        self.buf = bytearray(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("no %r in the first %d bytes" % (marker, limit))
            self._fill()

    def read_to_eof(self) -> bytes:
        while True:
            try:
                self._fill()
            except EOFError:
                out = bytes(self.buf)
                self.buf.clear()
                return out


def read_http_response(reader: Reader) -> HTTPResponse:
    """Reads one response head and, unless it is a 101, its body (by
    Content-Length, or to the end of the connection without one)."""
    resp = _parse_head(reader.read_until(b"\r\n\r\n")[:-4])
    if resp.status == 101:
        return resp
    length = resp.header("content-length")
    if length is not None:
        body = reader.read_exact(int(length))
    else:
        body = reader.read_to_eof()
    return resp._replace(body=body)


def http_exchange(port: int, request: bytes) -> HTTPResponse:
    """Sends raw request bytes on a new connection and returns the answer.
    The request is sent whole before reading, even if the server answers
    early (a 431 may come before the last header is sent)."""
    sock = connect_socket(port)
    try:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed early: the answer is still readable
        return read_http_response(Reader(sock))
    finally:
        sock.close()


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame. mask=False makes the frame a server may not accept
    from a client; length overrides the payload length in the header."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def apply_mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    # XOR through big ints: fast enough for the megabyte payloads used here.
    reps = (len(data) + 3) // 4
    k = int.from_bytes((key * reps)[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ k).to_bytes(len(data), "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")


class Frame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame; None when it carries none."""
        if self.opcode != OP_CLOSE:
            raise ValueError("not a close frame")
        if len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8")


class WSClient:
    """One raw client connection after a successful opening handshake."""

    def __init__(self, sock: socket.socket, reader: Reader, response: HTTPResponse):
        self.sock = sock
        self.reader = reader
        self.response = response

    @classmethod
    def connect(cls, port: int, path: str = "/", *, rcvbuf: int | None = None, extra_headers=()) -> "WSClient":
        """Opens a connection and checks the 101 answer as RFC 6455 4.1
        tells a client to: status, Upgrade, Connection and the accept value."""
        sock = connect_socket(port, rcvbuf=rcvbuf)
        try:
            key = new_key()
            sock.sendall(handshake_request(path, key=key, extra_headers=extra_headers))
            reader = Reader(sock)
            resp = read_http_response(reader)
            if resp.status != 101:
                raise ProtocolError("handshake answered %d %s: %r" % (resp.status, resp.reason, resp.body))
            if (resp.header("upgrade") or "").lower() != "websocket":
                raise ProtocolError("101 without Upgrade: websocket")
            if "upgrade" not in (resp.header("connection") or "").lower():
                raise ProtocolError("101 without Connection: Upgrade")
            if resp.header("sec-websocket-accept") != accept_value(key):
                raise ProtocolError("wrong Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        return cls(sock, reader, resp)

    # -- sending ----------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **kw))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        self.send_frame(OP_BINARY, data)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- receiving --------------------------------------------------------

    def recv_frame(self) -> Frame:
        """The next frame from the server. Raises ProtocolError for a masked
        server frame (RFC 6455 5.1) and EOFError when the TCP stream ends."""
        b0, b1 = self.reader.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.reader.read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.reader.read_exact(8))
        if b1 & 0x80:
            raise ProtocolError("the server masked a frame")
        payload = self.reader.read_exact(n)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload)

    def recv_message(self):
        """The next data message, reassembled: (opcode, payload). Control
        frames met on the way are returned instead if they come first."""
        first = self.recv_frame()
        if first.opcode >= OP_CLOSE or first.fin:
            return first.opcode, first.payload
        if first.opcode == OP_CONT:
            raise ProtocolError("continuation frame without a message")
        parts = [first.payload]
        while True:
            f = self.recv_frame()
            if f.opcode >= OP_CLOSE:
                raise ProtocolError("control frame inside a message: %r" % (f,))
            if f.opcode != OP_CONT:
                raise ProtocolError("new message before the last one ended")
            parts.append(f.payload)
            if f.fin:
                return first.opcode, b"".join(parts)

    def recv_text(self) -> str:
        opcode, payload = self.recv_message()
        if opcode != OP_TEXT:
            raise ProtocolError("expected a text message, got opcode %d %r" % (opcode, payload[:60]))
        return payload.decode("utf-8")

    def recv_until_close(self):
        """Reads data messages until a close frame. Returns (messages,
        close_frame) where messages are (opcode, payload) in arrival order."""
        messages = []
        while True:
            f = self.recv_frame()
            if f.opcode == OP_CLOSE:
                return messages, f
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.fin and f.opcode != OP_CONT:
                messages.append((f.opcode, f.payload))
                continue
            # The first frame of a fragmented message: collect the rest.
            parts = [f.payload]
            opcode = f.opcode
            while True:
                g = self.recv_frame()
                if g.opcode != OP_CONT:
                    raise ProtocolError("unexpected frame inside a message")
                parts.append(g.payload)
                if g.fin:
                    break
            messages.append((opcode, b"".join(parts)))

    def at_eof(self) -> bool:
        """True when the server has closed TCP with nothing more to read."""
        return self.reader.read_to_eof() == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "WSClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def answer_close_and_expect_eof(client: WSClient, code: int) -> None:
    """Answers the server's close frame as a client must, then checks that
    the server ends the TCP connection without sending anything more."""
    try:
        client.send_close(code)
    except OSError:
        pass  # the server may drop TCP right after a protocol error
    try:
        rest = client.reader.read_to_eof()
    except ConnectionResetError:
        rest = b""
    assert rest == b""


def assert_still_serving(port: int) -> None:
    """A fresh client can still exchange a message on ``/echo``."""
    with WSClient.connect(port, "/echo") as c:
        c.send_text("still there?")
        assert c.recv_text() == "still there?"


def echo_server(**options):
    """A roomcast ``Server`` (with ``options``) whose ``/echo`` route sends
    every message back to its sender as it came: text as text, binary as
    binary."""
    from roomcast import Room, Server

    server = Server(**options)
    room = Room()

    @room.on_receive("text")
    async def echo(room, ws, msg):
        await ws.send_text(msg)

    @room.on_receive("bytes")
    async def echo_bytes(room, ws, msg):
        await ws.send_bytes(msg)

    server.route("/echo", room)
    return server


class ServerThread:
    """Runs ``server.serve("127.0.0.1", port)`` (port 0: any free one) on a
    fresh asyncio loop in a daemon thread; ``port`` is known once the
    context is entered. ``call``
    runs a coroutine function on that loop and returns its result."""

    def __init__(self, server, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self.host = host
        self.port = port
        self.running = None  # what serve() yields: stats() is thread-safe
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="roomcast-test-server")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.server.serve(self.host, self.port) as running:
            self.running = running
            self.port = running.port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise RuntimeError("the server did not start")
        if self._error is not None or not self.port:
            raise RuntimeError("the server did not start") from self._error
        return self

    def call(self, fn, *args):
        fut = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)
        return fut.result(TIMEOUT)

    def __exit__(self, *exc) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError("the server did not stop")
        if self._error is not None and exc[0] is None:
            raise RuntimeError("the server loop failed") from self._error
