"""Prometheus metrics: ``Server(metrics_path=...)`` scraped over real HTTP
and read with prometheus_client's own parser; the counters move as the
traffic does; refusals show under their reason; several processes sharing
``PROMETHEUS_MULTIPROC_DIR`` answer one sum.

The tests that scrape need prometheus_client (``pip install
roomcast[metrics]``) and are skipped without it.
"""

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import App, Room, Server
from support import wsraw
from support.certs import tls_certs_fixture  # noqa: F401 (the tls_certs fixture)
from support.polling import until

REPO = Path(__file__).resolve().parent.parent
try:
    import prometheus_client  # noqa: F401

    HAVE_PROMETHEUS = True
except ImportError:
    HAVE_PROMETHEUS = False
needs_prometheus = pytest.mark.skipif(not HAVE_PROMETHEUS, reason="prometheus_client is not installed")


def _get(port: int, path: str = "/metrics", method: str = "GET", headers: str = "") -> wsraw.HTTPResponse:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    return wsraw.http_exchange(port, request.encode())


def _raw(port: int, request: bytes) -> bytes:
    """Every byte the server wrote for ``request``, up to its close."""
    with wsraw.connect_socket(port) as sock:
        sock.sendall(request)
        return wsraw.Reader(sock).read_to_eof()


def _parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a scrape, keyed by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int) -> dict:
    response = await asyncio.to_thread(_get, port)
    assert response.status == 200, response
    assert response.header("content-type").startswith("text/plain; version=0.0.4")
    return _parse(response.body.decode())


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def refused(samples: dict, reason: str) -> float:
    return value(samples, "roomcast_handshakes_refused_total", reason=reason)


# --- the option ------------------------------------------------------------------


def test_metrics_path_is_checked_at_construction():
    with pytest.raises(ValueError, match="metrics_path must be a URL path starting with '/'"):
        Server(metrics_path="metrics")
    with pytest.raises(ValueError, match="metrics_path"):
        Server(metrics_path="/metrics?x=1")
    with pytest.raises(TypeError, match="metrics_path"):
        Server(metrics_path=b"/metrics")


def test_without_prometheus_client_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install roomcast\[metrics\]"):
        Server(metrics_path="/metrics")
    Server()  # metrics off: nothing needed


async def test_metrics_are_off_by_default():
    server = Server()
    server.route("/chat", Room())
    async with server.serve("127.0.0.1", 0) as running:
        response = await asyncio.to_thread(_get, running.port)
        # What a WebSocket-only server answers any plain request.
        assert response.status == 426
        assert b"roomcast_" not in response.body


# --- scrapes ---------------------------------------------------------------------


