"""The chat server that ``soak.py`` drives: rooms made on demand, push on receive.

    python3 tests/soak/soak_server.py [--port 0] [--handshake-timeout 10]

Only the public API of roomcast is used, the way a chat application would:
``/room/{name}/{client}`` joins the room ``name`` (created when its first
member arrives, forgotten when its last one leaves) as ``client``. Every
member gets, as JSON text messages:

* ``{"ev": "join", "id": client}`` when a member has joined (the newcomer too),
* ``{"ev": "msg", "id": client, "seq": n, "t": text}`` for each message a
  member sends as ``{"seq": n, "t": text}``,
* ``{"ev": "leave", "id": client}`` when a member has left.

A member that sends ``{"cmd": "leave"}`` is removed by the server (close 1000
initiated by the server).

The process prints its port on the first line of stdout, then reads commands
from stdin, one per line: ``stats`` answers with one JSON line (the core's
counters and this process's own: rooms, members, endpoints, asyncio tasks,
threads, Python objects); ``gc`` runs a full collection first. End of stdin,
SIGINT or SIGTERM stop the server cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import threading
from typing import Any

from roomcast import Room, Server, ServerWebSocket

template = Room()


@template.on_connect("after")
async def joined(room: Room, websocket: ServerWebSocket, client: str) -> None:
    await room.push_json({"ev": "join", "id": client})


@template.on_disconnect("after")
async def left(room: Room, websocket: ServerWebSocket, client: str) -> None:
    await room.push_json({"ev": "leave", "id": client})


@template.on_receive("json")
async def received(room: Room, websocket: ServerWebSocket, message: Any, client: str) -> None:
    if not isinstance(message, dict):
        return
    if message.get("cmd") == "leave":
        await room.remove(websocket)
        return
    await room.push_json({"ev": "msg", "id": client, "seq": message.get("seq"), "t": message.get("t")})


class Chat:
    """The rooms by name, each with the number of endpoints using it, so that
    a room is dropped only when no endpoint can still join it."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.users: dict[str, int] = {}
        self.endpoints = 0

    async def endpoint(self, websocket: ServerWebSocket, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(template)
            self.users[name] = 0
        self.users[name] += 1
        self.endpoints += 1
        try:
            await room.connect(websocket)
        finally:
            self.endpoints -= 1
            self.users[name] -= 1
            if self.users[name] == 0:
                del self.users[name]
                del self.rooms[name]

    def stats(self, running: Any, collect: bool) -> dict[str, Any]:
        if collect:
            gc.collect()
        out: dict[str, Any] = dict(running.stats())
        out["py_rooms"] = len(self.rooms)
        out["py_members"] = sum(len(room) for room in self.rooms.values())
        out["py_endpoints"] = self.endpoints
        out["py_tasks"] = len(asyncio.all_tasks())
        out["py_threads"] = threading.active_count()
        out["py_objects"] = len(gc.get_objects())
        return out


async def serve(port: int, handshake_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    chat = Chat()
    server = Server(handshake_timeout=handshake_timeout)
    server.websocket("/room/{name}/{client}")(chat.endpoint)

    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def commands(running: Any) -> None:
        while True:
            line = await stdin.readline()
            if not line:
                break
            command = line.strip().decode()
            if command in ("stats", "gc"):
                print(json.dumps(chat.stats(running, command == "gc")), flush=True)
            elif command:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
        stop.set()

    async with server.serve("127.0.0.1", port) as running:
        print(running.port, flush=True)
        reader = loop.create_task(commands(running))
        await stop.wait()
        reader.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    asyncio.run(serve(args.port, args.handshake_timeout))


if __name__ == "__main__":
    main()
