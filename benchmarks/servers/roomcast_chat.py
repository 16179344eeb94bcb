"""The fan-out benchmark's server under test: one roomcast room in which every
text message is pushed to all members, the sender included.

    python roomcast_chat.py PORT

Prints ``listening on ws://127.0.0.1:PORT/`` on stdout once it accepts
connections; stops on SIGINT or SIGTERM.
"""

import logging
import sys

from roomcast import Room, Server

from _limits import raise_open_files_limit  # beside this script

room = Room()


@room.on_receive("text")
async def relay(room, websocket, message):
    await room.push_text(message)


if __name__ == "__main__":
    raise_open_files_limit()
    # Server.run() announces its address on the "roomcast" logger: sent to
    # stdout, that line tells the benchmark runner the server is ready.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    server = Server(max_queue_bytes=64 * 2**20)
    server.route("/bench", room)
    server.run(host="127.0.0.1", port=int(sys.argv[1]))
