"""The server over TLS (``Server(ssl_certfile=..., ...)``): wss:// and
https:// on real sockets on 127.0.0.1.

The peers are independent of the core: the ``websockets`` library, Python's
``ssl`` module under the raw client of tests/support/wsraw.py (to see the
peer certificate, the session, ALPN and the version), ``urllib``, raw TCP
sockets for what no TLS client sends, and roomcast's own clients. The
certificates are a small test PKI made with the ``openssl`` command
(tests/support/certs.py).
"""

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import warnings

import pytest
from websockets.asyncio.client import connect as ws_connect

import roomcast
from roomcast import App, Room, Server
from support import wsraw
from support.certs import tls_certs_fixture  # noqa: F401 (the tls_certs fixture)

# Hang guards only: nothing here measures speed.
GUARD = 30.0

TLS12 = 0x0303
TLS13 = 0x0304
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def wait_for(predicate, what):
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def first_der(path):
    """The DER of the first certificate of a PEM file (the leaf of a chain)."""
    with open(path) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem[: pem.index(end) + len(end)] + "\n")


# -- the server -----------------------------------------------------------------


def tls_server(certs, *, certfile=None, keyfile=None, static=None, **options):
    """A server on ``certs.server`` (or ``certfile``/``keyfile``) with:

    * ``/echo``: every message back to its sender;
    * ``/room``: "hello" is answered to its sender, "round N" pushes 32
      numbered 1 KiB messages to every member, anything else is pushed to
      every member;
    * ``/scope``: sends a JSON summary of its ``scope`` (scheme, url scheme,
      the TLS extension) and keeps the scope in ``server.test_scopes``.
    """
    if certfile is None:
        certfile, keyfile = certs.server, certs.server_key
    server = Server(ssl_certfile=certfile, ssl_keyfile=keyfile, **options)
    if static is not None:
        server.static("/", static)
    echo = Room()

    @echo.on_receive("text")
    async def echo_text(room, ws, msg):
        await ws.send_text(msg)

    @echo.on_receive("bytes")
    async def echo_bytes(room, ws, msg):
        await ws.send_bytes(msg)

    server.route("/echo", echo)

    room = Room()

    @room.on_receive("text")
    async def command(room, ws, msg):
        if msg == "hello":
            await ws.send_text("hello")
        elif msg.startswith("round "):
            first = int(msg[6:]) * ROUND
            for i in range(first, first + ROUND):
                await room.push_text(numbered(i))
        else:
            await room.push_text(msg)

    server.route("/room", room)

    scopes = []
    server.test_scopes = scopes

    @server.websocket("/scope")
    async def scope(ws):
        await ws.accept()
        scopes.append(ws.scope)
        summary = {
            "scheme": ws.scope["scheme"],
            "url_scheme": ws.url.scheme,
            "tls": ws.scope.get("extensions", {}).get("tls"),
        }
        await ws.send_text(json.dumps(summary))
        await ws.receive()  # until the client closes

    return server


ROUND = 32  # 1 KiB messages per round
QUEUE_LIMIT = 64 * 1024
MAX_ROUNDS = 2048  # 64 MiB: the kernel buffers megabytes before a queue fills


def numbered(i):
    return f"{i:08d}".ljust(1024, ".")


# -- clients --------------------------------------------------------------------


def client_context(certs, *, cafile=None, maximum=None, alpn=None, cert=None):
    """A verifying client context that trusts ``cafile`` (the test root)."""
    ctx = ssl.create_default_context(cafile=cafile or certs.ca)
    if maximum is not None:
        ctx.maximum_version = maximum
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def tls_socket(port, ctx, *, host="localhost", session=None, rcvbuf=None):
    """A TCP connection to 127.0.0.1:port after the TLS handshake."""
    sock = wsraw.connect_socket(port, rcvbuf=rcvbuf)
    try:
        return ctx.wrap_socket(sock, server_hostname=host, session=session)
    except BaseException:
        sock.close()
        raise


def upgrade(tls, path="/echo"):
    """The opening handshake on an established TLS socket: a raw client."""
    key = wsraw.new_key()
    tls.sendall(wsraw.handshake_request(path, host="localhost", key=key))
    reader = wsraw.Reader(tls)
    resp = wsraw.read_http_response(reader)
    assert resp.status == 101, resp
    assert resp.header("sec-websocket-accept") == wsraw.accept_value(key)
    return wsraw.WSClient(tls, reader, resp)


def wss_client(port, ctx, path="/echo", **kw):
    return upgrade(tls_socket(port, ctx, **kw), path)


def echoes(client, text="still here"):
    client.send_text(text)
    return client.recv_text() == text


def read_summary(client):
    return json.loads(client.recv_text())


def read_until_closed(sock):
    """Everything the server sends until it ends the connection (a reset
    counts as the end)."""
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def client_hello(ctx):
    """The bytes of a real ClientHello made by ``ctx``."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16  # a handshake record
    return hello


@contextlib.contextmanager
def bio_handshake(port, ctx, *, piece):
    """A TLS handshake over a raw socket, the client's records sent in
    ``piece``-byte writes; yields the negotiated version."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with wsraw.connect_socket(port) as sock:
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = outgoing.read()
            for i in range(0, len(data), piece):
                sock.sendall(data[i : i + piece])
            if done:
                break
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the server closed during the handshake")
            incoming.write(chunk)
        yield obj.version()


