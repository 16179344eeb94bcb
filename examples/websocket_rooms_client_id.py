"""The advanced example of the websocket_rooms README, on roomcast.

Only the imports and the endpoint decorator differ from the README (plus the
server start at the bottom). ``client_id`` reaches the endpoint converted by
its annotation, and reaches ``on_chatroom_connection`` by name from the
websocket's path parameters. Run: python examples/websocket_rooms_client_id.py
[PORT], then connect to ws://127.0.0.1:PORT/chat/42 and send JSON.
"""

import logging
import os
import sys
from typing import Any

from roomcast import BaseRoom, Room, Server
from roomcast import ServerWebSocket as WebSocket

server = Server()


class RoomWithClientId(Room):
    def __init__(self, base_room: BaseRoom | None = None) -> None:
        super().__init__(base_room)
        self._id_to_ws = {}

    async def connect(self, websocket: WebSocket, client_id: int) -> None:
        self._id_to_ws[websocket] = client_id
        await super().connect(websocket)

    def get_client_id(self, websocket: WebSocket) -> int:
        return self._id_to_ws.get(websocket)


chat_room = RoomWithClientId()


@chat_room.on_receive("json")
async def on_chatroom_receive(room: RoomWithClientId, websocket: WebSocket, message: Any) -> None:
    await room.push_json(message)


@chat_room.on_connection
async def on_chatroom_connection(room: RoomWithClientId, websocket: WebSocket, client_id: int) -> None:
    logging.info(f"{client_id} joined the chat room")


@server.websocket("/chat/{client_id}")
async def connect_websocket(websocket: WebSocket, client_id: int):
    await chat_room.connect(websocket, client_id)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    server.run(host="127.0.0.1", port=port)
