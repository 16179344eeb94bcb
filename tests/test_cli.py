"""The ``roomcast`` command (roomcast.cli), run as its users run it:
``python -m roomcast module:attr ...`` in a subprocess, on real sockets,
with a real ``redis-server`` for ``--workers``; clients are the
``websockets`` library. The app module is written into the test's
directory and found there as ``uvicorn`` would find it (the current
directory on ``sys.path``)."""

import asyncio
import inspect
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets

from roomcast import Server, cli
from support.redisproc import free_port

REPO = Path(__file__).resolve().parents[1]
T = 60.0  # seconds: a loaded 2-core machine

APP = """
import os
from roomcast import App, Room, Server

app = App()


@app.on("pid")
async def pid(ws):
    await ws.emit("pid", os.getpid())


@app.on("join")
async def join(ws):
    await ws.join(ws.payload)


@app.on("say")
async def say(ws):
    await ws.broadcast("said", ws.payload["text"], to=[ws.payload["room"]])


chat = Room(name="chat", relay="all")
server = Server(max_message_size=1000)
server.route("/chat", chat)


class Holder:
    server = server


def make():
    return server


not_a_server = 42
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "cliapp.py").write_text(APP)
    return tmp_path


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [env.get("PYTHONPATH", ""), str(REPO / "python")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


class Command:
    """``python -m roomcast *args`` in ``cwd``; its stderr lines are
    collected by a thread."""

    def __init__(self, cwd, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "roomcast", *args],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self._new = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, pattern, count=1):
        """The matches of ``pattern`` once there are ``count`` of them."""
        deadline = time.monotonic() + T
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines) if m]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            line = None if left <= 0 else self._new.get(timeout=left)
            if line is None:
                raise AssertionError(f"no {count} x {pattern!r} in:\n" + "".join(self.lines))
            self.lines.append(line)

    def finish(self):
        """Waits for the exit; the exit code."""
        code = self.proc.wait(T)
        while True:
            line = self._new.get(timeout=T)
            if line is None:
                return code
            self.lines.append(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def commands():
    started = []

    def start(cwd, *args):
        command = Command(cwd, *args)
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill()


def run_once(cwd, *args):
    """A command expected to end by itself: (exit code, stderr lines)."""
    done = subprocess.run(
        [sys.executable, "-m", "roomcast", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=T
    )
    return done.returncode, done.stdout, done.stderr.splitlines()


async def ask_pid(url):
    """A client of the App: its worker's pid, and the open connection."""
    ws = await websockets.connect(url, open_timeout=T)
    await ws.send(json.dumps({"event": "pid"}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        if message["event"] == "pid":
            return message["payload"], ws


async def join(ws, room):
    await ws.send(json.dumps({"event": "join", "payload": room}))
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), T))
        if message == {"event": "roomcast:joined", "payload": room}:
            return


async def heard(sender, receiver, room):
    """Says something in ``room`` until ``receiver`` hears it (a worker's
    subscription to the room's channel may come a moment after its join)."""
    for n in range(int(T * 5)):
        await sender.send(json.dumps({"event": "say", "payload": {"room": room, "text": f"hello {n}"}}))
        try:
            message = json.loads(await asyncio.wait_for(receiver.recv(), 0.2))
        except asyncio.TimeoutError:
            continue
        assert message["event"] == "said" and message["payload"].startswith("hello ")
        return True
    return False


# -- one process -------------------------------------------------------------


def test_runs_a_server_and_its_room_fans_out(app_dir, commands):
    port = free_port()
    cmd = commands(app_dir, "cliapp:server", "--port", str(port))
    cmd.wait_for(rf"listening on ws://127\.0\.0\.1:{port}/")

    async def scenario():
        url = f"ws://127.0.0.1:{port}/chat"
        async with websockets.connect(url) as a, websockets.connect(url) as b:
            await a.send("hi all")
            assert await asyncio.wait_for(b.recv(), T) == "hi all"
            assert await asyncio.wait_for(a.recv(), T) == "hi all"
            # the object's own option holds: its max_message_size is 1000
            await a.send("x" * 2000)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(a.recv(), T)
            assert closed.value.rcvd.code == 1009

    asyncio.run(scenario())
    cmd.proc.send_signal(signal.SIGINT)
    assert cmd.finish() == 0


