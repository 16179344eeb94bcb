"""A real ``redis-server`` for the tests, on a free loopback port, a small
blocking RESP client to look inside it, and ``FakeRedis``: a Redis that
answers a roomcast server's first commands, then breaks the protocol.

``RedisServer`` runs Debian's ``redis-server`` (installed by ``make deps``)
with no persistence, in a temporary directory, never the system service.
It can be stopped and started again on the same port, which is how the
tests take Redis away from running roomcast servers. ``start(tls=...)``
serves TLS only (``rediss://``), on the certificate and key given.
"""

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass

T = 30.0  # seconds: a loaded 2-core machine


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RespError(Exception):
    """An error reply."""


def resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespClient:
    """One blocking connection; ``command(*args)`` returns the reply
    (bytes, int, str for a status, None, or a list)."""

    def __init__(self, port, tls=None):
        """tls: an ssl.SSLContext for a Redis that serves TLS."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exactly(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"not RESP: {line!r}")

    def command(self, *args):
        self.sock.sendall(resp_encode(args))
        return self.read()


@dataclass(frozen=True)
class RedisTLS:
    """How a RedisServer serves TLS: its certificate and key, the roots
    client certificates must lead to, and, to require one, a client
    certificate and key (its own checks connect with them)."""

    cert: str
    key: str
    ca: str
    client: tuple[str, str] | None = None


class RedisServer:
    def __init__(self, directory):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise RuntimeError("redis-server is not installed: run `make deps` (Debian package redis-server)")
        self.dir = str(directory)
        self.port = free_port()
        self.proc = None
        self.tls = None  # the SSLContext its own checks connect with

    @property
    def url(self):
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, password=None, users=(), tls=None, extra=()):
        """Starts redis-server and waits until it answers; with a password,
        it asks every client (the default user) for it from the first
        connection on. ``users``: (name, password) pairs of ACL users that
        may do anything. The data saved in its directory (``SAVE``) is
        loaded again. ``tls``: a :class:`RedisTLS` to serve TLS only.
        ``extra``: more redis-server arguments."""
        auth = ["--requirepass", password] if password else []
        for name, secret in users:
            auth += ["--user", name, "on", f">{secret}", "~*", "&*", "+@all"]
        listen = ["--port", str(self.port)]
        self.tls = None
        if tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", tls.cert]
            listen += ["--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca]
            listen += ["--tls-auth-clients", "no" if tls.client is None else "yes"]
            # Its own checks trust whatever it serves.
            self.tls = ssl.create_default_context()
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
            if tls.client is not None:
                self.tls.load_cert_chain(*tls.client)
        self.proc = subprocess.Popen(
            [self.binary]
            + listen
            + [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(self.dir, "redis.log"),
            ]
            + auth
            + list(extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + T
        while True:
            try:
                client = RespClient(self.port, self.tls)
                try:
                    if password:
                        client.command("AUTH", password)
                    if client.command("PING") == "PONG":
                        return self
                finally:
                    client.close()
            except (OSError, RespError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start; its log:\n" + self.log())
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(T)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()
        except OSError:
            return ""

    def client(self):
        return RespClient(self.port, self.tls)

    def command(self, *args):
        client = self.client()
        try:
            return client.command(*args)
        finally:
            client.close()


class FakeRedis:
    """A TCP server on a free loopback port that speaks enough RESP for a
    roomcast server's backplane: +OK to AUTH and SELECT, +PONG to PING,
    subscribe/unsubscribe answers to SUBSCRIBE/UNSUBSCRIBE, :0 to anything
    else. ``bad(kind, n)`` returns the bytes to send to the n-th connection
    of its kind ("sub": the one that subscribes, "cmd": the one that PINGs)
    right after its first answer, or None. ``connections`` counts them.
    ``tls``: an ``ssl.SSLContext`` to serve TLS with. ``answers``: bytes
    to send for other commands, by their name (``b"CLUSTER"``)."""

    def __init__(self, bad, tls=None, answers=None):
        self.bad = bad
        self.tls = tls  # an ssl.SSLContext: serve TLS
        self.answers = answers or {}
        self.connections = {"sub": 0, "cmd": 0}
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    async def close(self):
        self.server.close()
        await self.server.wait_closed()

    @staticmethod
    async def _command(reader):
        line = await reader.readline()
        if not line.startswith(b"*"):
            return None
        args = []
        for _ in range(int(line[1:])):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        return args

    async def _serve(self, reader, writer):
        subscribed = 0
        try:
            while True:
                args = await self._command(reader)
                if not args:
                    break
                verb = args[0].upper()
                kind = {b"SUBSCRIBE": "sub", b"PING": "cmd"}.get(verb)
                if verb in (b"SUBSCRIBE", b"UNSUBSCRIBE"):
                    for channel in args[1:]:
                        subscribed += 1 if verb == b"SUBSCRIBE" else -1
                        writer.write(
                            resp_encode([verb.lower(), channel]).replace(b"*2", b"*3", 1) + b":%d\r\n" % subscribed
                        )
                elif verb == b"PING":
                    writer.write(b"+PONG\r\n")
                elif verb in (b"AUTH", b"SELECT"):
                    writer.write(b"+OK\r\n")
                elif verb in self.answers:
                    writer.write(self.answers[verb])
                else:
                    writer.write(b":0\r\n")
                if kind is not None and subscribed <= 1:
                    self.connections[kind] += 1
                    bad = self.bad(kind, self.connections[kind])
                    if bad is not None:
                        writer.write(bad)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
