"""The fan-out benchmark's reference peer: one room with the ``websockets``
library. Every text message received on any connection is broadcast to all
connections, the sender included.

    python websockets_chat.py PORT

Prints ``listening on ws://127.0.0.1:PORT/`` on stdout once it accepts
connections; stops on SIGINT or SIGTERM.
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


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(relay, "127.0.0.1", port, compression=None, backlog=1024):
        print(f"listening on ws://127.0.0.1:{port}/", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1])))
