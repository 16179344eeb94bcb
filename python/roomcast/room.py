"""Rooms: a set of connections that share pushed messages.

The API follows the ``websocket_rooms`` library (decorators ``on_receive``,
``on_connect``, ``on_disconnect``, ``on_connection``; ``connect``,
``push_json``/``push_text``/``push_bytes``, ``remove``, ``close``) with
these differences:

* A push is never dropped: each ``push_*`` is one ``publish`` command to the
  C core, carried out in call order. The message is serialised and framed
  once, whatever the number of members.
* Falsy messages (``""``, ``b""``, ``0``, ``{}``, ``[]``) reach the handlers.
* In a room whose handler is ``on_receive("json")``, a message that is not
  JSON (or, for a binary frame, not UTF-8 JSON) closes that connection only,
  with code 1007 and a reason.
* A handler that raises is logged (logger ``"roomcast"``) and closes its
  own connection only, with code 1011 (HTTP 500 if it had not been accepted
  yet). Other members and the server carry on.
* A member that reads too slowly (its output queue in the core exceeds the
  server's ``max_queue_bytes``) is closed with 1008 and leaves the room; the
  others are not slowed down.
* A room served by ``server.route(path, room)`` keeps no task for an idle
  member: its handlers run when the member's events come (a coroutine
  handler in a task while it runs, the next message waiting for it), in
  the same order and with the same hooks as ``connect()``, which a user's
  own endpoint may still await.
* ``Room(name="lobby")`` on servers started with ``backplane=`` is one room
  across them all (see :class:`Room`); ``await room.count()`` and
  ``await room.members()`` count the members of every server.
* ``connect()`` also takes a Starlette (FastAPI) ``WebSocket`` served by
  uvicorn, so a ``websocket_rooms`` application keeps its FastAPI app and
  changes only the import; the handlers get that object. Under
  ``uvicorn --ws roomcast.uvicorn:WebSocketProtocol`` the connection is the
  core's (:mod:`roomcast.uvicorn`), and so is the member: pushes are fanned
  out in C, as for roomcast's own server, backplane and presence included.
  Under uvicorn's own protocol, pushes reach such members through Python:
  each has a task that sends them in order, and one that lets more than
  :data:`ASGI_QUEUE_BYTES` wait is closed with 1008; they are local to
  their process. A room may have members of every kind.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import (
    Any,
    Literal,
    Protocol,
    TypeVar,
    overload,
)

from . import _core, _hub, _redis_history
from ._asgi import adopted
from ._hub import ROOM_KIND, core_name
from ._inbox import message_cost
from ._params import Binder
from .backplane import BackplaneError
from .history import History, Position, Store, check_history
from .websocket import ServerWebSocket, WebSocketClosed, WebSocketDisconnect, WebSocketState, drive, hub_of, take

# Bytes of UTF-8 a user may name a room with: the core's bound less what
# roomcast keeps for the kind of a room in front of its name (see
# _hub.core_name: at most 32 bytes).
NAME_MAX = _core.ROOM_NAME_MAX - 32
# Bytes of pushes (each its message_cost) that may wait for one Starlette
# member before it is closed with 1008 (a client that does not read);
# roomcast's own members have the server's max_queue_bytes instead.
ASGI_QUEUE_BYTES = 2**20


class AsgiWebSocket(Protocol):
    """What :meth:`BaseRoom.connect` needs of a Starlette-style WebSocket."""

    application_state: Any
    client_state: Any

    async def accept(self, subprotocol: str | None = None) -> None: ...
    async def receive(self) -> Mapping[str, Any]: ...
    async def send_text(self, data: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


_STATE_NAMES = {s.name: s for s in WebSocketState}


class _AsgiSocket:
    """A Starlette WebSocket as the room drives it: messages from its
    ``receive()``; pushes sent in order, at once while nothing waits for
    this member (the ASGI server's send rarely has to wait: it then costs
    no task), else queued and sent by a task that lives while some wait."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._out: deque[str | bytes] = deque()
        self._queued = 0
        self._task: asyncio.Task[None] | None = None  # sends what waits
        self._dropped = False  # closed for not reading: takes no more pushes

    @staticmethod
    def _state(state: Any) -> WebSocketState:
        # Starlette's own enum; its RESPONSE state (an HTTP answer) is over.
        return _STATE_NAMES.get(getattr(state, "name", ""), WebSocketState.DISCONNECTED)

    @property
    def application_state(self) -> WebSocketState:
        return self._state(self.ws.application_state)

    @property
    def client_state(self) -> WebSocketState:
        return self._state(self.ws.client_state)

    async def accept(self) -> None:
        await self.ws.accept()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason)
        except Exception:
            pass  # already closed, or the client has gone: nothing to close

    async def next_message(self) -> str | bytes:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            if message.get("text") is not None:
                return str(message["text"])
            if message.get("bytes") is not None:
                return bytes(message["bytes"])

    def fail(self) -> None:
        connected = self.application_state is WebSocketState.CONNECTED
        asyncio.ensure_future(self.close(1011, "internal error") if connected else self.close())

    def start(self) -> None:
        pass  # nothing to start: a task is made when pushes must wait

    def stop(self) -> None:
        self._dropped = True
        self._out.clear()
        self._queued = 0
        if self._task is not None:
            self._task.cancel()

    def _send(self, data: str | bytes) -> Coroutine[Any, Any, None]:
        send: Coroutine[Any, Any, None] = self.ws.send_text(data) if isinstance(data, str) else self.ws.send_bytes(data)
        return send

    def push(self, data: str | bytes) -> None:
        if self._dropped:
            return
        if self._task is None:
            # Nothing waits: send now, as far as the send goes without
            # waiting (all the way, unless the transport is full).
            coro = self._send(data)
            try:
                waited = coro.send(None)
            except StopIteration:
                return
            except Exception:
                self._gone()
                return
            self._task = asyncio.ensure_future(self._drain(coro, waited))
            return
        self._out.append(data)
        self._queued += message_cost(data)
        if self._queued > ASGI_QUEUE_BYTES:
            self.stop()
            asyncio.ensure_future(self.close(1008, "message queue full (client too slow)"))

    def _gone(self) -> None:
        """A send failed: the client has gone (its receive() says so)."""
        self._out.clear()
        self._queued = 0

    async def _drain(self, coro: Coroutine[Any, Any, None], waited: Any) -> None:
        """Finishes the send that had to wait (``coro``, suspended on
        ``waited``), then sends what was queued meanwhile, in order."""
        try:
            while True:
                # Wait for what the send waits for, without its outcome:
                # the send itself takes it (a failure raises in the send).
                if isinstance(waited, asyncio.Future):
                    waited._asyncio_future_blocking = False
                    await asyncio.wait([waited])
                else:
                    await asyncio.sleep(0)  # a bare yield
                try:
                    waited = coro.send(None)
                    continue
                except StopIteration:
                    pass
                out = self._out
                if not out:
                    return
                data = out.popleft()
                self._queued -= message_cost(data)
                coro = self._send(data)
                waited = None
                try:
                    waited = coro.send(None)
                except StopIteration:
                    while out:  # the rest, awaited in this task
                        data = out.popleft()
                        self._queued -= message_cost(data)
                        await self._send(data)
                    return
        except asyncio.CancelledError:
            coro.close()
            raise
        except Exception:
            self._gone()
        finally:
            self._task = None


