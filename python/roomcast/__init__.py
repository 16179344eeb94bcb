"""roomcast: WebSocket rooms in Python, with a C core that does the sockets,
the protocol and the fan-out of one message to every member of a room.

    from roomcast import Room, Server

    chat = Room()

    @chat.on_receive("json")
    async def on_receive(room, websocket, message):
        await room.push_json(message)

    server = Server()
    server.route("/chat", chat)
    server.run(host="127.0.0.1", port=8000)
"""

from .app import App, Hooks, Socket
from .backplane import BackplaneError
from .room import BaseRoom, Room
from .server import Running, Server
from .websocket import WebSocket, WebSocketClosed, WebSocketDisconnect, WebSocketState

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackplaneError",
    "BaseRoom",
    "Hooks",
    "Socket",
    "Room",
    "Running",
    "Server",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketState",
    "__version__",
]