async def ws_echo(url, ctx, text, **kw):
    async with ws_connect(url, ssl=ctx, **kw) as ws:
        await ws.send(text)
        return await asyncio.wait_for(ws.recv(), GUARD)


def refused_by_websockets(url, ctx, **kw):
    """The exception of a websockets client that must fail to connect."""
    with pytest.raises((ssl.SSLError, OSError, EOFError)) as failed:
        asyncio.run(ws_echo(url, ctx, "never", open_timeout=GUARD, **kw))
    return failed.value


# -- the websockets library over wss:// ---------------------------------------------


@pytest.mark.parametrize("which", ["leaf", "chain"])
def test_websockets_client_echoes_over_wss_with_the_ca_trusted(tls_certs, which):
    c = tls_certs
    files = {"leaf": (c.server, c.server_key), "chain": (c.chain, c.chain_key)}[which]
    ctx = client_context(c)
    with wsraw.ServerThread(tls_server(c, certfile=files[0], keyfile=files[1])) as st:
        assert st.running.url == f"wss://127.0.0.1:{st.port}/"
        url = f"wss://127.0.0.1:{st.port}/echo"
        assert asyncio.run(ws_echo(url, ctx, "over TLS")) == "over TLS"
        big = os.urandom(300_000)  # many TLS records each way
        assert asyncio.run(ws_echo(url, ctx, big, max_size=None)) == big
        # The certificate the client verified is the leaf of the file.
        with tls_socket(st.port, ctx) as tls:
            assert tls.getpeercert(binary_form=True) == first_der(files[0])


def test_a_room_fans_out_to_every_member_over_wss(tls_certs):
    ctx = client_context(tls_certs)

    async def members(url, n):
        conns = [await ws_connect(url, ssl=ctx) for _ in range(n)]
        try:
            for ws in conns:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), GUARD) == "hello"
            for i, ws in enumerate(conns):
                await ws.send(f"from {i}")
            got = []
            for ws in conns:
                got.append(sorted([await asyncio.wait_for(ws.recv(), GUARD) for _ in range(n)]))
            return got
        finally:
            await asyncio.gather(*(ws.close() for ws in conns))

    with wsraw.ServerThread(tls_server(tls_certs)) as st:
        got = asyncio.run(members(f"wss://127.0.0.1:{st.port}/room", 5))
    expected = sorted(f"from {i}" for i in range(5))
    assert got == [expected] * 5


def test_many_members_handshake_at_once_and_get_a_large_push(tls_certs):
    ctx = client_context(tls_certs)
    big = "L" * 300_000 + os.urandom(8).hex()  # records of up to 16 KiB, per member

    async def members(url, n):
        conns = await asyncio.gather(*(ws_connect(url, ssl=ctx, max_size=None) for _ in range(n)))
        try:
            for ws in conns:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), GUARD) == "hello"
            await conns[0].send(big)
            return await asyncio.gather(*(asyncio.wait_for(ws.recv(), GUARD) for ws in conns))
        finally:
            await asyncio.gather(*(ws.close() for ws in conns))

    with wsraw.ServerThread(tls_server(tls_certs)) as st:
        got = asyncio.run(members(f"wss://127.0.0.1:{st.port}/room", 30))
        assert st.running.stats()["tls_handshakes"] == 30
    assert len(got) == 30 and all(message == big for message in got)


def test_a_clean_tls_close_after_the_websocket_close(tls_certs):
    """Both ways the session ends with close_notify: Python's ssl reads the
    end as b"" (an abrupt end raises SSLEOFError)."""
    c = tls_certs
    ctx = client_context(c)
    st = wsraw.ServerThread(tls_server(c)).__enter__()
    try:
        with wss_client(st.port, ctx) as client:
            client.send_close(1000)
            _, close = client.recv_until_close()
            assert close.payload[:2] == (1000).to_bytes(2, "big")
            assert client.reader.read_to_eof() == b""
        stays = wss_client(st.port, ctx)
        assert echoes(stays)
    finally:
        # The server stops while the client answers its close.
        stopping = threading.Thread(target=st.__exit__, args=(None, None, None))
        stopping.start()
    with stays:
        _, close = stays.recv_until_close()
        assert close.payload[:2] == (1001).to_bytes(2, "big")
        stays.send_close(1001)
        assert stays.reader.read_to_eof() == b""
    stopping.join(GUARD)
    assert not stopping.is_alive()


