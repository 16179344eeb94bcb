"""Events over WebSocket: named events, many rooms per socket, middleware.

Every message, both ways, is a text frame holding one JSON object, the
envelope ``{"event": <str>, "payload": <any JSON>}`` (the payload may be left
out: ``null``). It is the envelope of ``microsockets``, so its JavaScript
client works unchanged; roomcast serves its own at ``/roomcast.js``.

    app = roomcast.App()

    @app.on("join")
    async def join(ws):
        await ws.join(ws.payload["room"])
        await ws.broadcast("joined", ws.payload, to=[ws.payload["room"]])

    app.run()

Rooms are names (``str``). Membership lives in the C core: a broadcast is
serialised once and fanned out there, and a socket that is in several of
the target rooms gets one copy. With ``App(backplane="redis://...")`` the
rooms are shared with every App on the same Redis: a broadcast reaches the
sockets of every server, each once.

What a client gets back when something is wrong (the connection stays
open): a frame that is not an envelope (a binary frame, not JSON, not an
object, no string ``"event"``) → ``{"event": "error", "payload":
{"message": ...}}``; an event with no handler → the same with ``"event"``
in the payload; a handler that raises → ``"internal error"`` (and the
exception is logged on the ``"roomcast"`` logger).

The server tells each socket the rooms it joins and leaves
(``roomcast:joined`` / ``roomcast:left``, payload: the room). A client that
reconnects sends ``roomcast:rejoin`` with that list. Only the application
decides who enters a room, so rejoining is off until it says how:
``@app.on_rejoin`` registers ``handler(ws, room)``, called for each listed
room (after the hooks, like any event), which lets the socket back in by
joining it, typically through the same checks as the app's own ``join``
handler; the rooms it did not join are answered with ``roomcast:left``, so
the client forgets them. Without such a handler every listed room is
answered that way. ``@app.on("roomcast:rejoin")`` replaces all of this with
the app's own handler of the raw event.

Rooms are bounded: a socket is in at most ``max_rooms_per_socket`` rooms
(100), the app has at most ``max_rooms`` rooms with members on this server
(100,000). A join past either bound raises :class:`RoomLimitError` in the
handler that asked for it; left uncaught, the client gets ``{"event":
"error", "payload": {"message": <the bound and its value>, "event": ...}}``
and the connection stays open.

App rooms are their own namespace: an App room and a ``Room(name=...)``
with the same name are two rooms, on this server and on the backplane.

An App is also an ASGI app (``uvicorn example:app``), see
:meth:`App.__call__`: under uvicorn with roomcast's protocol
(``--ws roomcast.uvicorn:WebSocketProtocol``) its sockets live in the C
core as under :meth:`App.run`; under uvicorn's own websocket
implementations they are served in Python (:mod:`roomcast._pyhub`), with
the same events, rooms and bounds but rooms local to the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import json
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote

from . import _pyhub, _redis_history
from ._asgi import adopted
from ._hub import APP_ALL_KIND, APP_KIND, EVERYONE, Hub, core_name
from ._params import Route
from ._static import Response, file_response, is_small, text_response
from .backplane import BackplaneError
from .history import History, Position, Store, check_history, parse_position
from .room import _now, check_name
from .server import Running, Server
from .websocket import ServerWebSocket, WebSocketDisconnect, WebSocketState, drive, hub_of, take

__all__ = ["App", "Hooks", "RoomLimitError", "Socket"]

logger = logging.getLogger("roomcast")

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[["Socket"], Any]
Hook = Callable[["Socket", Callable[["Socket"], Awaitable[None]]], Any]

STATIC = Path(__file__).resolve().parent / "static"

JOINED = "roomcast:joined"
LEFT = "roomcast:left"
REJOIN = "roomcast:rejoin"
POSITION = "roomcast:position"
# How long a join into a room whose history Redis keeps waits for its
# channel's subscription before it goes on without the history.
RECOVER_TIMEOUT = 10.0
UNAVAILABLE = "history unavailable"
# The loop time joins into history rooms may take per iteration (_Pacer).
REPLAY_SLICE = 0.002
REJOIN_USAGE = 'roomcast:rejoin takes a list of room names, or of {"room": name, "epoch": str, "offset": int}'
MAX_ROOMS_PER_SOCKET = 100
MAX_ROOMS = 100_000


class RoomLimitError(Exception):
    """A join refused by ``max_rooms_per_socket`` or ``max_rooms``; the
    message names the bound and its value. Left uncaught in a handler, it
    becomes an ``error`` event to that client (not logged as a failure)."""


def envelope(event: str, payload: Any = None) -> str:
    """The wire form of one event: compact JSON, UTF-8 kept as is."""
    return json.dumps({"event": event, "payload": payload}, separators=(",", ":"), ensure_ascii=False)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def positioned(head: str, room: str, position: Position) -> str:
    """An event of a history room: ``head`` is ``'{"event":...,"payload":...'``
    (serialised once for every room of a broadcast), the position follows."""
    return f'{head},"position":{{"room":{_json(room)},"epoch":"{position.epoch}","offset":{position.offset}}}}}'


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Hooks:
    """``app.hooks``: middleware around every event handler."""

    def __init__(self) -> None:
        self._before_on: list[Hook] = []

    def chain(self) -> list[Hook]:
        """The ``before_on`` hooks, in the order they run."""
        return list(self._before_on)

    def before_on(self, func: F) -> F:
        """Decorator: ``hook(ws, func)`` runs before the event's handler.
        Every hook runs, in the order they were registered; each goes on
        with ``await func(ws)`` or stops the chain by not calling it."""
        if not callable(func):
            raise TypeError(f"before_on hook must be callable, not {type(func).__name__}")
        self._before_on.append(func)
        return func


class _Rooms:
    """An App's rooms on the server's hub while it serves: room name ->
    (core room id, members); a room exists while it has members. Touched
    on the loop's thread; read by broadcast() from any thread (a dict
    lookup is atomic under the GIL)."""

    def __init__(self, notices: bool, per_socket: int | None, total: int | None) -> None:
        self.notices = notices
        self._per_socket = per_socket
        self._total = total
        self._named: dict[str, tuple[int, set[Socket]]] = {}
        self._hub: Hub | None = None
        self.everyone = 0  # the core room of every socket

    def start(self, hub: Hub) -> None:
        self._hub = hub
        self.everyone = hub.name_acquire(APP_ALL_KIND, EVERYONE)

    @property
    def hub(self) -> Hub | None:
        return self._hub

    def stop(self) -> None:
        self._named.clear()
        self._hub = None

    def members(self, room: str) -> set[Socket]:
        entry = self._named.get(room)
        return set(entry[1]) if entry is not None else set()

    def names(self) -> list[str]:
        return list(self._named)

    def open(self, ws: Socket) -> bool:
        hub = self._hub
        return hub is not None and hub.running and ws.ws.client_state is WebSocketState.CONNECTED

    def send(self, ws: Socket, data: str) -> None:
        if self._hub is not None:
            self._hub.send(ws.id, data)

    def check_bounds(self, room: str, joined: int) -> None:
        """Raises RoomLimitError if a socket in ``joined`` rooms may not
        join ``room``."""
        per_socket = self._per_socket
        if per_socket is not None and joined >= per_socket:
            raise RoomLimitError(
                f"max_rooms_per_socket ({per_socket}) reached: this socket is in {joined} rooms;"
                f" {_shown(room)} not joined"
            )
        total = self._total
        if total is not None and room not in self._named and len(self._named) >= total:
            raise RoomLimitError(
                f"max_rooms ({total}) reached: the app has {len(self._named)} rooms; {_shown(room)} not joined"
            )

    def join(self, ws: Socket, room: str, first: Iterable[str] = ()) -> None:
        """Joins ``ws`` to ``room`` after sending it ``first``."""
        self.enter(ws, self.claim(ws, room), first)

    def claim(self, ws: Socket, room: str) -> int:
        """Makes ``ws`` a member of ``room`` here, not yet in the core;
        returns the core room."""
        hub = self._hub
        assert hub is not None
        entry = self._named.get(room)
        if entry is None:
            entry = self._named[room] = (hub.name_acquire(APP_KIND, room), set())
        entry[1].add(ws)
        return entry[0]

    def enter(self, ws: Socket, room_id: int, first: Iterable[str] = (), then: str | None = None) -> None:
        """Sends ``ws`` ``first`` and ``then``, and joins it to the core room."""
        hub = self._hub
        assert hub is not None
        for data in first:
            hub.send(ws.id, data)
        if then is not None:
            hub.send(ws.id, then)
        hub.join(ws.id, room_id)

    def leave(self, ws: Socket, room: str) -> None:
        entry = self._named.get(room)
        hub = self._hub
        if entry is None or hub is None:
            return
        entry[1].discard(ws)
        hub.leave(ws.id, entry[0])
        if not entry[1]:
            del self._named[room]
            hub.name_release(APP_KIND, room)


class Socket:
    """One connection of an :class:`App`, as its handlers see it.

    ``event`` and ``payload`` are those of the message being handled (one
    message at a time per socket, in order). ``ws`` is the underlying
    :class:`~roomcast.ServerWebSocket` (headers, query parameters, peer);
    ``state`` is a free namespace; ``id`` is unique per connection.
    """

    def __init__(self, app: App, ws: ServerWebSocket, rooms: _Rooms) -> None:
        self.app = app
        self.ws = ws
        self.id = ws.id
        self.event = ""
        self.payload: Any = None
        self._table = rooms
        self._rooms: set[str] | None = None  # made on the first join
        # While roomcast:rejoin runs: room -> the position the client gave.
        self._resume: dict[str, Position] | None = None

    @property
    def state(self) -> SimpleNamespace:
        return self.ws.state

    def __repr__(self) -> str:
        number = getattr(self.ws, "number", self.id)
        return f"<Socket #{number} rooms={sorted(self._rooms or ())!r}>"

    def rooms(self) -> set[str]:
        """The rooms this socket is in (a copy)."""
        return set(self._rooms or ())

    async def join(self, room: str) -> None:
        """Joins ``room`` (made on first use); joining twice does nothing.
        The client is told with a ``roomcast:joined`` event. A room name is
        1 to 1024 bytes of UTF-8 without NUL (else :class:`ValueError`).
        Raises :class:`RoomLimitError` past ``max_rooms_per_socket`` or
        ``max_rooms``."""
        check_name(room)
        rooms = self._rooms
        if (rooms is not None and room in rooms) or not self._table.open(self):
            return
        self._table.check_bounds(room, len(rooms or ()))
        rule = self.app._history_rule(room) if self.app._history_rules else None
        if rule is not None:
            hub = self._table.hub
            if hub is not None and hub.backplane is not None:
                await self._join_history_redis(room, rule, hub)
            else:
                store = self.app._store_for(room)
                assert store is not None
                await self.app._pacer.turn()
                if room not in (self._rooms or ()) and self._table.open(self):
                    self._join_history(room, store)
            return
        self._table.join(self, room)
        if rooms is None:
            rooms = self._rooms = set()
        rooms.add(room)
        if self._table.notices:
            await self.emit(JOINED, room)

    def _join_history(self, room: str, store: Store) -> None:
        """Joins a history room: the notice, what the client missed since
        the position its rejoin gave (if any, and if it can be given),
        then the room's position, then the live events. Under the
        history's lock, so that no broadcast to the room comes between
        (see roomcast.history)."""
        table = self._table
        since = self._resume.pop(room, None) if self._resume else None
        with store.lock:
            history = store.since(since)
            first = [envelope(JOINED, room)] if table.notices else []
            status: dict[str, Any] = {
                "room": room,
                "epoch": history.position.epoch,
                "offset": history.position.offset,
            }
            if since is not None:
                status["recovered"] = history.recovered
                if history.recovered:
                    status["missed"] = len(history.events)
                    first.extend(data for _, data in history.events)
                else:
                    status["reason"] = history.reason
            first.append(envelope(POSITION, status))
            # Sent before the core's join: none of them reaches the socket
            # twice or after a live event.
            table.join(self, room, first)
            if self._rooms is None:
                self._rooms = set()
            self._rooms.add(room)

    async def _join_history_redis(self, room: str, rule: tuple[int, float | None], hub: Hub) -> None:
        """Joins a room whose history Redis keeps, in the order of
        _join_history. The core keeps the room's live events for this
        socket from the moment its channel is subscribed; the history is
        read after that; the core then sends what was read and what it
        kept past it, and joins (rc_server_recover_*: no gap, no
        duplicate). Redis away: joined, live events only, and told
        ``"recovered": false`` with the reason."""
        table = self._table
        since = self._resume.pop(room, None) if self._resume else None
        room_id = table.claim(self, room)
        if self._rooms is None:
            self._rooms = set()
        self._rooms.add(room)
        backplane = hub.backplane
        assert backplane is not None
        found = None
        if await hub.recover_ready(self.id, room_id, RECOVER_TIMEOUT):
            try:
                found = await _redis_history.read(backplane, backplane.names, core_name(APP_KIND, room), since, rule[1])
            except BackplaneError as exc:
                logger.warning("room %s: its history could not be read: %s", _shown(room), exc)
        if room not in (self._rooms or ()) or not table.open(self):
            hub.recover_cancel(self.id, room_id)  # it left, or has gone
            return
        await self.app._pacer.turn()
        if room not in (self._rooms or ()) or not table.open(self):
            hub.recover_cancel(self.id, room_id)
            return
        first = envelope(JOINED, room) if table.notices else None
        if found is None:
            hub.recover_cancel(self.id, room_id)
            status: dict[str, Any] = {"room": room, "recovered": False, "reason": UNAVAILABLE}
            table.enter(self, room_id, [first] if first else [], envelope(POSITION, status))
            return
        status = {"room": room, "epoch": found.position.epoch, "offset": found.position.offset}
        messages: list[bytes] = []
        if since is not None:
            status["recovered"] = found.recovered
            if found.recovered:
                status["missed"] = len(found.messages)
                messages = found.messages
            else:
                status["reason"] = found.reason
        hub.recover_end(self.id, room_id, first, messages, envelope(POSITION, status), found.position.offset)

    def leave(self, room: str) -> None:
        """Leaves ``room``; not being in it is not an error. The client is
        told with a ``roomcast:left`` event."""
        if not self._rooms or room not in self._rooms:
            return
        self._rooms.discard(room)
        self._table.leave(self, room)
        if self._table.notices and self._table.open(self):
            self._table.send(self, envelope(LEFT, room))

    async def emit(self, event: str, payload: Any = None) -> None:
        """Sends ``event`` to this socket only. Raises
        :class:`~roomcast.WebSocketClosed` if it has gone."""
        await self.ws.send_text(envelope(event, payload))

    async def broadcast(
        self, event: str, payload: Any = None, to: Iterable[str] | None = None, skip_self: bool = True
    ) -> None:
        """Sends ``event`` to every socket of the rooms ``to`` (each socket
        once), or to every socket of the app when ``to`` is ``None``; not to
        this one unless ``skip_self`` is false."""
        self.app.broadcast(event, payload, to=to, exclude=self if skip_self else None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)


class App(Server):
    """A :class:`~roomcast.Server` that speaks events at ``path`` (default
    ``"/"``) and serves the JavaScript client at ``/roomcast.js`` (unless
    ``serve_client=False``). Other keyword arguments are the server's
    options; ``route``, ``websocket`` and ``static`` still work beside it.

    * ``room_notices`` (True): tell each socket the rooms it joins and
      leaves (``roomcast:joined`` / ``roomcast:left``);
    * ``max_rooms_per_socket`` (100) and ``max_rooms`` (100,000; rooms
      with members on this server): a join past either raises
      :class:`RoomLimitError`, which the client gets as an ``error`` event
      naming the bound. ``None`` lifts a bound.
    """

    def __init__(
        self,
        path: str = "/",
        *,
        serve_client: bool = True,
        room_notices: bool = True,
        max_rooms_per_socket: int | None = MAX_ROOMS_PER_SOCKET,
        max_rooms: int | None = MAX_ROOMS,
        **options: Any,
    ) -> None:
        for option, value in (("max_rooms_per_socket", max_rooms_per_socket), ("max_rooms", max_rooms)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{option} must be a positive int or None (no bound), not {value!r}")
        super().__init__(**options)
        self.hooks = Hooks()
        # The server options as given: the core's under uvicorn too.
        self._given = dict(options)
        self._bounds = (room_notices, max_rooms_per_socket, max_rooms)
        self._table = _Rooms(*self._bounds)  # the rooms while serve() serves
        # Served as an ASGI app: the rooms of each hub whose sockets it
        # serves (the C core's under roomcast.uvicorn; the Python path's).
        self._asgi_tables: dict[Hub, _Rooms] = {}
        # The Python path's hub and core, for the loop it was made on.
        self._py: tuple[Hub, _pyhub.PyCore] | None = None
        self._busy: set[Socket] = set()  # sockets whose handler runs now
        self._driver = self._wake  # one bound method for every socket
        self._handlers: dict[str, Handler] = {REJOIN: self._rejoin}
        self._on_rejoin: Callable[[Socket, str], Any] | None = None
        # History: (pattern, size, ttl) in the order given; the rooms' stores.
        self._history_rules: list[tuple[str, int, float | None]] = []
        self._stores: dict[str, Store] = {}
        self._stores_lock = threading.Lock()
        self._stores_swept = 1024  # histories after the last sweep (at least)
        self._pacer = _Pacer()
        self._unhandled: Handler | None = None
        self._connect: list[Callable[[Socket], Any]] = []
        self._disconnect: list[Callable[[Socket], Any]] = []
        self._startup: list[Callable[[], Any]] = []
        self._shutdown_hooks: list[Callable[[], Any]] = []
        self._add_route(Route(path), self._endpoint, self._attach)
        if serve_client:
            self.static("/", STATIC)

    def set_options(self, **options: Any) -> None:
        """As :meth:`Server.set_options` (the server's options, not the
        App's own)."""
        super().set_options(**options)
        self._given.update(options)

    # -- decorators ------------------------------------------------------------

    def on(self, event: str) -> Callable[[F], F]:
        """Decorator: ``handler(ws)`` (sync or async) handles ``event``;
        ``ws.payload`` holds its payload. One handler per event."""
        if callable(event):
            raise TypeError('@app.on needs the event name in parentheses: @app.on("message")')
        if not isinstance(event, str):
            raise TypeError(f"an event is named by a str, not {type(event).__name__}")

        def decorator(func: F) -> F:
            if not callable(func):
                raise TypeError(f"handler of {event!r} must be callable, not {type(func).__name__}")
            self._handlers[event] = func
            return func

        return decorator

    def keep_history(self, pattern: str, size: int, ttl: float | None = None) -> None:
        """Keeps the last ``size`` events broadcast to each room whose name
        matches ``pattern`` (:mod:`fnmatch`: ``"chat:*"``, ``"lobby"``),
        those younger than ``ttl`` seconds when given; the first pattern a
        room matches decides. Such a room's events carry their position
        (``"position": {"room", "epoch", "offset"}``), a socket that joins
        it is told the room's position (``roomcast:position``), and a
        client that rejoins with the last position it saw gets the events
        it missed, in order, before the live ones, or
        ``"recovered": false`` and why.

        Without a backplane the history is this process's (a restart
        starts a new epoch). With one it is in Redis, a stream per room
        (see :mod:`roomcast._redis_history`): offsets are the same on every
        server, a client recovers through any of them, and the room's
        events reach every server, this one's too, through Redis, in
        offset order; while Redis is away they are dropped (and logged),
        not delivered locally. Memory: at most ``size`` events per such
        room."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"keep_history() needs a room name pattern (str), not {pattern!r}")
        check_history(size, ttl)
        self._history_rules.append((pattern, size, ttl))

    def _history_rule(self, room: str) -> tuple[int, float | None] | None:
        """(size, ttl) of ``room``'s history, or None if no keep_history()
        pattern matches it."""
        for pattern, size, ttl in self._history_rules:
            if fnmatch.fnmatchcase(room, pattern):
                return size, ttl
        return None

    def _store_for(self, room: str) -> Store | None:
        """The history of ``room`` in this process (made on first use), or
        None if no keep_history() pattern matches it."""
        store = self._stores.get(room)
        if store is not None or not self._history_rules:
            return store
        rule = self._history_rule(room)
        if rule is None:
            return None
        with self._stores_lock:
            store = self._stores.get(room)
            if store is None:
                if len(self._stores) >= self._stores_swept * 2:
                    self._sweep_stores()
                store = self._stores[room] = Store(*rule)
        return store

    def _sweep_stores(self) -> None:
        """Forgets the histories whose TTL has emptied them (their next
        event starts a new epoch): with a TTL, rooms that come and go do
        not pile up. Called as the number of histories doubles."""
        for room, store in list(self._stores.items()):
            if store.ttl is not None:
                with store.lock:
                    if store.empty():
                        del self._stores[room]
        self._stores_swept = max(1024, len(self._stores))

    async def history(self, room: str, since: Position | None = None) -> History:
        """The events kept for ``room`` after ``since`` (all kept when
        None), as the envelopes sent (``str``), with ``recovered=True``; or
        ``recovered=False`` and the reason. ValueError if no
        keep_history() pattern matches the room."""
        check_name(room)
        rule = self._history_rule(room)
        if rule is None:
            raise ValueError(f"room {_shown(room)} keeps no history: see App.keep_history()")
        hub = self._hub
        if hub is not None and hub.backplane is not None:
            found = await _redis_history.read(
                hub.backplane, hub.backplane.names, core_name(APP_KIND, room), since, rule[1], everything=since is None
            )
            events = [
                (position, payload.decode("utf-8"))
                for position, payload, _ in map(_redis_history.parse_stored, found.messages)
            ]
            return History(events, found.recovered, found.reason, found.position)
        store = self._store_for(room)
        assert store is not None
        with store.lock:
            return store.since(since)

    def on_rejoin(self, func: F) -> F:
        """Decorator: ``handler(ws, room)`` (sync or async) decides whether
        a reconnected client gets back into ``room``, one of those its
        ``roomcast:rejoin`` lists: it joins (``await ws.join(room)``),
        typically through the same checks as the app's ``join`` handler,
        or does nothing. Without this handler rejoining is off: the client
        is told ``roomcast:left`` for every room it lists."""
        if not callable(func):
            raise TypeError(f"on_rejoin handler must be callable, not {type(func).__name__}")
        self._on_rejoin = func
        return func

    def on_unhandled(self, func: F) -> F:
        """Decorator: ``handler(ws)`` handles the events that have no
        handler of their own (after the hooks, like any event), instead of
        the ``"no handler"`` error event."""
        self._unhandled = func
        return func

    def on_connect(self, func: F) -> F:
        """Decorator: ``handler(ws)`` runs before the upgrade is accepted;
        returning ``False`` refuses the connection (HTTP 403)."""
        self._connect.append(func)
        return func

    def on_disconnect(self, func: F) -> F:
        """Decorator: ``handler(ws)`` runs once the connection has closed,
        while ``ws.rooms()`` still lists its rooms."""
        self._disconnect.append(func)
        return func

    def on_startup(self, func: F) -> F:
        """Decorator: ``handler()`` runs when serving starts, before the
        first connection is handled."""
        self._startup.append(func)
        return func

    def on_shutdown(self, func: F) -> F:
        """Decorator: ``handler()`` runs when serving stops, after every
        connection has closed."""
        self._shutdown_hooks.append(func)
        return func

    # -- rooms from outside ----------------------------------------------------

    def members(self, room: str) -> set[Socket]:
        """The sockets in ``room`` now (a copy; empty for an unknown room)."""
        found: set[Socket] = set()
        for table in self._tables():
            found |= table.members(room)
        return found

    def rooms(self) -> list[str]:
        """The names of the rooms that have members now."""
        names: dict[str, None] = {}
        for table in self._tables():
            names.update(dict.fromkeys(table.names()))
        return list(names)

    def _tables(self) -> list[_Rooms]:
        return [self._table, *list(self._asgi_tables.values())]

    def _table_for(self, hub: Hub) -> _Rooms:
        """The rooms of the sockets of ``hub``: the App's own server's, or
        those of a hub that an ASGI server's connections came through (made
        on the first; those of a hub that has stopped are dropped)."""
        if hub is self._hub:
            return self._table
        table = self._asgi_tables.get(hub)
        if table is None:
            for old in [h for h in self._asgi_tables if not h.running or h.loop.is_closed()]:
                self._asgi_tables.pop(old).stop()
            table = _Rooms(*self._bounds)
            table.start(hub)
            self._asgi_tables[hub] = table
        return table

    # -- sending from anywhere ---------------------------------------------------

    def broadcast(
        self, event: str, payload: Any = None, to: Iterable[str] | None = None, exclude: Socket | None = None
    ) -> None:
        """Sends ``event`` once to every socket of the rooms ``to`` (each
        socket once however many of them it is in), or to every socket when
        ``to`` is ``None``, except ``exclude``. Not a coroutine: callable
        from a handler, a background task or another thread. Rooms with no
        members are skipped; the payload is serialised once (a
        :class:`TypeError` if it is not JSON-serialisable)."""
        if isinstance(to, str):
            raise TypeError("to= takes a list of rooms, not one room name")
        names = None if to is None else list(to)
        # The App's own server, and the hubs it serves through as an ASGI
        # app (none when not serving: nobody to send to).
        hubs = [] if self._hub is None else [self._hub]
        hubs.extend(list(self._asgi_tables))
        skip = hub_of(exclude.ws) if exclude is not None else None
        if names and self._history_rules:
            head = f'{{"event":{_json(event)},"payload":{_json(payload)}'
            plain = []
            # Servers with a backplane: through Redis, which gives the
            # positions; the others: this process's history.
            shared = [hub for hub in hubs if hub.backplane is not None]
            local = [hub for hub in hubs if hub.backplane is None]
            for name in dict.fromkeys(names):
                rule = self._history_rule(name) if isinstance(name, str) else None
                if rule is None:
                    plain.append(name)
                    continue
                for hub in _one_per_backplane(shared, skip):
                    _publish_redis(hub, name, head, rule, exclude.id if exclude is not None and hub is skip else 0)
                store = self._store_for(name) if local or not shared else None
                if store is None:
                    continue
                # Kept even with nobody here: it is for those coming back.
                # The position and the hand-over under the history's lock
                # (see roomcast.history).
                with store.lock:
                    data = positioned(head, name, store.next())
                    store.add(data)
                    for hub in local:
                        hub.broadcast(APP_KIND, [name], data, exclude.id if exclude is not None and hub is skip else 0)
            if not plain:
                return
            data = head + "}"
            names = plain
        else:
            data = envelope(event, payload)
        for hub in hubs:
            # Thread-safe: from a thread other than the loop's, the command
            # wakes the core by itself.
            hub.broadcast(APP_KIND, names, data, exclude.id if exclude is not None and hub is skip else 0)

    # -- serving ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 8000, *, reuse_port: bool = False
    ) -> AsyncIterator[Running]:
        """As :meth:`Server.serve`, running the ``on_startup`` handlers
        first and the ``on_shutdown`` handlers last."""
        for func in self._startup:
            await _call(func)
        try:
            async with super().serve(host, port, reuse_port=reuse_port) as running:
                assert self._hub is not None
                self._table.start(self._hub)
                yield running
        finally:
            self._table.stop()
            for func in self._shutdown_hooks:
                try:
                    await _call(func)
                except Exception:
                    logger.exception("on_shutdown handler %r failed", func)

    # -- as an ASGI app -----------------------------------------------------------

    async def __call__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        """The App as an ASGI 3 app (``uvicorn example:app``).

        * ``lifespan``: startup runs the ``on_startup`` handlers (a failure
          answers ``lifespan.startup.failed``) and, when uvicorn is
          installed, gives the App's server options to
          :func:`roomcast.uvicorn.configure`'s table, so that
          ``App(backplane=...)`` configures the core of roomcast's
          protocol as it does the App's own server; shutdown runs the
          ``on_shutdown`` handlers.
        * ``http``: GET and HEAD of ``/roomcast.js`` and of the
          :meth:`~roomcast.Server.static` directories, 426 for a websocket
          route, 404 otherwise, 405 for other methods: what the App's own
          server answers.
        * ``websocket``: routed as the App's own server routes (the App's
          path, ``route``, ``websocket``; 404 for no route; ``origins``
          checked). The call returns once the socket's life in the App is
          over: it has closed and the ``on_disconnect`` handlers have run.
          Under ``--ws roomcast.uvicorn:WebSocketProtocol`` the socket
          lives in the C core (fan-out, bounds, the backplane, as under
          :meth:`run`); under uvicorn's own websocket implementations it is
          served in Python with the same events, rooms, ``max_queue_bytes``
          rule and ``max_receive_queue``, but no backplane: its rooms are
          local to the process, and ``max_message_size`` and pings are the
          ASGI server's (``--ws-max-size``, ``--ws-ping-interval``).

        :meth:`broadcast` reaches the sockets of every way the App serves.
        """
        kind = scope["type"]
        if kind == "websocket":
            await self._asgi_websocket(scope, receive, send)
        elif kind == "http":
            await self._asgi_http(scope, send)
        elif kind == "lifespan":
            await self._asgi_lifespan(receive, send)
        else:
            raise ValueError(f"roomcast.App does not serve ASGI scopes of type {kind!r}")

    async def _asgi_lifespan(
        self,
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._asgi_startup()
                except Exception as exc:
                    logger.exception("lifespan startup failed")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._asgi_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _asgi_startup(self) -> None:
        self._configure_uvicorn()
        for func in self._startup:
            await _call(func)

    async def _asgi_shutdown(self) -> None:
        self._asgi_stop()
        tables = list(self._asgi_tables.values())
        self._asgi_tables.clear()
        for table in tables:
            table.stop()
        for func in self._shutdown_hooks:
            try:
                await _call(func)
            except Exception:
                logger.exception("on_shutdown handler %r failed", func)

    def _asgi_bind(self, hub: Hub) -> None:
        """A websocket of ``hub`` is about to be served: the App's rooms
        there, from now on."""
        self._table_for(hub)

    def _configure_uvicorn(self) -> None:
        """The App's server options become those of roomcast's protocol for
        uvicorn (when uvicorn is there to use it)."""
        if not self._given:
            return
        try:
            from . import uvicorn as protocol
        except ImportError:
            return  # another ASGI server: only the Python path exists
        protocol._set_options(self._given, f"{type(self).__name__}(...)")

    def _asgi_stop(self) -> None:
        """The ASGI server has stopped serving: the Python path's hub stops."""
        py = self._py
        self._py = None
        if py is not None:
            py[0].stop()

    async def _asgi_http(self, scope: Mapping[str, Any], send: Callable[[Mapping[str, Any]], Awaitable[None]]) -> None:
        method = scope.get("method", "GET")
        if method in ("GET", "HEAD"):
            status, headers, body = await self._http_answer(_request_path(scope))
        else:
            status, headers, body = text_response(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        pairs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        pairs.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": pairs})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _http_answer(self, path: str) -> Response:
        """What the App's own server answers a plain GET of ``path``."""
        answer = self._plain_answer(path)
        if not isinstance(answer, str):
            return answer
        if is_small(answer):
            return file_response(answer)
        return await asyncio.get_running_loop().run_in_executor(None, file_response, answer)

    async def _asgi_websocket(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Mapping[str, Any]]],
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        websocket = adopted(scope)
        if websocket is not None:
            await self._asgi_route(websocket)  # the C core serves it
            return
        hub, core = self._python_hub()
        conn = core.open(receive, send, "websocket.http.response" in (scope.get("extensions") or {}))
        try:
            if (await receive()).get("type") != "websocket.connect":
                return
            headers = b"".join(bytes(k).lower() + b":" + bytes(v) + b"\n" for k, v in scope.get("headers") or ())
            client = scope.get("client") or ("", 0)
            websocket = ServerWebSocket(
                hub,
                conn,
                hub.shared(_request_path(scope)),
                bytes(scope.get("query_string") or b"").decode("latin-1"),
                headers,
                hub.shared(str(client[0])),
                int(client[1]),
                {},
            )
            core.start(conn, websocket)
            await self._asgi_route(websocket)
        finally:
            await core.finish(conn)

    def _python_hub(self) -> tuple[Hub, _pyhub.PyCore]:
        """The Python path's hub on the running loop (a new one for a new
        loop: uvicorn served again in this process)."""
        loop = asyncio.get_running_loop()
        py = self._py
        if py is None or py[0].loop is not loop or not py[0].running:
            if py is not None:
                py[0].stop()
            if self._backplane_url is not None:
                logger.warning(
                    "roomcast.App: this ASGI server serves its websockets itself, so the App's rooms are local"
                    " to this process (no backplane); run uvicorn with --ws roomcast.uvicorn:WebSocketProtocol"
                )
            py = self._py = _pyhub.hub_for(loop, self._options, self._subprotocols, self._max_receive_queue)
        return py

    async def _asgi_route(self, websocket: ServerWebSocket) -> None:
        """Routes an ASGI server's websocket as the App's own server does,
        and runs its endpoint in the ASGI call's task (that task exists
        anyway, so the App's sockets run as endpoints, not on events)."""
        hub = hub_of(websocket)
        found = None
        if not self._origin_allowed(websocket.headers.getlist("origin")):
            hub.reject(websocket.id, 403, b"origin not allowed\n")
        elif (found := self._match(websocket.url.path)) is None:
            hub.reject(websocket.id, 404)
        if found is None:
            websocket.application_state = WebSocketState.DISCONNECTED
            return
        endpoint, _, params, kwargs = found
        websocket.path_params = params
        self._asgi_bind(hub)
        await self._run_endpoint(websocket, endpoint, kwargs)

    # -- one connection ------------------------------------------------------------

    async def _endpoint(self, websocket: ServerWebSocket) -> None:
        """One socket's whole life in a task of its own (what _attach does
        on events instead; kept for a route whose endpoint is called)."""
        ws = Socket(self, websocket, self._table_for(hub_of(websocket)))
        try:
            for func in self._connect:
                if await _call(func, ws) is False:
                    return  # never accepted: the server answers 403
        except Exception:
            logger.exception("on_connect handler failed for %r", websocket)
            return
        if websocket.application_state is WebSocketState.DISCONNECTED:
            return  # the handler closed it
        try:
            if websocket.application_state is WebSocketState.CONNECTING:
                await websocket.accept()  # unless a handler accepted it its way
            if not hub_of(websocket).join(ws.id, ws._table.everyone):
                return
            while True:
                try:
                    data = await websocket.next_message()
                except WebSocketDisconnect:
                    break
                await self._handle(ws, data)
        finally:
            await self._gone(ws)

    # A socket of the App's own route lives on the server's events: no task
    # waits for an idle socket; one runs while a message is handled.

    def _attach(self, websocket: ServerWebSocket) -> None:
        ws = Socket(self, websocket, self._table)
        if self._connect:
            hub_of(websocket).spawn(self._attach_slowly(ws))
        else:
            self._admit(ws)

    async def _attach_slowly(self, ws: Socket) -> None:
        websocket = ws.ws
        try:
            for func in self._connect:
                if await _call(func, ws) is False:
                    break  # never accepted: answered 403
            else:
                if websocket.application_state is not WebSocketState.DISCONNECTED and self._admit(ws):
                    self._wake(ws)  # what came while the handlers ran
                return
        except Exception:
            logger.exception("on_connect handler failed for %r", websocket)
        if websocket.application_state is not WebSocketState.DISCONNECTED:
            await websocket.close()

    def _admit(self, ws: Socket) -> bool:
        """Accepts (unless a handler did) and joins the room of every
        socket; then the socket's messages come to _wake."""
        websocket = ws.ws
        try:
            if websocket.application_state is WebSocketState.CONNECTING:
                _now(websocket.accept())
            if hub_of(websocket).join(ws.id, ws._table.everyone):
                drive(websocket, self._driver, ws)
                return True
        except WebSocketDisconnect:
            pass
        self._end(ws)
        return False

    def _wake(self, ws: Socket) -> None:
        """The driver of a socket: called on each message and on the close."""
        if ws in self._busy:
            return  # its task handles what came
        websocket = ws.ws
        data = take(websocket)
        if data is None:
            if websocket.client_state is WebSocketState.DISCONNECTED:
                self._end(ws)
            return
        self._busy.add(ws)
        hub_of(websocket).spawn(self._run(ws, data))

    async def _run(self, ws: Socket, data: Any) -> None:
        websocket = ws.ws
        try:
            while data is not None:
                await self._handle(ws, data)
                data = take(websocket)
            if websocket.client_state is WebSocketState.DISCONNECTED:
                drive(websocket, None)
                await self._gone(ws)
        except asyncio.CancelledError:
            drive(websocket, None)
            await self._gone(ws)
            raise
        finally:
            self._busy.discard(ws)

    def _end(self, ws: Socket) -> None:
        websocket = ws.ws
        drive(websocket, None)
        if websocket.application_state is not WebSocketState.DISCONNECTED:
            _now(websocket.close())
        if self._disconnect:
            self._busy.add(ws)
            hub_of(websocket).spawn(self._gone_busy(ws))
        else:
            for room in ws.rooms():
                ws.leave(room)

    async def _gone_busy(self, ws: Socket) -> None:
        try:
            await self._gone(ws)
        finally:
            self._busy.discard(ws)

    async def _gone(self, ws: Socket) -> None:
        """The on_disconnect handlers, then the socket leaves its rooms."""
        for func in self._disconnect:
            try:
                await _call(func, ws)
            except Exception:
                logger.exception("on_disconnect handler failed for %r", ws.ws)
        for room in ws.rooms():
            ws.leave(room)

    async def _handle(self, ws: Socket, data: Any) -> None:
        if not isinstance(data, str):
            await self._error(ws, "binary frames are not events: send a JSON text frame")
            return
        try:
            message = json.loads(data)
        except ValueError as exc:
            await self._error(ws, f"not JSON: {getattr(exc, 'msg', exc)}")
            return
        if not isinstance(message, dict):
            await self._error(ws, 'an event is a JSON object {"event": ..., "payload": ...}')
            return
        event = message.get("event")
        if not isinstance(event, str):
            await self._error(ws, 'the "event" member must be a string')
            return
        handler = self._handlers.get(event, self._unhandled)
        if handler is None:
            await self._error(ws, f"no handler for event {event!r}", event)
            return
        ws.event = event
        ws.payload = message.get("payload")
        try:
            await self._run_hooks(ws, handler, 0)
        except WebSocketDisconnect:
            pass  # it left while its handler ran
        except RoomLimitError as exc:
            await self._error(ws, str(exc), event)  # the client's doing, not a failure
        except Exception:
            logger.exception("handler of event %r failed for %r", event, ws.ws)
            await self._error(ws, "internal error", event)

    async def _run_hooks(self, ws: Socket, handler: Handler, index: int) -> None:
        hooks = self.hooks.chain()
        if index == len(hooks):
            await _call(handler, ws)
            return

        async def go_on(socket: Socket) -> None:
            await self._run_hooks(socket, handler, index + 1)

        await _call(hooks[index], ws, go_on)

    async def _error(self, ws: Socket, message: str, event: str | None = None) -> None:
        payload: dict[str, Any] = {"message": message}
        if event is not None:
            payload["event"] = event
        if ws._table.open(ws):
            ws._table.send(ws, envelope("error", payload))

    async def _rejoin(self, ws: Socket) -> None:
        """The default handler of ``roomcast:rejoin``: each room goes
        through the app's ``on_rejoin`` handler, which alone may join it;
        the client is told ``roomcast:left`` for every room it is not in
        afterwards."""
        items = ws.payload
        rooms: dict[str, Position | None] = {}
        try:
            if not isinstance(items, list):
                raise ValueError
            for item in items:
                if isinstance(item, str):
                    rooms.setdefault(item, None)
                elif isinstance(item, dict) and isinstance(item.get("room"), str):
                    rooms[item["room"]] = parse_position(item)
                else:
                    raise ValueError
        except ValueError:
            await self._error(
                ws,
                REJOIN_USAGE,
                REJOIN,
            )
            return
        handler = self._on_rejoin
        refused: RoomLimitError | None = None
        ws._resume = {room: since for room, since in rooms.items() if since is not None}
        try:
            for room in rooms:
                if handler is not None and refused is None and _valid_name(room):
                    try:
                        await _call(handler, ws, room)
                    except RoomLimitError as exc:
                        refused = exc  # the rooms after it are refused too
                if room not in ws.rooms() and ws._table.notices and ws._table.open(ws):
                    ws._table.send(ws, envelope(LEFT, room))
        finally:
            ws._resume = None
        if refused is not None:
            await self._error(ws, str(refused), REJOIN)


