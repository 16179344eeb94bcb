"""A chat in the browser on roomcast.App: named rooms, several per user,
presence counts, and a page that reconnects by itself.

    python examples/chat.py [--host 127.0.0.1] [--port 8000]
                            [--certfile CERT.pem [--keyfile KEY.pem]]

then open http://127.0.0.1:8000/ in two browser windows. With --certfile
(or CERTFILE in the environment; --keyfile or KEYFILE when the key is in
a file of its own) the server speaks TLS: open https://127.0.0.1:8000/,
and the page's socket connects to wss:// by itself. `make demo-https`
makes a certificate for localhost and 127.0.0.1 and runs this so. The page
(chat_static/index.html) loads the app's JavaScript client from
/roomcast.js and speaks events over one WebSocket at "/":

    page -> server   join {room}, leave {room}, say {room, name, text}
    server -> page   message {room, name, text}, presence {room, count},
                     roomcast:joined / roomcast:left (sent by the App)

When the server comes back after a restart, the client sends
roomcast:rejoin with its rooms; the app's on_rejoin handler below lets it
back into each through the same check as a join, so that the presence
counts are right again.
"""

import argparse
import errno
import logging
import os
from pathlib import Path
from typing import Any

from roomcast import App, Socket

STATIC = Path(__file__).resolve().with_name("chat_static")
MAX_NAME = 32
MAX_ROOM = 32
MAX_TEXT = 2000
MAX_ROOMS = 20  # per socket

# room -> ids of the sockets in it: the presence counts.
members: dict[str, set[int]] = {}


def field(ws: Socket, key: str) -> Any:
    # Browsers are untrusted: a payload may be anything.
    return ws.payload.get(key) if isinstance(ws.payload, dict) else None


def room_name(value: Any) -> str | None:
    name = value.strip()[:MAX_ROOM] if isinstance(value, str) else ""
    return name or None


def presence(ws: Socket, room: str) -> None:
    ws.app.broadcast("presence", {"room": room, "count": len(members.get(room, ()))}, to=[room])


async def enter(ws: Socket, room: str | None) -> None:
    rooms = ws.rooms()
    if room is None or room in rooms or len(rooms) >= MAX_ROOMS:
        return
    await ws.join(room)
    members.setdefault(room, set()).add(ws.id)
    presence(ws, room)


def forget(ws: Socket, room: str) -> None:
    ids = members.get(room, set())
    ids.discard(ws.id)
    if ids:
        presence(ws, room)
    else:
        members.pop(room, None)


async def join(ws: Socket) -> None:
    await enter(ws, room_name(field(ws, "room")))


async def rejoin(ws: Socket, room: str) -> None:
    await enter(ws, room_name(room))


def leave(ws: Socket) -> None:
    room = room_name(field(ws, "room"))
    if room is not None and room in ws.rooms():
        ws.leave(room)
        forget(ws, room)


def say(ws: Socket) -> None:
    room = room_name(field(ws, "room"))
    name = str(field(ws, "name") or "").strip()[:MAX_NAME] or "anonymous"
    text = str(field(ws, "text") or "")[:MAX_TEXT]
    # Only members speak in a room; the sender gets its message back too.
    if room is not None and room in ws.rooms() and text.strip():
        ws.app.broadcast("message", {"room": room, "name": name, "text": text}, to=[room])


def gone(ws: Socket) -> None:
    for room in ws.rooms():
        forget(ws, room)


def make_app(**options: Any) -> App:
    """The chat on an App made with ``options``, the server's (TLS here)."""
    app = App(**options)
    app.on("join")(join)
    app.on_rejoin(rejoin)
    app.on("leave")(leave)
    app.on("say")(say)
    app.on_disconnect(gone)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--certfile",
        default=os.environ.get("CERTFILE") or None,
        help="PEM certificate (chain) to serve https:// and wss:// with (default: $CERTFILE)",
    )
    parser.add_argument(
        "--keyfile",
        default=os.environ.get("KEYFILE") or None,
        help="its private key, if not in the certificate's file (default: $KEYFILE)",
    )
    args = parser.parse_args()
    if args.keyfile is not None and args.certfile is None:
        parser.error("--keyfile (or KEYFILE) needs --certfile (or CERTFILE)")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    tls = {} if args.certfile is None else {"ssl_certfile": args.certfile, "ssl_keyfile": args.keyfile}
    try:
        app = make_app(**tls)
    except ValueError as exc:  # a certificate or key that cannot be used
        parser.exit(2, f"{parser.prog}: {exc}\n")
    app.static("/", STATIC)
    try:
        app.run(host=args.host, port=args.port)
    except OSError as exc:  # the port is taken, or the address is not this host's
        hint = f" (another port: --port {args.port + 1}, or make demo PORT={args.port + 1})"
        parser.exit(1, f"{parser.prog}: {exc.strerror or exc}{hint if exc.errno == errno.EADDRINUSE else ''}\n")


if __name__ == "__main__":
    main()
