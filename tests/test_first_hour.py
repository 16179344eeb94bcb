"""What a newcomer meets in the first hour: the mistakes everyone makes once
get a message that says the fix, `server.run()` says where it listens
without any logging set up, and connections print as small numbers."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import websockets

import roomcast
from roomcast import App, Room, Server

REPO = Path(__file__).resolve().parents[1]


def test_a_bare_on_receive_says_to_add_the_mode():
    room = Room()
    with pytest.raises(TypeError, match=r'@room.on_receive\("text"\)'):

        @room.on_receive
        async def on_receive(room, websocket, message):
            pass


@pytest.mark.parametrize("hook", ["on_connect", "on_disconnect"])
def test_a_bare_hook_says_to_add_the_mode(hook):
    room = Room()
    with pytest.raises(TypeError, match=rf'@room.{hook}\("after"\)'):
        getattr(room, hook)(lambda room, websocket: None)


def test_a_mode_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match="not 'JSON'"):
        Room().on_receive("JSON")


def test_bare_app_on_and_server_websocket_say_to_add_the_name():
    with pytest.raises(TypeError, match=r'@app.on\("message"\)'):

        @App().on
        def handler(ws):
            pass

    with pytest.raises(TypeError, match=r'@server.websocket\("/chat"\)'):

        @Server().websocket
        async def endpoint(websocket):
            pass


def test_route_needs_a_room():
    server = Server()
    with pytest.raises(TypeError, match="takes a Room, not str 'notaroom'"):
        server.route("/x", "notaroom")
    with pytest.raises(TypeError, match=r"server.route\('/x', Room\(\)\)"):
        server.route("/x", Room)
    with pytest.raises(TypeError, match="the App is a server itself"):
        server.route("/x", App())


@pytest.mark.parametrize(
    "url, says",
    [
        ("localhost:8000/chat", "looks like ws://host:port/path"),
        ("ws://[::1/chat", "not a URL"),
        ("http://127.0.0.1:8000/", "must be ws:// or wss://"),
    ],
)
def test_an_unparseable_client_url_is_named(url, says):
    with pytest.raises(ValueError) as info:
        roomcast.WebSocket(url)
    assert repr(url) in str(info.value) and says in str(info.value)


def test_an_unparseable_backplane_url_is_named():
    with pytest.raises(ValueError, match=r"cannot be parsed.*'redis://\[::1'"):
        Server(backplane="redis://[::1")


async def test_connections_print_as_small_numbers():
    seen = []
    server = Server()

    @server.websocket("/n")
    async def endpoint(websocket):
        seen.append(repr(websocket))
        await websocket.accept()
        await websocket.send_text("ok")
        await websocket.receive_text()

    async with server.serve("127.0.0.1", 0) as running:
        async with websockets.connect(f"{running.url}n") as a:
            await a.recv()
            async with websockets.connect(f"{running.url}n") as b:
                await b.recv()
    assert [r.split()[1] for r in seen] == ["#1", "#2"], seen


def _run_quietly(program, *, env_extra=None):
    """Runs ``program`` (which calls server.run()) until it says it
    listens, stops it with SIGINT and returns its stderr."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO / "python")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(program)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, first + err, out


def test_run_says_where_it_listens_without_any_logging_set_up():
    code, err, out = _run_quietly(
        """
        from roomcast import Room, Server
        server = Server()
        server.route("/chat", Room())
        server.run(host="127.0.0.1", port=0)
        """
    )
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith("roomcast: listening on ws://127.0.0.1:"), err
    assert lines[0].endswith("/ (Ctrl-C to stop)"), err
    assert "roomcast: shutting down" in lines, err


def test_run_logs_instead_when_the_program_configured_logging():
    code, err, _ = _run_quietly(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(message)s")
        from roomcast import Server
        Server().run(host="127.0.0.1", port=0)
        """
    )
    assert code == 0, err
    assert err.splitlines()[0].startswith("LOG roomcast listening on ws://127.0.0.1:"), err
    assert "roomcast: listening" not in err  # said once, through logging


def test_ports_are_still_checked_before_anything_prints():
    with pytest.raises(ValueError, match="port"):
        asyncio.run(Server().serve("127.0.0.1", 70000).__aenter__())