class _Pacer:
    """Spreads joins into history rooms over the loop's iterations: their
    replays take about REPLAY_SLICE seconds of each, so that a thousand
    clients rejoining at once do not hold the loop (and the live events)
    for the whole of their replays. One replay is never split: it is one
    step, under its history's lock.

    A join goes on at once while the slice of this iteration lasts;
    otherwise it waits in line. At the start of each iteration the pacer
    lets through as many as the last slice's joins suggest fit in one
    (from the time they took), so the waiting ones are woken once, not at
    every iteration."""

    def __init__(self) -> None:
        self._start: float | None = None  # when this slice began
        self._granted = 0  # joins let through in it
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            if self._start is None:
                self._begin(loop)
            if loop.time() - self._start < REPLAY_SLICE:  # type: ignore[operator]
                self._granted += 1
                return
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        await future  # let through by _next, its turn counted

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._start = loop.time()
        self._granted = 0
        # Queued now, it runs in the next iteration, after what runs there.
        loop.call_soon(self._next, loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """The slice is over: lets through as many waiting joins as took
        REPLAY_SLICE in it. They run in the next iteration, and this runs
        again after them."""
        assert self._start is not None
        each = max(loop.time() - self._start, 1e-6) / max(self._granted, 1)
        room = max(1, int(REPLAY_SLICE / each))
        self._start = None
        granted = 0
        while self._waiting and granted < room:
            future = self._waiting.popleft()
            if not future.done():  # else its socket's handler was cancelled
                future.set_result(None)
                granted += 1
        if granted or self._waiting:
            self._begin(loop)
            self._granted = granted


def _one_per_backplane(hubs: list[Hub], first: Hub | None) -> list[Hub]:
    """One hub per Redis and prefix among ``hubs``, ``first`` if it is one
    (the excluded socket's server: only it can skip the socket)."""
    chosen: list[Hub] = []
    seen: set[Any] = set()
    for hub in sorted(hubs, key=lambda h: h is not first):
        keys = hub.backplane_keys() or (None,)
        if seen.isdisjoint(keys):
            chosen.append(hub)
        seen.update(keys)
    return chosen


def _publish_redis(hub: Hub, room: str, head: str, rule: tuple[int, float | None], exclude: int) -> None:
    """An event to a room whose history Redis keeps: the script gives it
    its position and publishes it (roomcast._redis_history). Any thread."""
    backplane = hub.backplane
    if backplane is None:
        return
    before, after = _redis_history.app_message(head, _json(room))
    publisher = _redis_history.publisher_of(backplane, core_name(APP_KIND, room), *rule)

    def published(position: Position | None, error: str | None) -> None:
        if position is None:
            logger.warning("an event to room %s was not published (it keeps history in Redis): %s", _shown(room), error)

    publisher.push(before, True, exclude, after, then=published)


def _request_path(scope: Mapping[str, Any]) -> str:
    """The request's path as the client sent it (percent-encoded, as the
    routes and static files take it), without the root path."""
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1").partition("?")[0] if raw else quote(str(scope.get("path") or "/"))
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def _valid_name(room: str) -> bool:
    try:
        check_name(room)
    except ValueError:
        return False
    return True


def _shown(room: str) -> str:
    """A room name for a message: shortened, since a client chose it."""
    return repr(room if len(room) <= 40 else room[:40] + "...")
