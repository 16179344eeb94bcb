"""The example.py of the microsockets repository (the one its README tells
you to run), on roomcast.

Only the import differs (plus the start at the bottom: roomcast is its own
server). Run: python examples/microsockets_topic.py [PORT] (or PORT in the
environment; default 8000), connect to ws://127.0.0.1:PORT and send
``{"event": "topic", "payload": "\\"hi\\""}``: you get ``message``
"received", and everyone in room1 but you gets ``broadcast``.
"""

import json
import logging
import os
import sys

from roomcast.compat import microsockets

app = microsockets.Application()


@app.hooks.before_on
async def load_payload(ws, func):
    ws.payload = json.loads(ws.payload)
    await func(ws)


@app.on("topic")
async def handle(ws):
    # ws.scope: the request, as an ASGI scope
    # ws.payload: the payload received, ws.event: the event's name
    print(ws.payload)
    await ws.join("room1")
    await ws.emit("message", "received")
    await ws.broadcast("broadcast", "hello, everyone!", to=["room1"])


if __name__ == "__main__":
    # roomcast logs "listening on ws://HOST:PORT/" here (stderr) once bound.
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    app.run(host="127.0.0.1", port=port)
