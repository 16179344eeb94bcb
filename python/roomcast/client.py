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
"""

from __future__ import annotations

import asyncio
import atexit
import heapq
import inspect
import itertools
import logging
import os
import random
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import (
    Any,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Optional,
    Union,
)
from urllib.parse import quote, urlsplit

from . import _core, _options
from .websocket import message_cost, parse_raw_headers

__all__ = [
    "TLS",
    "ClientConnection",
    "ConnectionClosed",
    "ConnectionFailed",
    "InvalidStateError",
    "WebSocket",
    "connect",
]

logger = logging.getLogger("roomcast")

Data = Union[str, bytes]
SendData = Union[str, bytes, bytearray, memoryview]
Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]

CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3

# Headers the client writes itself (Host may be replaced).
_OWN_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
     "sec-websocket-protocol", "sec-websocket-extensions", "content-length"}
)


class ConnectionClosed(ConnectionError):
    """The connection has closed: ``code`` and ``reason`` are the close
    code (1006 when no close frame was exchanged) and its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionFailed(ConnectionError):
    """A connection could not be opened, or was lost: ``reason`` says why
    ("connection refused", "TLS: certificate verify failed: ...",
    "HTTP 404 in handshake: Not Found", "handshake timeout (...)")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidStateError(ConnectionError):
    """``send()`` while the connection is not open yet (the browser's
    ``InvalidStateError``)."""


@dataclass(frozen=True)
class TLS:
    """TLS settings of a ``wss://`` connection (the URL's scheme decides
    whether TLS is used at all).

    * ``verify`` (default ``True``): the server's certificate chain must
      lead to a trusted root and the certificate must name the server; off,
      anything is accepted (for tests against a self-made certificate,
      never in production);
    * ``cafile``: a PEM file of roots to trust instead of the system's
      (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are honoured when it is not
      given);
    * ``server_hostname``: the name to check the certificate against and
      to send as SNI, when it is not the URL's host. An empty name raises
      :class:`ValueError` (it would turn the name check off; use
      ``verify=False`` to turn every check off).

    A dict with the same keys is accepted too. An :class:`ssl.SSLContext`
    is not: the TLS runs in the C core, on OpenSSL, outside Python's
    ``ssl`` module.
    """

    verify: bool = True
    cafile: Optional[str] = None
    server_hostname: Optional[str] = None

    def __post_init__(self) -> None:
        name = self.server_hostname
        if name is not None:
            # An empty name would turn the host-name check off while the
            # chain is still verified (Python's ssl refuses it too).
            if not isinstance(name, str):
                raise TypeError(f"server_hostname must be a str or None, not {type(name).__name__}")
            if not name or "\0" in name or len(name.encode("utf-8", "surrogatepass")) > 253:
                raise ValueError(f"server_hostname must be a host name of 1 to 253 bytes without NUL, not {name!r}")
        if self.cafile is not None and not isinstance(self.cafile, (str, os.PathLike)):
            raise TypeError(f"cafile must be a path or None, not {type(self.cafile).__name__}")


TLSOption = Union[TLS, Mapping[str, Any], None]


# -- settings -------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    resource: str  # path and query
    tls: bool


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r}: the scheme must be ws:// or wss://, not {scheme or 'none'!r}")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"{url!r}: a WebSocket URL has no fragment (RFC 6455 3)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{url!r}: credentials in the URL are not sent; pass headers={{'Authorization': ...}}"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number in 0-65535") from None
    tls = scheme == "wss"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return _Target(host, port or (443 if tls else 80), path + ("?" + query if query else ""), tls)


def _header_pairs(headers: Optional[Headers]) -> tuple[list[tuple[str, str]], Optional[str]]:
    """The extra request headers and the Host that replaces ours, if any."""
    if headers is None:
        return [], None
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs, host = [], None
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must be str pairs, not {name!r}: {value!r}")
        lower = name.lower()
        if lower in _OWN_HEADERS:
            what = "pass protocols=" if lower == "sec-websocket-protocol" else "the client sets it"
            raise ValueError(f"header {name!r} cannot be given: {what}")
        if lower == "host":
            host = value
        else:
            pairs.append((name, value))
    return pairs, host


def _tls_settings(tls: bool, option: TLSOption, url: str) -> dict[str, Any]:
    if option is None:
        option = TLS()
    elif isinstance(option, Mapping):
        unknown = set(option) - {"verify", "cafile", "server_hostname"}
        if unknown:
            raise TypeError(f"unknown ssl option(s) {sorted(unknown)}: use verify, cafile, server_hostname")
        option = TLS(**option)
    elif not isinstance(option, TLS):
        raise TypeError(
            "ssl must be roomcast.TLS(verify=..., cafile=..., server_hostname=...) or a dict "
            f"with those keys, not {type(option).__name__}: TLS runs in the C core, so an "
            "ssl.SSLContext cannot be used"
        )
    if not tls:
        if option != TLS():
            raise ValueError(f"{url!r}: TLS options for a ws:// URL; use wss:// for TLS")
        return {}
    return {
        "tls": True,
        "verify": bool(option.verify),
        "cafile": None if option.cafile is None else os.fspath(option.cafile),
        "server_name": option.server_hostname,
    }


@dataclass(frozen=True)
class _Policy:
    reconnect: bool
    min_delay: float
    max_delay: float
    max_attempts: Optional[int]

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter: a random time in
        [min_delay, min(max_delay, min_delay * 2**attempt)]."""
        ceiling = min(self.max_delay, self.min_delay * float(2 ** min(attempt, 30)))
        return self.min_delay + random.random() * max(0.0, ceiling - self.min_delay)


