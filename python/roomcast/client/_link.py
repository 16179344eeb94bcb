"""One logical client connection across reconnections: the state machine.

A :class:`Link` is what a client object (a :class:`Front`: the synchronous
``WebSocket`` or the asyncio ``ClientConnection``) holds. It owns the
core's connection id of the current attempt, the ``readyState``
(:data:`CONNECTING`, :data:`OPEN`, :data:`CLOSING`, :data:`CLOSED`), and
the decision after each close: over for good, or another attempt after
:meth:`~roomcast.client._settings.Policy.delay` (exponential backoff with
full jitter). A close is final when the user closed, when reconnection is
off or its attempts are used up, or when the server ended an open
connection on purpose (1000, or 1008: it would refuse again).

Threads: events come from the hub's ``"roomcast-client"`` thread
(:meth:`Link.event`), which is also where reconnection timers fire and
where the front's hooks are called. ``send``, ``close``, ``buffered`` and
``hold`` may be called from any thread. ``Link.lock`` orders a user's
``close()`` against the open and close events; it is never held while a
front's hook runs.

With ``rejoin=True`` the link holds a :class:`~._rooms.Rooms`: each
received text frame is shown to it before the front gets it (unchanged),
and on each reconnection its ``roomcast:rejoin`` goes out before the state
becomes ``OPEN``, so before anything the application can send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._http import parse_raw_headers
from . import _hub
from ._errors import ConnectionClosed, ConnectionFailed, InvalidStateError
from ._rooms import Rooms
from ._settings import Policy, Target

__all__ = ["CLOSED", "CLOSING", "CONNECTING", "OPEN", "Data", "Front", "Link", "SendData"]

Data = str | bytes
SendData = str | bytes | bytearray | memoryview

CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3


@dataclass(frozen=True)
class Front:
    """What a link reports to, on the ``"roomcast-client"`` thread: the
    client object's hooks, handed over as callables so that they stay that
    object's own (the fronts are public classes that users subclass, as
    ``WebSocket``: its names, ``onopen`` and the rest, are the user's)."""

    opened: Callable[[bool, int], None]
    message: Callable[[Data], None]
    error: Callable[[ConnectionFailed], None]
    closed: Callable[[int, str, bool], None]
    close_info: Callable[[], tuple[int, str]]


