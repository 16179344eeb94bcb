"""The complete example of pyn's WebSocket guide (doc/websocket.md), on
roomcast: a chat that keeps every message and replays them to newcomers.

Only the import differs from the guide (plus the port, taken from the
command line or PORT, default 8000). Run: python examples/pyn_chat.py
[PORT], connect several clients to ws://127.0.0.1:PORT/ and send text.
"""

import logging
import os
import sys

from roomcast.compat import pyn

messages = []
ws = pyn.WebSocket()


@ws.define("init")
async def on_init(ws: pyn.WebSocket) -> None:
    for message in messages:
        await ws.send(message)


@ws.define("message")
async def on_message(ws: pyn.WebSocket, message: str) -> None:
    messages.append(message)
    await ws.send_all(message)


@ws.define("close")
async def on_close(ws: pyn.WebSocket) -> None:
    print("Connection closed")


server = pyn.Server(ws)

if __name__ == "__main__":
    # roomcast logs "listening on ws://HOST:PORT/" here (stderr) once bound.
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    server.run(host="127.0.0.1", port=port)