def _settings(
    url: str,
    protocols: Union[str, Iterable[str], None],
    headers: Optional[Headers],
    ssl: TLSOption,
    open_timeout: float,
    ping_interval: Optional[float],
    ping_timeout: Optional[float],
    max_message_size: int,
) -> tuple[_Target, dict[str, Any]]:
    target = _parse_url(url)
    if isinstance(protocols, str):
        protocols = [protocols]
    offered = list(protocols or ())
    pairs, host_header = _header_pairs(headers)
    rules = _options.CLIENT
    options: dict[str, Any] = {
        "host_header": host_header,
        "headers": pairs,
        "protocols": offered,
        "handshake_timeout": rules["open_timeout"]("open_timeout", open_timeout),
        "ping_interval": rules["ping_interval"]("ping_interval", ping_interval),
        "ping_timeout": rules["ping_timeout"]("ping_timeout", ping_timeout),
        "max_message_size": rules["max_message_size"]("max_message_size", max_message_size),
    }
    options.update(_tls_settings(target.tls, ssl, url))
    return target, options


def _policy(reconnect: bool, min_delay: float, max_delay: float, max_attempts: Optional[int]) -> _Policy:
    rules = _options.CLIENT
    low = rules["min_delay"]("min_delay", min_delay)
    high = rules["max_delay"]("max_delay", max_delay)
    if high < low:
        raise ValueError(f"max_delay must be at least min_delay ({min_delay!r}), not {max_delay!r}")
    return _Policy(bool(reconnect), low, high, rules["max_attempts"]("max_attempts", max_attempts))


# -- the process's client core ------------------------------------------------

_hub_lock = threading.Lock()
_hub: Optional[_Hub] = None
_exiting = False
_local = threading.local()


def _on_dispatcher() -> bool:
    return getattr(_local, "dispatcher", False)


