"""A chat in the browser on roomcast.App: named rooms, several per user,
presence counts, and a page that reconnects by itself.

    python examples/chat.py [--host 127.0.0.1] [--port 8000]

then open http://127.0.0.1:8000/ in two browser windows. The page
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
import logging
from pathlib import Path
from typing import Any

from roomcast import App, Socket

STATIC = Path(__file__).resolve().with_name("chat_static")
MAX_NAME = 32
MAX_ROOM = 32
MAX_TEXT = 2000
MAX_ROOMS = 20  # per socket

app = App()
# room -> ids of the sockets in it: the presence counts.
members: dict[str, set[int]] = {}


def field(ws: Socket, key: str) -> Any:
    # Browsers are untrusted: a payload may be anything.
    return ws.payload.get(key) if isinstance(ws.payload, dict) else None


def room_name(value: Any) -> str | None:
    name = value.strip()[:MAX_ROOM] if isinstance(value, str) else ""
    return name or None


def presence(room: str) -> None:
    app.broadcast("presence", {"room": room, "count": len(members.get(room, ()))}, to=[room])


async def enter(ws: Socket, room: str | None) -> None:
    rooms = ws.rooms()
    if room is None or room in rooms or len(rooms) >= MAX_ROOMS:
        return
    await ws.join(room)
    members.setdefault(room, set()).add(ws.id)
    presence(room)


def forget(ws: Socket, room: str) -> None:
    ids = members.get(room, set())
    ids.discard(ws.id)
    if ids:
        presence(room)
    else:
        members.pop(room, None)


@app.on("join")
async def join(ws: Socket) -> None:
    await enter(ws, room_name(field(ws, "room")))


@app.on_rejoin
async def rejoin(ws: Socket, room: str) -> None:
    await enter(ws, room_name(room))


@app.on("leave")
def leave(ws: Socket) -> None:
    room = room_name(field(ws, "room"))
    if room is not None and room in ws.rooms():
        ws.leave(room)
        forget(ws, room)


@app.on("say")
def say(ws: Socket) -> None:
    room = room_name(field(ws, "room"))
    name = str(field(ws, "name") or "").strip()[:MAX_NAME] or "anonymous"
    text = str(field(ws, "text") or "")[:MAX_TEXT]
    # Only members speak in a room; the sender gets its message back too.
    if room is not None and room in ws.rooms() and text.strip():
        app.broadcast("message", {"room": room, "name": name, "text": text}, to=[room])


@app.on_disconnect
def gone(ws: Socket) -> None:
    for room in ws.rooms():
        forget(ws, room)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    app.static("/", STATIC)
    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