__all__ = ["BaseRoom", "Room"]

logger = logging.getLogger("roomcast")

ReceiveMode = Literal["text", "bytes", "json"]
When = Literal["before", "after"]
Relay = Literal["all", "others"]
F = TypeVar("F", bound=Callable[..., Any])


class _Handler:
    """A user callback with how to call it, worked out once."""

    __slots__ = ("func", "is_async", "binder")

    def __init__(self, func: Callable[..., Any], positional: int, name: str) -> None:
        if not callable(func):
            raise TypeError(f"{name} handler must be callable, not {type(func).__name__}")
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        binder = Binder(func, positional)
        self.binder: Binder | None = binder if binder else None

    async def __call__(self, room: BaseRoom, websocket: ServerWebSocket, *message: Any) -> None:
        if self.binder is None:
            result = self.func(room, websocket, *message)
        else:
            result = self.func(room, websocket, *message, **self.binder.bind(websocket.path_params))
        if self.is_async or inspect.isawaitable(result):
            await result


class BaseRoom:
    """Membership and pushes, without the decorators.

    Members are the connections between the end of ``connect``'s accept and
    the moment they leave; ``len(room)`` counts them and iterating yields
    them in joining order (over a snapshot, so a push or ``remove`` inside
    the loop is safe).

    A plain ``BaseRoom`` has no handlers: its members' messages are read and
    ignored, and pushes reach them. ``name=``, ``history=`` and
    ``history_ttl=`` are as for :class:`Room`.
    """

    def __init__(
        self, *, name: str | None = None, history: int | None = None, history_ttl: float | None = None
    ) -> None:
        if name is not None:
            check_name(name)
        self._name = name
        # The room's history (None: off); one per name in this process.
        self._store: Store | None = None
        # With history in Redis: the hub pushes go through while the
        # serving hubs are those of the generation noted, and the script
        # call's parts for its backplane.
        self._redis_via: tuple[int, _hub.Hub | None] = (-1, None)
        self._publisher: _redis_history.Publisher | None = None
        if history is not None:
            self._store = _history_store(name, history, history_ttl)
        elif history_ttl is not None:
            raise ValueError("history_ttl= needs history= (how many messages to keep)")
        # Presence: the identity each member joined with.
        self._identities: dict[Any, Any] = {}
        # Members: roomcast WebSockets, and Starlette ones: those whose
        # connection the core serves (roomcast.uvicorn) with the roomcast
        # websocket behind each in _cores, the others in _asgi.
        self._members: dict[Any, None] = {}
        self._asgi: dict[Any, _AsgiSocket] = {}
        self._cores: dict[Any, ServerWebSocket] = {}
        self._leaving: set[ServerWebSocket] = set()
        # Members run on events whose handler runs now (in a task).
        self._busy: set[Any] = set()
        # Members run on events whose connect() waits for their end.
        self._connected: dict[Any, asyncio.Future[None]] = {}
        self._on_receive: dict[str, _Handler] = {}
        self._on_connect: dict[str, _Handler] = {}
        self._on_disconnect: dict[str, _Handler] = {}
        self._relay = _core.RELAY_NONE
        # One bound method for every member that attach() drives.
        self._driver = self._pump

    # -- membership ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._members))

    def __contains__(self, websocket: object) -> bool:
        return websocket in self._members

    def __call__(self) -> BaseRoom:
        # websocket_rooms rooms are used as FastAPI dependencies this way.
        return self

    @property
    def name(self) -> str | None:
        """The room's name, or None for a room local to its server."""
        return self._name

    @property
    def position(self) -> Position | None:
        """The position of the room's last push (offset 0 before the
        first), or None for a room without history. When Redis keeps the
        history, the last push of this process (``await
        room.history(since=...)`` asks Redis)."""
        store = self._store
        if store is None:
            return None
        with store.lock:
            return store.position

    async def history(self, since: Position | None = None) -> History:
        """The pushes kept after ``since`` (a :class:`~roomcast.Position`
        a push returned; None: all that are kept), in order, with
        ``recovered=True``; or ``recovered=False`` and the reason when they
        cannot all be given (the position is older than what is kept, or
        of another epoch: the history was lost since). Raises ValueError
        for a room without history."""
        store = self._store
        if store is None:
            raise ValueError("this room keeps no history: make it with Room(history=N)")
        hub = self._redis_hub(None)
        if hub is not None and hub.backplane is not None and self._name is not None:
            found = await _redis_history.read(
                hub.backplane,
                hub.backplane.names,
                core_name(ROOM_KIND, self._name),
                since,
                store.ttl,
                everything=since is None,
            )
            events = []
            for stored in found.messages:
                position, payload, is_text = _redis_history.parse_stored(stored)
                events.append((position, payload.decode("utf-8") if is_text else payload))
            return History(events, found.recovered, found.reason, found.position)
        with store.lock:
            return store.since(since)

    async def connect(self, websocket: ServerWebSocket | AsgiWebSocket, *, identity: Any = None) -> None:
        """Runs one member's whole life in the room; returns when it has
        left (the client closed, it was removed, or it failed).

        ``identity`` (any JSON-serialisable value, e.g. a user name) is what
        :meth:`members` reports for this member, on every server.

        In order: the ``on_connect("before")`` handler (it may refuse the
        client with ``await websocket.close()``, which answers HTTP 403);
        ``accept()`` unless the endpoint accepted already; the websocket
        joins the room; the ``on_connect("after")`` handler (a push there
        reaches the newcomer too); then each message goes to the
        ``on_receive`` handler of its kind, one at a time, in order. When the
        connection ends: ``on_disconnect("before")``, it leaves the room,
        ``on_disconnect("after")``.

        A message of a kind with no handler is ignored. For a text frame the
        ``"text"`` handler wins over ``"json"``; for a binary frame
        ``"bytes"`` wins over ``"json"``.

        ``websocket`` may also be a Starlette (FastAPI) ``WebSocket``: the
        handlers then get that object, and pushes reach it in C when
        roomcast's protocol for uvicorn serves it, else through Python (see
        the module's docstring).
        """
        ws: Any = websocket
        if ws in self._members:
            raise RuntimeError(f"{ws!r} is already a member of this room")
        # io: what the room drives; ws: what the handlers see.
        io: Any = ws
        if not isinstance(ws, ServerWebSocket):
            io = adopted(getattr(ws, "scope", None) or {}) or _AsgiSocket(ws)
        if identity is not None:
            json.dumps(identity)  # TypeError now, not at join, if it cannot go to Redis
            self._identities[ws] = identity
        if not await self._enter(ws, io):
            return
        if isinstance(io, ServerWebSocket):
            await self._run_on_events(ws, io)
            return
        try:
            await self._receive_loop(ws, io)
        except WebSocketDisconnect:
            if _still_open(io):  # raised about another connection: a bug
                self._failed(ws, io, "on_receive")
        except asyncio.CancelledError:
            self._drop(ws)
            raise
        except Exception:
            self._failed(ws, io, "on_receive")
        await self._leave(ws, close=False)

    def attach(self, websocket: ServerWebSocket) -> None:
        """What :meth:`Server.route` does with each websocket of the room's
        route: :meth:`connect`'s whole sequence, but run on the server's
        events instead of in a task, so that an idle member costs no task
        and no coroutine. A handler that is a coroutine runs in a task
        while it runs; messages that arrive meanwhile wait, in order. When
        the member has left, the websocket is closed (code 1000) unless it
        already is, as the server does when an endpoint returns."""
        ws = websocket
        if ws in self._members:
            raise RuntimeError(f"{ws!r} is already a member of this room")
        if self._on_connect:
            hub_of(ws).spawn(self._attach_slowly(ws))
            return
        # No connect handler: accept and join now (neither suspends).
        try:
            _now(ws.accept())
            self._join(ws, ws)
        except WebSocketDisconnect:
            return  # gone already, or the server is stopping
        except Exception:
            self._failed(ws, ws, "on_connect('after')")
            return
        drive(ws, self._driver, ws)

    async def _attach_slowly(self, ws: ServerWebSocket) -> None:
        try:
            entered = await self._enter(ws, ws)
        except asyncio.CancelledError:
            return  # the server is stopping: the member was dropped
        if entered:
            drive(ws, self._driver, ws)
            self._pump(ws)  # what came while the handlers ran
        elif ws.application_state is not WebSocketState.DISCONNECTED:
            await ws.close()

    async def _enter(self, ws: Any, io: Any) -> bool:
        """``connect``'s way in: the connect handlers, accept, the join.
        True once the member is in; False if it never got in or has
        already left again (refused, gone, or a handler failed)."""
        try:
            before = self._on_connect.get("before")
            if before is not None:
                await before(self, ws)
            if io.application_state is WebSocketState.CONNECTING:
                # Through what the app knows, so that it sees the state.
                await (io.accept() if ws is io or isinstance(io, _AsgiSocket) else ws.accept())
            elif io.application_state is WebSocketState.DISCONNECTED:
                self._identities.pop(ws, None)
                return False  # refused by the "before" handler
        except WebSocketDisconnect:
            self._identities.pop(ws, None)
            return False
        except Exception:
            self._identities.pop(ws, None)
            self._failed(ws, io, "on_connect('before')")
            return False
        try:
            self._join(ws, io)
            after = self._on_connect.get("after")
            if after is not None:
                await after(self, ws)
            return True
        except WebSocketDisconnect:
            if _still_open(io):  # raised about another connection: a bug
                self._failed(ws, io, "on_connect('after')")
        except asyncio.CancelledError:
            self._drop(ws)
            raise
        except Exception:
            self._failed(ws, io, "on_connect('after')")
        await self._leave(ws, close=False)
        return False

    def _pick(self, data: str | bytes) -> tuple[_Handler | None, Any]:
        """The handler of a message and what it gets; (None, reason) for a
        message that is not the JSON its handler wants (close 1007)."""
        handlers = self._on_receive
        if isinstance(data, str):
            handler = handlers.get("text")
            if handler is not None:
                return handler, data
            handler = handlers.get("json")
            if handler is None:
                return None, None
            try:
                return handler, json.loads(data)
            except ValueError as exc:
                return None, _bad_json_reason(exc)
        handler = handlers.get("bytes")
        if handler is not None:
            return handler, data
        handler = handlers.get("json")
        if handler is None:
            return None, None
        try:
            return handler, json.loads(data.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is one
            return None, _bad_json_reason(exc)

    def handlers(self) -> list[tuple[str, str, Callable[..., Any]]]:
        """The room's handlers as (decorator, mode, function) triples, e.g.
        ``("on_receive", "json", f)``: what ``Room(base_room)`` copies."""
        tables = (
            ("on_receive", self._on_receive),
            ("on_connect", self._on_connect),
            ("on_disconnect", self._on_disconnect),
        )
        return [(decorator, mode, h.func) for decorator, table in tables for mode, h in table.items()]

    def _call(self, handler: _Handler, ws: Any, data: Any) -> Any:
        """Runs a receive handler: its awaitable, or None if it is done."""
        if handler.binder is None:
            result = handler.func(self, ws, data)
        else:
            result = handler.func(self, ws, data, **handler.binder.bind(ws.path_params))
        return result if handler.is_async or inspect.isawaitable(result) else None

    async def _receive_loop(self, ws: Any, io: Any) -> None:
        members = self._members
        while True:
            data = await io.next_message()
            if ws not in members or ws in self._leaving:
                return
            handler, value = self._pick(data)
            if handler is None:
                if value is None:
                    continue  # no handler for this kind
                await io.close(1007, value)
                return
            result = self._call(handler, ws, value)
            if result is not None:
                await result

    # -- members run on events (attach) ------------------------------------------

    # A member run on events is known by what its handlers see (ws: a
    # roomcast websocket, or a Starlette one whose connection the core
    # serves) and driven through its core websocket (self._core_of(ws)).

    def _core_of(self, ws: Any) -> ServerWebSocket:
        core = self._cores.get(ws)
        return ws if core is None else core

    def _step(self, ws: Any) -> Any:
        """Handles the messages that wait, until a handler must be awaited
        (returns its awaitable), none is left (None) or the member is done
        (_END: gone, removed, or it sent bad JSON)."""
        members = self._members
        io = self._core_of(ws)
        while True:
            data = take(io)
            if data is None:
                return _END if io.client_state is WebSocketState.DISCONNECTED else None
            if ws not in members or ws in self._leaving:
                return _END
            handler, value = self._pick(data)
            if handler is None:
                if value is None:
                    continue
                _now(io.close(1007, value))
                return _END
            result = self._call(handler, ws, value)
            if result is not None:
                return result

    def _fault(self, ws: Any) -> Any:
        """In an ``except`` block: a handler raised. Logged unless it is
        the disconnect of its own closed connection."""
        exc = sys.exc_info()[1]
        io = self._core_of(ws)
        if not isinstance(exc, WebSocketDisconnect) or _still_open(io):
            self._failed(ws, io, "on_receive")
        return _END

    def _pump(self, ws: Any) -> None:
        """The driver of a member run on events: called on each of its
        messages and on its close."""
        if ws in self._busy:
            return  # its task handles what came
        try:
            out = self._step(ws)
        except Exception:
            out = self._fault(ws)
        if out is None:
            return
        if out is _END:
            self._end(ws)
            return
        self._busy.add(ws)
        hub_of(self._core_of(ws)).spawn(self._pump_slowly(ws, out))

    async def _pump_slowly(self, ws: Any, awaitable: Any) -> None:
        io = self._core_of(ws)
        try:
            while True:
                try:
                    await awaitable
                    out = self._step(ws)
                except asyncio.CancelledError:
                    drive(io, None)
                    self._drop(ws)
                    self._settle(ws)
                    raise
                except Exception:
                    out = self._fault(ws)
                if out is None:
                    return
                if out is _END:
                    drive(io, None)
                    await self._finish(ws)
                    return
                awaitable = out
        finally:
            self._busy.discard(ws)

    def _end(self, ws: Any) -> None:
        """A member run on events is done: it leaves, without a task when
        the room has no disconnect handler."""
        io = self._core_of(ws)
        drive(io, None)
        if self._on_disconnect:
            self._busy.add(ws)
            hub_of(io).spawn(self._finish_busy(ws))
            return
        if ws in self._members and ws not in self._leaving:
            self._drop(ws)
        if ws not in self._connected and io.application_state is not WebSocketState.DISCONNECTED:
            _now(io.close())
        self._settle(ws)

    async def _finish_busy(self, ws: Any) -> None:
        try:
            await self._finish(ws)
        finally:
            self._busy.discard(ws)

    async def _finish(self, ws: Any) -> None:
        io = self._core_of(ws)
        try:
            await self._leave(ws, close=False)
            # A member of connect() is its caller's to close, as connect()
            # left it before; an attached one is closed as an endpoint's.
            if ws not in self._connected and io.application_state is not WebSocketState.DISCONNECTED:
                await io.close()
        finally:
            self._settle(ws)

    def _settle(self, ws: Any) -> None:
        """connect() of ``ws``, if it waits, returns now."""
        done = self._connected.get(ws)
        if done is not None and not done.done():
            done.set_result(None)

    async def _run_on_events(self, ws: Any, io: ServerWebSocket) -> None:
        """connect()'s life of a member whose connection the core serves:
        its handlers run on its events, as an attached member's, while
        connect() waits for the end."""
        done: asyncio.Future[None] = hub_of(io).loop.create_future()
        self._connected[ws] = done
        try:
            drive(io, self._driver, ws)
            self._pump(ws)  # what came while the connect handlers ran
            await done
        except asyncio.CancelledError:
            drive(io, None)
            self._drop(ws)
            raise
        finally:
            del self._connected[ws]

    def _failed(self, ws: Any, io: Any, where: str) -> None:
        logger.exception("%s handler failed for %r", where, ws)
        io.fail()

    def _join(self, ws: Any, io: Any) -> None:
        if isinstance(io, _AsgiSocket):  # a Starlette member: pushes go through Python
            self._members[ws] = None
            self._asgi[ws] = io
            io.start()
            return
        hub = hub_of(io)
        if not hub.running:
            raise WebSocketClosed(1001, "going away")  # the server is stopping
        self._members[ws] = None
        if io is not ws:
            self._cores[ws] = io
        try:
            hub.room_join(self, self._name, self._relay, io.id, self._identities.get(ws))
        except BaseException:
            del self._members[ws]
            self._cores.pop(ws, None)
            raise

    def _drop(self, ws: ServerWebSocket) -> None:
        """Leaves the room at once, without handlers."""
        self._leaving.discard(ws)
        self._identities.pop(ws, None)
        asgi = self._asgi.pop(ws, None)
        if asgi is not None:
            asgi.stop()
            self._members.pop(ws, None)
        elif ws in self._members:
            del self._members[ws]
            io = self._cores.pop(ws, ws)
            hub_of(io).room_leave(self, self._name, io.id)

    async def _leave(self, ws: ServerWebSocket, close: bool) -> None:
        if ws not in self._members or ws in self._leaving:
            return
        self._leaving.add(ws)
        io = self._io(ws)
        try:
            await self._notify("before", ws)
        finally:
            self._drop(ws)
        if close:
            await io.close()
        await self._notify("after", ws)

    def _io(self, ws: Any) -> Any:
        """What the room drives for member ``ws``."""
        return self._cores.get(ws) or self._asgi.get(ws) or ws

    async def _notify(self, when: str, ws: ServerWebSocket) -> None:
        handler = self._on_disconnect.get(when)
        if handler is None:
            return
        try:
            await handler(self, ws)
        except WebSocketDisconnect:
            pass  # the connection is ending anyway
        except Exception:
            logger.exception("on_disconnect(%r) handler failed for %r", when, ws)

    async def remove(self, websocket: ServerWebSocket) -> None:
        """Removes a member and closes its connection (code 1000), running
        the ``on_disconnect`` handlers around the removal. Its ``connect``
        call then returns. A websocket that is not a member is ignored."""
        await self._leave(websocket, close=True)

    async def close(self) -> None:
        """Removes (and closes) every member. The room stays usable."""
        for ws in list(self._members):
            await self.remove(ws)

    # -- pushes ------------------------------------------------------------

    async def push_json(
        self, message: Any, *, exclude: ServerWebSocket | AsgiWebSocket | None = None, wait: bool = True
    ) -> Position | None:
        """Sends ``message`` as JSON (compact, UTF-8) in a text frame to every
        member, except ``exclude`` if given. Raises :class:`TypeError` (or
        :class:`ValueError`) if it cannot be serialised; never waits for the
        members. Pushes reach each member in the order they were made. In a
        room with history, returns the push's :class:`~roomcast.Position`
        (None otherwise); so do the other pushes. A named room with
        history on a server with a backplane pushes through Redis, which
        gives the position: the push waits for Redis's answer (one round
        trip) and raises :class:`~roomcast.BackplaneError` while Redis is
        away. ``wait=False`` returns at once (None; a failure is logged):
        a producer that pushes in a loop then keeps its pushes in flight
        together, as a room without history does, instead of one per round
        trip. Their order is kept either way."""
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        hub = self._redis_hub(exclude)
        if hub is None:  # no Redis history: nothing to wait for
            return self._publish(data, exclude)
        return await self._publish_redis(hub, data, exclude, wait)

    async def push_text(
        self, message: str, *, exclude: ServerWebSocket | AsgiWebSocket | None = None, wait: bool = True
    ) -> Position | None:
        """Sends ``message`` in a text frame to every member but ``exclude``."""
        if not isinstance(message, str):
            raise TypeError(f"push_text() expects str, not {type(message).__name__}")
        hub = self._redis_hub(exclude)
        if hub is None:  # no Redis history: nothing to wait for
            return self._publish(message, exclude)
        return await self._publish_redis(hub, message, exclude, wait)

    async def push_bytes(
        self,
        message: bytes | bytearray | memoryview,
        *,
        exclude: ServerWebSocket | AsgiWebSocket | None = None,
        wait: bool = True,
    ) -> Position | None:
        """Sends ``message`` in a binary frame to every member but ``exclude``."""
        if isinstance(message, str):
            raise TypeError("push_bytes() expects a bytes-like object, not str")
        hub = self._redis_hub(exclude)
        if hub is None:  # no Redis history: nothing to wait for
            return self._publish(message, exclude)
        return await self._publish_redis(hub, message, exclude, wait)

    def _publish(self, data: str | bytes | bytearray | memoryview, exclude: Any | None) -> Position | None:
        """A push kept in this process's history (if any) and fanned out:
        the synchronous part of the pushes, any thread."""
        store = self._store
        if store is None:
            self._fan_out(data, exclude)
            return None
        if not isinstance(data, (str, bytes)):
            data = bytes(data)  # kept: it must not change under the history
        # The position and the hand-over to the core under one lock: the
        # core takes them in offset order (see roomcast.history).
        with store.lock:
            position = store.add(data)
            self._fan_out(data, exclude)
        return position

    def _redis_hub(self, exclude: Any | None) -> _hub.Hub | None:
        """For a named room with history: a serving hub with a backplane
        (the excluded member's first), through which Redis keeps the
        history; None: no history, or this process keeps it."""
        if self._name is None or self._store is None:
            return None
        generation = _hub.serving_generation()
        core = self._cores.get(exclude, exclude) if exclude is not None else None
        first = hub_of(core) if isinstance(core, ServerWebSocket) else None
        if first is None and self._redis_via[0] == generation:
            return self._redis_via[1]
        hubs = [h for h in _hub.serving() if h.backplane is not None]
        hubs.sort(key=lambda h: h is not first)
        chosen = hubs[0] if hubs else None
        if first is None:
            self._redis_via = (generation, chosen)
        return chosen

    async def _publish_redis(
        self, hub: _hub.Hub, data: str | bytes | bytearray | memoryview, exclude: Any | None, wait: bool
    ) -> Position | None:
        """A push through the script that gives it its position in Redis
        (roomcast._redis_history); its members here hear it from Redis, as
        every server's do. Members served in Python get it at once."""
        backplane, store = hub.backplane, self._store
        assert backplane is not None and store is not None and self._name is not None
        if not isinstance(data, (str, bytes)):
            data = bytes(data)
        if self._asgi:
            for ws, asgi in self._asgi.items():
                if ws is not exclude:
                    asgi.push(data)
        core = self._cores.get(exclude, exclude) if exclude is not None else None
        skip = core.id if isinstance(core, ServerWebSocket) and hub_of(core) is hub else 0
        is_text = isinstance(data, str)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        publisher = self._publisher
        if publisher is None or publisher.backplane is not backplane:
            publisher = _redis_history.Publisher(backplane, core_name(ROOM_KIND, self._name), store.size, store.ttl)
            self._publisher = publisher
        if not wait:
            publisher.push(payload, is_text, skip, then=self._published)
            return None
        future: asyncio.Future[Position] = backplane.loop.create_future()

        def answered(position: Position | None, error: str | None) -> None:
            if future.done():
                return
            if position is None:
                future.set_exception(BackplaneError(error or "no answer from Redis"))
            else:
                future.set_result(position)

        publisher.push(payload, is_text, skip, then=answered)
        return _seen(store, await future)

    def _published(self, position: Position | None, error: str | None) -> None:
        """The answer to a push made with wait=False."""
        if position is None:
            logger.warning("a push to room %r was not published (its history is in Redis): %s", self._name, error)
        elif self._store is not None:
            _seen(self._store, position)

    def _fan_out(self, data: str | bytes | bytearray | memoryview, exclude: Any | None) -> None:
        if self._asgi:
            message = data if isinstance(data, (str, bytes)) else bytes(data)
            for ws, asgi in self._asgi.items():
                if ws is not exclude:
                    asgi.push(message)
        if exclude is not None:
            exclude = self._cores.get(exclude, exclude)
        if isinstance(exclude, ServerWebSocket):
            _hub.publish(self, self._name, self._relay, data, hub_of(exclude), exclude.id)
        else:  # none, or not one of the core's connections
            _hub.publish(self, self._name, self._relay, data, None, 0)

    # -- presence -------------------------------------------------------------

    async def count(self) -> int:
        """How many members the room has on every server sharing it
        through Redis (a server that died stops counting within its
        ``presence_ttl``); for a room without a name, or with no server on
        a backplane, the members of this process (``len(room)``). Raises
        :class:`~roomcast.BackplaneError` while Redis is unreachable."""
        hub = _hub.presence_hub(self) if self._name is not None else None
        if hub is None or self._name is None:
            return len(self._members)
        return await hub.count(self._name)

    async def members(self) -> dict[str, Any]:
        """The members on every server: member id -> identity (the
        ``identity`` given to :meth:`connect`, or None). A member id is
        ``"<server id>:<connection id>"``, unique across servers (the
        server id is ``running.server_id``). Without a name or a
        backplane, this process's members. Raises
        :class:`~roomcast.BackplaneError` while Redis is unreachable."""
        hub = _hub.presence_hub(self) if self._name is not None else None
        if hub is None or self._name is None:
            return {_local_id(self._cores.get(ws, ws)): self._identities.get(ws) for ws in self._members}
        return await hub.members(self._name)


class Room(BaseRoom):
    """A :class:`BaseRoom` with decorators to set its handlers.

    Handlers may be plain functions or coroutine functions. They are called
    as ``handler(room, websocket)`` (connect and disconnect) or
    ``handler(room, websocket, message)`` (receive). A handler that declares
    more parameters gets them by name from ``websocket.path_params``,
    converted to its annotation when that is ``int``, ``float`` or ``str``;
    so ``async def joined(room, websocket, client_id: int)`` works for a
    route ``/chat/{client_id}``.

    ``Room(base_room)`` starts with a copy of ``base_room``'s handlers (not
    its members); decorating the new room afterwards does not change
    ``base_room``. This lets one room serve as a template for others.

    ``Room(name="lobby")``: on servers started with ``backplane=``, every
    room of that name on every server (and in this process: a name is one
    room) is one room. A push reaches each member of every server once, in
    the order of the pushes of each server; ``exclude=`` works across
    servers; relay rooms relay across servers too. Without a name a room is
    local to its server. A name is 1 to 1024 bytes of UTF-8 without NUL.
    The rooms of an :class:`~roomcast.App` are another namespace: an App
    room called "lobby" is not this room.

    ``Room(relay="all")`` (or ``"others"``) relays in C: every message a
    member sends is forwarded by the core to every member (``"others"``: but
    the sender), text as text and binary as binary, without waking Python;
    ``on_receive`` handlers are not called. Connects and disconnects still
    run their handlers, and pushes work as in any room. The mode is the
    room's for its whole life, whoever joins first; Rooms that share a name
    must share the mode too (a member of one that does not is refused:
    closed with 1011 and the ValueError logged).

    ``Room(history=N, history_ttl=seconds)`` keeps the room's last ``N``
    pushes (those younger than ``history_ttl``, when given) in this
    process. Each push returns its :class:`~roomcast.Position` (the room's
    epoch and an offset growing by one per push), and ``await
    room.history(since=position)`` gives the pushes after a position, or
    says it cannot (``recovered=False`` and why): an app with its own
    protocol can bring a client that reconnects up to date with it. Rooms
    of one name share one history. A relay room cannot have one (its
    messages never pass through Python), nor, yet, a named room on a
    server with a backplane.
    """

    def __init__(
        self,
        base_room: BaseRoom | None = None,
        *,
        relay: Relay | None = None,
        name: str | None = None,
        history: int | None = None,
        history_ttl: float | None = None,
    ) -> None:
        super().__init__(name=name, history=history, history_ttl=history_ttl)
        if relay not in (None, "all", "others"):
            raise ValueError(f'relay must be None, "all" or "others", not {relay!r}')
        if relay is not None and history is not None:
            raise ValueError(
                "a relay room cannot keep history: the core forwards its messages without Python;"
                " use on_receive and push_* to keep them"
            )
        self._relay = {None: _core.RELAY_NONE, "all": _core.RELAY_ALL, "others": _core.RELAY_OTHERS}[relay]
        if base_room is not None:
            for decorator, mode, func in base_room.handlers():
                getattr(self, decorator)(mode)(func)

    def on_receive(self, mode: ReceiveMode = "text") -> Callable[[F], F]:
        """Decorator: the handler for messages of kind ``mode``: ``"text"``
        (text frames, message is str), ``"bytes"`` (binary frames, bytes) or
        ``"json"`` (frames of either kind parsed as JSON). One handler per
        kind; a new one replaces the old."""
        if callable(mode):
            raise TypeError(
                '@room.on_receive needs its mode in parentheses: @room.on_receive("text") '
                '(or "bytes" or "json") above the handler'
            )
        if mode not in ("text", "bytes", "json"):
            raise ValueError(f'on_receive() mode must be "text", "bytes" or "json", not {mode!r}')

        def decorator(func: F) -> F:
            self._on_receive[mode] = _Handler(func, 3, f"on_receive({mode!r})")
            return func

        return decorator

    def on_connect(self, mode: When = "after") -> Callable[[F], F]:
        """Decorator: the handler run ``"before"`` the websocket is accepted
        and joins, or ``"after"`` it has joined."""
        return self._hook(self._on_connect, "on_connect", mode)

    def on_disconnect(self, mode: When = "after") -> Callable[[F], F]:
        """Decorator: the handler run ``"before"`` the websocket leaves the
        room (it is still counted and still receives pushes if its
        connection is open) or ``"after"``. Exceptions in it are logged."""
        return self._hook(self._on_disconnect, "on_disconnect", mode)

    @overload
    def on_connection(self, func: F) -> F: ...

    @overload
    def on_connection(self, func: None = None) -> Callable[[F], F]: ...

    def on_connection(self, func: F | None = None) -> Any:
        """``@room.on_connection``: same as ``@room.on_connect("after")``."""
        decorator = self.on_connect("after")
        return decorator if func is None else decorator(func)

    @staticmethod
    def _hook(table: dict[str, _Handler], name: str, mode: str) -> Callable[[F], F]:
        if callable(mode):
            raise TypeError(
                f'@room.{name} needs its mode in parentheses: @room.{name}("after") (or "before") above the handler'
            )
        if mode not in ("before", "after"):
            raise ValueError(f'{name}() mode must be "before" or "after", not {mode!r}')

        def decorator(func: F) -> F:
            table[mode] = _Handler(func, 2, f"{name}({mode!r})")
            return func

        return decorator


def _seen(store: Store, position: Position) -> Position:
    """The position Redis gave a push; room.position follows the last push
    of this process."""
    with store.lock:
        if position.epoch != store.epoch or position.offset > store.offset:
            store.epoch, store.offset = position
    return position


# The histories of named rooms: one per name in this process, as long as a
# Room of that name holds it.
_named_stores: weakref.WeakValueDictionary[str, Store] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


def _history_store(name: str | None, size: int, ttl: float | None) -> Store:
    """A new history, or for a name the one its other Rooms share (which
    must keep as much as this one asks)."""
    check_history(size, ttl)
    if name is None:
        return Store(size, ttl)
    with _named_lock:
        store = _named_stores.get(name)
        if store is None:
            store = _named_stores[name] = Store(size, ttl)
        elif (store.size, store.ttl) != (size, ttl):
            raise ValueError(
                f"room {name!r} already keeps history={store.size}, history_ttl={store.ttl}:"
                " Rooms of one name share one history"
            )
        return store


def check_name(name: str) -> None:
    """Raises unless ``name`` can name a room."""
    if not isinstance(name, str):
        raise TypeError(f"a room name is a str, not {type(name).__name__}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 0 < size <= NAME_MAX or "\0" in name:
        raise ValueError(f"a room name is 1 to {NAME_MAX} bytes of UTF-8 without NUL, not {name[:40]!r}")


def _local_id(ws: Any) -> str:
    if isinstance(ws, ServerWebSocket):
        return hub_of(ws).member_id(ws.id)
    return f"asgi-{id(ws):x}"  # a Starlette member: known to this process only


_END = object()  # _step's answer: the member is done


def _now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine that never suspends (ServerWebSocket's accept and
    close: they only queue a command) to its end, without a task."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError(f"{coro!r} suspended")


def _still_open(ws: Any) -> bool:
    return ws.application_state is WebSocketState.CONNECTED and ws.client_state is not WebSocketState.DISCONNECTED


def _bad_json_reason(exc: ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "message is not valid UTF-8"
    detail = getattr(exc, "msg", "")
    return f"message is not valid JSON: {detail}"[:120]
