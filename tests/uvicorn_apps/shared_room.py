"""A FastAPI app for tests/test_uvicorn.py, run by ``python -m uvicorn
shared_room:app --ws roomcast.uvicorn:WebSocketProtocol`` (with
``--app-dir tests/uvicorn_apps``).

``/room`` joins the room ``"shared"`` (named on the Redis backplane when
``REDIS_URL`` is set, so that every worker process shares it). A newcomer
first gets ``{"pid": ...}`` (the worker that serves it); a text message
``"count"`` answers ``{"count": N}`` (the members of every worker); any
other text is pushed to the whole room.
"""

import os

from fastapi import FastAPI, WebSocket

import roomcast.uvicorn
from roomcast import Room

if os.environ.get("REDIS_URL"):
    roomcast.uvicorn.configure(backplane=os.environ["REDIS_URL"])

room = Room(name="shared")
app = FastAPI()


@room.on_connect("after")
async def hello(room: Room, websocket: WebSocket) -> None:
    await websocket.send_json({"pid": os.getpid()})


@room.on_receive("text")
async def said(room: Room, websocket: WebSocket, text: str) -> None:
    if text == "count":
        await websocket.send_json({"count": await room.count()})
    else:
        await room.push_text(text)


@app.websocket("/room")
async def endpoint(websocket: WebSocket) -> None:
    await room.connect(websocket)
