"""uvicorn serving a FastAPI app on a free port inside the test's own loop:
the ASGI server whose Starlette websockets roomcast rooms accept
(``Room.connect``). ``chat_app(room)`` is the smallest such app.
"""

import asyncio
import socket

import uvicorn
from fastapi import FastAPI
from fastapi import WebSocket as StarletteWebSocket

T = 30  # seconds for uvicorn to stop


class Uvicorn:
    """A FastAPI app served by uvicorn on a free port, in this loop."""

    def __init__(self, app, sndbuf=None):
        self.sock = socket.socket()
        if sndbuf is not None:  # inherited by the accepted connections
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
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
