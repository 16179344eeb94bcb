"""The history benchmark's fan-out server: ``roomcast_chat.py``'s room, every
text message pushed from Python to all members (the sender included), with
or without a history.

    python roomcast_history_chat.py PORT [--history N] [REDIS_URL]

With ``--history N`` the room is ``Room(history=N)`` and each push takes a
:class:`~roomcast.Position` (``push_text`` returns it); without it,
``Room()``, the room of ``roomcast_chat.py``. With REDIS_URL the server is
on that Redis backplane and the room named (``Room(name="bench", ...)``).
The server's options are ``roomcast_chat.py``'s (64 MiB queues, no
compression).

Prints ``listening on ws://127.0.0.1:PORT/`` once it accepts connections;
on SIGINT or SIGTERM it stops, then prints ``history position: EPOCH
OFFSET`` (history on) so that the benchmark can check that every message
took a position.
"""

import logging
import sys

from _limits import raise_open_files_limit  # beside this script

from roomcast import Room, Server

args = sys.argv[1:]
size = None
if "--history" in args:
    i = args.index("--history")
    size = int(args[i + 1])
    del args[i : i + 2]
shared = len(args) > 1
room = Room(name="bench", history=size) if shared else Room(history=size)


@room.on_receive("text")
async def relay(room, websocket, message):
    # With history in Redis a push that waits for its position takes a
    # round trip: the producer's pushes would go one at a time. wait=False
    # keeps them in flight together, as without history; in memory the
    # position is known at once and returned either way.
    await room.push_text(message, wait=False)


if __name__ == "__main__":
    raise_open_files_limit()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    backplane = dict(backplane=args[1], backplane_buffer=64 * 2**20) if shared else {}
    server = Server(max_queue_bytes=64 * 2**20, compression=None, **backplane)
    server.route("/bench", room)
    server.run(host="127.0.0.1", port=int(args[0]))
    if size is not None:
        position = room.position
        print(f"history position: {position.epoch} {position.offset}", flush=True)
