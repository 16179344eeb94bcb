"""The fan-out benchmark's ``aiohttp`` peer: one room in an aiohttp web app.
Every text message received on /bench is sent to every connected client,
the sender included, with ``await ws.send_str(message)`` on each socket in
turn, the way aiohttp's own chat examples do. ``send_str`` is a coroutine
with no non-awaiting variant: it writes the frame at once and only waits
when that socket's unsent output passes aiohttp's write limit, so a
client that cannot keep up holds back the whole broadcast.

    python aiohttp_chat.py PORT [deflate]

Prints ``listening on ws://127.0.0.1:PORT/bench`` on stdout once it accepts
connections; stops on SIGINT or SIGTERM. Per-message compression, which
``WebSocketResponse`` offers by default, is turned off (with ``deflate``:
on, ``compress=True``, each message compressed for each connection with
its own context), and so is the access log (one line per connection).
"""

import asyncio
import signal
import sys

from _limits import raise_open_files_limit  # beside this script
from aiohttp import WSMsgType, web

SOCKETS = web.AppKey("sockets", set)
COMPRESS = sys.argv[2:] == ["deflate"]


async def chat(request):
    ws = web.WebSocketResponse(compress=COMPRESS)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                # A copy: the set may change while a send waits.
                for member in tuple(sockets):
                    try:
                        await member.send_str(msg.data)
                    except ConnectionResetError:
                        # that member is closing; its own handler removes it
                        pass
    finally:
        sockets.discard(ws)
    return ws


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/bench", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"listening on ws://127.0.0.1:{port}/bench", flush=True)
    try:
        await stop
    except asyncio.CancelledError:
        pass
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1])))