class Link:
    """The connection behind a client object: the core's connection id,
    the state, and reconnection. Its events come from the dispatcher
    thread; ``send`` and ``close`` from any thread."""

    def __init__(
        self, target: Target, options: dict[str, Any], policy: Policy, front: Front, rooms: Rooms | None = None
    ) -> None:
        self.target = target
        self.rooms = rooms  # App rooms and positions, with rejoin=True
        self.options = options
        self.policy = policy
        self.front = front
        self.state = CONNECTING
        self.conn: int | None = None
        self.hub: _hub.Hub | None = None
        self.lock = threading.Lock()
        self.user_closed = False
        self.opened_before = False
        self.attempt = 0  # reconnection attempts since the last open
        self.paused = False
        self.protocol = ""
        self.headers: list[tuple[str, str]] = []

    def start(self) -> None:
        """Starts an attempt (the caller's thread, or the dispatcher's for
        a reconnection). Raises :class:`RuntimeError` at exit."""
        t = self.target
        _hub.start_connection(self, t.host, t.port, t.resource, self.options)

    def attach(self, hub: _hub.Hub, conn: int) -> None:
        # Under the hub's lock: no event of conn can be dispatched before.
        self.hub, self.conn = hub, conn

    # any thread
    def send(self, data: SendData) -> None:
        state, conn, hub = self.state, self.conn, self.hub
        if state == CONNECTING:
            raise InvalidStateError(
                "the WebSocket is not open yet (readyState CONNECTING): wait for onopen, or wait_open()"
            )
        if state != OPEN or conn is None or hub is None:
            raise ConnectionClosed(*self.front.close_info())
        try:
            hub.core.send(conn, data)
        except RuntimeError:
            raise ConnectionClosed(1006, "the client stopped") from None

    def close(self, code: int, reason: str) -> None:
        """The user's close: only the codes an application may send."""
        if not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code} cannot be sent: use 1000 or 3000-4999")
        if len(reason.encode()) > 123:
            raise ValueError("the close reason is longer than 123 bytes of UTF-8")
        self._close(code, reason)

    def abandon(self) -> None:
        """Nobody will read this connection's events any more (its asyncio
        loop is closed): close it as at exit, 1001."""
        self._close(1001, "going away")

    def _close(self, code: int, reason: str) -> None:
        with self.lock:
            if self.user_closed or self.state == CLOSED:
                return
            self.user_closed = True
            conn, hub = self.conn, self.hub
            if self.state == OPEN:
                self.state = CLOSING
            elif conn is None and hub is not None:  # waiting to reconnect
                self.state = CLOSED
                hub.post(lambda: self._final_close(code, reason))
                return
        if conn is not None and hub is not None:
            try:
                hub.core.close(conn, code, reason)
            except RuntimeError:
                pass  # the core has stopped: its close event is on its way

    def buffered(self) -> int:
        conn, hub = self.conn, self.hub
        return hub.core.buffered(conn) if conn is not None and hub is not None else 0

    def hold(self, paused: bool) -> None:
        """Backpressure from a front whose messages wait unread."""
        conn, hub = self.conn, self.hub
        if paused == self.paused or conn is None or hub is None:
            return
        self.paused = paused
        try:
            (hub.core.pause_reading if paused else hub.core.resume_reading)(conn)
        except RuntimeError:
            pass

    # the dispatcher thread
    def event(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == _core.EV_MESSAGE:
            data = event[2]
            if self.rooms is not None and isinstance(data, str):
                self.rooms.observe(data)
            self.front.message(data)
        elif kind == _core.EV_CONNECTED:
            self._opened(event[2], parse_raw_headers(event[3]))
        elif kind == _core.EV_CLOSE:
            self._closed(event[2], event[3])

    def _opened(self, protocol: str, headers: list[tuple[str, str]]) -> None:
        with self.lock:
            if self.user_closed:  # close() came first: the browser never opens then
                return
            if self.opened_before and self.rooms is not None:
                self._rejoin(self.rooms)
            self.state = OPEN
        self.protocol, self.headers = protocol, headers
        reconnected, attempts = self.opened_before, self.attempt
        self.opened_before = True
        self.attempt = 0
        self.front.opened(reconnected, attempts)

    def _rejoin(self, rooms: Rooms) -> None:
        """Sends ``roomcast:rejoin`` on the connection just opened, before
        the application may send (the state is not ``OPEN`` yet)."""
        message = rooms.rejoin_message()
        conn, hub = self.conn, self.hub
        if message is None or conn is None or hub is None:
            return
        try:
            hub.core.send(conn, message)
        except RuntimeError:
            pass  # the core has stopped: its close event is on its way

    def _closed(self, code: int, reason: str) -> None:
        hub = self.hub
        if hub is not None and self.conn is not None:
            hub.forget(self.conn)
        with self.lock:
            was_open = self.state in (OPEN, CLOSING)
            self.conn = None
            self.paused = False
            policy = self.policy
            final = (
                self.user_closed
                or not policy.reconnect
                or (was_open and code in (1000, 1008))  # the server ended it on purpose
                or (policy.max_attempts is not None and self.attempt >= policy.max_attempts)
            )
            self.state = CLOSED if final else CONNECTING
        if code == 1006 and not self.user_closed:
            self.front.error(ConnectionFailed(reason or "connection lost"))
        if final:
            self._final_close(code, reason)
        elif was_open:
            self.front.closed(code, reason, False)
        if not final and hub is not None:
            self.attempt += 1
            hub.call_later(policy.delay(self.attempt), self._retry)

    def _final_close(self, code: int, reason: str) -> None:
        self.front.closed(code, reason, True)
        # A closed client keeps no hold on the hub: the stopped core and
        # its descriptor go once the hub's thread ends.
        self.hub = None

    def _retry(self) -> None:
        with self.lock:
            if self.user_closed:
                return
        try:
            self.start()
        except RuntimeError:  # exiting
            with self.lock:
                self.state = CLOSED
            self._final_close(1006, "the client stopped")
