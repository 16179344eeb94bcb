"""roomcast: WebSocket rooms in Python, with a C core that does the sockets,
the protocol and the fan-out of one message to every member of a room, and
clients on the same core (:class:`WebSocket`, synchronous, with the
browser's API; :func:`connect` for asyncio).

    from roomcast import Room, Server

    chat = Room()

    @chat.on_receive("json")
    async def on_receive(room, websocket, message):
        await room.push_json(message)

    server = Server()
    server.route("/chat", chat)
    server.run(host="127.0.0.1", port=8000)
"""

from ._version import __version__
from .app import App, Hooks, RoomLimitError, Socket
from .backplane import BackplaneError
from .client import (
    TLS,
    ClientConnection,
    ConnectionClosed,
    ConnectionFailed,
    InvalidStateError,
    WebSocket,
    connect,
)
from .history import History, Position
from .room import BaseRoom, Room
from .server import Running, Server
from .websocket import ServerWebSocket, WebSocketClosed, WebSocketDisconnect, WebSocketState

__all__ = [
    "App",
    "BackplaneError",
    "BaseRoom",
    "ClientConnection",
    "ConnectionClosed",
    "ConnectionFailed",
    "History",
    "Hooks",
    "InvalidStateError",
    "Position",
    "Socket",
    "Room",
    "RoomLimitError",
    "Running",
    "Server",
    "ServerWebSocket",
    "TLS",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketState",
    "connect",
    "__version__",
]
