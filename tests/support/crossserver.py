"""Messages across servers, as the scaling-out tests check them: a
``Collector`` reads a client's messages in the background; ``warm_up``
waits until every server has subscribed a room (each publisher's probes
reach every collector); ``drained`` waits until what each publisher sent
before its marker has arrived; ``three_servers_exactly_once`` is the
whole check on three running servers; ``refused`` is a server whose
backplane never comes up; ``echo_room`` is the room they serve."""

import asyncio
import logging

import pytest

from roomcast import BackplaneError, Room, Server

from .polling import until


class Collector:
    """Reads a client's messages into a list in the background."""

    def __init__(self, ws):
        self.ws = ws
        self.got = []
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for message in self.ws:
                self.got.append(message)
        except Exception:
            pass

    def stop(self):
        self.task.cancel()


async def warm_up(publishers, collectors, tag):
    """Each publisher sends probes until every collector has one of each:
    then every server has subscribed the room. The probes are forgotten."""
    want = {f"{tag}{i}" for i in range(len(publishers))}
    for _ in range(200):
        for i, ws in enumerate(publishers):
            await ws.send(f"{tag}{i}")
        await asyncio.sleep(0.1)
        if all(want <= {m for m in c.got if m.startswith(tag)} for c in collectors):
            break
    else:
        raise AssertionError("the servers never all received each other's probes")
    await drained(publishers, collectors, f"{tag}end")
    for c in collectors:
        c.got.clear()


async def drained(publishers, collectors, tag, expect=None):
    """Each publisher sends a marker; returns once every collector has the
    marker of each publisher it hears (``expect[c]``: their indexes, all by
    default). A publisher's messages arrive in order: whatever it sent
    before its marker, duplicates included, has arrived by then."""
    for i, ws in enumerate(publishers):
        await ws.send(f"{tag}{i}")
    for j, c in enumerate(collectors):
        heard = range(len(publishers)) if expect is None else expect[j]
        await until(lambda: all(f"{tag}{i}" in c.got for i in heard), what=f"the markers {tag}")


async def three_servers_exactly_once(ports, n, path="/chat"):
    """Two members on the first server and one on each other, a publisher on
    each server sending ``n`` messages: every member gets every message
    once, in each publisher's order."""
    from websockets.asyncio.client import connect

    urls = [f"ws://127.0.0.1:{port}{path}" for port in (ports[0], ports[0], ports[1], ports[2])]
    async with connect(urls[0]) as a1, connect(urls[1]) as a2, connect(urls[2]) as b1, connect(urls[3]) as c1:
        collectors = [Collector(ws) for ws in (a1, a2, b1, c1)]
        publishers = [a1, b1, c1]  # one on each server
        await warm_up(publishers, collectors, "probe-")
        for k in range(n):
            for i, ws in enumerate(publishers):
                await ws.send(f"m{i}-{k}")
        await drained(publishers, collectors, "done-")
        for c in collectors:
            got = [m for m in c.got if not m.startswith("done-")]
            assert len(got) == 3 * n, "a message was lost or delivered twice"
            for i in range(3):
                mine = [m for m in got if m.startswith(f"m{i}-")]
                assert mine == [f"m{i}-{k}" for k in range(n)], "lost, duplicated or out of order"
            c.stop()


def echo_room(name, **kw):
    """A room (``Room`` keywords) that pushes each text to its members."""
    room = Room(name=name, **kw)

    @room.on_receive("text")
    async def push(room, websocket, message):
        await room.push_text(message)

    return room


def log_text(caplog):
    return "\n".join(r.getMessage() for r in caplog.records)


async def refused(url, caplog, *reasons):
    """A server with this backplane URL never gets Redis, says one of
    ``reasons`` in its log (twice: it retries), and keeps serving its own
    members; presence raises."""
    from websockets.asyncio.client import connect

    caplog.set_level(logging.DEBUG, logger="roomcast")
    room = echo_room("refused")
    server = Server(backplane=url)
    server.route("/r", room)
    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/r") as ws:
            await until(
                lambda: sum(log_text(caplog).count(reason) for reason in reasons) >= 2,
                what=f"two attempts refused with {reasons}",
            )
            await ws.send("local")
            assert await asyncio.wait_for(ws.recv(), 30) == "local"
            assert running.stats()["backplane_up"] == 0
            with pytest.raises(BackplaneError, match="not connected"):
                await room.count()
    assert "cannot reach Redis" in log_text(caplog)
