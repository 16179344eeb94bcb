"""The fan-out benchmark's FastAPI rows for roomcast: the app of
``websocket_rooms_chat.py`` with ``from roomcast import Room`` in place of
``from websocket_rooms import Room`` (the same API: ``@room.on_receive``,
``await room.connect(websocket)``), served by uvicorn. Every text message
received on /bench is pushed to every member, the sender included.

    python roomcast_fastapi_chat.py PORT [PROTOCOL]

PROTOCOL is uvicorn's ``ws`` implementation:

- ``roomcast`` (the default): ``roomcast.uvicorn:WebSocketProtocol``;
  uvicorn hands each upgraded connection to a roomcast core, and the room's
  pushes are framed once and written to every member in C. The core's
  output queues are as large as ``roomcast_chat.py``'s Server's
  (``max_queue_bytes``): a burst must not overflow them.
- ``uvicorn``: uvicorn's own ``websockets-sansio``, with per-message
  compression off, as in ``websocket_rooms_chat.py``; roomcast's room then
  reaches each member through Python (one ASGI send per delivery).

With ``roomcast``, a connection the core cannot take would be served by
uvicorn's own implementation instead (roomcast.uvicorn falls back, with a
warning): the row would then measure something else, so the server stops
at once (status 3, the warning printed) when that happens, and refuses to
start when the core has no ``adopt`` at all.

Every other uvicorn setting is ``websocket_rooms_chat.py``'s, its
keepalive pings included (uvicorn's defaults, which roomcast's protocol
gives to the core).

Prints ``listening on ws://127.0.0.1:PORT/bench`` on stdout once uvicorn
accepts connections; stops on SIGINT or SIGTERM (uvicorn's own handlers).
"""

import asyncio
import logging
import os
import sys

import uvicorn
from _limits import raise_open_files_limit  # beside this script
from fastapi import FastAPI, WebSocket

from roomcast import Room

PROTOCOLS = {"roomcast": "roomcast.uvicorn:WebSocketProtocol", "uvicorn": "websockets-sansio"}

app = FastAPI()
room = Room()


@room.on_receive("text")
async def on_receive(room: Room, websocket: WebSocket, message: str) -> None:
    await room.push_text(message)


@app.websocket("/bench")
async def connect_websocket(websocket: WebSocket) -> None:
    await room.connect(websocket)


class _StopOnFallback(logging.Handler):
    """roomcast.uvicorn's warnings go to uvicorn's logger: one of them
    means a connection is not the core's; the row is void."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("roomcast.uvicorn:"):
            print(f"{message}: stopping, the roomcast-fastapi row would not measure the core", flush=True)
            os._exit(3)


async def main(port: int, protocol: str) -> None:
    if protocol == "roomcast":
        import roomcast.uvicorn
        from roomcast._core import Core

        if not hasattr(Core, "adopt"):
            sys.exit("this roomcast build has no Core.adopt: roomcast.uvicorn cannot hand connections to the core")
        # As large as roomcast_chat.py's Server: a burst must not close members.
        roomcast.uvicorn.configure(max_queue_bytes=64 * 2**20)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=PROTOCOLS[protocol],
        ws_per_message_deflate=False,
        backlog=1024,
    )
    if protocol == "roomcast":
        # after uvicorn.Config, which (re)configures uvicorn's loggers
        logging.getLogger("uvicorn.error").addHandler(_StopOnFallback())
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
    protocol = sys.argv[2] if len(sys.argv) > 2 else "roomcast"
    if protocol not in PROTOCOLS:
        sys.exit(f"usage: {sys.argv[0]} PORT [{'|'.join(PROTOCOLS)}]")
    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1]), protocol))
