"""roomcast.compat.nwebsocket: nwebsocket's WebSocket on roomcast's client.
Its README examples run as programs, unchanged but for the import: over
wss:// against the websockets library with a certificate made here (trusted
through SSL_CERT_FILE, as a system root would be), and over ws:// against
roomcast's echo example."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roomcast.compat import nwebsocket
from support.clientpeers import WebsocketsServer, make_certificate, server_context, wait_until
from support.wsraw import ServerThread, echo_server

REPO = Path(__file__).resolve().parent.parent


async def echo(ws):
    async for message in ws:
        await ws.send(message)


def run_example(script, url, *, fails=False, **env):
    environ = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    # Appended: a PYTHONPATH already set (make sanitize) names the build.
    paths = [environ.get("PYTHONPATH", ""), str(REPO / "python")]
    environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), url], env=environ, capture_output=True, text=True, timeout=120
    )
    assert (proc.returncode != 0) == fails, proc.stdout + proc.stderr
    if fails:  # the example's send() after the failure raises
        assert "roomcast.client.ConnectionClosed: connection closed: 1006" in proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def tls_echo(tmp_path_factory):
    cert, key = make_certificate(str(tmp_path_factory.mktemp("certs")), "local", "DNS:localhost,IP:127.0.0.1")
    with WebsocketsServer(echo, ssl=server_context(cert, key)) as server:
        yield f"wss://localhost:{server.port}/raw", cert


def test_readme_minimal_example_over_wss(tls_echo):
    url, cert = tls_echo
    lines = run_example("nwebsocket_minimal.py", url, SSL_CERT_FILE=cert)
    assert lines == ["Opened connection", "text", "Closed connection"]


def test_readme_class_example_over_wss(tls_echo):
    url, cert = tls_echo
    lines = run_example("nwebsocket_class.py", url, SSL_CERT_FILE=cert)
    assert lines == ["Opened connection", "['text']", "Closed connection"]


def test_readme_examples_against_the_roomcast_echo_example():
    with ServerThread(echo_server()) as srv:
        url = f"ws://127.0.0.1:{srv.port}/echo"
        assert run_example("nwebsocket_minimal.py", url) == ["Opened connection", "text", "Closed connection"]
        assert run_example("nwebsocket_class.py", url) == ["Opened connection", "['text']", "Closed connection"]


def test_without_the_certificate_the_wss_example_reports_the_error(tls_echo):
    url, _ = tls_echo
    lines = run_example("nwebsocket_minimal.py", url, fails=True, SSL_CERT_FILE=os.devnull)
    assert lines == ["Connection error TLS: certificate verify failed: self-signed certificate", "Closed connection"]


def test_the_nwebsocket_names_and_semantics():
    with ServerThread(echo_server()) as srv:
        url = f"ws://127.0.0.1:{srv.port}/echo"
        ws = nwebsocket.WebSocket(url)
        assert ws.options == {"maxPayload": 1024 * 1024}
        assert (ws.CONNECTING, ws.OPEN, ws.CLOSING, ws.CLOSED) == (0, 1, 2, 3)
        with pytest.raises(ConnectionError):
            ws.send("too early")
        got, closed = [], []
        ws.onmessage = got.append
        ws.onclose = lambda: closed.append(True)  # no arguments, as in nwebsocket
        wait_until(lambda: ws.readyState)
        assert str(ws) == repr(ws) == f"<WebSocket url={url} readyState=1>"
        ws.send(b"\x01\x02")
        wait_until(lambda: got)
        assert got == [b"\x01\x02"]
        ws.close()  # blocks until acknowledged
        assert ws.readyState == ws.CLOSED and closed == [True] and ws.close_code == 1000
        with pytest.raises(ConnectionError):
            ws.send("too late")
        # maxPayload: a larger message from the server closes with 1009.
        small = nwebsocket.WebSocket(url, {"maxPayload": 100})
        wait_until(lambda: small.readyState)
        small.send("x" * 101)
        wait_until(lambda: small.readyState == small.CLOSED)
        assert small.close_code == 1009
        with pytest.raises(TypeError):
            nwebsocket.WebSocket(url, {"maxPayload": 10, "no_such_option": 1})


def test_a_refused_connection_calls_onerror_then_onclose():
    errors, closes = [], []

    class Logic(nwebsocket.WebSocket):
        def onerror(self, e):
            errors.append(e.reason)

        def onclose(self):
            closes.append(self.readyState)

    ws = Logic("ws://127.0.0.1:1/")
    wait_until(lambda: closes)
    assert errors == ["connection refused"] and closes == [ws.CLOSED]
