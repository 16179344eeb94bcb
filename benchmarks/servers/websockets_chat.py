"""The fan-out benchmark's reference peer: one room with the ``websockets``
library. Every text message received on any connection is broadcast to all
connections, the sender included.

    python websockets_chat.py PORT [deflate] [--tls CERTFILE KEYFILE]

Prints ``listening on ws://127.0.0.1:PORT/`` (``wss://`` with ``--tls``) on
stdout once it accepts connections; stops on SIGINT or SIGTERM. With
``--tls`` it serves TLS through an ``ssl.SSLContext`` (asyncio's TLS, TLS
1.2 or later, ALPN http/1.1; ``servers/_tls.py``). Per-message compression is off;
with ``deflate`` it is websockets' default (``compression="deflate"``:
permessage-deflate with context takeover, a 4 KiB window of its own,
server_max_window_bits=12, and each message compressed for each
connection, which ``broadcast()`` then does once per member).
"""

import asyncio
import signal
import sys

from _limits import raise_open_files_limit  # beside this script
from _tls import server_context, tls_files
from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def relay(websocket):
    CLIENTS.add(websocket)
    try:
        async for message in websocket:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(websocket)


async def main(port, compression, tls):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    ctx = server_context(*tls) if tls else None
    async with serve(relay, "127.0.0.1", port, compression=compression, backlog=1024, ssl=ctx):
        print(f"listening on {'wss' if tls else 'ws'}://127.0.0.1:{port}/", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    raise_open_files_limit()
    args, tls = tls_files(sys.argv[1:])
    deflate = args[1:] == ["deflate"]
    asyncio.run(main(int(args[0]), "deflate" if deflate else None, tls))
