"""An echo server: every message goes back to its sender as it came.

    python examples/echo.py [--relay | --uvicorn] [--certfile CERT.pem [--keyfile KEY.pem]]
                            [HOST] [PORT]   (default 127.0.0.1 9001)

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

With ``--certfile`` (and ``--keyfile`` when the key is in a file of its
own) the server speaks TLS (``ssl_certfile`` / ``ssl_keyfile``): the line
says ``listening on wss://HOST:PORT/``, and when it stops it prints one
more, what the connections the Python echo served negotiated, e.g.
``tls: 1.3 0x1302 on 517 connections`` (version, IANA cipher suite id).
Not with ``--uvicorn``, whose connections the core adopts after uvicorn
accepted them.
"""

import argparse
import collections
import logging
import signal
import sys
from typing import Any

from roomcast import Room, Server, ServerWebSocket

MAX_MESSAGE = 64 * 2**20

# (TLS version, cipher suite) -> connections, over TLS; printed at the end.
negotiated: collections.Counter[tuple[int, int]] = collections.Counter()


def make_server(**tls: Any) -> Server:
    return Server(
        max_message_size=MAX_MESSAGE,
        max_queue_bytes=2 * MAX_MESSAGE,
        ping_interval=0,
        **tls,
    )


def note_tls(websocket: ServerWebSocket) -> None:
    tls = websocket.scope.get("extensions", {}).get("tls")
    if tls is not None:
        negotiated[tls["tls_version"], tls["cipher_suite"]] += 1


async def echo(websocket: ServerWebSocket) -> None:
    note_tls(websocket)
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
    note_tls(websocket)
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


def tls_line() -> str:
    """``tls: 1.3 0x1302 on N connections`` (one part per combination)."""
    versions = {0x0303: "1.2", 0x0304: "1.3"}
    parts = [f"{versions.get(v, hex(v))} {c:#06x} on {n} connections" for (v, c), n in sorted(negotiated.items())]
    return "tls: " + ("; ".join(parts) or "no connection")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--relay", action="store_true", help="the core echoes, through a Room(relay='all')")
    mode.add_argument("--uvicorn", action="store_true", help="an ASGI app echoes, served by uvicorn")
    parser.add_argument("--certfile", help="PEM certificate (chain): serve wss://")
    parser.add_argument("--keyfile", help="its private key, if not in the certificate's file")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=9001)
    args = parser.parse_args()
    if args.keyfile is not None and args.certfile is None:
        parser.error("--keyfile needs --certfile")
    if args.uvicorn:
        if args.certfile is not None:
            parser.error("--certfile does not go with --uvicorn")
        serve_uvicorn(args.host, args.port)
        return
    tls = {} if args.certfile is None else {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    try:
        server = make_server(**tls)
    except ValueError as exc:  # a certificate or key that cannot be used
        parser.exit(2, f"{parser.prog}: {exc}\n")
    server.websocket("/{path:path}")(echo_relay if args.relay else echo)
    # Server.run logs "listening on ws://HOST:PORT/" at INFO: on stdout, and
    # only that logger's lines, so a script can wait for it.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    server.run(host=args.host, port=args.port)
    if tls:
        print(tls_line(), flush=True)


if __name__ == "__main__":
    main()
