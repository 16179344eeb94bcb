"""The example of the microsockets README, on roomcast.

Only the import differs from the README. Run it as the README says,
``uvicorn examples.microsockets_readme:app`` (add ``--ws
roomcast.uvicorn:WebSocketProtocol`` for roomcast's C core to serve the
sockets), or with roomcast's own server (``app.run`` at the bottom):
python examples/microsockets_readme.py [PORT] (or PORT in the environment;
default 8000). Then connect the microsockets JavaScript client to
ws://127.0.0.1:PORT and send ``socket.send("join", JSON.stringify({room:
"gamers", user: 1}))``: the payload travels as a string, which is why the
middleware decodes it.
"""

import json
import logging
import os
import sys

from roomcast.compat import microsockets

app = microsockets.Application(
    # event_router, defaults to microsockets.EventRouter
    # room_manager, defaults to microsockets.RoomManager
)


@app.on("join")
async def handle(ws):
    room = ws.payload["room"]
    user = ws.payload["user"]
    # Rooms managed by the RoomManager, which can be subclassed/replaced
    await ws.join(room)
    # Emit event back to client, may pass a payload as second argument
    await ws.emit("joined")
    # Broadcast to all other users in the room. skip_self=False would send it to current client as well.
    await ws.broadcast("user joined", json.dumps(dict(user=user)), to=[room])


@app.hooks.before_on
async def load_payload(ws, func):
    ws.payload = json.loads(ws.payload)
    await func(ws)


if __name__ == "__main__":
    # roomcast logs "listening on ws://HOST:PORT/" here (stderr) once bound.
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    app.run(host="127.0.0.1", port=port)
