"""The fan-out benchmark's reference peer: one room with the ``websockets``
library. Every text message received on any connection is broadcast to all
connections, the sender included.

    python websockets_chat.py PORT [deflate]

Prints ``listening on ws://127.0.0.1:PORT/`` on stdout once it accepts
connections; stops on SIGINT or SIGTERM. Per-message compression is off;
with ``deflate`` it is websockets' default (``compression="deflate"``:
permessage-deflate with context takeover, a 4 KiB window of its own,
server_max_window_bits=12, and each message compressed for each
connection, which ``broadcast()`` then does once per member).
"""

import asyncio
import signal
import sys

from _limits import raise_open_files_limit  # beside this script
from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def relay(websocket):
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(websocket)


async def main(port, compression):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(relay, "127.0.0.1", port, compression=compression, backlog=1024):
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    raise_open_files_limit()
    deflate = sys.argv[2:] == ["deflate"]
    asyncio.run(main(int(sys.argv[1]), "deflate" if deflate else None))
