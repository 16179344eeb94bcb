"""The chat demo over https:// and wss:// in a real headless Chromium that
trusts the server's certificate the way a user's browser does: through its
certificate store.

``openssl`` makes a test CA and a certificate for 127.0.0.1 signed by it;
``examples/chat.py --certfile --keyfile`` serves with that certificate. The
CA goes, trusted for servers, into an NSS database (``certutil``, Debian's
``libnss3-tools``) under a temporary HOME, ``~/.pki/nssdb``, where Chromium
on Linux reads the user's trusted authorities; no flag tells Chromium to
overlook certificate errors. The page is loaded over https, its
/roomcast.js connects to wss:// by itself, and messages go both ways between
the page and a Python client (``websockets`` verifying against the same CA).
A second test shows that the trust store is what lets the page load: a
certificate from another CA gets Chromium's certificate error page.

Chromium, openssl and certutil are test dependencies (``make deps`` installs
them): as in test_browser_demo.py, a missing one fails the test rather than
skipping it.
"""

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from support.browser import CHAT, POLL, REPO, START, DevTools, T, Tab, headless_chromium, here, shows, stop, tail


def tool(name, package):
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: this test needs it to make and trust the test "
            f"certificates. Install it with `apt-get install {package}` (`make deps` does).",
            pytrace=False,
        )
    return path


def run(*cmd):
    # A sanitizer runtime preloaded for the server (make sanitize) stays out of
    # the tools.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=START)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}"
    return done.stdout