@needs_prometheus
async def test_counters_move_as_the_traffic_does():
    server = Server(metrics_path="/metrics", compression=None, ping_interval=None)
    server.route("/chat", Room(relay="all"))
    async with server.serve("127.0.0.1", 0) as running:
        port = running.port
        before = await scrape(port)
        assert value(before, "roomcast_connections") == 1  # the scrape's own
        assert value(before, "roomcast_rooms") == 0
        clients = [await connect(f"ws://127.0.0.1:{port}/chat", compression=None) for _ in range(3)]
        try:
            await until(lambda: running.stats()["rooms_open"] == 1, what="the room")
            joined = await scrape(port)
            assert value(joined, "roomcast_connections") == 3 + 1
            assert value(joined, "roomcast_rooms") == 1
            assert (
                value(joined, "roomcast_connections_accepted_total")
                == value(before, "roomcast_connections_accepted_total") + 4
            )  # 3 clients and the scrape before
            # The bytes between two scrapes: the first scrape's answer and
            # then exactly the frames the room relayed, nothing else.
            first = await asyncio.to_thread(_raw, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            at_first = _parse(first.split(b"\r\n\r\n", 1)[1].decode())
            text = "x" * 100  # one frame: 2 bytes of header and the text
            await clients[0].send(text)
            for client in clients:
                assert await client.recv() == text
            after = await scrape(port)
            assert (
                value(after, "roomcast_messages_received_total")
                == value(at_first, "roomcast_messages_received_total") + 1
            )
            assert value(after, "roomcast_deliveries_total") == value(at_first, "roomcast_deliveries_total") + 3
            grown = value(after, "roomcast_sent_bytes_total") - value(at_first, "roomcast_sent_bytes_total")
            assert grown == len(first) + 3 * (2 + len(text))
        finally:
            for client in clients:
                await client.close()
        await until(lambda: running.stats()["connections"] == 0, what="the clients to leave")
        gone = await scrape(port)
        assert value(gone, "roomcast_connections") == 1
        assert value(gone, "roomcast_rooms") == 0


@needs_prometheus
async def test_refused_handshakes_show_under_their_reason():
    server = Server(metrics_path="/metrics", origins=["http://good.example"], max_header_bytes=1024)

    @server.websocket("/shy")
    async def shy(ws):
        await ws.close()  # before accept(): HTTP 403

    server.route("/chat", Room())
    async with server.serve("127.0.0.1", 0) as running:
        port = running.port
        url = f"ws://127.0.0.1:{port}"

        async def refused_with(status: int, **kwargs) -> None:
            path = kwargs.pop("path", "/chat")
            kwargs.setdefault("origin", "http://good.example")
            with pytest.raises(InvalidStatus) as info:
                async with connect(url + path, **kwargs):
                    pass
            assert info.value.response.status_code == status

        before = await scrape(port)

        async def check(reason: str) -> None:
            now = await scrape(port)
            others = {k: v for k, v in now.items() if k[0] == "roomcast_handshakes_refused_total"}
            assert refused(now, reason) == refused(before, reason) + 1, reason
            for key, count in others.items():  # no other reason moved
                if dict(key[1])["reason"] != reason:
                    assert count == before[key], key
            before.update(now)

        await refused_with(403, origin="http://evil.example")
        await check("origin")
        await refused_with(404, path="/nowhere")
        await check("not_found")
        await refused_with(403, path="/shy")
        await until_refused(port, "rejected_by_app", refused(before, "rejected_by_app") + 1)
        await check("rejected_by_app")
        head = await asyncio.to_thread(wsraw.http_exchange, port, b"NOT HTTP AT ALL\r\n\r\n")
        assert head.status == 400
        await check("bad_request")
        request = wsraw.handshake_request("/chat", key=wsraw.new_key(), version="8")
        answer = await asyncio.to_thread(wsraw.http_exchange, port, request)
        assert answer.status == 426
        await check("version")
        big = b"GET /chat HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
        answer = await asyncio.to_thread(wsraw.http_exchange, port, big)
        assert answer.status == 431
        await check("too_large")


@needs_prometheus
async def test_refusals_the_core_decides_by_itself():
    server = Server(metrics_path="/metrics", handshake_timeout=0.2)
    server.route("/chat", Room())
    async with server.serve("127.0.0.1", 0) as running:
        port = running.port
        before = await scrape(port)
        post = wsraw.handshake_request("/chat", key=wsraw.new_key(), method="POST")
        assert (await asyncio.to_thread(wsraw.http_exchange, port, post)).status == 405
        assert refused(await scrape(port), "method") == refused(before, "method") + 1
        with wsraw.connect_socket(port):  # says nothing: closed at handshake_timeout
            await until_refused(port, "timeout", refused(before, "timeout") + 1)


async def until_refused(port: int, reason: str, count: float) -> None:
    """The endpoint's close reaches the counter once its connection has
    closed: wait for it."""
    samples: dict = {}

    async def poll() -> bool:
        samples.update(await scrape(port))
        return refused(samples, reason) >= count

    for _ in range(3000):
        if await poll():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{reason} never reached {count}")


@needs_prometheus
async def test_head_openmetrics_and_other_methods():
    server = Server(metrics_path="/internal/metrics")
    server.route("/chat", Room())
    async with server.serve("127.0.0.1", 0) as running:
        port = running.port
        head = await asyncio.to_thread(_raw, port, b"HEAD /internal/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 200")
        assert rest.endswith(b"\r\n\r\n")  # the head alone
        assert b"content-length: 0\r\n" not in rest.lower()
        post = await asyncio.to_thread(_get, port, "/internal/metrics", "POST")
        assert post.status == 405
        om = await asyncio.to_thread(
            _get, port, "/internal/metrics", "GET", "Accept: application/openmetrics-text; version=1.0.0\r\n"
        )
        assert om.status == 200
        assert om.header("content-type").startswith("application/openmetrics-text")
        assert om.body.endswith(b"# EOF\n")
        # Without static files: 426 for a websocket route, 404 elsewhere.
        assert (await asyncio.to_thread(_get, port, "/chat")).status == 426
        assert (await asyncio.to_thread(_get, port, "/metrics")).status == 404
        # The websocket route still serves.
        async with connect(f"ws://127.0.0.1:{port}/chat"):
            await until(lambda: running.stats()["rooms_open"] == 1, what="the member's room")


@needs_prometheus
async def test_metrics_beside_static_files(tmp_path):
    (tmp_path / "index.html").write_text("<p>hello</p>")
    server = Server(metrics_path="/metrics")
    server.static("/", tmp_path)
    server.route("/chat", Room())
    async with server.serve("127.0.0.1", 0) as running:
        port = running.port
        assert "roomcast_connections" in {name for name, _ in await scrape(port)}
        page = await asyncio.to_thread(_get, port, "/index.html")
        assert page.status == 200 and page.body == b"<p>hello</p>"
        assert (await asyncio.to_thread(_get, port, "/chat")).status == 426


@needs_prometheus
async def test_two_servers_in_one_process_keep_their_own_counts():
    one, two = Server(metrics_path="/metrics"), Server(metrics_path="/metrics")
    one.route("/chat", Room())
    two.route("/chat", Room())
    async with one.serve("127.0.0.1", 0) as a, two.serve("127.0.0.1", 0) as b:
        async with connect(f"ws://127.0.0.1:{a.port}/chat"), connect(f"ws://127.0.0.1:{a.port}/chat"):
            await until(lambda: a.stats()["connections"] == 2, what="the clients")
            assert value(await scrape(a.port), "roomcast_connections") == 3  # and the scrape's
            assert value(await scrape(b.port), "roomcast_connections") == 1


@needs_prometheus
async def test_an_app_refusing_in_on_connect_counts_as_rejected_by_app():
    app = App(metrics_path="/metrics", serve_client=False)

    @app.on_connect
    def refuse(ws):
        return False

    async with app.serve("127.0.0.1", 0) as running:
        before = refused(await scrape(running.port), "rejected_by_app")
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{running.port}/"):
                pass
        assert info.value.response.status_code == 403
        await until_refused(running.port, "rejected_by_app", before + 1)


@needs_prometheus
async def test_over_tls_the_scrape_and_the_handshakes_are_counted(tls_certs):
    server = Server(metrics_path="/metrics", ssl_certfile=tls_certs.server, ssl_keyfile=tls_certs.server_key)
    server.route("/chat", Room())
    ctx = ssl.create_default_context(cafile=tls_certs.ca)

    def get() -> dict:
        with urllib.request.urlopen(f"https://127.0.0.1:{running.port}/metrics", context=ctx) as response:
            return _parse(response.read().decode())

    async with server.serve("127.0.0.1", 0) as running:
        first = await asyncio.to_thread(get)
        async with connect(f"wss://127.0.0.1:{running.port}/chat", ssl=ctx):
            second = await asyncio.to_thread(get)
        assert value(second, "roomcast_tls_handshakes_total") == value(first, "roomcast_tls_handshakes_total") + 2
        assert value(second, "roomcast_sent_bytes_total") > value(first, "roomcast_sent_bytes_total")
        with pytest.raises((OSError, EOFError, wsraw.ProtocolError)):  # plain HTTP on a TLS port
            await asyncio.to_thread(_get, running.port)
        third = await asyncio.to_thread(get)
        failures = "roomcast_tls_handshake_failures_total"
        assert value(third, failures) == value(second, failures) + 1


# --- workers: prometheus_client's multiprocess mode ------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, sys.argv[1])
    from roomcast import Room, Server

    async def main():
        server = Server(metrics_path="/metrics")
        server.route("/chat", Room())
        async with server.serve("127.0.0.1", 0) as running:
            print(running.port, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@needs_prometheus
async def test_one_scrape_sums_every_worker(tmp_path, monkeypatch):
    from roomcast import _metrics

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(REPO / "python")], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        ports = [int(await asyncio.to_thread(w.stdout.readline)) for w in workers]
        clients = [await connect(f"ws://127.0.0.1:{ports[0]}/chat")]
        clients += [await connect(f"ws://127.0.0.1:{ports[1]}/chat") for _ in range(2)]

        async def total(port: int, name: str) -> float:
            return value(await scrape(port), name)

        # Each worker writes its counts once a second; the scraped one at once.
        want = 3 + 1  # the clients and the scrape itself
        for port in ports:
            await until_value(lambda port=port: total(port, "roomcast_connections"), want)
        accepted = await total(ports[0], "roomcast_connections_accepted_total")
        assert accepted >= 3 + 1

        # A worker dies: its gauges stay until the supervisor says so, its
        # counters stay for good.
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        _metrics.worker_exited(workers[1].pid)
        await until_value(lambda: total(ports[0], "roomcast_connections"), 1 + 1)
        assert await total(ports[0], "roomcast_connections_accepted_total") >= accepted
        for client in clients:
            await client.close()
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


async def until_value(read, want: float) -> None:
    got = None
    for _ in range(600):
        got = await read()
        if got == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"wanted {want}, last scrape said {got}")
