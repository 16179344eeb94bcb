"""The fan-out benchmark's ``websocket-rooms`` peer: the chat room of that
library's README on FastAPI, served by uvicorn. Every text message received
on /bench is pushed to the room, and the room's publisher task sends it to
every member, the sender included, awaiting each send in turn.

    python websocket_rooms_chat.py PORT

Prints ``listening on ws://127.0.0.1:PORT/bench`` on stdout once uvicorn
accepts connections; stops on SIGINT or SIGTERM (uvicorn's own handlers).
uvicorn runs its ``websockets-sansio`` protocol implementation (the one
its ``ws="auto"`` is to move to), with per-message compression (on by
default in uvicorn) turned off, and logs only warnings. With its older
``websockets`` implementation the 10,000-client run fails: the server
closes every connection with code 1011 while messages wait tens of seconds
in the room's queue (the same run passes with its keepalive pings off).

The library is used as it is, known faults included: it ignores an empty
message, and it cancels its publisher task whenever the room empties, which
loses any messages still queued for sending.
"""

import asyncio
import sys

import uvicorn
from _limits import raise_open_files_limit  # beside this script
from fastapi import FastAPI, WebSocket
from websocket_rooms import Room

app = FastAPI()
room = Room()


@room.on_receive("text")
async def on_receive(room: Room, websocket: WebSocket, message: str) -> None:
    await room.push_text(message)


@app.websocket("/bench")
async def connect_websocket(websocket: WebSocket):
    await room.connect(websocket)


async def main(port):
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        backlog=1024,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    # uvicorn has no readiness callback; it sets `started` once it listens.
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.02)
    print(f"listening on ws://127.0.0.1:{port}/bench", flush=True)
    await serving


if __name__ == "__main__":
    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1])))
