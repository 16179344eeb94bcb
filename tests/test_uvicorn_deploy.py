"""Deployments of an ASGI app whose websockets roomcast's core serves, run
as their users run them, from the command line:

* gunicorn with roomcast's worker (``-k roomcast.gunicorn.Worker``): two
  worker processes on one port, each handing its websocket connections to
  its own roomcast core, share a named room through a real
  ``redis-server``; a SIGTERM closes every member with 1001 and gunicorn
  exits cleanly;
* ``uvicorn --reload``: a change to the app's module restarts the worker,
  whose members are closed with 1001; the new worker serves at once;
* ``uvicorn --proxy-headers --root-path``: the scope the app sees says the
  client the proxy named and the root path, as uvicorn's own protocols do.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import websockets

from support.polling import until
from support.redisproc import free_port

ROOT = Path(__file__).resolve().parent.parent
T = 30


APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI, WebSocket

    import roomcast.uvicorn
    from roomcast import Room

    roomcast.uvicorn.configure(backplane=os.environ["REDIS_URL"])
    app = FastAPI()
    room = Room(name="shared")


    @room.on_connect("after")
    async def joined(room, websocket):
        await websocket.send_text(f"pid:{os.getpid()}")


    @room.on_receive("text")
    async def said(room, websocket, message):
        await room.push_text(message)


    @app.websocket("/room")
    async def endpoint(websocket: WebSocket):
        await room.connect(websocket)
    """
)


async def test_gunicorn_two_workers_share_a_named_room_and_sigterm_closes_members_with_1001(tmp_path, redis_server):
    pytest.importorskip("gunicorn")
    (tmp_path / "shared_app.py").write_text(APP)
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, PYTHONPATH=f"{ROOT / 'python'}:{tmp_path}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "shared_app:app", "-k", "roomcast.gunicorn.Worker", "-w", "2"]
        + ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "20", "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
    )
    clients = []
    try:
        pids: dict[str, list] = {}

        async def one():
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/room", open_timeout=2)
            except OSError:
                return  # gunicorn is not listening yet
            clients.append(ws)
            pids.setdefault(await asyncio.wait_for(ws.recv(), T), []).append(ws)

        async def both_workers_have_members():
            while len(pids) < 2:
                assert proc.poll() is None, "gunicorn exited"
                assert len(clients) < 200, "every connection went to one worker"
                await one()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(both_workers_have_members(), 60)
        sender = next(iter(pids.values()))[0]
        await sender.send("across the workers")
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), T) == "across the workers"

        proc.send_signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), T)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await until(lambda: proc.poll() is not None, T, "gunicorn to exit")
        assert proc.returncode == 0
    finally:
        for ws in clients:
            await ws.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


ECHO_APP = textwrap.dedent(
    """
    import os

    from fastapi import FastAPI, WebSocket

    app = FastAPI()
    VERSION = "one"


    @app.websocket("/echo")
    async def echo(websocket: WebSocket):
        await websocket.accept()
        scope = websocket.scope
        client = websocket.client
        await websocket.send_json(
            {
                "version": VERSION,
                "pid": os.getpid(),
                "client": [client.host, client.port] if client else None,
                "scheme": scope["scheme"],
                "root_path": scope["root_path"],
                "path": scope["path"],
            }
        )
        async for message in websocket.iter_text():
            await websocket.send_text(message)
    """
)


def uvicorn_cli(tmp_path, port, *flags):
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(port)]
        + ["--ws", "roomcast.uvicorn:WebSocketProtocol", "--log-level", "warning", *flags],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=f"{ROOT / 'python'}:{tmp_path}"),
    )


async def connect_when_up(url, proc, headers=None):
    deadline = asyncio.get_running_loop().time() + T
    while True:
        assert proc.poll() is None, "uvicorn exited"
        try:
            return await websockets.connect(url, open_timeout=2, additional_headers=headers)
        except (OSError, websockets.InvalidHandshake):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_uvicorn_reload_closes_members_with_1001_and_the_new_worker_serves(tmp_path):
    module = tmp_path / "echo_app.py"
    module.write_text(ECHO_APP)
    port = free_port()
    proc = uvicorn_cli(tmp_path, port, "--reload", "--reload-dir", str(tmp_path))
    try:
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/echo", proc)
        first = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert first["version"] == "one"
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), T) == "before"

        module.write_text(ECHO_APP.replace('VERSION = "one"', 'VERSION = "two"'))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), T)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

        async def reloaded():
            while True:
                ws = await connect_when_up(f"ws://127.0.0.1:{port}/echo", proc)
                hello = json.loads(await asyncio.wait_for(ws.recv(), T))
                if hello["version"] == "two":
                    return ws, hello
                await ws.close()  # the old worker, still finishing
                await asyncio.sleep(0.1)

        ws, hello = await asyncio.wait_for(reloaded(), T)
        assert hello["pid"] != first["pid"]
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), T) == "after"
        await ws.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(T)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_uvicorn_proxy_headers_and_root_path_reach_the_scope(tmp_path):
    (tmp_path / "echo_app.py").write_text(ECHO_APP)
    port = free_port()
    proc = uvicorn_cli(tmp_path, port, "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--root-path", "/api")
    try:
        headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        ws = await connect_when_up(f"ws://127.0.0.1:{port}/echo", proc, headers)
        hello = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert hello["client"][0] == "203.0.113.7"
        assert hello["scheme"] == "wss"
        assert hello["root_path"] == "/api"
        assert hello["path"] == "/api/echo"
        await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(T)
    # uvicorn re-raises the signal once it has shut down gracefully.
    assert proc.returncode in (0, -signal.SIGTERM)
