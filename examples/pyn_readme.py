"""The WebSocket example of the pyn README, on roomcast.

Only the import differs from the README (plus the port, taken from the
command line or PORT, default 8000). Run: python examples/pyn_readme.py
[PORT], connect to ws://127.0.0.1:PORT/ and send text: it comes back to
you, and only to you.
"""

import logging
import os
import sys

from roomcast.compat import pyn

ws = pyn.WebSocket()
messages = []


@ws.define("init")
async def on_init(ws: pyn.WebSocket) -> None:
    for message in messages:
        await ws.send_all(message)


@ws.define("message")
async def on_message(ws: pyn.WebSocket, message: str) -> None:
    await ws.send(message)


@ws.define("close")
async def on_close(ws: pyn.WebSocket) -> None:
    print("Connection closed")


server = pyn.Server(ws)

if __name__ == "__main__":
    # roomcast logs "listening on ws://HOST:PORT/" here (stderr) once bound.
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    server.run(host="127.0.0.1", port=port)