def make_ca(openssl, directory, name):
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    run(
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/O=roomcast-test/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def make_leaf(openssl, directory, name, ca):
    """A server certificate for 127.0.0.1 and localhost signed by ``ca``."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    run(
        openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", f"/O=roomcast-test/CN={name}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    run(
        openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-set_serial", str(int(uuid.uuid4().int >> 65)), "-days", "2", "-sha256",
        "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key


@pytest.fixture
def pki(tmp_path):
    """The trusted test CA, a server certificate it signed, and one signed by
    a CA nobody trusts."""
    openssl = tool("openssl", "openssl")
    directory = tmp_path / "pki"
    directory.mkdir()
    trusted = make_ca(openssl, directory, "roomcast-test-ca")
    untrusted = make_ca(openssl, directory, "roomcast-unknown-ca")
    return {
        "ca": trusted[0],
        "server": make_leaf(openssl, directory, "server", trusted),
        "stranger": make_leaf(openssl, directory, "stranger", untrusted),
    }


@pytest.fixture
def trusting_chromium(tmp_path, pki):
    """A headless Chromium whose HOME holds an NSS database in which the test
    CA is trusted to identify servers; yields its DevTools URL."""
    certutil = tool("certutil", "libnss3-tools")
    home = tmp_path / "home"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    run(certutil, "-N", "-d", f"sql:{db}", "--empty-password")
    run(certutil, "-A", "-d", f"sql:{db}", "-n", "roomcast-test-ca", "-t", "C,,", "-i", str(pki["ca"]))
    listed = run(certutil, "-L", "-d", f"sql:{db}").decode()
    assert re.search(r"roomcast-test-ca\s+C,,", listed), f"the CA is not trusted in the NSS database:\n{listed}"
    with contextlib.ExitStack() as stack:
        # Only Chromium gets the new HOME: the servers keep the user's (and
        # so, say, a --user install of the test's packages).
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOME", str(home))
            url = stack.enter_context(headless_chromium())
        yield url


@pytest.fixture
def https_chat(tmp_path):
    """``chat(cert, key)`` starts ``examples/chat.py --certfile --keyfile`` on
    a free port and returns the page's https URL, from its "listening on"
    line; every one started is stopped at the end."""
    started = []

    def start(cert, key):
        log_path = tmp_path / f"chat-{len(started)}.log"
        env = dict(os.environ)
        # Appended: a PYTHONPATH already set (make sanitize) names the build to use.
        paths = [env.get("PYTHONPATH", ""), str(REPO / "python")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        cmd = [sys.executable, str(CHAT), "--host", "127.0.0.1", "--port", "0"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*cmd, "--certfile", str(cert), "--keyfile", str(key)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        started.append(proc)
        deadline = time.monotonic() + START
        while True:
            log_text = log_path.read_text(errors="replace")
            match = re.search(r"listening on (\w+://127\.0\.0\.1:\d+/)", log_text)
            if match:
                break
            if proc.poll() is not None:
                pytest.fail(f"chat.py exited with {proc.returncode}; its log:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"chat.py logged no 'listening on' in {START} s; its log:\n{tail(log_path)}")
            time.sleep(POLL)
        assert match.group(1).startswith("https://"), f"chat.py with a certificate serves {match.group(1)}"
        return match.group(1)

    yield start
    for proc in started:
        stop(proc)


async def event(ws):
    message = json.loads(await ws.recv())
    return message["event"], message["payload"]


async def test_page_over_https_chats_over_wss(pki, trusting_chromium, https_chat):
    url = https_chat(*pki["server"])
    port = int(url.rsplit(":", 1)[1].strip("/"))
    token = uuid.uuid4().hex[:8]
    from_page = {"room": "lobby", "name": "Ada", "text": f"from the page <i>{token}</i>"}
    to_page = {"room": "lobby", "name": "Grace", "text": f"to the page {token}"}
    client_tls = ssl.create_default_context(cafile=str(pki["ca"]))

    async with connect(trusting_chromium, max_size=None, open_timeout=T, close_timeout=T) as ws:
        devtools = DevTools(ws)
        try:
            tab = await Tab.open(devtools, "A", url)
            state = await tab.wait_for(
                "its socket open, in the lobby", lambda s: s["status"] == "connected" and "lobby" in s["rooms"]
            )
            assert state["url"] == url, f"the tab is at {state['url']}, not {url}"
            seen = await tab.evaluate("[location.protocol, window.isSecureContext, socket.url]")
            assert seen == ["https:", True, f"wss://127.0.0.1:{port}/"], f"protocol, secure, socket URL: {seen}"

            # A second member over wss://, checking the certificate against the CA.
            async with connect(f"wss://127.0.0.1:{port}/", ssl=client_tls, open_timeout=T) as peer:
                await peer.send(json.dumps({"event": "join", "payload": {"room": "lobby"}}))
                assert await event(peer) == ("roomcast:joined", "lobby")
                assert await event(peer) == ("presence", {"room": "lobby", "count": 2})
                await tab.wait_for("'2 here' in the lobby", here("lobby", 2))

                left = await tab.say("lobby", from_page["name"], from_page["text"])
                assert left == "", f"the page did not send (its input still holds {left!r})"
                assert await event(peer) == ("message", from_page)
                await tab.wait_for("its own message back", shows(from_page))

                await peer.send(json.dumps({"event": "say", "payload": to_page}))
                assert await event(peer) == ("message", to_page)
                await tab.wait_for("the Python client's message", shows(to_page))
            await tab.wait_for("'1 here' once the Python client left", here("lobby", 1))
        finally:
            await devtools.close()


async def test_certificate_from_an_untrusted_ca_is_refused(pki, trusting_chromium, https_chat):
    # The control: the same browser, a server whose CA is not in its store.
    url = https_chat(*pki["stranger"])
    async with connect(trusting_chromium, max_size=None, open_timeout=T, close_timeout=T) as ws:
        devtools = DevTools(ws)
        try:
            tab = await Tab.open(devtools, "A", url)
            state = await tab.wait_for("the certificate error page", lambda s: s["url"].startswith("chrome-error://"))
            assert state["status"] is None, f"the chat page loaded from an untrusted server: {state}"
            # The reason, in the page's details: the issuer is unknown. The
            # error page's URL is set before its text is rendered, so the
            # text is polled until it names an error code.
            deadline = asyncio.get_running_loop().time() + T
            text = ""
            while "ERR_" not in text and asyncio.get_running_loop().time() < deadline:
                text = await tab.evaluate("document.body ? document.body.textContent : ''") or ""
                await asyncio.sleep(0.05)
            assert "ERR_CERT_AUTHORITY_INVALID" in text, f"the error page says:\n{text}"
        finally:
            await devtools.close()
