"""gunicorn with roomcast's worker (``-k roomcast.gunicorn.Worker``): two
worker processes on one port, each handing its websocket connections to its
own roomcast core, share a named room through a real ``redis-server``; a
SIGTERM closes every member with 1001 and gunicorn exits cleanly.
"""

import asyncio
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

pytest.importorskip("gunicorn")

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


async def test_two_workers_share_a_named_room_and_sigterm_closes_members_with_1001(tmp_path, redis_server):
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
