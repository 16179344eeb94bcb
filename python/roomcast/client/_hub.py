"""The process-wide client core and the thread that dispatches its events.

Every client connection of the process (synchronous or asyncio) runs in
one :class:`Hub`: one C core (its own native loop thread does DNS, TCP,
TLS and the WebSocket protocol) and one Python thread,
``"roomcast-client"``, that polls the core and hands each event to the
connection's receiver (a :class:`~roomcast.client._link.Link`). The hub
starts with the first connection (:func:`start_connection`) and stops
itself once no connection, timer or posted call is left; a later
connection starts a new one. At interpreter exit every connection still
open is closed with 1001.

Threads:

* ``"roomcast-client"`` runs :meth:`Hub._run`: the events, the timers
  (:meth:`Hub.call_later`, reconnection delays) and the calls posted from
  other threads (:meth:`Hub.post`), one at a time, in order. A receiver's
  callbacks therefore never run on the core's loop thread, nor on the
  thread that made the client. :func:`on_dispatcher` says whether the
  caller is that thread (a blocking wait there would wait for itself).
* Any thread may call :func:`start_connection`, :meth:`Hub.post`,
  :meth:`Hub.call_later` and :meth:`Hub.forget`; ``Hub.core``'s
  per-connection methods (``send``, ``close``, ``buffered``, ...) are
  thread-safe in the core itself.
* asyncio clients are not called on this thread: :meth:`Hub.mark_dirty`
  collects them, and each loop gets one ``call_soon_threadsafe`` per
  batch of events, not one per message.

``_lock`` guards the module's hub, the hub's table of connections, its
timers and its wake-up descriptor; it is never held while a receiver runs.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .. import _core

if TYPE_CHECKING:
    import asyncio

__all__ = ["Hub", "Receiver", "on_dispatcher", "start_connection"]

logger = logging.getLogger("roomcast")

# Called on an asyncio loop: a client's events of one batch.
Drain = Callable[[], None]
# Called on "roomcast-client" when that loop is closed: nobody will read.
Abandon = Callable[[], None]


class Receiver(Protocol):
    """What the hub dispatches one core connection's events to."""

    def attach(self, hub: Hub, conn: int) -> None:
        """The connection ``conn`` was made for this receiver (called under
        the hub's lock, before any event of ``conn`` can be dispatched)."""

    def event(self, event: tuple[Any, ...]) -> None:
        """One event of the core (``"roomcast-client"`` thread)."""


_lock = threading.Lock()
_hub: Hub | None = None
# The last hub that has ended, whose thread may still be stopping its core:
# the next hub waits for it, so that one client thread runs at a time.
_ended: Hub | None = None
_exiting = False
_local = threading.local()


def on_dispatcher() -> bool:
    """Whether the caller runs on the ``"roomcast-client"`` thread."""
    return getattr(_local, "dispatcher", False)