def test_an_untrusted_certificate_fails_verification(tls_certs):
    c = tls_certs
    with wsraw.ServerThread(tls_server(c, certfile=c.untrusted, keyfile=c.untrusted_key)) as st:
        failed = refused_by_websockets(f"wss://127.0.0.1:{st.port}/echo", client_context(c))
        assert isinstance(failed, ssl.SSLCertVerificationError), failed
        assert "self-signed" in str(failed) or "self signed" in str(failed)
        # Trusting that very certificate works: the failure was trust alone.
        trusting = client_context(c, cafile=c.untrusted)
        assert asyncio.run(ws_echo(f"wss://127.0.0.1:{st.port}/echo", trusting, "trusted")) == "trusted"
        # roomcast's own client refuses it too.
        ws = roomcast.WebSocket(f"wss://127.0.0.1:{st.port}/echo", ssl=roomcast.TLS(cafile=c.ca))
        closes = []
        ws.onclose = lambda code, reason: closes.append((code, reason))
        ws.wait_closed(GUARD)
        wait_for(lambda: closes, "the client's close")
        assert closes[0][0] == 1006 and "certificate verify failed" in closes[0][1], closes
        # Python's ssl sends an alert (unknown CA) before it hangs up: counted.
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_socket(st.port, client_context(c))
        wait_for(lambda: st.running.stats()["tls_handshake_failures"] >= 1, "the failure counted")
        assert st.running.stats()["tls_handshakes"] == 1  # the trusting client's


def test_a_client_that_rejects_the_certificate_silently_counts_as_a_failure(tls_certs):
    c = tls_certs
    with wsraw.ServerThread(tls_server(c, certfile=c.untrusted, keyfile=c.untrusted_key)) as st:
        refused_by_websockets(f"wss://127.0.0.1:{st.port}/echo", client_context(c))
        ws = roomcast.WebSocket(f"wss://127.0.0.1:{st.port}/echo", ssl=roomcast.TLS(cafile=c.ca))
        ws.wait_closed(GUARD)
        # Their hang-ups reached the server long before this client is served.
        with wss_client(st.port, client_context(c, cafile=c.untrusted)) as trusting:
            assert echoes(trusting)
        assert st.running.stats()["tls_handshake_failures"] == 2


