"""uvicorn serving a FastAPI app on a free port inside the test's own loop:
the ASGI server whose Starlette websockets roomcast rooms accept
(``Room.connect``). ``chat_app(room)`` is the smallest such app.
"""

from fastapi import FastAPI
from fastapi import WebSocket as StarletteWebSocket

from support import uvicornproc


class Uvicorn(uvicornproc.Uvicorn):
    """A FastAPI app served by uvicorn on a free port, in this loop, with
    uvicorn's own websockets-sansio protocol: the room reaches its members
    through Python."""

    def __init__(self, app, sndbuf=None):
        super().__init__(app, ws="websockets-sansio", sndbuf=sndbuf)


def chat_app(room):
    app = FastAPI()

    @app.websocket("/chat/{client_id}")
    async def endpoint(websocket: StarletteWebSocket, client_id: int):
        await room.connect(websocket)

    return app
