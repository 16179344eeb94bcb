"""An echo server: every message goes back to its sender as it came.

    python examples/echo.py [--relay | --uvicorn] [HOST] [PORT]   (default 127.0.0.1 9001)

Text comes back as text and binary as binary, on any path. It is the server
that the protocol conformance run (tests/conformance/run.py) tests, so its
limits are wide enough for the largest messages of that suite (16 MiB), and
it sends no keepalive pings of its own, which would show up in the suite's
record of what the server sent. Once bound it prints one line,
``listening on ws://HOST:PORT/``, with the real port when PORT is 0.

By default Python echoes each message (``receive`` then ``send``). With
``--relay`` the core does, without waking Python: each connection is the
one member of a ``Room(relay="all")`` of its own, so what it sends the
room relays back to it alone. With ``--uvicorn`` an ASGI app echoes,
served by uvicorn with roomcast's protocol (``roomcast.uvicorn``): uvicorn
parses each upgrade request and hands the connection to the core.
"""

import logging
import signal
import sys
from typing import Any

from roomcast import Room, Server, ServerWebSocket

MAX_MESSAGE = 64 * 2**20

server = Server(
    max_message_size=MAX_MESSAGE,
    max_queue_bytes=2 * MAX_MESSAGE,
    ping_interval=0,
)


async def echo(websocket: ServerWebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if "text" in message:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def echo_relay(websocket: ServerWebSocket) -> None:
    await Room(relay="all").connect(websocket)


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same echo as an ASGI app."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def serve_uvicorn(host: str, port: int) -> None:
    import socket

    import uvicorn

    import roomcast.uvicorn

    roomcast.uvicorn.configure(max_queue_bytes=2 * MAX_MESSAGE)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(
        asgi_echo,
        ws="roomcast.uvicorn:WebSocketProtocol",
        ws_max_size=MAX_MESSAGE,
        ws_ping_interval=None,
        lifespan="off",
        log_level="warning",
    )
    print(f"listening on ws://{host}:{sock.getsockname()[1]}/", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again to the
    # handler it found: exit 0 then, as the other modes do.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--uvicorn"]:
        args = args[1:]
        serve_uvicorn(args[0] if args else "127.0.0.1", int(args[1]) if len(args) > 1 else 9001)
        return
    if args[:1] == ["--relay"]:
        args = args[1:]
        server.websocket("/{path:path}")(echo_relay)
    else:
        server.websocket("/{path:path}")(echo)
    host = args[0] if len(args) > 0 else "127.0.0.1"
    port = int(args[1]) if len(args) > 1 else 9001
    # Server.run logs "listening on ws://HOST:PORT/" at INFO: on stdout, and
    # only that logger's lines, so a script can wait for it.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    server.run(host=host, port=port)


if __name__ == "__main__":
    main()
