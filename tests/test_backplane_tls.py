"""TLS to Redis (``rediss://``): a real ``redis-server`` serving TLS only,
on certificates the tests make (support/certs.py), and real roomcast
servers in this process with ``websockets`` clients. A certificate that
fails a check, a Redis that does not speak TLS and one that answers
garbage each cost a connection and a backoff: the server keeps serving
its own members and says why in its log."""

import asyncio
import logging
import ssl
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect

from roomcast import Server
from support.certs import tls_certs_fixture  # noqa: F401 (a fixture)
from support.crossserver import echo_room, log_text, refused, three_servers_exactly_once
from support.polling import until
from support.redisproc import FakeRedis, RedisServer, RedisTLS

T = 30  # seconds: generous, the machine is shared


async def recv(ws, timeout=T):
    return await asyncio.wait_for(ws.recv(), timeout)


def rediss(redis, host="127.0.0.1", **options):
    query = "&".join(f"{k}={quote(str(v))}" for k, v in options.items())
    return f"rediss://{host}:{redis.port}/0" + (f"?{query}" if query else "")


@pytest.fixture(name="tls_redis")
def tls_redis_fixture(tmp_path, tls_certs):
    """``tls_redis(cert=None, key=None, client=None)`` starts a TLS-only
    redis-server (on the test CA's certificate for localhost and 127.0.0.1
    by default; ``client``: the certificate it requires of clients); all
    are stopped after the test."""
    started = []

    def start(cert=None, key=None, client=None):
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        redis = RedisServer(directory)
        started.append(redis)
        tls = RedisTLS(cert or tls_certs.server, key or tls_certs.server_key, tls_certs.ca, client)
        return redis.start(tls=tls)

    yield start
    for redis in started:
        redis.stop()


async def test_two_servers_share_rooms_and_presence_through_redis_over_tls(tls_redis, tls_certs, caplog):
    caplog.set_level(logging.INFO, logger="roomcast")
    redis = tls_redis()
    # By name: the certificate's DNS entry (the other tests check its IP
    # entry). Both servers spell Redis alike: one process counts each
    # spelling as a Redis of its own, and publishes through each.
    url = rediss(redis, "localhost", ssl_ca_certs=tls_certs.ca)
    rooms = [echo_room("tls"), echo_room("tls")]
    servers = [Server(backplane=url) for _ in rooms]
    for server, room in zip(servers, rooms, strict=True):
        server.route("/r", room)
    async with servers[0].serve("127.0.0.1", 0) as r1, servers[1].serve("127.0.0.1", 0) as r2:
        async with connect(f"ws://127.0.0.1:{r1.port}/r") as a, connect(f"ws://127.0.0.1:{r2.port}/r") as b:
            await until(lambda: all(r.stats()["backplane_channels"] == 1 for r in (r1, r2)), what="subscriptions")
            for k in range(50):
                await (a if k % 2 else b).send(f"m{k}")
            got_a = [await recv(a) for _ in range(50)]
            got_b = [await recv(b) for _ in range(50)]
            assert sorted(got_a) == sorted(got_b) == sorted(f"m{k}" for k in range(50))
            assert [m for m in got_a if int(m[1:]) % 2] == [f"m{k}" for k in range(1, 50, 2)]
            # Presence: scripts on the command connection, through TLS too.
            assert await rooms[0].count() == 2

            # Redis restarts: both reconnect through TLS and resubscribe.
            redis.stop()
            await until(lambda: r1.stats()["backplane_up"] == 0 and r2.stats()["backplane_up"] == 0)
            redis.start(tls=RedisTLS(tls_certs.server, tls_certs.server_key, tls_certs.ca))
            await until(lambda: r1.stats()["backplane_up"] == 1 and r2.stats()["backplane_up"] == 1)
            await until(lambda: all(r.stats()["backplane_channels"] == 1 for r in (r1, r2)), what="resubscribed")
            seen = []
            while "after" not in seen:
                await a.send("after")
                seen.append(await recv(b))
                await asyncio.sleep(0.05)
    text = log_text(caplog)
    assert text.count("backplane: connected to") >= 4, text


async def test_three_server_processes_over_tls_deliver_exactly_once_in_order(examples, tls_redis, tls_certs):
    redis = tls_redis()
    url = rediss(redis, ssl_ca_certs=tls_certs.ca)
    servers = [await examples("scale_out.py", "--port", "0", "--backplane", url) for _ in range(3)]
    await three_servers_exactly_once([s.port for s in servers], 300)


async def test_an_untrusted_certificate_is_refused_unless_checks_are_off(tls_redis, tls_certs, caplog):
    redis = tls_redis(tls_certs.untrusted, tls_certs.untrusted_key)
    await refused(rediss(redis, ssl_ca_certs=tls_certs.ca), caplog, "certificate verify failed")
    # With the system's roots (no ssl_ca_certs) it is not trusted either.
    caplog.clear()
    await refused(rediss(redis), caplog, "certificate verify failed")
    # ssl_cert_reqs=none: encrypted, unchecked.
    server = Server(backplane=rediss(redis, ssl_cert_reqs="none"))
    async with server.serve("127.0.0.1", 0) as running:
        await until(lambda: running.stats()["backplane_up"] == 1, what="the backplane up without checks")


