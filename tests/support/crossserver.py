"""Messages across servers, as the scaling-out tests check them: a
``Collector`` reads a client's messages in the background; ``warm_up``
waits until every server has subscribed a room (each publisher's probes
reach every collector); ``drained`` waits until what each publisher sent
before its marker has arrived."""

import asyncio

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
