"""The synchronous client, with the browser's API: :class:`WebSocket`.

It needs no asyncio loop, so it works in scripts, robots and notebooks
(where a loop runs already). The connection runs in the C core, in the
process-wide hub (:mod:`._hub`); reconnection is its :class:`._link.Link`'s.

Threads: ``onopen``, ``onmessage``, ``onerror``, ``onclose`` and
``onreconnect`` run on the hub's ``"roomcast-client"`` thread, one at a
time, in order, never on the thread that made the object. ``send`` and
``close`` may be called from any thread. The blocking helpers
(``recv``, ``wait_open``, ``wait_closed``) wait on the caller's thread
and refuse to run on ``"roomcast-client"``, where they would wait for
themselves; ``_cond`` hands messages and state changes over between the
two.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._inbox import message_cost
from ._errors import ConnectionClosed, ConnectionFailed
from ._hub import on_dispatcher
from ._link import CLOSED, CLOSING, CONNECTING, OPEN, Data, Front, Link, SendData
from ._rooms import Rooms
from ._settings import (
    Headers,
    TLSOption,
    connection_settings,
    receive_queue_limit,
    reconnect_policy,
    rejoin_option,
)

__all__ = ["WebSocket"]

logger = logging.getLogger("roomcast")


class WebSocket:
    """A WebSocket client with the browser's API, no ``async`` needed.

    ``WebSocket(url, protocols=None, *, headers=None, ssl=None,
    reconnect=False, ...)`` starts connecting at once and returns; the
    connection runs in the C core. Events come to these methods, which do
    nothing by default: set them on the instance (``ws.onmessage = print``)
    or override them in a subclass:

    * ``onopen()``: the connection is open (again, after a reconnection);
    * ``onmessage(message)``: ``str`` for a text message, ``bytes`` for a
      binary one;
    * ``onerror(error)``: a :class:`ConnectionFailed` whose ``reason``
      says why an attempt failed or the connection was lost; ``onclose``
      follows when the connection is over for good (or was open);
    * ``onclose(code, reason)``: the close code (1006 when no close frame
      was exchanged) and reason. With ``reconnect=True`` it is also called
      when an open connection drops and a reconnection follows: then
      ``readyState`` is ``CONNECTING`` in the callback, not ``CLOSED``;
    * ``onreconnect(attempts)``: open again after a drop, after
      ``attempts`` tries (just after ``onopen``).

    They run on the ``"roomcast-client"`` thread (see the module's
    docstring), one at a time, in order; one that raises is logged on the
    ``"roomcast"`` logger and the others still run.

    Without ``onmessage`` (neither set on the instance nor overridden),
    messages wait in a queue for :meth:`recv`, the blocking alternative
    for scripts; with it, they go to it and ``recv()`` raises.

    ``readyState`` is ``CONNECTING`` (0), ``OPEN`` (1), ``CLOSING`` (2:
    ``close()`` was called, the server has not answered yet) or
    ``CLOSED`` (3). ``send(str | bytes)`` queues one message and returns
    at once; before ``OPEN`` it raises :class:`InvalidStateError`, after
    it :class:`ConnectionClosed`. ``bufferedAmount`` is how many bytes of
    queued messages (framing and TLS included) have not reached the
    kernel yet.

    Options (keyword-only):

    * ``headers``: extra request headers (a dict or (name, value) pairs;
      ``Host`` replaces the client's own);
    * ``ssl``: :class:`TLS` settings for a ``wss://`` URL (verification
      is on by default);
    * ``reconnect`` (``False``): after a drop or a failed attempt, connect
      again with exponential backoff and full jitter: attempt n waits a
      random time in [``min_delay``, min(``max_delay``, ``min_delay`` *
      2**n)] (0.25 s to 10 s), at most ``max_attempts`` (10; ``None``: no
      limit) in a row. Not after ``close()``, nor when the server closed
      with 1000 (it ended the session) or 1008 (it would refuse again);
    * ``open_timeout`` (10 s): DNS, TCP, TLS and the upgrade together;
    * ``ping_interval`` / ``ping_timeout`` (20 s each; ``None`` or 0:
      no pings, or no timeout): a ping after that much silence, and close
      1011 when its pong does not come;
    * ``max_message_size`` (1 MiB): a larger message from the server
      closes the connection with 1009, a compressed one too once it
      inflates past it (after at most that many bytes);
    * ``compression`` (``"deflate"``): offer permessage-deflate (RFC
      7692), as browsers do; once the server agrees, messages of 128 bytes
      or more are sent compressed when that shrinks them, and the
      server's compressed messages are inflated (``extensions`` then holds
      the server's answer). ``None``: offer nothing, everything plain;
    * ``max_receive_queue`` (1 MiB): received messages waiting for
      :meth:`recv` past which the core stops reading from the server
      until half of it has been read; each counts its size in memory,
      header included, so empty messages count too;
    * ``rejoin`` (``False``; needs ``reconnect=True``): for a
      :class:`roomcast.App` server, keep the rooms the server says this
      client is in (``roomcast:joined`` / ``roomcast:left``) and the last
      position seen in each history room (``roomcast:position`` and the
      ``"position"`` of each event), and on each reconnection send
      ``roomcast:rejoin`` with them before anything else: the server lets
      the client back into its rooms and replays what it missed (then
      ``roomcast:position`` says ``"recovered": true`` and how many were
      ``"missed"``, or ``"recovered": false`` and the ``"reason"``).
      :attr:`rooms` and :attr:`positions` show what it kept. Messages
      still all reach the application, unchanged.
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSING = CLOSING
    CLOSED = CLOSED

    def __init__(
        self,
        url: str,
        protocols: str | Iterable[str] | None = None,
        *,
        headers: Headers | None = None,
        ssl: TLSOption = None,
        reconnect: bool = False,
        min_delay: float = 0.25,
        max_delay: float = 10.0,
        max_attempts: int | None = 10,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_message_size: int = 2**20,
        max_receive_queue: int = 2**20,
        compression: str | None = "deflate",
        rejoin: bool = False,
    ) -> None:
        tracked = Rooms() if rejoin_option(rejoin, reconnect) else None
        target, options = connection_settings(
            url, protocols, headers, ssl, open_timeout, ping_interval, ping_timeout, max_message_size, compression
        )
        self.url = url
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._cond = threading.Condition()
        self._inbox: deque[Data] = deque()
        self._inbox_size = 0
        self._inbox_limit = receive_queue_limit(max_receive_queue)
        self._final = False
        # The connection now ending had opened: a close that follows the
        # open before wait_open() wakes is not a failure to connect.
        self._was_open = False
        self._link = Link(
            target,
            options,
            reconnect_policy(reconnect, min_delay, max_delay, max_attempts),
            Front(self._opened, self._message, self._error, self._closed, self._close_info),
            tracked,
        )
        self._link.start()

    # -- the browser's surface --------------------------------------------

    @property
    def readyState(self) -> int:
        return self._link.state

    @property
    def bufferedAmount(self) -> int:
        return self._link.buffered()

    @property
    def protocol(self) -> str:
        """The subprotocol the server chose, or ``""``."""
        return self._link.protocol

    @property
    def extensions(self) -> str:
        """The extensions the server agreed to, as it answered them
        (``"permessage-deflate; server_no_context_takeover"``), or ``""``."""
        return ", ".join(value for name, value in self._link.headers if name == "sec-websocket-extensions")

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the server's 101 answer (names lower-cased)."""
        return list(self._link.headers)

    @property
    def rooms(self) -> set[str]:
        """With ``rejoin=True``: the App rooms the server says this client
        is in (a copy); otherwise empty."""
        return set() if self._link.rooms is None else self._link.rooms.rooms()

    @property
    def positions(self) -> dict[str, Any]:
        """With ``rejoin=True``: ``{room: Position(epoch, offset)}``, the
        last position received in each history room (a copy; ahead of
        :meth:`recv` when messages wait in its queue); otherwise empty."""
        return {} if self._link.rooms is None else self._link.rooms.positions()

    def onopen(self) -> None:
        pass

    def onmessage(self, message: Data) -> None:
        pass

    def onerror(self, error: ConnectionFailed) -> None:
        pass

    def onclose(self, code: int, reason: str) -> None:
        pass

    def onreconnect(self, attempts: int) -> None:
        pass

    def send(self, data: SendData) -> None:
        """Queues one message: text for ``str``, binary for bytes-like."""
        self._link.send(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Starts the close handshake (``readyState`` becomes ``CLOSING``;
        ``onclose`` follows with the server's answer) and returns. Before
        the connection is open it gives the attempt up (``onclose`` with
        1006). Only 1000 and 3000-4999 may be sent (``ValueError``);
        closing twice does nothing."""
        self._link.close(code, reason)

    # -- blocking helpers for scripts ---------------------------------------

    def recv(self, timeout: float | None = None) -> Data:
        """The next message, waiting for it (across reconnections too).
        Raises :class:`TimeoutError` after ``timeout`` seconds,
        :class:`ConnectionClosed` once the connection is over for good and
        every message has been read, :class:`RuntimeError` on the
        callback thread (it would wait for itself) or when ``onmessage``
        takes the messages."""
        self._check_may_wait("recv")
        if self._has_onmessage():
            raise RuntimeError("messages go to onmessage: recv() is for a WebSocket without one")
        with self._cond:
            if not self._cond.wait_for(lambda: self._inbox or self._final, timeout):
                raise TimeoutError(f"no message within {timeout} s")
            if not self._inbox:
                raise ConnectionClosed(*self._close_info())
            data = self._inbox.popleft()
            self._inbox_size -= message_cost(data)
            if self._inbox_size <= self._inbox_limit // 2:
                self._link.hold(False)
            return data

    def wait_open(self, timeout: float | None = None) -> None:
        """Waits until ``readyState`` is ``OPEN``, or until a connection
        that did open has closed for good (a server may answer and close at
        once: what it sent waits for :meth:`recv`, which then raises
        :class:`ConnectionClosed`). Raises :class:`ConnectionFailed` (with
        the reason) if the connection closed for good before it opened,
        :class:`TimeoutError` after ``timeout``."""
        self._check_may_wait("wait_open")
        with self._cond:
            if not self._cond.wait_for(lambda: self._link.state == OPEN or self._final, timeout):
                raise TimeoutError(f"not open within {timeout} s")
            if self._link.state != OPEN and not self._was_open:
                code, reason = self._close_info()
                raise ConnectionFailed(reason or f"closed with {code}")

    def wait_closed(self, timeout: float | None = None) -> None:
        """Waits until the connection is over for good (``CLOSED``, no
        reconnection left); :class:`TimeoutError` after ``timeout``."""
        self._check_may_wait("wait_closed")
        with self._cond:
            if not self._cond.wait_for(lambda: self._final, timeout):
                raise TimeoutError(f"not closed within {timeout} s")

    def __enter__(self) -> WebSocket:
        """``with WebSocket(url) as ws:`` waits until it is open (see
        :meth:`wait_open`); leaving the block closes it and waits for the
        close to complete."""
        try:
            self.wait_open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if not on_dispatcher():
            try:
                self.wait_closed(timeout=10)
            except TimeoutError:
                pass

    def __repr__(self) -> str:
        return f"<WebSocket url={self.url} readyState={self.readyState}>"

    # -- from the link (dispatcher thread) --------------------------------

    def _has_onmessage(self) -> bool:
        return "onmessage" in self.__dict__ or type(self).onmessage is not WebSocket.onmessage

    @staticmethod
    def _check_may_wait(what: str) -> None:
        if on_dispatcher():
            raise RuntimeError(
                f"{what}() cannot wait on the roomcast-client thread: callbacks run there, "
                "so the event it waits for could never come"
            )

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self, name)(*args)
        except Exception:
            logger.exception("roomcast: %s of %r raised", name, self)

    def _opened(self, reconnected: bool, attempts: int) -> None:
        self.close_code = self.close_reason = None
        with self._cond:
            self._was_open = True
            self._cond.notify_all()
        self._call("onopen")
        if reconnected:
            self._call("onreconnect", attempts)

    def _message(self, data: Data) -> None:
        if self._has_onmessage():
            self._call("onmessage", data)
            return
        with self._cond:
            self._inbox.append(data)
            self._inbox_size += message_cost(data)
            if self._inbox_size > self._inbox_limit:
                self._link.hold(True)
            self._cond.notify_all()

    def _error(self, error: ConnectionFailed) -> None:
        self._call("onerror", error)

    def _closed(self, code: int, reason: str, final: bool) -> None:
        self.close_code, self.close_reason = code, reason
        with self._cond:
            self._final = final
            if not final:
                self._was_open = False  # a reconnection must open again
            self._cond.notify_all()
        self._fire_close(code, reason)

    def _fire_close(self, code: int, reason: str) -> None:
        self._call("onclose", code, reason)

    def _close_info(self) -> tuple[int, str]:
        return (self.close_code or 1006, self.close_reason or "")