class _Hub:
    """The client core and the ``"roomcast-client"`` thread that dispatches
    its events, runs reconnection timers and calls posted from other
    threads. It stops itself once no connection and no timer is left."""

    def __init__(self) -> None:
        # One queue limit for every client connection: past it (the
        # server does not read) the connection is failed. Events the
        # thread has not taken yet stop the reading at 8 MiB (each counts
        # its real size): a server flooding empty messages at a client
        # that does not read costs a few tens of MiB, not hundreds.
        self.core = _core.Core(max_queue_bytes=64 * 2**20, close_timeout=5.0, max_event_bytes=8 * 2**20)
        self.core.start()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.links: dict[int, _Link] = {}  # under _hub_lock
        self.timers: list[tuple[float, int, Callable[[], None]]] = []  # under _hub_lock
        self.calls: deque[Callable[[], None]] = deque()
        self.seq = itertools.count()
        self.dirty: dict[asyncio.AbstractEventLoop, list[ClientConnection]] = {}
        self.shutting_down = False
        self.thread = threading.Thread(target=self._run, name="roomcast-client", daemon=True)
        self.thread.start()

    # any thread, without _hub_lock
    def post(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)
        with _hub_lock:  # the descriptor is closed under it when the hub ends
            if self.wake_fd >= 0:
                os.eventfd_write(self.wake_fd, 1)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with _hub_lock:
            heapq.heappush(self.timers, (time.monotonic() + delay, next(self.seq), fn))
        self.post(lambda: None)

    def mark_dirty(self, front: ClientConnection) -> None:
        """An asyncio client has events waiting (dispatcher thread)."""
        self.dirty.setdefault(front._loop, []).append(front)

    # the dispatcher thread
    def _run(self) -> None:
        _local.dispatcher = True
        poller = select.poll()
        poller.register(self.core.fileno(), select.POLLIN)
        poller.register(self.wake_fd, select.POLLIN)
        try:
            # The hub is made under _hub_lock by the first connection, which
            # registers before this can look: no connection means its
            # connect() failed, and the hub ends at once.
            while not self._done():
                with _hub_lock:
                    due = self.timers[0][0] if self.timers else None
                timeout = None if due is None else max(0, int((due - time.monotonic()) * 1000) + 1)
                poller.poll(timeout)
                try:
                    os.eventfd_read(self.wake_fd)
                except BlockingIOError:
                    pass
                self._dispatch(self.core.poll())
                self._run_calls_and_timers()
                self._flush_async()
        finally:
            with _hub_lock:
                fd, self.wake_fd = self.wake_fd, -1
            os.close(fd)
            # Connections still open (the interpreter is exiting) get 1001;
            # their close events are the last ones dispatched.
            self.core.stop(1001, "going away")
            self._dispatch(self.core.poll())
            self._flush_async()

    def _dispatch(self, events: list[Any]) -> None:
        if not events:
            return
        with _hub_lock:
            links = [self.links.get(event[1]) for event in events]
        for event, link in zip(events, links):
            if link is None:
                continue
            try:
                link._event(event)
            except Exception:
                logger.exception("roomcast client failed to dispatch event %r", event[:2])

    def _run_calls_and_timers(self) -> None:
        while self.calls:
            self._safely(self.calls.popleft())
        now = time.monotonic()
        while True:
            with _hub_lock:
                if not self.timers or self.timers[0][0] > now:
                    break
                _, _, fn = heapq.heappop(self.timers)
            self._safely(fn)

    @staticmethod
    def _safely(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("roomcast client callback failed")

    def _flush_async(self) -> None:
        dirty, self.dirty = self.dirty, {}
        for loop, fronts in dirty.items():
            try:
                loop.call_soon_threadsafe(_deliver, fronts)
            except RuntimeError:  # the loop is closed: nobody will read these
                for front in fronts:
                    front._link.close(1001, "going away")

    def _done(self) -> bool:
        global _hub
        with _hub_lock:
            if self.shutting_down:
                return True
            if self.links or self.timers or self.calls:
                return False
            if _hub is self:
                _hub = None
            return True

    def shutdown(self) -> None:
        """At exit: close every connection (1001) and end the thread."""
        with _hub_lock:
            self.shutting_down = True
            self.timers.clear()
        self.post(lambda: None)
        self.thread.join(timeout=10)


def _current_hub() -> _Hub:
    """The running hub, started if needed. Holds _hub_lock."""
    global _hub
    if _exiting:
        raise RuntimeError("the interpreter is exiting: no new connections")
    if _hub is None or _hub.shutting_down:
        _hub = _Hub()
    return _hub


@atexit.register
def _close_all() -> None:
    global _exiting
    with _hub_lock:
        _exiting = True
        hub = _hub
    if hub is not None:
        hub.shutdown()


def _deliver(fronts: list[ClientConnection]) -> None:
    """On an asyncio loop: the events of a batch, for each client."""
    for front in fronts:
        front._drain()


# -- one logical connection, across reconnections ---------------------------------


class _Link:
    """The connection behind a client object: the core's connection id,
    the state, and reconnection. Its events come from the dispatcher
    thread; ``send`` and ``close`` from any thread."""

    def __init__(self, target: _Target, options: dict[str, Any], policy: _Policy, front: _Front) -> None:
        self.target = target
        self.options = options
        self.policy = policy
        self.front = front
        self.state = CONNECTING
        self.conn: Optional[int] = None
        self.hub: Optional[_Hub] = None
        self.lock = threading.Lock()
        self.user_closed = False
        self.opened_before = False
        self.attempt = 0  # reconnection attempts since the last open
        self.paused = False
        self.protocol = ""
        self.headers: list[tuple[str, str]] = []

    def start(self) -> None:
        with _hub_lock:
            hub = _current_hub()
            t = self.target
            conn = hub.core.connect(t.host, t.port, t.resource, **self.options)
            hub.links[conn] = self
            self.hub, self.conn = hub, conn

    # any thread
    def send(self, data: SendData) -> None:
        state, conn, hub = self.state, self.conn, self.hub
        if state == CONNECTING:
            raise InvalidStateError(
                "the WebSocket is not open yet (readyState CONNECTING): wait for onopen, or wait_open()"
            )
        if state != OPEN or conn is None or hub is None:
            raise ConnectionClosed(*self.front._close_info())
        try:
            hub.core.send(conn, data)
        except RuntimeError:
            raise ConnectionClosed(1006, "the client stopped") from None

    def close(self, code: int, reason: str) -> None:
        if not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code} cannot be sent: use 1000 or 3000-4999")
        if len(reason.encode()) > 123:
            raise ValueError("the close reason is longer than 123 bytes of UTF-8")
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
    def _event(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == _core.EV_MESSAGE:
            self.front._message(event[2])
        elif kind == _core.EV_CONNECTED:
            self._opened(event[2], parse_raw_headers(event[3]))
        elif kind == _core.EV_CLOSE:
            self._closed(event[2], event[3])

    def _opened(self, protocol: str, headers: list[tuple[str, str]]) -> None:
        with self.lock:
            if self.user_closed:  # close() came first: the browser never opens then
                return
            self.state = OPEN
        self.protocol, self.headers = protocol, headers
        reconnected, attempts = self.opened_before, self.attempt
        self.opened_before = True
        self.attempt = 0
        self.front._opened(reconnected, attempts)

    def _closed(self, code: int, reason: str) -> None:
        hub = self.hub
        with _hub_lock:
            if hub is not None and self.conn is not None:
                hub.links.pop(self.conn, None)
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
            self.front._error(ConnectionFailed(reason or "connection lost"))
        if final:
            self._final_close(code, reason)
        elif was_open:
            self.front._closed(code, reason, False)
        if not final and hub is not None:
            self.attempt += 1
            hub.call_later(policy.delay(self.attempt), self._retry)

    def _final_close(self, code: int, reason: str) -> None:
        self.front._closed(code, reason, True)
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


class _Front:
    """What a link reports to (dispatcher thread)."""

    def _opened(self, reconnected: bool, attempts: int) -> None:
        raise NotImplementedError

    def _message(self, data: Data) -> None:
        raise NotImplementedError

    def _error(self, error: ConnectionFailed) -> None:
        raise NotImplementedError

    def _closed(self, code: int, reason: str, final: bool) -> None:
        raise NotImplementedError

    def _close_info(self) -> tuple[int, str]:
        raise NotImplementedError


# -- the synchronous client -----------------------------------------------------


class WebSocket(_Front):
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
      closes the connection with 1009;
    * ``max_receive_queue`` (1 MiB): received messages waiting for
      :meth:`recv` past which the core stops reading from the server
      until half of it has been read; each counts its size in memory,
      header included, so empty messages count too.
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSING = CLOSING
    CLOSED = CLOSED

    def __init__(
        self,
        url: str,
        protocols: Union[str, Iterable[str], None] = None,
        *,
        headers: Optional[Headers] = None,
        ssl: TLSOption = None,
        reconnect: bool = False,
        min_delay: float = 0.25,
        max_delay: float = 10.0,
        max_attempts: Optional[int] = 10,
        open_timeout: float = 10.0,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        max_message_size: int = 2**20,
        max_receive_queue: int = 2**20,
    ) -> None:
        target, options = _settings(
            url, protocols, headers, ssl, open_timeout, ping_interval, ping_timeout, max_message_size
        )
        self.url = url
        self.extensions = ""
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._cond = threading.Condition()
        self._inbox: deque[Data] = deque()
        self._inbox_size = 0
        self._inbox_limit = _options.CLIENT["max_receive_queue"]("max_receive_queue", max_receive_queue)
        self._final = False
        # The connection now ending had opened: a close that follows the
        # open before wait_open() wakes is not a failure to connect.
        self._was_open = False
        self._link = _Link(target, options, _policy(reconnect, min_delay, max_delay, max_attempts), self)
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
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the server's 101 answer (names lower-cased)."""
        return list(self._link.headers)

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

    def recv(self, timeout: Optional[float] = None) -> Data:
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

    def wait_open(self, timeout: Optional[float] = None) -> None:
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

    def wait_closed(self, timeout: Optional[float] = None) -> None:
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
        if not _on_dispatcher():
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
        if _on_dispatcher():
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


# -- the asyncio client ---------------------------------------------------------


class ClientConnection(_Front):
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
    open again.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: str,
        target: _Target,
        options: dict[str, Any],
        policy: _Policy,
        on_reconnect: Optional[Callable[[int], Any]],
        max_receive_queue: int,
    ) -> None:
        self._loop = loop
        self.url = url
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self.reconnects = 0
        self._on_reconnect = on_reconnect
        self._pending: deque[tuple[Any, ...]] = deque()
        self._dirty = False
        self._inbox: deque[Data] = deque()
        self._inbox_size = 0
        self._inbox_limit = max_receive_queue
        self._waiter: Optional[asyncio.Future[None]] = None
        self._opened_future: asyncio.Future[None] = loop.create_future()
        self._closed_future: asyncio.Future[None] = loop.create_future()
        self._last_error: Optional[ConnectionFailed] = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link = _Link(target, options, policy, self)

    @property
    def subprotocol(self) -> Optional[str]:
        return self._link.protocol or None

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        return list(self._link.headers)

    @property
    def buffered_amount(self) -> int:
        return self._link.buffered()

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
                hub.mark_dirty(self)

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
        self._policy = _policy(kw.pop("reconnect"), kw.pop("min_delay"), kw.pop("max_delay"), kw.pop("max_attempts"))
        self._on_reconnect = kw.pop("on_reconnect")
        queue = kw.pop("max_receive_queue")
        self._max_receive_queue = _options.CLIENT["max_receive_queue"]("max_receive_queue", queue)
        self._target, self._options = _settings(url, **kw)
        self._url = url
        self._ws: Optional[ClientConnection] = None

    async def _open(self) -> ClientConnection:
        ws = ClientConnection(
            asyncio.get_running_loop(), self._url, self._target, dict(self._options), self._policy,
            self._on_reconnect, self._max_receive_queue,
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
    protocols: Union[str, Iterable[str], None] = None,
    *,
    headers: Optional[Headers] = None,
    ssl: TLSOption = None,
    reconnect: bool = False,
    min_delay: float = 0.25,
    max_delay: float = 10.0,
    max_attempts: Optional[int] = 10,
    on_reconnect: Optional[Callable[[int], Union[None, Awaitable[None]]]] = None,
    open_timeout: float = 10.0,
    ping_interval: Optional[float] = 20.0,
    ping_timeout: Optional[float] = 20.0,
    max_message_size: int = 2**20,
    max_receive_queue: int = 2**20,
) -> _Connect:
    """Opens an asyncio client connection: ``ws = await connect(url)``, or
    ``async with connect(url) as ws:`` (closed with 1000 on leaving).
    Options as for :class:`WebSocket`; ``on_reconnect(attempts)`` (a
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
        },
    )
