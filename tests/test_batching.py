"""The hot path's batching, as the core's counters show it.

A push made from Python is one command; the commands of one asyncio
iteration wake the core once; the frames queued for a member in one loop
turn leave in one write system call, in order. These are what make fan-out
cheap, so they are checked here through ``running.stats()``.
"""

import asyncio
import time

from websockets.asyncio.client import connect

from roomcast import Room, Server
from support.polling import until

MEMBERS = 20
BURST = 50


async def test_a_burst_of_pushes_wakes_the_core_once_and_writes_once_per_member():
    room = Room()
    joined = asyncio.Queue()

    @room.on_connect("after")
    async def welcome(room, websocket):
        joined.put_nowait(websocket)

    server = Server()
    server.route("/room", room)
    async with server.serve("127.0.0.1", 0) as running:
        clients = [await connect(f"ws://127.0.0.1:{running.port}/room") for _ in range(MEMBERS)]
        try:
            for _ in clients:
                await asyncio.wait_for(joined.get(), 30)
            # A push every member has received: the core has carried out
            # every earlier command (the joins) and made every earlier write
            # (the handshakes), so none of them is counted below. Its own
            # deliveries are counted once the fan-out's loop ends, which
            # may be after a member has read it: wait for the count too.
            settled = running.stats()["deliveries"] + MEMBERS
            await room.push_text("settled")
            for c in clients:
                assert await asyncio.wait_for(c.recv(), 30) == "settled"
            await until(lambda: running.stats()["deliveries"] == settled, what="the count")
            before = running.stats()

            # Fifty tasks woken in the same asyncio iteration push once each
            # (in creation order): without batching, the core's thread,
            # running on the other CPU, would wake between their steps.
            go = asyncio.Event()

            async def pusher(i):
                await go.wait()
                work = time.perf_counter() + 0.0005  # a handler's own work
                while time.perf_counter() < work:
                    pass
                await room.push_text(f"{i:03d}")

            tasks = [asyncio.ensure_future(pusher(i)) for i in range(BURST)]
            await asyncio.sleep(0)  # every pusher waits on `go`
            go.set()
            await asyncio.gather(*tasks)

            for c in clients:
                got = [await asyncio.wait_for(c.recv(), 30) for _ in range(BURST)]
                assert got == [f"{i:03d}" for i in range(BURST)]
            # As above: a burst's deliveries may be counted after they are read.
            await until(
                lambda: running.stats()["deliveries"] >= before["deliveries"] + MEMBERS * BURST,
                what="the burst's count",
            )
            after = running.stats()
        finally:
            for c in clients:
                await c.close()

    deliveries = after["deliveries"] - before["deliveries"]
    writes = after["writes"] - before["writes"]
    wakeups = after["wakeups"] - before["wakeups"]
    assert deliveries == MEMBERS * BURST
    # One wake-up for the burst (a second one may carry nothing but a pong).
    assert wakeups <= 2, wakeups
    # One write per member; a socket that takes only part of it costs one
    # more write for the rest.
    assert writes <= 2 * MEMBERS, writes


async def test_pushes_from_another_thread_are_delivered_without_batching():
    """Commands made off the loop's thread wake the core at once."""
    room = Room()
    joined = asyncio.Event()

    @room.on_connect("after")
    async def welcome(room, websocket):
        joined.set()

    server = Server()
    server.route("/room", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/room") as c:
            await asyncio.wait_for(joined.wait(), 30)
            loop = asyncio.get_running_loop()

            def push_from_thread():
                # push_text's synchronous part, made off the loop's thread
                room._publish("from a thread", None)

            await loop.run_in_executor(None, push_from_thread)
            assert await asyncio.wait_for(c.recv(), 30) == "from a thread"
