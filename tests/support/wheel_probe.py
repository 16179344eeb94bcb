"""Run by tests/test_wheel.py with an installed wheel's interpreter (``-I``:
no PYTHONPATH, no script directory, no user site), inside a mount namespace
where the system's copies of the libraries the wheel bundles are hidden.

Checks that roomcast is imported from the environment (not from a source
tree), that its version is the installed distribution's, and that a Room
served on 127.0.0.1 fans a message out to two clients of roomcast's own
synchronous client. Prints ``probe ok: ...`` and exits 0, or fails with a
traceback. Argument: the prefix roomcast must be imported from."""

import asyncio
import importlib.metadata
import os
import sys
import threading

import roomcast
from roomcast import Room, Server, WebSocket

TIMEOUT = 20.0


def main() -> None:
    prefix = os.path.realpath(sys.argv[1])
    where = os.path.realpath(roomcast.__file__)
    assert where.startswith(prefix + os.sep), f"roomcast imported from {where}, not under {prefix}"
    core = os.path.realpath(roomcast._core.__file__)
    assert core.startswith(prefix + os.sep), f"roomcast._core loaded from {core}"
    installed = importlib.metadata.version("roomcast")
    assert roomcast.__version__ == installed, (roomcast.__version__, installed)

    room = Room()

    @room.on_connect("after")
    async def joined(room, websocket):
        await room.push_text("joined")

    @room.on_receive("text")
    async def on_receive(room, websocket, message):
        await room.push_text(message)

    server = Server()
    server.route("/room", room)
    ready = threading.Event()
    port: list[int] = []
    stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        done = asyncio.Event()
        async with server.serve("127.0.0.1", 0) as running:
            port.append(running.port)
            stop.append((asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(TIMEOUT), "the server did not start"
        url = f"ws://127.0.0.1:{port[0]}/room"
        with WebSocket(url) as a:
            assert a.recv(timeout=TIMEOUT) == "joined"  # a's own join: a is a member
            with WebSocket(url) as b:
                assert b.recv(timeout=TIMEOUT) == "joined"  # b's own join
                assert a.recv(timeout=TIMEOUT) == "joined"  # b's join, seen by a
                a.send("hello from the wheel")
                assert a.recv(timeout=TIMEOUT) == "hello from the wheel"
                assert b.recv(timeout=TIMEOUT) == "hello from the wheel"
    finally:
        if stop:
            loop, done = stop[0]
            loop.call_soon_threadsafe(done.set)
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the server did not stop"
    libs = sorted(os.listdir(os.path.join(os.path.dirname(where), os.pardir, "roomcast.libs")))
    print(f"probe ok: roomcast {installed} from {where}; bundled: {' '.join(libs)}")


if __name__ == "__main__":
    main()