def test_a_certificate_for_another_name_fails_verification(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    with wsraw.ServerThread(tls_server(c, certfile=c.wrong_name, keyfile=c.wrong_name_key)) as st:
        url = f"wss://127.0.0.1:{st.port}/echo"
        failed = refused_by_websockets(url, ctx)
        assert isinstance(failed, ssl.SSLCertVerificationError), failed
        assert "mismatch" in str(failed), failed
        # Signed by the trusted root: asked for its own name, it verifies.
        assert asyncio.run(ws_echo(url, ctx, "named", server_hostname="other.test")) == "named"


# -- roomcast's own clients over wss:// ---------------------------------------------------


def test_roomcast_asyncio_client_over_wss(tls_certs):
    c = tls_certs

    async def talk(port):
        url = f"wss://127.0.0.1:{port}/echo"
        async with roomcast.connect(url, ssl=roomcast.TLS(cafile=c.ca)) as ws:
            await ws.send("asyncio over TLS" * 5000)
            assert await asyncio.wait_for(ws.recv(), GUARD) == "asyncio over TLS" * 5000
            await ws.send(b"\x01" * 200_000)
            assert await asyncio.wait_for(ws.recv(), GUARD) == b"\x01" * 200_000
        assert ws.close_code == 1000

    with wsraw.ServerThread(tls_server(c)) as st:
        asyncio.run(talk(st.port))


def test_roomcast_sync_client_over_wss_by_name_and_address(tls_certs):
    c = tls_certs
    with wsraw.ServerThread(tls_server(c)) as st:
        url = f"wss://127.0.0.1:{st.port}/echo"
        for tls in (roomcast.TLS(cafile=c.ca), roomcast.TLS(cafile=c.ca, server_hostname="localhost")):
            with roomcast.WebSocket(url, ssl=tls) as ws:
                ws.send("sync over TLS")
                assert ws.recv(GUARD) == "sync over TLS"
                ws.send(b"\x02" * 100_000)
                assert ws.recv(GUARD) == b"\x02" * 100_000


# -- construction ----------------------------------------------------------------------


def _bad_options(c, name):
    missing = os.path.join(c.directory, "no-such-file.pem")
    return {
        "missing certfile": ({"ssl_certfile": missing, "ssl_keyfile": c.server_key}, ["ssl_certfile", missing]),
        "missing keyfile": ({"ssl_certfile": c.server, "ssl_keyfile": missing}, ["ssl_keyfile", missing]),
        "wrong password": (
            {"ssl_certfile": c.server, "ssl_keyfile": c.encrypted_key, "ssl_keyfile_password": "not it"},
            ["ssl_keyfile", c.encrypted_key, "password"],
        ),
        "no password": (
            {"ssl_certfile": c.server, "ssl_keyfile": c.encrypted_key},
            ["ssl_keyfile", c.encrypted_key],
        ),
        "key of another certificate": (
            {"ssl_certfile": c.server, "ssl_keyfile": c.untrusted_key},
            ["ssl_keyfile", c.untrusted_key, "ssl_certfile", c.server, "match"],
        ),
        "a key as the certificate": (
            {"ssl_certfile": c.server_key, "ssl_keyfile": c.server_key},
            ["ssl_certfile", c.server_key],
        ),
        "missing ca_certs": (
            {
                "ssl_certfile": c.server,
                "ssl_keyfile": c.server_key,
                "ssl_ca_certs": missing,
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
            },
            ["ssl_ca_certs", missing],
        ),
    }[name]


@pytest.mark.parametrize(
    "case",
    [
        "missing certfile",
        "missing keyfile",
        "wrong password",
        "no password",
        "key of another certificate",
        "a key as the certificate",
        "missing ca_certs",
    ],
)
def test_bad_tls_files_raise_value_error_naming_the_option_and_file(tls_certs, case):
    options, words = _bad_options(tls_certs, case)
    with pytest.raises(ValueError) as raised:
        Server(**options)
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_an_encrypted_key_with_its_password_serves(tls_certs):
    from pathlib import Path

    c = tls_certs
    server = tls_server(c, certfile=Path(c.server), keyfile=Path(c.encrypted_key), ssl_keyfile_password=c.password)
    with wsraw.ServerThread(server) as st:
        with wss_client(st.port, client_context(c)) as client:
            assert echoes(client, "unlocked")
            assert client.sock.getpeercert(binary_form=True) == first_der(c.server)


def test_a_file_with_certificate_and_key_together_serves(tls_certs, tmp_path):
    c = tls_certs
    both = tmp_path / "both.pem"
    both.write_text(open(c.server).read() + open(c.server_key).read())
    with wsraw.ServerThread(tls_server(c, certfile=str(both), keyfile=None)) as st:
        with wss_client(st.port, client_context(c)) as client:
            assert echoes(client, "one file")


# -- the scope ---------------------------------------------------------------------------


@pytest.mark.parametrize("maximum", VERSIONS, ids=["TLSv1.2", "TLSv1.3"])
def test_scope_tells_the_scheme_version_and_cipher(tls_certs, maximum):
    c = tls_certs
    ctx = client_context(c, maximum=maximum)
    with wsraw.ServerThread(tls_server(c)) as st:
        with wss_client(st.port, ctx, "/scope") as client:
            summary = read_summary(client)
            version = client.sock.version()
            cipher = client.sock.cipher()[0]
    assert version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[maximum]
    iana = {d["name"]: d["id"] & 0xFFFF for d in ctx.get_ciphers()}[cipher]
    assert summary["scheme"] == "wss"
    assert summary["url_scheme"] == "wss"
    tls = summary["tls"]
    assert tls is not None, "no extensions['tls'] over TLS"
    assert tls["tls_version"] == (TLS12 if version == "TLSv1.2" else TLS13)
    assert tls["cipher_suite"] == iana
    assert tls["server_cert"] is None
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    scope = st.server.test_scopes[0]
    assert scope["type"] == "websocket" and scope["path"] == "/scope"
    assert isinstance(scope["extensions"]["tls"]["tls_version"], int)


def test_plain_server_scope_has_no_tls_extension():
    server = Server()
    summaries = []

    @server.websocket("/scope")
    async def scope(ws):
        await ws.accept()
        summaries.append((ws.scope["scheme"], "tls" in ws.scope.get("extensions", {}), ws.url.scheme))
        await ws.send_text("ok")

    with wsraw.ServerThread(server) as st:
        assert st.running.url.startswith("ws://")
        with wsraw.WSClient.connect(st.port, "/scope") as client:
            assert client.recv_text() == "ok"
    assert summaries == [("ws", False, "ws")]


# -- mutual TLS ----------------------------------------------------------------------------


def handshake_refused(port, ctx):
    """A client (maybe with a certificate) that the server must refuse: with
    TLS 1.3 the client finishes its side first and learns of the refusal
    when it reads, so the upgrade is tried and must not get a 101."""
    try:
        client = wss_client(port, ctx, "/scope")
    except (ssl.SSLError, ConnectionError, EOFError) as exc:
        return exc
    client.close()
    raise AssertionError("the server accepted a client it must refuse")


@pytest.mark.parametrize("maximum", VERSIONS, ids=["TLSv1.2", "TLSv1.3"])
def test_required_client_certificate(tls_certs, maximum):
    c = tls_certs
    server = tls_server(c, ssl_ca_certs=c.ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    with wsraw.ServerThread(server) as st:
        before = st.running.stats()["tls_handshake_failures"]
        handshake_refused(st.port, client_context(c, maximum=maximum))
        # A certificate the server's CA did not sign is refused as well.
        handshake_refused(st.port, client_context(c, maximum=maximum, cert=(c.untrusted, c.untrusted_key)))
        wait_for(lambda: st.running.stats()["tls_handshake_failures"] >= before + 2, "the refusals counted")
        # Alice's, signed by the CA, is accepted and named in the scope.
        alice = client_context(c, maximum=maximum, cert=(c.client, c.client_key))
        with wss_client(st.port, alice, "/scope") as cl:
            tls = read_summary(cl)["tls"]
            session = cl.sock.session
            assert echoes_scope_closed(cl)
        # A resumed session (no certificate sent again) still names her.
        with wss_client(st.port, alice, "/scope", session=session) as cl:
            assert cl.sock.session_reused
            assert read_summary(cl)["tls"]["client_cert_name"] == "CN=alice,O=roomcast-test"
    assert tls["client_cert_name"] == "CN=alice,O=roomcast-test"
    chain = tls["client_cert_chain"]
    assert len(chain) >= 1
    assert ssl.PEM_cert_to_DER_cert(chain[0]) == first_der(c.client)
    assert tls["client_cert_error"] is None


def echoes_scope_closed(client):
    """Closes a /scope client as a client should; True once the server
    answered the close."""
    client.send_close(1000)
    _, close = client.recv_until_close()
    return close.payload[:2] == b"\x03\xe8"


def test_optional_client_certificate(tls_certs):
    c = tls_certs
    server = tls_server(c, ssl_ca_certs=c.ca, ssl_cert_reqs=ssl.CERT_OPTIONAL)
    with wsraw.ServerThread(server) as st:
        with wss_client(st.port, client_context(c), "/scope") as anonymous:
            without = read_summary(anonymous)["tls"]
        with wss_client(st.port, client_context(c, cert=(c.client, c.client_key)), "/scope") as alice:
            with_cert = read_summary(alice)["tls"]
        # A certificate it does send must be valid.
        handshake_refused(st.port, client_context(c, cert=(c.untrusted, c.untrusted_key)))
    assert without["client_cert_name"] is None and without["client_cert_chain"] == []
    assert with_cert["client_cert_name"] == "CN=alice,O=roomcast-test"


# -- reloading the certificate ---------------------------------------------------------------


def test_reload_certificates_serves_new_connections_the_new_one(tls_certs, tmp_path):
    c = tls_certs
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(c.server, cert)
    shutil.copy(c.server_key, key)
    ctx = client_context(c)
    server = tls_server(c, certfile=str(cert), keyfile=str(key))

    async def reload():
        server.reload_certificates()

    with wsraw.ServerThread(server) as st:
        old = wss_client(st.port, ctx)
        with old:
            assert old.sock.getpeercert(binary_form=True) == first_der(c.server)
            # The chain (another leaf, by an intermediate) replaces the files.
            shutil.copy(c.chain, cert)
            shutil.copy(c.chain_key, key)
            st.call(reload)
            assert echoes(old, "the open one keeps working")
            with wss_client(st.port, ctx) as new:
                assert new.sock.getpeercert(binary_form=True) == first_der(c.chain)
                assert echoes(new, "the new one works")
            # A key that does not match: refused, the last good one is kept.
            shutil.copy(c.untrusted_key, key)
            with pytest.raises(ValueError) as raised:
                st.call(reload)
            assert str(key) in str(raised.value)
            with wss_client(st.port, ctx) as after:
                assert after.sock.getpeercert(binary_form=True) == first_der(c.chain)
            assert echoes(old, "still the old connection")


def test_reload_certificates_checks_the_files_and_needs_tls(tls_certs, tmp_path):
    c = tls_certs
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(c.server, cert)
    shutil.copy(c.server_key, key)
    server = tls_server(c, certfile=str(cert), keyfile=str(key))
    server.reload_certificates()  # not serving yet: the files are checked
    os.unlink(key)
    with pytest.raises(ValueError) as raised:
        server.reload_certificates()
    assert "ssl_keyfile" in str(raised.value) and str(key) in str(raised.value)
    with pytest.raises(RuntimeError):
        Server().reload_certificates()


SIGHUP_SERVER = """
import logging, sys
from roomcast import Room, Server
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
server = Server(ssl_certfile=sys.argv[1], ssl_keyfile=sys.argv[2])
room = Room()

@room.on_receive("text")
async def echo(room, ws, msg):
    await ws.send_text(msg)

server.route("/echo", room)
server.run("127.0.0.1", int(sys.argv[3]))
"""


def test_sighup_reloads_the_certificates_under_run(tls_certs, tmp_path):
    c = tls_certs
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(c.server, cert)
    shutil.copy(c.server_key, key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGHUP_SERVER, str(cert), str(key), str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    log = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
    reader.start()
    ctx = client_context(c)
    try:
        wait_for(lambda: any("listening on" in line for line in log) or proc.poll() is not None, "the server")
        assert proc.poll() is None, log
        with wss_client(port, ctx) as old:
            assert old.sock.getpeercert(binary_form=True) == first_der(c.server)
            shutil.copy(c.chain, cert)
            shutil.copy(c.chain_key, key)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: any("certificates reloaded" in line for line in log), "the reload")
            with wss_client(port, ctx) as new:
                assert new.sock.getpeercert(binary_form=True) == first_der(c.chain)
            # A broken file: logged, the server keeps its certificate.
            key.write_text("not a key")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: any("kept its certificate" in line for line in log), "the refusal")
            assert any(str(key) in line for line in log if "kept its certificate" in line), log
            with wss_client(port, ctx) as after:
                assert after.sock.getpeercert(binary_form=True) == first_der(c.chain)
            assert echoes(old, "the first connection is still open")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(GUARD) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(GUARD)


# -- what is not TLS on the TLS port -------------------------------------------------------------


@pytest.mark.parametrize("what", ["garbage", "plain HTTP", "partial ClientHello", "malformed handshake record"])
def test_bytes_that_are_not_tls_are_dropped_without_disturbing_others(tls_certs, what):
    c = tls_certs
    ctx = client_context(c)
    payload = {
        "garbage": b"\xff\x00garbage\x00" + os.urandom(500),
        "plain HTTP": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "partial ClientHello": client_hello(ctx)[:40],
        # A handshake record whose content is noise: OpenSSL answers an alert.
        "malformed handshake record": b"\x16\x03\x01\x00\x10" + os.urandom(16),
    }[what]
    with wsraw.ServerThread(tls_server(c, handshake_timeout=2)) as st:
        with wss_client(st.port, ctx, "/room") as member:
            assert echoes(member, "hello")
            bad = wsraw.connect_socket(st.port)
            with bad:
                bad.sendall(payload)
                answer = read_until_closed(bad)
            # A TLS alert (content type 21) or nothing: never an HTTP answer.
            assert answer == b"" or answer[0] == 0x15, answer[:80]
            if what == "malformed handshake record":
                assert answer[:1] == b"\x15", "no alert for a broken handshake"
            # Nothing of it stays behind: the member is the only connection.
            wait_for(lambda: st.running.stats()["connections"] == 1, "the dropped connection gone")
            assert st.running.stats()["tls_connections"] == 1
            member.send_text("still served")
            assert member.recv_text() == "still served"
            with wss_client(st.port, ctx) as fresh:
                assert echoes(fresh)


def test_a_slow_tls_handshake_is_closed_by_handshake_timeout(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    hello = client_hello(ctx)
    with wsraw.ServerThread(tls_server(c, handshake_timeout=1)) as st:
        with wss_client(st.port, ctx, "/room") as member:
            assert echoes(member, "hello")
            slow = wsraw.connect_socket(st.port)
            sent, closed = 0, False
            with slow:
                # One byte of the ClientHello per interval: the whole of it
                # would take many handshake timeouts.
                for i, byte in enumerate(hello):
                    try:
                        slow.sendall(bytes([byte]))
                    except OSError:
                        closed = True
                        break
                    sent += 1
                    readable, _, _ = select.select([slow], [], [], 0.1)
                    if readable:
                        read_until_closed(slow)  # an alert at most, then the end
                        closed = True
                        break
                    if i % 10 == 0:
                        # Meanwhile the member is served as usual.
                        member.send_text(f"during {i}")
                        assert member.recv_text() == f"during {i}"
            assert closed, "the server waited for the whole slow ClientHello"
            assert sent < len(hello)
            # The same ClientHello in one-byte pieces sent at once is served:
            # it was the time that closed the slow one, not the pieces.
            with bio_handshake(st.port, ctx, piece=1) as version:
                assert version in ("TLSv1.2", "TLSv1.3")
            # The member outlived the timeout: it counts only until the
            # handshake is done.
            assert echoes(member, "after")


# -- memory -------------------------------------------------------------------------------------------

UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def rss_kib():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps what is freed: RSS bounds mean nothing")
def test_members_that_do_not_read_hold_shared_plaintext_not_a_ciphertext_each(tls_certs):
    """Records are per member, but a member's ciphertext is made only as
    its socket takes it: 21 members that stop reading while 40 messages of
    512 KiB are pushed hold the 20 MiB of frames once between them, and
    little ciphertext each."""
    c = tls_certs
    ctx = client_context(c)
    big = 512 * 1024
    server = tls_server(c, max_queue_bytes=64 * 2**20, max_message_size=2**20, close_timeout=120)
    with wsraw.ServerThread(server) as st:
        members = [wss_client(st.port, ctx, "/room", rcvbuf=4096) for _ in range(20)]
        sender = wss_client(st.port, ctx, "/room", rcvbuf=4096)
        for m in [*members, sender]:
            assert echoes(m, "hello")
        before = rss_kib()
        base = st.running.stats()["deliveries"]
        for i in range(40):
            sender.send_text(f"{i:04d}".ljust(big, "x"))
        deadline = time.monotonic() + GUARD
        while st.running.stats()["deliveries"] < base + 40 * 21:
            assert time.monotonic() < deadline, st.running.stats()
            time.sleep(0.05)
        grown_mib = (rss_kib() - before) / 1024
        stats = st.running.stats()
        assert stats["slow_consumer_closes"] == 0, stats
        # 20 MiB of frames, and per member at most 64 KiB and one frame of
        # ciphertext: about 32 MiB. Encrypting whatever is queued when the
        # socket last took something (a block per member the size of the
        # socket's buffer, megabytes) grew it by 95.
        assert grown_mib < 64, f"RSS grew {grown_mib:.0f} MiB"
        # They are served still: a member that reads gets every message.
        reader = members[0]
        for i in range(40):
            assert reader.recv_text() == f"{i:04d}".ljust(big, "x")
        for m in [*members, sender]:
            m.close()


# -- slow consumer -----------------------------------------------------------------------------------


def test_a_member_that_stops_reading_is_closed_as_slow_consumer_over_tls(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    server = tls_server(c, max_queue_bytes=QUEUE_LIMIT, close_timeout=120)

    async def fast_members(st, n):
        url = f"wss://127.0.0.1:{st.port}/room"
        members = [await ws_connect(url, ssl=ctx, max_size=None) for _ in range(n)]
        received = [[] for _ in members]
        try:
            for ws in members:
                await ws.send("hello")
                assert await asyncio.wait_for(ws.recv(), GUARD) == "hello"
            for k in range(MAX_ROUNDS):
                if st.running.stats()["slow_consumer_closes"] > 0:
                    break
                await members[0].send(f"round {k}")
                for got, ws in zip(received, members, strict=True):
                    for _ in range(ROUND):
                        got.append(await asyncio.wait_for(ws.recv(), GUARD))
            return received
        finally:
            await asyncio.gather(*(ws.close() for ws in members))

    with wsraw.ServerThread(server) as st:
        # A receive buffer of a few KiB that it stops reading after hello.
        slow = wss_client(st.port, ctx, "/room", rcvbuf=4096)
        with slow:
            assert echoes(slow, "hello")
            received = asyncio.run(fast_members(st, 3))
            assert st.running.stats()["slow_consumer_closes"] == 1
            expected = [numbered(i) for i in range(len(received[0]))]
            for got in received:
                assert got == expected
            # Reading again: a prefix of the messages in order, then 1008.
            messages, close = slow.recv_until_close()
            assert int.from_bytes(close.payload[:2], "big") == 1008
            texts = [payload.decode() for _, payload in messages]
            assert len(texts) < len(expected)
            assert texts == expected[: len(texts)]


def test_drop_policy_over_tls_keeps_a_slow_member_with_the_newest_messages(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    server = tls_server(c, max_queue_bytes=QUEUE_LIMIT, slow_consumer="drop")

    async def fast_member(st):
        async with ws_connect(f"wss://127.0.0.1:{st.port}/room", ssl=ctx, max_size=None) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), GUARD) == "hello"
            got, extra = [], 0
            for k in range(MAX_ROUNDS):
                if st.running.stats()["messages_dropped"] > 0:
                    extra += 1
                    if extra > 8:
                        break
                await ws.send(f"round {k}")
                for _ in range(ROUND):
                    got.append(await asyncio.wait_for(ws.recv(), GUARD))
            return got

    with wsraw.ServerThread(server) as st:
        with wss_client(st.port, ctx, "/room", rcvbuf=4096) as slow:
            assert echoes(slow, "hello")
            fast = asyncio.run(fast_member(st))
            total = len(fast)
            assert fast == [numbered(i) for i in range(total)]
            stats = st.running.stats()
            assert stats["messages_dropped"] > 0 and stats["slow_consumer_closes"] == 0
            # Whole messages were dropped, never part of a TLS record: the
            # stream still decrypts, in order, up to the newest.
            numbers = []
            while not numbers or numbers[-1] != total - 1:
                numbers.append(int(slow.recv_text()[:8]))
            assert numbers == sorted(set(numbers))
            assert total - len(numbers) == stats["messages_dropped"]
            assert echoes(slow, "hello")


def test_past_max_connections_a_tls_client_is_refused_and_others_untouched(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    with wsraw.ServerThread(tls_server(c, max_connections=1)) as st:
        with wss_client(st.port, ctx) as member:
            raw = wsraw.connect_socket(st.port)
            with raw:
                raw.sendall(client_hello(ctx))
                answer = read_until_closed(raw)
            # No plaintext "HTTP/1.1 503" on a TLS port: nothing, or an alert.
            assert answer == b"" or answer[0] == 0x15, answer[:80]
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls_socket(st.port, ctx).close()
            assert st.running.stats()["connections_refused"] == 2
            assert echoes(member)


# -- https: static files -------------------------------------------------------------------------------


def test_static_files_over_https(tls_certs, tmp_path):
    c = tls_certs
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>secure</h1>")
    big = os.urandom(600 * 1024)  # many TLS records
    (site / "big.bin").write_bytes(big)
    ctx = client_context(c)
    with wsraw.ServerThread(tls_server(c, static=site)) as st:
        assert st.running.url == f"https://127.0.0.1:{st.port}/"
        with urllib.request.urlopen(st.running.url, context=ctx, timeout=GUARD) as resp:
            assert resp.status == 200 and resp.read() == b"<h1>secure</h1>"
        with urllib.request.urlopen(st.running.url + "big.bin", context=ctx, timeout=GUARD) as resp:
            assert resp.read() == big
        # The websocket routes share the port.
        with wss_client(st.port, ctx) as client:
            assert echoes(client, "beside the files")


def test_app_with_ssl_options_serves_wss_and_roomcast_js(tls_certs):
    c = tls_certs
    app = App(ssl_certfile=c.server, ssl_keyfile=c.server_key)

    @app.on("echo")
    async def echo(ws):
        await ws.emit("echoed", ws.payload)

    ctx = client_context(c)

    async def talk(port):
        async with ws_connect(f"wss://127.0.0.1:{port}/", ssl=ctx) as ws:
            await ws.send(json.dumps({"event": "echo", "payload": {"over": "tls"}}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), GUARD))
                if not message["event"].startswith("roomcast:"):
                    return message

    with wsraw.ServerThread(app) as st:
        assert st.running.url.split("://")[0] in ("wss", "https")
        assert asyncio.run(talk(st.port)) == {"event": "echoed", "payload": {"over": "tls"}}
        with urllib.request.urlopen(f"https://127.0.0.1:{st.port}/roomcast.js", context=ctx, timeout=GUARD) as r:
            assert r.status == 200 and b"roomcast" in r.read()


# -- TLS features ------------------------------------------------------------------------------


@pytest.mark.parametrize("maximum", VERSIONS, ids=["TLSv1.2", "TLSv1.3"])
def test_a_client_resumes_its_session(tls_certs, maximum):
    c = tls_certs
    ctx = client_context(c, maximum=maximum)
    with wsraw.ServerThread(tls_server(c)) as st:
        # The upgrade reads the server's first bytes: with TLS 1.3 the
        # session ticket comes after the handshake, before them.
        with wss_client(st.port, ctx) as first:
            assert echoes(first, "first")
            assert not first.sock.session_reused
            session = first.sock.session
        assert session is not None
        with wss_client(st.port, ctx, session=session) as second:
            assert second.sock.session_reused
            assert echoes(second, "resumed")


@pytest.mark.parametrize("offered", [["http/1.1"], ["h2", "http/1.1"]])
def test_alpn_selects_http_1_1(tls_certs, offered):
    c = tls_certs
    ctx = client_context(c, alpn=offered)
    with wsraw.ServerThread(tls_server(c)) as st:
        with wss_client(st.port, ctx) as client:
            assert client.sock.selected_alpn_protocol() == "http/1.1"
            assert echoes(client, "after ALPN")


def test_tls_1_1_is_refused(tls_certs):
    c = tls_certs
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(c.ca)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the very point here
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.1 only there
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this Python cannot offer TLS 1.1: {exc}")
    hello = client_hello(old)
    assert hello[9:11] in (b"\x03\x01", b"\x03\x02")  # ClientHello.legacy_version <= TLS 1.1
    with wsraw.ServerThread(tls_server(c)) as st:
        before = st.running.stats()["tls_handshake_failures"]
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_socket(st.port, old).close()
        wait_for(lambda: st.running.stats()["tls_handshake_failures"] > before, "the refusal counted")
        assert st.running.stats()["tls_connections"] == 0
        # TLS 1.2 from the same root works.
        with wss_client(st.port, client_context(c, maximum=ssl.TLSVersion.TLSv1_2)) as client:
            assert client.sock.version() == "TLSv1.2"
            assert echoes(client)


def test_no_cipher_in_common_gets_a_handshake_failure_alert(tls_certs):
    c = tls_certs
    anonymous_only = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous_only.check_hostname = False
    anonymous_only.verify_mode = ssl.CERT_NONE
    anonymous_only.maximum_version = ssl.TLSVersion.TLSv1_2
    anonymous_only.set_ciphers("aNULL:@SECLEVEL=0")
    with wsraw.ServerThread(tls_server(c)) as st:
        with pytest.raises(ssl.SSLError) as failed:
            tls_socket(st.port, anonymous_only)
        assert "HANDSHAKE_FAILURE" in str(failed.value), failed.value
        wait_for(lambda: st.running.stats()["tls_handshake_failures"] == 1, "the failure counted")


def test_stats_count_tls_connections_handshakes_and_failures(tls_certs):
    c = tls_certs
    ctx = client_context(c)
    with wsraw.ServerThread(tls_server(c)) as st:

        def stat(name):
            return st.running.stats()[name]

        assert (stat("tls_connections"), stat("tls_handshakes"), stat("tls_handshake_failures")) == (0, 0, 0)
        a = wss_client(st.port, ctx)
        b = wss_client(st.port, ctx)
        assert echoes(a) and echoes(b)
        assert stat("tls_connections") == 2
        assert stat("tls_handshakes") == 2
        a.send_close(1000)
        a.recv_until_close()
        a.close()
        wait_for(lambda: stat("tls_connections") == 1, "one TLS connection left")
        assert stat("tls_handshakes") == 2
        # A client that does not trust the server aborts the handshake.
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_socket(st.port, client_context(c, cafile=c.untrusted))
        wait_for(lambda: stat("tls_handshake_failures") == 1, "the failed handshake counted")
        assert stat("tls_handshakes") == 2
        assert stat("tls_connections") == 1
        b.close()
        wait_for(lambda: stat("tls_connections") == 0, "no TLS connection left")


def test_plain_clients_cannot_talk_to_the_tls_port(tls_certs):
    c = tls_certs
    with wsraw.ServerThread(tls_server(c)) as st:
        with pytest.raises((wsraw.ProtocolError, EOFError, ConnectionError)):
            wsraw.WSClient.connect(st.port, "/echo").close()
        with wss_client(st.port, client_context(c)) as client:
            assert echoes(client)