async def test_a_certificate_for_another_name_is_refused_unless_the_name_check_is_off(tls_redis, tls_certs, caplog):
    redis = tls_redis(tls_certs.wrong_name, tls_certs.wrong_name_key)
    await refused(rediss(redis, "localhost", ssl_ca_certs=tls_certs.ca), caplog, "hostname mismatch")
    caplog.clear()
    await refused(rediss(redis, ssl_ca_certs=tls_certs.ca), caplog, "IP address mismatch")
    # The chain is still checked without the name: the right root works.
    server = Server(backplane=rediss(redis, ssl_ca_certs=tls_certs.ca, ssl_check_hostname="false"))
    async with server.serve("127.0.0.1", 0) as running:
        await until(lambda: running.stats()["backplane_up"] == 1, what="the backplane up without the name check")


async def test_a_redis_that_requires_a_client_certificate(tls_redis, tls_certs, caplog):
    redis = tls_redis(client=(tls_certs.client, tls_certs.client_key))
    # Without one, Redis ends the handshake (TLS 1.3: after it, on the
    # first read): the attempt fails and is retried with a backoff.
    caplog.set_level(logging.DEBUG, logger="roomcast")
    server = Server(backplane=rediss(redis, ssl_ca_certs=tls_certs.ca))
    async with server.serve("127.0.0.1", 0) as running:
        await until(lambda: log_text(caplog).count("certificate required") >= 2, what="two refused attempts")
        assert running.stats()["backplane_up"] == 0
    url = rediss(redis, ssl_ca_certs=tls_certs.ca, ssl_certfile=tls_certs.client, ssl_keyfile=tls_certs.client_key)
    room = echo_room("cert")
    server = Server(backplane=url)
    server.route("/r", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/r"):
            await until(lambda: running.stats()["backplane_up"] == 1, what="the backplane up with a certificate")
            assert await room.count() == 1


async def test_tls_to_a_redis_without_tls_costs_a_reconnect(redis_server, caplog):
    # A plain redis-server reads the ClientHello as an inline command: it
    # waits for the rest of the line (the connect deadline ends the
    # attempt) or answers an error line, which is not a TLS record.
    await refused(rediss(redis_server, ssl_cert_reqs="none"), caplog, "TLS:", "no answer in time")


async def test_garbage_inside_tls_costs_a_reconnect_never_the_process(tls_certs, caplog):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_certs.server, tls_certs.server_key)
    fake = await FakeRedis(lambda kind, n: b"?not RESP\r\n" if kind == "sub" else None, tls=context).start()
    try:
        caplog.set_level(logging.DEBUG, logger="roomcast")
        room = echo_room("garbage")
        server = Server(backplane=f"rediss://127.0.0.1:{fake.port}/0?ssl_ca_certs={quote(tls_certs.ca)}")
        server.route("/r", room)
        async with server.serve("127.0.0.1", 0) as running:
            async with connect(f"ws://127.0.0.1:{running.port}/r") as ws:
                await until(lambda: fake.connections["sub"] >= 3, what="three subscriber connections")
                await ws.send("local")
                assert await recv(ws) == "local"
                assert running.stats()["backplane_up"] == 0
        assert "protocol error from Redis" in log_text(caplog)
    finally:
        await fake.close()


def test_tls_options_in_the_url_are_checked(tls_certs, tmp_path):
    for url, message in [
        ("rediss://h?ssl_ca_certs=/nonexistent/ca.pem", "/nonexistent/ca.pem"),
        ("rediss://h?ssl_verify=1", "unknown option 'ssl_verify'"),
        ("rediss://h?ssl_cert_reqs=optional", "'required' or 'none'"),
        ("rediss://h?ssl_cert_reqs=none&ssl_check_hostname=true", "needs ssl_cert_reqs=required"),
        ("rediss://h?ssl_check_hostname=maybe", "true or false"),
        (f"rediss://h?ssl_keyfile={tls_certs.client_key}", "ssl_keyfile needs ssl_certfile"),
        (f"rediss://h?ssl_certfile={tls_certs.client}", "ssl_keyfile"),  # the key is not in it
        (
            f"rediss://h?ssl_certfile={tls_certs.client}&ssl_keyfile={tls_certs.server_key}",
            "does not match",
        ),
        (f"rediss://h?ssl_certfile={tls_certs.client}&ssl_keyfile={tls_certs.encrypted_key}", "unencrypted"),
        ("rediss://h?ssl_ca_certs=a&ssl_ca_certs=b", "twice"),
        ("redis://h?ssl_ca_certs=a", "only with rediss://"),
    ]:
        with pytest.raises(ValueError, match=message):
            Server(backplane=url)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ValueError, match="cannot load CA file"):
        Server(backplane=f"rediss://h?ssl_ca_certs={not_pem}")
    # The password stays masked in these messages too.
    with pytest.raises(ValueError) as raised:
        Server(backplane="rediss://:hunter2@h?nope=1")
    assert "hunter2" not in str(raised.value)
