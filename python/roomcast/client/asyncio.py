"""The asyncio client: :func:`connect` and the :class:`ClientConnection`
it gives.

The connection runs in the C core, in the process-wide hub (:mod:`._hub`);
reconnection is its :class:`._link.Link`'s. It needs no loop of its own
in the core, so it works where a loop runs already (Jupyter, an ``async
def``).

Threads: the link's events arrive on the hub's ``"roomcast-client"``
thread, where they are only queued (``_push``); the hub then wakes the
connection's loop once per batch of events (``call_soon_threadsafe``),
and ``_drain`` moves them into the inbox and the futures on that loop's
thread. Everything else (``send``, ``recv``, ``close``, ``on_reconnect``)
runs on the loop. This module's name mirrors :mod:`.sync`; inside the
package the standard library's ``asyncio`` is still ``import asyncio``
(absolute imports), and this module is only reached as ``.asyncio``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

from .._inbox import message_cost
from ._errors import ConnectionClosed, ConnectionFailed
from ._link import Data, Front, Link, SendData
from ._rooms import Rooms
from ._settings import (
    Headers,
    Policy,
    Target,
    TLSOption,
    connection_settings,
    receive_queue_limit,
    reconnect_policy,
    rejoin_option,
)

__all__ = ["ClientConnection", "connect"]

logger = logging.getLogger("roomcast")


class ClientConnection:
    """An open asyncio client connection (what :func:`connect` gives).

    ``await send(data)`` queues one message (``str``: text, bytes-like:
    binary) and returns at once. ``await recv()`` returns the next message
    and raises :class:`ConnectionClosed` once the connection is over for
    good; ``async for message in ws`` ends there instead. ``await
    close(code=1000, reason="")`` closes and waits for the close to
    complete. ``close_code`` and ``close_reason`` are set once closed;
    ``subprotocol`` and ``response_headers`` come from the server's
    answer; ``buffered_amount`` as ``bufferedAmount`` for
    :class:`WebSocket`. With ``reconnect=True`` the same object carries
    on across reconnections (``recv()`` waits through them, ``send()``
    raises :class:`InvalidStateError` while disconnected) and
    ``on_reconnect(attempts)`` is called, on the loop, each time it is
    open again. With ``rejoin=True`` (see :class:`WebSocket`) it rejoins
    its App rooms from the last position seen in each: ``rooms`` and
    ``positions`` show them.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: str,
        target: Target,
        options: dict[str, Any],
        policy: Policy,
        on_reconnect: Callable[[int], Any] | None,
        max_receive_queue: int,
        rejoin: bool = False,
    ) -> None:
        self._loop = loop
        self.url = url
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.reconnects = 0
        self._on_reconnect = on_reconnect
        self._pending: deque[tuple[Any, ...]] = deque()
        self._dirty = False
        self._inbox: deque[Data] = deque()
        self._inbox_size = 0
        self._inbox_limit = max_receive_queue
        self._waiter: asyncio.Future[None] | None = None
        self._opened_future: asyncio.Future[None] = loop.create_future()
        self._closed_future: asyncio.Future[None] = loop.create_future()
        self._last_error: ConnectionFailed | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link = Link(
            target,
            options,
            policy,
            Front(self._opened, self._message, self._error, self._closed, self._close_info),
            Rooms() if rejoin else None,
        )

    @property
    def subprotocol(self) -> str | None:
        return self._link.protocol or None

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        return list(self._link.headers)

    @property
    def buffered_amount(self) -> int:
        return self._link.buffered()

    @property
    def rooms(self) -> set[str]:
        """With ``rejoin=True``: the App rooms the server says this client
        is in (a copy); otherwise empty."""
        return set() if self._link.rooms is None else self._link.rooms.rooms()

    @property
    def positions(self) -> dict[str, Any]:
        """With ``rejoin=True``: ``{room: Position(epoch, offset)}``, the
        last position received in each history room (a copy; ahead of
        ``recv()`` when messages wait in its queue); otherwise empty."""
        return {} if self._link.rooms is None else self._link.rooms.positions()

    @property
    def state(self) -> int:
        """``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2), ``CLOSED`` (3)."""
        return self._link.state

    async def send(self, data: SendData) -> None:
        self._link.send(data)

    async def recv(self) -> Data:
        while not self._inbox:
            if self._closed_future.done():
                raise ConnectionClosed(*self._close_info())
            if self._waiter is not None:
                raise RuntimeError("recv() is already waiting in another task")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._inbox.popleft()
        self._inbox_size -= message_cost(data)
        if self._inbox_size <= self._inbox_limit // 2:
            self._link.hold(False)
        return data

    def __aiter__(self) -> ClientConnection:
        return self

    async def __anext__(self) -> Data:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._link.close(code, reason)
        await asyncio.shield(self._closed_future)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_future)

    def __repr__(self) -> str:
        return f"<ClientConnection url={self.url} state={self.state}>"

    # dispatcher thread: queue, and one wake-up of the loop per batch
    def _push(self, *event: Any) -> None:
        self._pending.append(event)
        if not self._dirty:
            self._dirty = True
            hub = self._link.hub
            if hub is not None:
                hub.mark_dirty(self._loop, self._drain, self._link.abandon)

    def _opened(self, reconnected: bool, attempts: int) -> None:
        self._push("open", reconnected, attempts)

    def _message(self, data: Data) -> None:
        self._push("message", data)

    def _error(self, error: ConnectionFailed) -> None:
        self._push("error", error)

    def _closed(self, code: int, reason: str, final: bool) -> None:
        self._push("close", code, reason, final)

    # the loop's thread
    def _drain(self) -> None:
        self._dirty = False
        while self._pending:
            event = self._pending.popleft()
            kind = event[0]
            if kind == "message":
                self._inbox.append(event[1])
                self._inbox_size += message_cost(event[1])
                if self._inbox_size > self._inbox_limit:
                    self._link.hold(True)
            elif kind == "open":
                if not self._opened_future.done():
                    self._opened_future.set_result(None)
                if event[1]:
                    self.reconnects += 1
                    self._reconnected(event[2])
            elif kind == "error":
                self._last_error = event[1]
            elif kind == "close" and event[3]:
                self.close_code, self.close_reason = event[1], event[2]
                if not self._opened_future.done():
                    self._opened_future.set_exception(
                        self._last_error or ConnectionFailed(f"closed with {event[1]} {event[2]}")
                    )
                if not self._closed_future.done():
                    self._closed_future.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self._inbox or self._closed_future.done()):
            waiter.set_result(None)

    def _reconnected(self, attempts: int) -> None:
        if self._on_reconnect is None:
            return
        try:
            result = self._on_reconnect(attempts)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            logger.exception("roomcast: on_reconnect raised")

    def _close_info(self) -> tuple[int, str]:
        return (self.close_code or 1006, self.close_reason or "")


