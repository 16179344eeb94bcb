"""The cross-server benchmark's server: ``roomcast_chat.py`` with its room
named and the server on a Redis backplane, so that several of these
processes share one room.

    python roomcast_shared_chat.py PORT REDIS_URL

Every text message received on /bench is pushed to the room: to this
server's members at once, and through Redis to every other server's, which
deliver it in C. Prints ``listening on ws://127.0.0.1:PORT/``; stops on
SIGINT or SIGTERM.
"""

import logging
import sys

from roomcast import Room, Server

from _limits import raise_open_files_limit  # beside this script

room = Room(name="bench")


@room.on_receive("text")
async def relay(room, websocket, message):
    await room.push_text(message)


if __name__ == "__main__":
    raise_open_files_limit()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # The backplane buffer as large as the output queues: a burst must not
    # be dropped on its way to Redis.
    server = Server(max_queue_bytes=64 * 2**20, backplane=sys.argv[2], backplane_buffer=64 * 2**20)
    server.route("/bench", room)
    server.run(host="127.0.0.1", port=int(sys.argv[1]))
