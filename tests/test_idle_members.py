"""Members of a routed room and sockets of an App cost no asyncio task
while idle: their handlers run when their events come (issue 13)."""

import asyncio
import contextlib

from websockets.asyncio.client import connect

from roomcast import App, Room, Server

T = 30  # seconds; a generous bound on any single wait
N = 20


def server_tasks():
    """The tasks running roomcast's own code (the clients have theirs)."""
    return [
        t
        for t in asyncio.all_tasks()
        if "/roomcast/" in getattr(getattr(t.get_coro(), "cr_code", None), "co_filename", "")
    ]


async def until(predicate, what):
    deadline = asyncio.get_running_loop().time() + T
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"waited too long for {what}"
        await asyncio.sleep(0.01)


async def test_idle_members_of_a_routed_room_have_no_task():
    room = Room()
    seen = []

    @room.on_receive("text")
    async def echo(room, websocket, message):
        await asyncio.sleep(0)  # a real suspension: runs in a task meanwhile
        seen.append(message)
        await websocket.send_text(message)

    server = Server()
    server.route("/room", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(connect(f"ws://127.0.0.1:{running.port}/room")) for _ in range(N)
            ]
            await until(lambda: len(room) == N, "the members to join")
            await until(lambda: not server_tasks(), "the connect tasks to end")
            for k, c in enumerate(clients):
                for i in range(3):
                    await c.send(f"{k}.{i}")
            for k, c in enumerate(clients):
                assert [await asyncio.wait_for(c.recv(), T) for _ in range(3)] == [f"{k}.{i}" for i in range(3)]
            await until(lambda: not server_tasks(), "the handler tasks to end")
        await until(lambda: len(room) == 0, "the members to leave")


async def test_idle_sockets_of_an_app_have_no_task():
    app = App(serve_client=False)

    @app.on("ping")
    async def ping(ws):
        await ws.emit("pong", ws.payload)

    async with app.serve("127.0.0.1", 0) as running:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(f"ws://127.0.0.1:{running.port}/")) for _ in range(N)]
            await clients[-1].send('{"event":"ping","payload":1}')
            assert await asyncio.wait_for(clients[-1].recv(), T) == '{"event":"pong","payload":1}'
            await until(lambda: not server_tasks(), "the handler task to end")
