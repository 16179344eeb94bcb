"""The WebSocket API of ``pyn``, on roomcast.

    from roomcast.compat import pyn

    ws = pyn.WebSocket()

    @ws.define("message")
    async def on_message(ws: pyn.WebSocket, message: str) -> None:
        await ws.send_all(message)

    server = pyn.Server(ws)
    server.run(host="127.0.0.1", port=8000)

Handlers are set with ``@ws.define(element)``: ``"init"`` runs
``handler(ws)`` when a connection opens, ``"message"`` runs ``handler(ws,
message)`` for each message (a ``str``), ``"close"`` runs ``handler(ws)``
once it has closed. The ``ws`` they receive is the :class:`WebSocket`
itself, as in the original. Messages are plain text frames, any path is
served.

Sending: ``await ws.send(message)`` to the connection whose handler is
running, ``await ws.send_all(message)`` to every connection,
``await ws.send_except(message)`` to every connection but that one. Every
connection is a member of one roomcast room, so ``send_all`` and
``send_except`` are one publish each, fanned out by the C core.

Serving: ``await ws.serve(port=8765, host="127.0.0.1")`` serves until
cancelled; ``pyn.Server(ws).run(host=..., port=...)`` blocks until SIGINT
or SIGTERM, then closes every connection with 1001 "going away".
``pyn.Server(ws1, ws2).run({"port": 8001}, {"port": 8002})`` serves several
on their own ports.

Where it differs from the original, and why:

* ``send`` reaches the connection whose handler is running (and tasks that
  handler starts), even while other clients talk at the same time. The
  original sent to whichever client had connected or spoken last, so two
  interleaved clients got each other's answers. Outside a handler, ``send``
  raises :class:`RuntimeError`: there is no "current" connection.
* ``send_except`` exists (it was on the original's list of plans).
* Only the WebSocket half of pyn is here: its HTTP ``Router``,
  ``Request``, ``Response`` and file ``Logger`` are not, and ``Server``
  takes :class:`WebSocket` objects only. Server options of roomcast
  (``max_message_size``, ``ping_interval``, ...) are keyword arguments of
  :class:`WebSocket`.
* A handler that raises is logged (logger ``"roomcast"``) and closes its own
  connection with 1011; the others carry on (the original's known issue:
  one failing connection could bring down the others).
* A binary frame is read as UTF-8 text, as the original did, but one that
  is not UTF-8 closes its connection with 1007 instead of ending its
  handler with an exception.
* The ``"close"`` handler runs once the connection has left: ``clients``
  no longer lists it, ``send_all`` does not reach it, and ``send`` raises
  :class:`roomcast.WebSocketClosed`.
* ``send`` and ``send_all`` also take ``bytes`` (sent as a binary frame).
* ``debug=True`` logs connections and messages on the ``"roomcast"``
  logger at INFO; the address being served is logged there in any case.
  Nothing is written to a ``pyn.log`` file.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from .. import server as _server
from ..room import Room
from ..websocket import ServerWebSocket as Connection

__all__ = ["Connection", "Server", "WebSocket"]

logger = logging.getLogger("roomcast")

Element = Literal["init", "message", "close"]
Message = str | bytes | bytearray | memoryview
F = TypeVar("F", bound=Callable[..., Any])

# (the WebSocket, the connection) whose handler runs in this context. A
# context variable, not an attribute: each connection's handlers run in its
# own task, so interleaved clients never see each other's connection.
_current: contextvars.ContextVar[tuple[WebSocket, Connection] | None] = contextvars.ContextVar(
    "roomcast_pyn_connection", default=None
)


class WebSocket:
    """A WebSocket service: its handlers, its connections, its server.

    Attributes: ``server`` (the :class:`roomcast.Server` it runs on),
    ``host`` and ``port`` (while serving: the bound port), ``debug``.
    """

    def __init__(self, **options: Any) -> None:
        self.server = _server.Server(**options)
        self.host: str | None = None
        self.port: int | None = None
        self.debug = False
        self._on_init: Callable[..., Any] | None = None
        self._on_message: Callable[..., Any] | None = None
        self._on_close: Callable[..., Any] | None = None
        self._room = Room()
        self._room.on_connect("after")(self._opened)
        self._room.on_receive("text")(self._text)
        self._room.on_receive("bytes")(self._binary)
        self._room.on_disconnect("after")(self._closed)
        self.server.route("/{path:path}", self._room)

    def __str__(self) -> str:
        return "WebSocket"

    def define(self, element: Element) -> Callable[[F], F]:
        """Decorator: the handler of ``element``, ``"init"``, ``"message"``
        or ``"close"``. A new handler replaces the previous one."""
        if element not in ("init", "message", "close"):
            raise ValueError(f'define() takes "init", "message" or "close", not {element!r}')

        def decorator(handler: F) -> F:
            if not callable(handler):
                raise TypeError(f"{element} handler must be callable, not {type(handler).__name__}")
            if element == "init":
                self._on_init = handler
            elif element == "message":
                self._on_message = handler
            else:
                self._on_close = handler
            return handler

        return decorator

    # -- sending -----------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The connection whose handler is running (a
        :class:`roomcast.ServerWebSocket`: ``client``, ``headers``, ...). Raises
        :class:`RuntimeError` outside this service's handlers."""
        current = _current.get()
        if current is None or current[0] is not self:
            raise RuntimeError(
                "no current connection: send() and send_except() work inside this WebSocket's handlers "
                "(and tasks they start); use send_all() elsewhere"
            )
        return current[1]

    @property
    def clients(self) -> list[Connection]:
        """The open connections, in the order they connected."""
        return list(self._room)

    async def send(self, message: Message) -> None:
        """Sends ``message`` to the connection whose handler is running."""
        connection = self.connection
        if isinstance(message, str):
            await connection.send_text(message)
        else:
            await connection.send_bytes(message)

    async def send_all(self, message: Message) -> None:
        """Sends ``message`` to every connection (one publish, fanned out in
        the core)."""
        await self._push(message, None)

    async def send_except(self, message: Message) -> None:
        """Sends ``message`` to every connection but the one whose handler is
        running."""
        await self._push(message, self.connection)

    async def _push(self, message: Message, exclude: Connection | None) -> None:
        if isinstance(message, str):
            await self._room.push_text(message, exclude=exclude)
        else:
            await self._room.push_bytes(message, exclude=exclude)

    # -- serving -----------------------------------------------------------------

    async def serve(self, port: int = 8765, host: str = "127.0.0.1", debug: bool = False) -> None:
        """Serves on ``host``:``port`` until cancelled (port 0: any free one;
        ``self.port`` then holds it). On cancellation, every connection is
        closed with 1001 before this returns."""
        self.debug = debug
        async with self.server.serve(host, port) as running:
            self.host, self.port = host, running.port
            logger.info("listening on %s", running.url)
            try:
                await asyncio.get_running_loop().create_future()  # until cancelled
            finally:
                self.host = self.port = None

    # -- the room's handlers -------------------------------------------------------

    async def _run(self, handler: Callable[..., Any] | None, connection: Connection, *args: Any) -> None:
        if handler is None:
            return
        token = _current.set((self, connection))
        try:
            result = handler(self, *args)
            if inspect.isawaitable(result):
                await result
        finally:
            _current.reset(token)

    async def _opened(self, room: Room, connection: Connection) -> None:
        if self.debug:
            logger.info("pyn: %s:%s connected", connection.client.host, connection.client.port)
        await self._run(self._on_init, connection)

    async def _text(self, room: Room, connection: Connection, message: str) -> None:
        if self.debug:
            logger.info("pyn: received %r", message[:200])
        await self._run(self._on_message, connection, message)

    async def _binary(self, room: Room, connection: Connection, message: bytes) -> None:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            await connection.close(1007, "message is not valid UTF-8")
            return
        await self._text(room, connection, text)

    async def _closed(self, room: Room, connection: Connection) -> None:
        if self.debug:
            logger.info("pyn: %s:%s disconnected", connection.client.host, connection.client.port)
        await self._run(self._on_close, connection)


