"""``Room.connect`` with Starlette (FastAPI) websockets under a real uvicorn,
and ``websockets`` clients: a ``websocket_rooms`` application that changes
only its import."""

import asyncio
import json
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from roomcast import Room, Server
from support.polling import until
from support.uvicornapp import Uvicorn, chat_app

T = 30


async def recv(ws, timeout=T):
    return await asyncio.wait_for(ws.recv(), timeout)


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
                # b's next message is one pushed after that one: nothing
                # came in between (frames to one member keep their order).
                await room.push_json({"after": "others"})
                assert json.loads(await recv(a)) == {"after": "others"}
                assert json.loads(await recv(b)) == {"after": "others"}
                await b.send("not json")
                await asyncio.wait_for(b.wait_closed(), T)
                assert b.close_code == 1007
            await until(lambda: len(room) == 1, what="b to leave the room")
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
        async with (
            connect(f"ws://127.0.0.1:{uv.port}/chat/1") as on_uvicorn,
            connect(f"ws://127.0.0.1:{rc.port}/chat/2") as on_roomcast,
        ):
            await until(lambda: len(room) == 2, what="both members to join")
            await on_uvicorn.send("from uvicorn")
            await on_roomcast.send("from roomcast")
            for ws in (on_uvicorn, on_roomcast):
                assert sorted([await recv(ws), await recv(ws)]) == ["from roomcast", "from uvicorn"]
            await on_uvicorn.send(b"bytes are ignored without a bytes handler")
            await on_uvicorn.send("still here")
            assert await recv(on_roomcast) == "still here"


# Bytes of kernel buffer on each side of the slow test's connections, set
# before listen()/connect() so that the kernel does not grow them: what a
# client does not read then backs up into uvicorn, and from there into the
# room's queue, after a few hundred KiB instead of several MiB.
SMALL_BUFFER = 64 * 1024


async def test_a_starlette_member_that_does_not_read_is_closed_with_1008_the_others_go_on(monkeypatch):
    import roomcast.room

    # A bound the room does not have by default: a room that ignored the
    # constant would let the slow member hold 1 MiB.
    limit = 256 * 1024
    assert limit < roomcast.room.ASGI_QUEUE_BYTES
    monkeypatch.setattr(roomcast.room, "ASGI_QUEUE_BYTES", limit)
    pushes = 200  # of 16 KiB: 3.2 MiB, about five times what the slow
    #               member's buffers (2 x 128 KiB in the kernel, uvicorn's
    #               64 KiB) and the bound hold together
    window = 8  # the fast member is never more than this many pushes behind
    room = Room()
    async with Uvicorn(chat_app(room), sndbuf=SMALL_BUFFER) as server:
        base = f"ws://127.0.0.1:{server.port}/chat"
        slow_sock = socket.socket()
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        slow_sock.connect(("127.0.0.1", server.port))
        async with (
            connect(f"{base}/1", sock=slow_sock, max_queue=1) as slow,
            connect(f"{base}/2", max_size=None) as fast,
        ):
            await until(lambda: len(room) == 2, what="both members to join")
            slow_member = next(m for ws, m in room._asgi.items() if str(ws.path_params["client_id"]) == "1")
            chunk = "x" * 16384
            received = []

            async def read_all():
                while len(received) < pushes:
                    received.append(await recv(fast))

            reader = asyncio.create_task(read_all())
            most = 0
            for k in range(pushes):
                # Paced by the fast member's progress, not by a clock: its
                # own queue stays below window x 16 KiB, far under the bound.
                await until(lambda: len(received) >= k - window, what=f"the fast member to read {k - window}")
                await room.push_text(f"{k:03d}{chunk}")
                most = max(most, slow_member._queued)
            await asyncio.wait_for(reader, T)
            assert [m[:3] for m in received] == [f"{k:03d}" for k in range(pushes)]
            assert most <= limit  # the bound in force is the one set above
            # The slow one, reading at last, finds the messages it was sent
            # in order, then the close: 1008, not a dropped connection (1006)
            # and not every message.
            got = []
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(await recv(slow))
            assert [m[:3] for m in got] == [f"{k:03d}" for k in range(len(got))]
            assert len(got) < pushes
            assert slow.close_code == 1008
            assert slow.close_reason == "message queue full (client too slow)"
            await until(lambda: len(room) == 1, what="the slow member to leave the room")
            await room.push_text("end")
            assert await recv(fast) == "end"