class _Connect:
    """``await connect(...)`` or ``async with connect(...) as ws``."""

    def __init__(self, url: str, kwargs: dict[str, Any]) -> None:
        # Checked here, when connect() is called, not when it is awaited.
        kw = dict(kwargs)
        self._rejoin = rejoin_option(kw.pop("rejoin"), kw["reconnect"])
        self._policy = reconnect_policy(
            kw.pop("reconnect"), kw.pop("min_delay"), kw.pop("max_delay"), kw.pop("max_attempts")
        )
        self._on_reconnect = kw.pop("on_reconnect")
        queue = kw.pop("max_receive_queue")
        self._max_receive_queue = receive_queue_limit(queue)
        self._target, self._options = connection_settings(url, **kw)
        self._url = url
        self._ws: ClientConnection | None = None

    async def _open(self) -> ClientConnection:
        ws = ClientConnection(
            asyncio.get_running_loop(),
            self._url,
            self._target,
            dict(self._options),
            self._policy,
            self._on_reconnect,
            self._max_receive_queue,
            self._rejoin,
        )
        ws._link.start()
        try:
            await asyncio.shield(ws._opened_future)
        except asyncio.CancelledError:
            ws._link.close(1000, "")
            raise
        return ws

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self._open().__await__()

    async def __aenter__(self) -> ClientConnection:
        self._ws = await self._open()
        return self._ws

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()


def connect(
    url: str,
    protocols: str | Iterable[str] | None = None,
    *,
    headers: Headers | None = None,
    ssl: TLSOption = None,
    reconnect: bool = False,
    min_delay: float = 0.25,
    max_delay: float = 10.0,
    max_attempts: int | None = 10,
    on_reconnect: Callable[[int], None | Awaitable[None]] | None = None,
    open_timeout: float = 10.0,
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    max_message_size: int = 2**20,
    max_receive_queue: int = 2**20,
    compression: str | None = "deflate",
    rejoin: bool = False,
) -> _Connect:
    """Opens an asyncio client connection: ``ws = await connect(url)``, or
    ``async with connect(url) as ws:`` (closed with 1000 on leaving).
    Options as for :class:`WebSocket` (``rejoin=True`` included);
    ``on_reconnect(attempts)`` (a
    function or coroutine function) runs on the loop after each
    reconnection. Raises :class:`ConnectionFailed` with the reason when
    the connection cannot be opened (with ``reconnect=True``: once the
    attempts are used up), and at once, when called, :class:`ValueError`
    or :class:`TypeError` naming a bad argument and its value."""
    return _Connect(
        url,
        {
            "protocols": protocols,
            "headers": headers,
            "ssl": ssl,
            "reconnect": reconnect,
            "min_delay": min_delay,
            "max_delay": max_delay,
            "max_attempts": max_attempts,
            "on_reconnect": on_reconnect,
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "max_message_size": max_message_size,
            "max_receive_queue": max_receive_queue,
            "compression": compression,
            "rejoin": rejoin,
        },
    )