class Hub:
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
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._links: dict[int, Receiver] = {}  # under _lock
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # under _lock
        self._calls: deque[Callable[[], None]] = deque()
        self._seq = itertools.count()
        self._dirty: dict[asyncio.AbstractEventLoop, list[tuple[Drain, Abandon]]] = {}
        self._shutting_down = False
        self._thread = threading.Thread(target=self._run, name="roomcast-client", daemon=True)
        self._thread.start()

    # any thread, without _lock
    def post(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` on the ``"roomcast-client"`` thread, soon."""
        self._calls.append(fn)
        with _lock:  # the descriptor is closed under it when the hub ends
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Runs ``fn`` on the ``"roomcast-client"`` thread after ``delay``
        seconds; the hub lives on until it has run."""
        with _lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
        self.post(lambda: None)

    def connect(self, receiver: Receiver, host: str, port: int, resource: str, options: dict[str, Any]) -> int:
        """Opens a core connection whose events go to ``receiver``; the
        caller holds ``_lock``."""
        conn = self.core.connect(host, port, resource, **options)
        self._links[conn] = receiver
        return conn

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def forget(self, conn: int) -> None:
        """The core connection ``conn`` has closed: no more events for it."""
        with _lock:
            self._links.pop(conn, None)

    # the dispatcher thread
    def mark_dirty(self, loop: asyncio.AbstractEventLoop, drain: Drain, abandon: Abandon) -> None:
        """An asyncio client has events waiting: ``drain`` runs on ``loop``
        after this batch, or ``abandon`` here if the loop is closed."""
        self._dirty.setdefault(loop, []).append((drain, abandon))

    def _run(self) -> None:
        _local.dispatcher = True
        poller = select.poll()
        poller.register(self.core.fileno(), select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        try:
            # The hub is made under _lock by the first connection, which
            # registers before this can look: no connection means its
            # connect() failed, and the hub ends at once.
            while not self._done():
                with _lock:
                    due = self._timers[0][0] if self._timers else None
                timeout = None if due is None else max(0, int((due - time.monotonic()) * 1000) + 1)
                poller.poll(timeout)
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
                self._dispatch(self.core.poll())
                self._run_calls_and_timers()
                self._flush_async()
        finally:
            with _lock:
                fd, self._wake_fd = self._wake_fd, -1
            os.close(fd)
            # Connections still open (the interpreter is exiting) get 1001;
            # their close events are the last ones dispatched.
            self.core.stop(1001, "going away")
            self._dispatch(self.core.poll())
            self._flush_async()

    def _dispatch(self, events: list[Any]) -> None:
        if not events:
            return
        with _lock:
            links = [self._links.get(event[1]) for event in events]
        for event, link in zip(events, links, strict=True):
            if link is None:
                continue
            try:
                link.event(event)
            except Exception:
                logger.exception("roomcast client failed to dispatch event %r", event[:2])

    def _run_calls_and_timers(self) -> None:
        while self._calls:
            _safely(self._calls.popleft())
        now = time.monotonic()
        while True:
            with _lock:
                if not self._timers or self._timers[0][0] > now:
                    break
                _, _, fn = heapq.heappop(self._timers)
            _safely(fn)

    def _flush_async(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for loop, clients in dirty.items():
            try:
                loop.call_soon_threadsafe(_deliver, clients)
            except RuntimeError:  # the loop is closed: nobody will read these
                for _, abandon in clients:
                    _safely(abandon)

    def _done(self) -> bool:
        global _hub, _ended
        with _lock:
            if self._shutting_down:
                return True
            if self._links or self._timers or self._calls:
                return False
            if _hub is self:
                _hub = None
                _ended = self
            return True

    def shutdown(self) -> None:
        """At exit: close every connection (1001) and end the thread."""
        with _lock:
            self._shutting_down = True
            self._timers.clear()
        self.post(lambda: None)
        self._thread.join(timeout=10)


def start_connection(receiver: Receiver, host: str, port: int, resource: str, options: dict[str, Any]) -> None:
    """Opens a core connection for ``receiver`` in the running hub, started
    if needed; ``receiver.attach`` learns the hub and the connection id.
    Raises :class:`RuntimeError` once the interpreter is exiting."""
    global _hub
    waited = False
    while True:
        with _lock:
            if _exiting:
                raise RuntimeError("the interpreter is exiting: no new connections")
            ending = _ended._thread if _ended is not None else None
            current = threading.current_thread()
            if _hub is None and not waited and ending is not None and ending.is_alive() and ending is not current:
                pass  # wait for it below, without the lock its thread takes to end
            else:
                if _hub is None or _hub.shutting_down:
                    _hub = Hub()
                conn = _hub.connect(receiver, host, port, resource, options)
                receiver.attach(_hub, conn)
                return
        ending.join(10)
        waited = True  # at most once: a core that does not stop holds no one up


def _safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("roomcast client callback failed")


def _deliver(clients: list[tuple[Drain, Abandon]]) -> None:
    """On an asyncio loop: the events of a batch, for each client."""
    for drain, _ in clients:
        drain()


@atexit.register
def _close_all() -> None:
    global _exiting
    with _lock:
        _exiting = True
        hub = _hub
    if hub is not None:
        hub.shutdown()
