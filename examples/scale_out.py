"""Several roomcast servers sharing rooms through one Redis.

Start Redis, then as many servers as you like, each on its own port, all
naming the same Redis:

    redis-server --port 6379 --save '' &
    python examples/scale_out.py --port 8001 --backplane redis://127.0.0.1:6379/0 &
    python examples/scale_out.py --port 8002 --backplane redis://127.0.0.1:6379/0 &
    python examples/scale_out.py --port 8003 --backplane redis://127.0.0.1:6379/0 &

Put a load balancer in front of them, or connect to any one:

* ``ws://host:PORT/chat?name=alice``: a text message is pushed to every
  member of /chat on every server, once each, in the order each sender
  sent them; ``/who`` answers, to the sender only, with the members of
  every server (``room.members()``: member id -> name) and their count;
* ``ws://host:PORT/others``: the same, except the sender (``exclude=``);
* ``ws://host:PORT/relay``: a relay room: the core forwards each message to
  every member of every server without waking Python.

``--presence-ttl`` (seconds) is how soon a server that died leaves the
member lists. Stop a server with Ctrl-C or SIGTERM.
"""

import argparse
import logging

from roomcast import Room, Server, ServerWebSocket

chat = Room(name="chat")
others = Room(name="others")
relay = Room(name="relay", relay="all")


@chat.on_receive("text")
async def said(room: Room, websocket: ServerWebSocket, message: str) -> None:
    if message == "/who":
        members = await room.members()
        await websocket.send_json({"members": members, "count": await room.count()})
    else:
        await room.push_text(message)


@others.on_receive("text")
async def told_others(room: Room, websocket: ServerWebSocket, message: str) -> None:
    await room.push_text(message, exclude=websocket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--backplane", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--presence-ttl", type=float, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    server = Server(backplane=args.backplane, presence_ttl=args.presence_ttl)

    @server.websocket("/chat")
    async def chat_endpoint(websocket: ServerWebSocket) -> None:
        await chat.connect(websocket, identity=websocket.query_params.get("name"))

    server.route("/others", others)
    server.route("/relay", relay)
    server.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
