"""The basic example of the websocket_rooms README, on roomcast.

Only the imports and the endpoint decorator differ from the README (plus the
server start at the bottom). Run: python examples/websocket_rooms_basic.py
[PORT] (or PORT in the environment; default 8000), then connect to
ws://127.0.0.1:PORT/chat and send JSON.
"""

import logging
import os
import sys
from typing import Any

from roomcast import Room, Server
from roomcast import ServerWebSocket as WebSocket

server = Server()

chat_room = Room()


@chat_room.on_receive("json")
async def on_receive(room: Room, websocket: WebSocket, message: Any) -> None:
    await room.push_json(message)


@chat_room.on_connection
async def on_chatroom_connection(room: Room, websocket: WebSocket) -> None:
    logging.info(f"{websocket.client.host} joined the chat room")


@server.websocket("/chat")
async def connect_websocket(websocket: WebSocket):
    await chat_room.connect(websocket)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    server.run(host="127.0.0.1", port=port)