class Server:
    """Runs one or more :class:`WebSocket` services.

    ``Server(ws).run(host=..., port=..., debug=...)`` serves one;
    ``Server(ws1, ws2).run({...}, {...})`` serves each with its own
    arguments. ``run`` blocks until SIGINT or SIGTERM.
    """

    def __init__(self, *targets: WebSocket) -> None:
        if not targets:
            raise TypeError("Server() needs at least one WebSocket")
        for target in targets:
            if not isinstance(target, WebSocket):
                raise TypeError(
                    f"Server() takes pyn WebSocket objects, not {type(target).__name__} "
                    "(pyn's HTTP Router is not part of roomcast's compatibility layer)"
                )
        self.targets = targets

    def __str__(self) -> str:
        return f"Server running {self.targets}"

    async def serve(self, *args: dict[str, Any], **kwargs: Any) -> None:
        """Serves every target until cancelled: with one target, with the
        keyword arguments (or the one dict given); with several, target
        ``i`` with the ``i``-th dict."""
        if len(self.targets) == 1:
            options = args[0] if args else kwargs
            await self.targets[0].serve(**options)
            return
        if len(args) != len(self.targets):
            raise TypeError(f"serve() needs one dict of arguments per target ({len(self.targets)}), got {len(args)}")
        await asyncio.gather(*(target.serve(**options) for target, options in zip(self.targets, args, strict=True)))

    def run(self, *args: dict[str, Any], **kwargs: Any) -> None:
        """Serves (see :meth:`serve`) until SIGINT (Ctrl-C) or SIGTERM, then
        closes every connection with 1001 and returns."""
        asyncio.run(self._run_until_signal(args, kwargs))

    async def _run_until_signal(self, args: tuple[dict[str, Any], ...], kwargs: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.serve(*args, **kwargs))
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
                installed.append(sig)
            except (ValueError, NotImplementedError, RuntimeError):
                pass  # not the main thread, or no signals here
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this coroutine itself was cancelled
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
