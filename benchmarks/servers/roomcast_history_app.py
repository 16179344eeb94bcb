"""The history benchmark's recovery server: an App keeping the history of
the rooms ``bench:*``, and a publisher of live events at a fixed rate.

    python roomcast_history_app.py PORT [--size N]

``app.keep_history("bench:*", N)`` (N = 1,000 by default). Events:

* ``join`` ``{"room": R}``: the socket joins R; ``roomcast:rejoin`` lets a
  socket back into every room it lists (``on_rejoin`` joins it), so a
  rejoin with positions gets what it missed, then ``roomcast:position``.
* ``ctl`` (the benchmark's control socket), answered with ``ctl:ok``:
  ``{"cmd": "live", "rate": R, "every": E}`` starts the publisher (or
  changes E): event k (k = 0, 1, ...) is due k / R seconds after the start
  and broadcast as ``live`` ``{"k", "t": due, "p": published}``
  (CLOCK_MONOTONIC nanoseconds) to ``bench:live``, and every E-th one to
  ``bench:1`` too (E = 0: none); when it is behind it publishes what is due
  at once, yielding every 32 events. ``{"cmd": "stop"}`` stops it (the
  answer says how many it published). ``{"cmd": "burst", "count": C}``
  broadcasts C ``missed`` events to ``bench:1``. ``{"cmd": "status"}``
  answers each history room's position.

Prints ``listening on ws://127.0.0.1:PORT/`` once it accepts connections;
stops on SIGINT or SIGTERM.
"""

import asyncio
import logging
import sys
import time

from _limits import raise_open_files_limit  # beside this script

from roomcast import App

args = sys.argv[1:]
size = 1000
if "--size" in args:
    i = args.index("--size")
    size = int(args[i + 1])
    del args[i : i + 2]

app = App(max_queue_bytes=64 * 2**20, compression=None)
app.keep_history("bench:*", size)
ROOMS = ("bench:1", "bench:live")
publisher = {"task": None, "rate": 0.0, "every": 0, "published": 0}


@app.on("join")
async def join(ws):
    await ws.join(ws.payload["room"])


@app.on_rejoin
async def rejoin(ws, room):
    await ws.join(room)


async def publish() -> None:
    rate = publisher["rate"]
    start = time.monotonic_ns()
    k = 0
    while True:
        due = start + int(k * 1e9 / rate)
        now = time.monotonic_ns()
        if now < due:
            await asyncio.sleep((due - now) / 1e9)
            continue
        every = publisher["every"]
        to = ["bench:live", "bench:1"] if every and k % every == 0 else ["bench:live"]
        app.broadcast("live", {"k": k, "t": due, "p": time.monotonic_ns()}, to=to)
        k += 1
        publisher["published"] = k
        if k % 32 == 0:
            await asyncio.sleep(0)


@app.on("ctl")
async def ctl(ws):
    cmd = ws.payload
    answer = {"cmd": cmd["cmd"]}
    if cmd["cmd"] == "live":
        publisher["every"] = int(cmd.get("every", 0))
        if publisher["task"] is None:
            publisher["rate"] = float(cmd["rate"])
            publisher["task"] = asyncio.ensure_future(publish())
    elif cmd["cmd"] == "stop":
        if publisher["task"] is not None:
            publisher["task"].cancel()
            publisher["task"] = None
        answer["published"] = publisher["published"]
    elif cmd["cmd"] == "burst":
        for i in range(int(cmd["count"])):
            app.broadcast("missed", {"i": i}, to=["bench:1"])
    elif cmd["cmd"] == "status":
        for room in ROOMS:
            position = (await app.history(room)).position
            answer[room] = {"epoch": position.epoch, "offset": position.offset}
    await ws.emit("ctl:ok", answer)


if __name__ == "__main__":
    raise_open_files_limit()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    app.run(host="127.0.0.1", port=int(args[0]))