def test_command_options_override_the_objects_own(app_dir, commands):
    port = free_port()
    cmd = commands(app_dir, "cliapp:Holder.server", "--port", str(port), "--max-message-size", "3000")
    cmd.wait_for(r"listening on ")

    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as a:
            await a.send("x" * 2000)  # past the object's 1000, within the command's 3000
            assert await asyncio.wait_for(a.recv(), T) == "x" * 2000

    asyncio.run(scenario())
    cmd.proc.send_signal(signal.SIGTERM)
    assert cmd.finish() == 0


def test_factory(app_dir, commands):
    port = free_port()
    cmd = commands(app_dir, "cliapp:make", "--factory", "--port", str(port))
    cmd.wait_for(rf"listening on ws://127\.0\.0\.1:{port}/")
    cmd.proc.send_signal(signal.SIGTERM)
    assert cmd.finish() == 0


def test_help_lists_every_server_option_with_its_default(app_dir):
    code, out, _ = run_once(app_dir, "--help")
    assert code == 0
    params = inspect.signature(Server.__init__).parameters.values()
    options = [p for p in params if p.kind is p.KEYWORD_ONLY]
    assert len(options) > 20
    text = " ".join(out.split())  # argparse wraps lines
    for param in options:
        assert "--" + param.name.replace("_", "-") in text
        assert param.name in cli.ABOUT, f"--help has no line saying what {param.name} does"
    assert "--max-message-size N a larger incoming message closes its connection (1009); default: 1048576" in text
    assert "--slow-consumer {close,drop} a client past max_queue_bytes" in text
    assert "or drop its oldest messages; default: close" in text
    for flag in ("--host", "--port", "--workers", "--backplane", "--log-level"):
        assert flag in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchmodule:app"], "no module named 'nosuchmodule'"),
        (["cliapp:nope"], "module 'cliapp' has no attribute 'nope'"),
        (["cliapp:not_a_server"], "cliapp:not_a_server is an int, not a roomcast.Server or roomcast.App"),
        (["cliapp:make"], "add --factory"),
        (["cliapp:chat"], "a Room is served by a Server"),
        (["cliapp"], "'cliapp' is not module:attribute"),
        (["cliapp:app", "--max-message-size", "-1"], "--max-message-size must be a positive integer, not -1"),
        (["cliapp:app", "--ping-interval", "soon"], "--ping-interval must be a number of seconds"),
        (["cliapp:app", "--slow-consumer", "wait"], "--slow-consumer must be 'close' or 'drop', not 'wait'"),
        (["cliapp:app", "--port", "70000"], "--port must be an integer from 0 to 65535"),
        (["cliapp:app", "--ssl-certfile", "missing.pem"], "missing.pem"),
        (["cliapp:app", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_mistakes_get_one_line_and_exit_2(app_dir, args, message):
    code, _, err = run_once(app_dir, *args)
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("roomcast: error: ") and message in err[0], err


def test_busy_port_is_one_line(app_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_once(app_dir, "cliapp:app", "--port", str(port))
    assert code == 1
    assert err == [f"roomcast: error: cannot listen on 127.0.0.1:{port}: address already in use"]


# -- workers -----------------------------------------------------------------


def test_workers_without_backplane_are_refused(app_dir):
    code, _, err = run_once(app_dir, "cliapp:app", "--workers", "2")
    assert code == 2
    assert len(err) == 1
    assert "--workers 2 needs a backplane" in err[0]
    assert "rooms" in err[0] and "--backplane redis://" in err[0]


def test_workers_on_a_busy_port_stop(app_dir, redis_server):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["cliapp:app", "--port", str(port), "--workers", "2", "--backplane", redis_server.url]
        code, _, err = run_once(app_dir, *args)
    assert code == 1
    assert f"roomcast: error: cannot listen on 127.0.0.1:{port}: address already in use" in err
    assert not any("restarting" in line for line in err)


def test_workers_share_a_port_and_rooms_restart_and_stop(app_dir, redis_server, commands):
    port = free_port()
    cmd = commands(app_dir, "cliapp:app", "--port", str(port), "--workers", "2", "--backplane", redis_server.url)
    listening = cmd.wait_for(r"\[worker (\d) pid (\d+)\] .*listening on http://127\.0\.0\.1:(\d+)/", 2)
    workers = {int(m.group(1)): int(m.group(2)) for m in listening}
    assert sorted(workers) == [1, 2]
    assert {int(m.group(3)) for m in listening} == {port}
    url = f"ws://127.0.0.1:{port}/"

    async def clients_by_pid(n):
        by_pid = {}
        for _ in range(n):
            pid, ws = await ask_pid(url)
            by_pid.setdefault(pid, []).append(ws)
        return by_pid

    async def close_all(by_pid):
        for sockets in by_pid.values():
            for ws in sockets:
                await ws.close()

    async def share_a_room():
        by_pid = await clients_by_pid(24)
        # The kernel spreads connections over both workers.
        assert set(by_pid) == set(workers.values())
        a, b = by_pid[workers[1]][0], by_pid[workers[2]][0]
        await join(a, "lobby")
        await join(b, "lobby")
        assert await heard(a, b, "lobby")
        await close_all(by_pid)

    asyncio.run(share_a_room())

    # kill -9 one worker: it is started again, the other keeps serving.
    os.kill(workers[1], signal.SIGKILL)
    cmd.wait_for(rf"worker 1 \(pid {workers[1]}\) exited with signal SIGKILL; restarting")
    again = cmd.wait_for(r"\[worker 1 pid (\d+)\] .*listening on", 2)[-1]
    new_pid = int(again.group(1))
    assert new_pid != workers[1]

    async def after_restart():
        by_pid = await clients_by_pid(24)
        assert set(by_pid) == {new_pid, workers[2]}
        a, b = by_pid[new_pid][0], by_pid[workers[2]][0]
        await join(a, "lobby")
        await join(b, "lobby")
        assert await heard(b, a, "lobby")
        # SIGTERM to the supervisor: every client sees 1001, it exits 0.
        cmd.proc.send_signal(signal.SIGTERM)
        for sockets in by_pid.values():
            for ws in sockets:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), T)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

    asyncio.run(after_restart())
    assert cmd.finish() == 0
    for pid in (new_pid, workers[2]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- what the command is made of ---------------------------------------------


def test_set_options_checks_as_the_constructor_and_keeps_routes():
    server = Server(max_message_size=1000, ping_interval=None)

    @server.websocket("/x")
    async def endpoint(ws):
        await ws.accept()

    server.set_options(max_message_size=5000)
    assert server._options["max_message_size"] == 5000
    assert server._options["ping_interval"] == 0  # the constructor's own value stays
    assert [route[0].pattern for route in server._routes] == ["/x"]
    with pytest.raises(ValueError, match="max_message_size must be a positive integer, not -1"):
        server.set_options(max_message_size=-1)
    with pytest.raises(TypeError, match="'port' is not a server option"):
        server.set_options(port=1)


def test_reuse_port_lets_two_servers_share_a_port():
    async def scenario():
        first, second = Server(), Server()
        for server, name in ((first, "first"), (second, "second")):

            @server.websocket("/")
            async def endpoint(ws, name=name):
                await ws.accept()
                await ws.send_text(name)

        async with first.serve("127.0.0.1", 0, reuse_port=True) as running:
            async with second.serve("127.0.0.1", running.port, reuse_port=True):
                seen = set()
                for _ in range(40):
                    async with websockets.connect(running.url) as ws:
                        seen.add(await asyncio.wait_for(ws.recv(), T))
                    if len(seen) == 2:
                        break
                assert seen == {"first", "second"}
            # A server without reuse_port cannot join them.
            with pytest.raises(OSError, match="address already in use"):
                async with Server().serve("127.0.0.1", running.port):
                    pass

    asyncio.run(scenario())
