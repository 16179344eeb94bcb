"""``Room.connect`` with Starlette (FastAPI) websockets under a real uvicorn,
and ``websockets`` clients: a ``websocket_rooms`` application that changes
only its import."""

import asyncio
import json
import socket

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi import WebSocket as StarletteWebSocket
from websockets.asyncio.client import connect

from roomcast import Room, Server

T = 30


async def recv(ws, timeout=T):
    return await asyncio.wait_for(ws.recv(), timeout)


class Uvicorn:
    """A FastAPI app served by uvicorn on a free port, in this loop."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                await self.task
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await asyncio.wait_for(self.task, T)
        self.sock.close()


def chat_app(room):
    app = FastAPI()

    @app.websocket("/chat/{client_id}")
    async def endpoint(websocket: StarletteWebSocket, client_id: int):
        await room.connect(websocket)

    return app


async def test_a_websocket_rooms_app_on_fastapi_changes_only_its_import():
    room = Room()
    seen = []

    @room.on_connect("after")
    async def joined(room, websocket, client_id: int):
        seen.append(("joined", type(websocket).__name__, client_id))
        await room.push_json({"joined": client_id})

    @room.on_receive("json")
    async def said(room, websocket, message):
        if message.get("others"):
            await room.push_json(message, exclude=websocket)
        else:
            await room.push_json(message)

    @room.on_disconnect("after")
    async def left(room, websocket):
        seen.append(("left", len(room)))

    async with Uvicorn(chat_app(room)) as server:
        base = f"ws://127.0.0.1:{server.port}/chat"
        async with connect(f"{base}/1") as a:
            assert json.loads(await recv(a)) == {"joined": 1}
            async with connect(f"{base}/2") as b:
                assert json.loads(await recv(a)) == {"joined": 2}
                assert json.loads(await recv(b)) == {"joined": 2}
                for k in range(100):
                    await a.send(json.dumps({"k": k}))
                for ws in (a, b):
                    assert [json.loads(await recv(ws)) for _ in range(100)] == [{"k": k} for k in range(100)]
                await b.send(json.dumps({"others": True}))
                assert json.loads(await recv(a)) == {"others": True}
                with pytest.raises(asyncio.TimeoutError):
                    await recv(b, timeout=0.5)
                await b.send("not json")
                await asyncio.wait_for(b.wait_closed(), T)
                assert b.close_code == 1007
            await asyncio.sleep(0.2)
            assert len(room) == 1
    assert seen[:2] == [("joined", "WebSocket", 1), ("joined", "WebSocket", 2)]
    assert ("left", 1) in seen


async def test_one_room_with_members_on_roomcast_and_on_uvicorn():
    room = Room()

    @room.on_receive("text")
    async def said(room, websocket, message):
        await room.push_text(message)

    server = Server()
    server.route("/chat/{client_id}", room)
    async with Uvicorn(chat_app(room)) as uv, server.serve("127.0.0.1", 0) as rc:
        async with connect(f"ws://127.0.0.1:{uv.port}/chat/1") as on_uvicorn, \
                connect(f"ws://127.0.0.1:{rc.port}/chat/2") as on_roomcast:
            while len(room) < 2:
                await asyncio.sleep(0.02)
            await on_uvicorn.send("from uvicorn")
            await on_roomcast.send("from roomcast")
            for ws in (on_uvicorn, on_roomcast):
                assert sorted([await recv(ws), await recv(ws)]) == ["from roomcast", "from uvicorn"]
            await on_uvicorn.send(b"bytes are ignored without a bytes handler")
            await on_uvicorn.send("still here")
            assert await recv(on_roomcast) == "still here"


async def test_a_starlette_member_that_does_not_read_is_closed_the_others_go_on(monkeypatch):
    import roomcast.room

    limit = 1024 * 1024
    monkeypatch.setattr(roomcast.room, "ASGI_QUEUE_BYTES", limit)
    room = Room()
    async with Uvicorn(chat_app(room)) as server:
        base = f"ws://127.0.0.1:{server.port}/chat"
        async with connect(f"{base}/1", max_queue=1) as slow, connect(f"{base}/2", max_size=None) as fast:
            while len(room) < 2:
                await asyncio.sleep(0.02)
            chunk = "x" * 16384
            received = []

            async def read_all():
                while len(received) < 600:
                    received.append(await recv(fast))

            reader = asyncio.create_task(read_all())
            slow_member = next(m for ws, m in room._asgi.items() if str(ws.path_params["client_id"]) == "1")
            most = 0
            for k in range(600):
                await room.push_text(f"{k:03d}{chunk}")
                await asyncio.sleep(0.002)
                most = max(most, slow_member._queued)
            await asyncio.wait_for(reader, T)
            assert [m[:3] for m in received] == [f"{k:03d}" for k in range(600)]
            # The slow one never holds more than the bound: closed (1008)
            # when its queue would pass it, or still within it.
            assert most <= limit + len(chunk) + 3
            if len(room) == 1:
                with pytest.raises(Exception):
                    while True:
                        await recv(slow)
                assert slow.close_code in (1008, 1006)
