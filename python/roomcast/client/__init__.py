"""Clients on the C core: :class:`WebSocket`, synchronous, with the browser's
API, and :func:`connect`, for asyncio.

    ws = roomcast.WebSocket("wss://example.com/feed?room=1")
    ws.onmessage = lambda message: print(message)

    async with roomcast.connect("ws://127.0.0.1:8000/chat") as ws:
        await ws.send("hello")
        print(await ws.recv())

Both run their connections in the C core, in one process-wide client core
that starts with the first connection and stops when the last one has
closed (one native loop thread, plus the Python thread
``"roomcast-client"`` that dispatches its events). The core does DNS, TCP,
TLS (OpenSSL), the opening handshake of RFC 6455 4.1 (random
``Sec-WebSocket-Key``, ``Sec-WebSocket-Accept`` checked, subprotocol
checked against the offer), masks each frame with a fresh key, answers
pings and sends keepalive pings of its own.

Threads. Callbacks of a :class:`WebSocket` (``onopen``, ``onmessage``,
...) run on the ``"roomcast-client"`` thread, one at a time, in order,
never on the core's loop thread and never on the thread that made the
object; a callback that blocks delays the events of every other client
in the process. The asyncio client's events reach its own loop, in
batches: one ``call_soon_threadsafe`` per batch of events, not per message.
Neither needs the calling thread's asyncio loop, so both work where one is
running already (a Jupyter kernel, an ``async def``).

The package, one concern per module (each imports only those above it):

* ``_errors``: the exceptions;
* ``_settings``: the URL, headers, :class:`TLS` and the reconnection
  policy, checked when a client is made;
* ``_rooms``: the App rooms and history positions ``rejoin=True`` keeps;
* ``_hub``: the process-wide core and its ``"roomcast-client"`` thread;
* ``_link``: one connection across reconnections (the state machine);
* ``sync``: :class:`WebSocket`; ``asyncio``: :func:`connect` and
  :class:`ClientConnection`.

This module only re-exports their public names; each reports
``roomcast.client`` as its ``__module__``, where users import it from.
"""

from __future__ import annotations

import logging

from ._errors import ConnectionClosed, ConnectionFailed, InvalidStateError
from ._link import CLOSED as CLOSED
from ._link import CLOSING as CLOSING
from ._link import CONNECTING as CONNECTING
from ._link import OPEN as OPEN
from ._link import Data as Data
from ._link import SendData as SendData
from ._settings import TLS
from ._settings import Headers as Headers
from ._settings import TLSOption as TLSOption
from .asyncio import ClientConnection, connect
from .sync import WebSocket

__all__ = [
    "TLS",
    "ClientConnection",
    "ConnectionClosed",
    "ConnectionFailed",
    "InvalidStateError",
    "WebSocket",
    "connect",
]

# Public without being in __all__, as when this was one module: the ready
# states and type aliases (compat.nwebsocket uses them) and the logger.
logger = logging.getLogger("roomcast")

# Tracebacks, reprs and pickles name the public home, not the module that
# happens to define the object today.
for _public in (TLS, ClientConnection, ConnectionClosed, ConnectionFailed, InvalidStateError, WebSocket, connect):
    _public.__module__ = __name__
del _public
