"""Peers for the client tests: servers the roomcast clients talk to.

* ``RawServer(script)``: a TCP server on 127.0.0.1 that runs ``script(sock,
  reader)`` for each connection on its own thread: for answers no real
  server gives (a 404, a wrong Sec-WebSocket-Accept, garbage, silence, half
  a frame) and to look at the client's bytes (masks, pings).
* ``WebsocketsServer(handler, ssl=None)``: the ``websockets`` library's
  asyncio server on its own thread, an independent implementation.
* ``make_certificate(directory, name, sans)``: a self-signed certificate
  made with the ``openssl`` command.
* ``wait_until(predicate)``: polls with a generous deadline.
"""

import asyncio
import base64
import hashlib
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .wsraw import GUID, OP_CLOSE, Reader, close_payload, encode_frame

T = 30.0  # hang guard only; the machine is shared and slow


def wait_until(predicate: Callable[[], object], timeout: float = T, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Request(NamedTuple):
    line: str
    headers: dict  # lower-cased name -> value (last wins)
    raw: bytes


def read_request(reader: Reader) -> Request:
    head = reader.read_until(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(lines[0], headers, head)


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def accept(
    sock: socket.socket,
    req: Request,
    *,
    protocol: str | None = None,
    accept_key: str | None = None,
    extra: bytes = b"",
) -> None:
    """Sends a 101 (with accept_key instead of the right value if given)."""
    value = accept_key or accept_value(req.headers["sec-websocket-key"])
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {value}\r\n"
    )
    if protocol:
        head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    sock.sendall(head.encode() + b"\r\n" + extra)


class ClientFrame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes  # unmasked
    masked: bool
    key: bytes


def read_client_frame(reader: Reader) -> ClientFrame:
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", reader.read_exact(8))[0]
    masked = bool(b1 & 0x80)
    key = reader.read_exact(4) if masked else b""
    data = reader.read_exact(n)
    if masked:
        data = bytes(c ^ key[i % 4] for i, c in enumerate(data))
    return ClientFrame(bool(b0 & 0x80), b0 & 0x0F, data, masked, key)


def idle(sock: socket.socket) -> None:
    """Reads and drops until the peer or RawServer's exit ends the
    connection: a server that says nothing more."""
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


def server_frame(opcode: int, payload: bytes = b"") -> bytes:
    return encode_frame(opcode, payload, mask=False)


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(OP_CLOSE, close_payload(code, reason))


class RawServer:
    """Accepts connections on 127.0.0.1 and runs ``script(sock, reader)``
    for each on a thread of its own. ``connections`` counts accepted
    connections.

    A script's exception is the test's failure: leaving the ``with`` block
    raises the first one (the others are named in the message), as does
    ``check()`` called earlier. So does a script still running once the
    block has shut every connection down. A script that should keep its
    connection open to the end ends with ``idle(sock)``, which returns
    when the connection is shut."""

    def __init__(self, script) -> None:
        self.script = script
        self.errors: list = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/"
        self._threads: list = []
        self._conns: list = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="raw-server")

    def __enter__(self) -> "RawServer":
        self._acceptor.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()  # started before __exit__ can see it
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(T)
        try:
            self.script(conn, Reader(conn))
        except Exception as exc:  # noqa: BLE001 - raised by check() / __exit__
            with self._lock:
                self.errors.append(exc)
        finally:
            conn.close()

    def check(self) -> None:
        """Raises the first exception a script has raised so far."""
        with self._lock:
            errors = list(self.errors)
        if errors:
            if len(errors) > 1:
                errors[0].add_note(
                    f"RawServer: {len(errors) - 1} more script(s) failed: " + "; ".join(repr(e) for e in errors[1:])
                )
            raise errors[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        try:  # wakes the acceptor; close() alone does not on Linux
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._acceptor.join(T)  # no connection is added after this
        self.sock.close()
        for conn in self._conns:  # wakes scripts blocked reading (idle())
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(T)
        if exc_type is not None:
            return  # the test's own failure comes first
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck:
            raise AssertionError(f"RawServer: {stuck} script(s) still running {T} s after the test")
        self.check()


class WebsocketsServer:
    """``websockets.asyncio.server.serve(handler, "127.0.0.1", 0, **kw)``
    on a loop in a thread of its own; ``url`` ws:// or wss://."""

    def __init__(self, handler, **kw) -> None:
        self.handler = handler
        self.kw = kw
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="websockets-server")

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.handler, "127.0.0.1", 0, **self.kw) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        scheme = "wss" if self.kw.get("ssl") else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/"

    def __enter__(self) -> "WebsocketsServer":
        self._thread.start()
        if not self._ready.wait(T):
            raise RuntimeError("websockets server did not start")
        return self

    def __exit__(self, *exc) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(T)


def make_certificate(directory: str, name: str, sans: str) -> tuple:
    """A self-signed EC certificate for ``sans`` ("DNS:localhost,IP:...");
    returns (certfile, keyfile)."""
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={sans}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def server_context(cert: str, key: str):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
