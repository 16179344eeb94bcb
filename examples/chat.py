"""A chat in the browser: a Room, push_json and a static page.

    python examples/chat.py [--host 127.0.0.1] [--port 8000]

then open http://127.0.0.1:8000/ in two browser windows. The page
(chat_static/index.html) talks to the room at /chat with the browser's
WebSocket; every message is pushed, serialised once, to everyone.
"""

import argparse
import logging
from pathlib import Path
from typing import Any

from roomcast import Room, Server, WebSocket

STATIC = Path(__file__).resolve().with_name("chat_static")
MAX_NAME = 32
MAX_TEXT = 2000

room = Room()


@room.on_connect("after")
async def joined(room: Room, websocket: WebSocket) -> None:
    await room.push_json({"type": "presence", "count": len(room)})


@room.on_disconnect("after")
async def left(room: Room, websocket: WebSocket) -> None:
    await room.push_json({"type": "presence", "count": len(room)})


@room.on_receive("json")
async def message(room: Room, websocket: WebSocket, message: Any) -> None:
    # Browsers are untrusted: keep only the two fields, bounded.
    if not isinstance(message, dict):
        return
    name = str(message.get("name") or "anonymous").strip()[:MAX_NAME] or "anonymous"
    text = str(message.get("text") or "")[:MAX_TEXT]
    if text.strip():
        await room.push_json({"type": "message", "name": name, "text": text})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    server = Server()
    server.route("/chat", room)
    server.static("/", STATIC)
    server.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
