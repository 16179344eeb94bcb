"""A stand-in for the C core when an ASGI server serves the connection
itself: the Python path of an :class:`~roomcast.App` under uvicorn's own
websocket implementation (``--ws websockets-sansio``, ``wsproto``, ...).

An App served as an ASGI app gets either a connection the C core serves
(``roomcast.uvicorn``'s protocol: the scope carries its
:class:`~roomcast.ServerWebSocket`) or a bare ASGI ``(receive, send)``
pair. For the latter, :class:`PyCore` has the command methods of
``roomcast._core.Core`` that :class:`~roomcast._hub.Hub` calls (accept,
reject, respond, send, close, pause and resume reading, rooms by id, join,
leave, publish, broadcast), and each connection id stands for one ASGI
pair. A :class:`Hub` over it is a hub like any other, so that the
``ServerWebSocket``, the App, ``Room`` and the compat modules run on it
unchanged.

How it maps:

* each connection has one writer task that hands its commands, turned into
  ASGI messages (``websocket.accept``, ``websocket.send``,
  ``websocket.close``, ``websocket.http.response.*``), to ``send()`` one
  at a time and in order; a send never waits for the peer;
* a reader task pumps ``receive()`` into the websocket's queue
  (``feed``/``feed_close``, as the server's dispatch does with the core's
  events); ``pause_reading`` stops it pulling, so the ASGI server's own
  queue fills and it stops reading the socket;
* rooms are sets of connection ids; a publish or broadcast is one
  ``websocket.send`` per member (each once), not a shared frame: this path
  is correct, not fast;
* bounded as the core is: when more than ``max_queue_bytes`` (each
  message its :func:`~roomcast._inbox.message_cost`) waits for ``send()``
  (a client that does not read), the connection is closed with 1008, or,
  with ``slow_consumer="drop"``, its oldest queued messages are dropped
  until half of that waits;
* relay rooms relay here, in Python;
* no backplane: rooms on this path are local to the process.

Thread: everything runs on the loop's thread; ``send``, ``publish`` and
``broadcast`` called from another thread (``App.broadcast`` may be) are
moved onto it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from . import _core
from ._hub import Hub
from ._inbox import message_cost
from .websocket import ServerWebSocket, WebSocketState, feed, feed_close

__all__ = ["PyCore", "hub_for"]

logger = logging.getLogger("roomcast")

Data = str | bytes | bytearray | memoryview
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

_FULL = (1008, "message queue full (client too slow)")


def _pairs(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _cost(message: Mapping[str, Any]) -> int:
    """What a queued websocket.send message counts against max_queue_bytes."""
    data = message.get("text")
    return message_cost(data if data is not None else message.get("bytes") or b"")


def _keep(out: deque[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool]) -> None:
    """Keeps the messages of ``out`` that ``keep`` takes, in place (the
    writer holds that deque), in order."""
    kept = [message for message in out if keep(message)]
    out.clear()
    out.extend(kept)


class _Conn:
    """One ASGI websocket connection: its pair, what waits for send(), its
    rooms and its two tasks."""

    __slots__ = (
        "receive",
        "send",
        "ws",
        "http_response",
        "out",
        "queued",
        "wake",
        "flushed",
        "resumed",
        "rooms",
        "closing",
        "answered",
        "ended",
        "writer",
        "reader",
    )

    def __init__(self, receive: Receive, send: Send, http_response: bool) -> None:
        self.receive = receive
        self.send = send
        self.ws: ServerWebSocket | None = None
        self.http_response = http_response  # the websocket.http.response extension
        self.out: deque[Mapping[str, Any]] = deque()
        self.queued = 0  # message_cost() of the websocket.send messages in out
        self.wake = asyncio.Event()
        self.flushed = asyncio.Event()
        self.flushed.set()
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.rooms: set[int] = set()
        self.closing: tuple[int, str] | None = None  # the close this side sent
        self.answered = False  # the handshake is answered (accepted, refused)
        self.ended = False  # nothing more is sent
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None


class PyCore:
    """The commands of ``roomcast._core.Core`` over ASGI connections (see
    the module's docstring). Made by :func:`hub_for`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Mapping[str, Any]) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._max_queue = int(options["max_queue_bytes"])
        self._drop_oldest = bool(options["drop_oldest"])
        self._close_timeout = float(options["close_timeout"])
        self._id = secrets.randbits(64)
        self._conns: dict[int, _Conn] = {}
        self._rooms: dict[int, tuple[int, set[int]]] = {}  # room -> (relay, members)
        self._conn_ids = itertools.count(1)
        self._room_ids = itertools.count(1)
        self._stats = {"accepted_total": 0, "deliveries": 0, "slow_consumer_closes": 0, "messages_dropped": 0}

    def server_id(self) -> int:
        return self._id

    def stats(self) -> dict[str, int]:
        return dict(self._stats, connections=len(self._conns), rooms=len(self._rooms))

    def _elsewhere(self) -> bool:
        return threading.get_ident() != self._thread

    # -- connections: what the App's ASGI call uses ----------------------------------

    def open(self, receive: Receive, send: Send, http_response: bool) -> int:
        conn = next(self._conn_ids)
        self._conns[conn] = _Conn(receive, send, http_response)
        return conn

    def start(self, conn: int, ws: ServerWebSocket) -> None:
        """Starts reading and writing ``conn`` for ``ws``."""
        c = self._conns[conn]
        c.ws = ws
        c.writer = self._loop.create_task(self._write(c))
        c.reader = self._loop.create_task(self._read(conn, c))

    async def finish(self, conn: int) -> None:
        """The application is done with ``conn``: what it queued is sent
        (its close included), the close is waited for (up to
        ``close_timeout``), then the connection is forgotten."""
        c = self._conns.get(conn)
        if c is None:
            return
        try:
            if c.ws is not None and c.ws.client_state is not WebSocketState.DISCONNECTED and c.reader is not None:
                # The application returned while the peer is still there:
                # its close (queued by the server's endpoint runner) goes out
                # and the peer answers it.
                await asyncio.wait([c.reader], timeout=self._close_timeout)
            if not c.ended:
                await asyncio.wait_for(c.flushed.wait(), self._close_timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._forget(conn, c)

    def _forget(self, conn: int, c: _Conn) -> None:
        self._conns.pop(conn, None)
        for room in c.rooms:
            entry = self._rooms.get(room)
            if entry is not None:
                entry[1].discard(conn)
        c.rooms.clear()
        c.ended = True
        for task in (c.reader, c.writer):
            if task is not None and not task.done():
                task.cancel()
        ws = c.ws
        if ws is not None and ws.client_state is not WebSocketState.DISCONNECTED:
            feed_close(ws, *(c.closing or (1006, "")))

    async def _read(self, conn: int, c: _Conn) -> None:
        ws = c.ws
        assert ws is not None
        code, reason = 1006, ""
        try:
            while True:
                if not c.resumed.is_set():
                    await c.resumed.wait()
                message = await c.receive()
                kind = message.get("type")
                if kind == "websocket.receive":
                    data = message.get("text")
                    if data is None:
                        data = message.get("bytes")
                    if data is not None and not self._relay(conn, c, data):
                        feed(ws, data)
                elif kind == "websocket.disconnect":
                    code = int(message.get("code") or 1005)
                    reason = str(message.get("reason") or "")
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # the ASGI server has let go of the connection: lost (1006)
        # When this side closed first, the code is the one it sent, as the
        # core reports it.
        if ws.client_state is not WebSocketState.DISCONNECTED:
            feed_close(ws, *(c.closing or (code, reason)))

    async def _write(self, c: _Conn) -> None:
        out = c.out
        while True:
            await c.wake.wait()
            c.wake.clear()
            while out:
                message = out.popleft()
                if message["type"] == "websocket.send":
                    c.queued -= _cost(message)
                try:
                    await c.send(message)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Gone: its receive() says so; nothing more to send.
                    c.ended = True
                    out.clear()
                    c.queued = 0
                    c.flushed.set()
                    return
            c.flushed.set()

    def _put(self, c: _Conn, message: Mapping[str, Any], last: bool = False) -> None:
        if c.ended:
            return
        if last:
            c.ended = True  # a close or an HTTP answer: nothing after it
        c.out.append(message)
        c.flushed.clear()
        c.wake.set()

    # -- the commands of the core -----------------------------------------------------

    def accept(self, conn: int, subprotocol: str | None = None, headers: Sequence[tuple[str, str]] = ()) -> None:
        c = self._conns.get(conn)
        if c is None or c.answered:
            return
        c.answered = True
        self._stats["accepted_total"] += 1
        self._put(c, {"type": "websocket.accept", "subprotocol": subprotocol, "headers": _pairs(headers)})

    def reject(self, conn: int, status: int = 403, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> None:
        c = self._conns.get(conn)
        if c is None or c.answered:
            return
        c.answered = True
        if status == 403 and not body and not headers or not c.http_response:
            # ASGI's refusal: the server answers 403.
            self._put(c, {"type": "websocket.close", "code": 1000}, last=True)
            return
        pairs = [("content-type", "text/plain; charset=utf-8"), *headers]
        self._respond(c, status, pairs, body or f"{status}\n".encode())

    def respond(
        self, conn: int, status: int, headers: Sequence[tuple[str, str]], body: bytes, head_only: bool = False
    ) -> None:
        c = self._conns.get(conn)
        if c is None or c.answered:
            return
        c.answered = True
        if not c.http_response:
            self._put(c, {"type": "websocket.close", "code": 1000}, last=True)
            return
        self._respond(c, status, list(headers), b"" if head_only else body)

    def _respond(self, c: _Conn, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._put(c, {"type": "websocket.http.response.start", "status": status, "headers": _pairs(headers)})
        self._put(c, {"type": "websocket.http.response.body", "body": body}, last=True)

    def close(self, conn: int, code: int = 1000, reason: str = "") -> None:
        c = self._conns.get(conn)
        if c is None or c.ended:
            return
        if not c.answered:
            self.reject(conn, 403)
            return
        c.closing = (code, reason)
        self._put(c, {"type": "websocket.close", "code": code, "reason": reason}, last=True)
        # As the core's close_timeout: a peer that does not take the close
        # (it does not read) is given up on, and the application told.
        self._loop.call_later(self._close_timeout, self._give_up, c)

    def _give_up(self, c: _Conn) -> None:
        ws = c.ws
        if ws is not None and ws.client_state is not WebSocketState.DISCONNECTED:
            if c.reader is not None:
                c.reader.cancel()
            if c.writer is not None:
                c.writer.cancel()
            c.flushed.set()
            feed_close(ws, *(c.closing or (1006, "")))

    def send(self, conn: int, data: Data) -> None:
        if self._elsewhere():
            self._loop.call_soon_threadsafe(self.send, conn, bytes(data) if not isinstance(data, str) else data)
            return
        c = self._conns.get(conn)
        if c is not None:
            self._deliver(conn, c, data if isinstance(data, (str, bytes)) else bytes(data))

    def _deliver(self, conn: int, c: _Conn, data: str | bytes) -> None:
        if c.ended or not c.answered:
            return
        cost = message_cost(data)
        c.queued += cost
        if c.queued > self._max_queue:
            if not self._drop_oldest:
                self._stats["slow_consumer_closes"] += 1
                _keep(c.out, lambda m: m["type"] != "websocket.send")
                c.queued = 0
                self.close(conn, *_FULL)
                return
            self._drop(c)
        self._stats["deliveries"] += 1
        key = "text" if isinstance(data, str) else "bytes"
        self._put(c, {"type": "websocket.send", key: data})

    def _drop(self, c: _Conn) -> None:
        """slow_consumer="drop": the oldest queued messages go until half
        of max_queue_bytes waits (the new one included)."""

        def kept(message: Mapping[str, Any]) -> bool:
            if message["type"] == "websocket.send" and c.queued > self._max_queue // 2:
                c.queued -= _cost(message)
                self._stats["messages_dropped"] += 1
                return False
            return True

        _keep(c.out, kept)

    def pause_reading(self, conn: int) -> None:
        c = self._conns.get(conn)
        if c is not None:
            c.resumed.clear()

    def resume_reading(self, conn: int) -> None:
        c = self._conns.get(conn)
        if c is not None:
            c.resumed.set()

    # -- rooms ---------------------------------------------------------------------------

    def room_new(self, relay: int = _core.RELAY_NONE) -> int:
        if relay not in (_core.RELAY_NONE, _core.RELAY_ALL, _core.RELAY_OTHERS):
            raise ValueError(f"relay must be 0, 1 or 2, not {relay!r}")
        room = next(self._room_ids)
        self._rooms[room] = (relay, set())
        return room

    def room_name(self, room: int, name: str | bytes) -> None:
        pass  # names matter to a backplane only

    def room_free(self, room: int) -> None:
        entry = self._rooms.pop(room, None)
        if entry is not None:
            for conn in entry[1]:
                c = self._conns.get(conn)
                if c is not None:
                    c.rooms.discard(room)

    def join(self, conn: int, room: int, relay: int = _core.RELAY_NONE) -> None:
        entry = self._rooms.get(room)
        if entry is None:
            return
        if entry[0] != relay:
            raise ValueError("relay must be the mode the room was made with")
        c = self._conns.get(conn)
        if c is not None and not c.ended:
            entry[1].add(conn)
            c.rooms.add(room)

    def leave(self, conn: int, room: int) -> None:
        entry = self._rooms.get(room)
        if entry is not None:
            entry[1].discard(conn)
        c = self._conns.get(conn)
        if c is not None:
            c.rooms.discard(room)

    def publish(self, room: int, data: Data, exclude: int = 0) -> None:
        self.broadcast([room], data, exclude)

    def broadcast(self, rooms: Sequence[int], data: Data, exclude: int = 0) -> None:
        if self._elsewhere():
            data = data if isinstance(data, (str, bytes)) else bytes(data)
            self._loop.call_soon_threadsafe(self.broadcast, list(rooms), data, exclude)
            return
        message = data if isinstance(data, (str, bytes)) else bytes(data)
        members: dict[int, None] = {}
        for room in rooms:
            entry = self._rooms.get(room)
            if entry is not None:
                members.update(dict.fromkeys(entry[1]))
        members.pop(exclude, None)
        conns = self._conns
        for conn in members:
            c = conns.get(conn)
            if c is not None:
                self._deliver(conn, c, message)

    def _relay(self, conn: int, c: _Conn, data: str | bytes) -> bool:
        """Relays a received message to the relay rooms ``conn`` is in;
        True if it is in one (no event is made for the message then)."""
        relayed = False
        for room in list(c.rooms):
            relay, members = self._rooms.get(room, (_core.RELAY_NONE, set()))
            if relay == _core.RELAY_NONE:
                continue
            relayed = True
            self.broadcast([room], data, conn if relay == _core.RELAY_OTHERS else 0)
        return relayed


def hub_for(
    loop: asyncio.AbstractEventLoop, options: Mapping[str, Any], subprotocols: Iterable[str], max_receive_queue: int
) -> tuple[Hub, PyCore]:
    """A running hub over a new :class:`PyCore` on ``loop``: what the
    Python path's connections of one App on one loop share."""
    core = PyCore(loop, options)
    hub = Hub(core, loop, subprotocols=subprotocols, max_receive_queue=max_receive_queue)  # type: ignore[arg-type]
    hub.start()
    return hub, core
