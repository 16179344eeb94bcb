"""The API of ``microsockets`` (1.0.0), served by :class:`roomcast.App`.

    from roomcast.compat import microsockets

    app = microsockets.Application()

    @app.hooks.before_on
    async def load_payload(ws, func):
        ws.payload = json.loads(ws.payload)
        await func(ws)

    @app.on("join")
    async def handle(ws):
        await ws.join(ws.payload["room"])
        await ws.emit("joined")
        await ws.broadcast("user joined", ws.payload["user"], to=[ws.payload["room"]])

    app.run(host="127.0.0.1", port=8000)

The wire is the original's: each message is a text frame holding
``{"event": ..., "payload": ...}``, and the payload travels as the sender
gave it. The ``microsockets`` JavaScript client sends its payload as a
string (``socket.send("join", JSON.stringify({...}))``), which is why the
README's middleware decodes ``ws.payload`` with ``json.loads``; that client
works unchanged, at any path (``ws://HOST:PORT`` as in its README).

What is the same: ``Application(event_router=..., room_manager=...)`` takes
the classes to use (defaults :class:`EventRouter` and :class:`RoomManager`,
with the original's method names, so subclasses keep working);
``app.on(event)``; ``app.hooks`` with ``before_on``, ``on_connect``,
``on_disconnect``, ``on_startup``, ``on_shutdown``; the socket's
``payload``, ``event``, ``scope``, ``code``, ``connected``, ``emit(event,
payload="")``, ``broadcast(event, payload, to=[...], skip_self=True)``,
``join``, ``rooms``, ``close`` and ``flush``.

Where it differs, and why:

* It is an ASGI app, as the original (``uvicorn example:app``), and also
  its own server: ``app.run(host, port)`` (or ``async with
  app.serve(host, port)``) serves it without uvicorn. Under uvicorn, with
  ``--ws roomcast.uvicorn:WebSocketProtocol`` its sockets and rooms live
  in roomcast's C core; with uvicorn's own websocket implementations they
  are served in Python, with rooms local to the process (see
  :meth:`roomcast.App.__call__`). Server options (``max_message_size``,
  ``ping_interval``, ``backplane``, ...) are keyword arguments of
  ``Application``; under uvicorn they configure roomcast's protocol.
* Every ``before_on`` hook runs, in registration order, each going on with
  ``await func(ws)`` (the original ran only the first hook).
* ``await ws.leave(room)`` exists (the original listed it but had none).
* ``on_connect`` hooks work: ``hook(ws, acceptance)``, where ``acceptance``
  is ``{"headers": [], "subprotocol": None}``; a hook refuses the client
  (HTTP 403) by emptying it (``acceptance.clear()``), or sets the headers
  and subprotocol of the answer. The original raised ``TypeError`` on every
  connection as soon as one such hook was registered.
* Rooms live in roomcast's C core: a broadcast is serialised once and
  fanned out there, and a socket that is in several of the target rooms
  gets one copy (the original sent one per room). A room manager that
  overrides ``members`` keeps its own membership: broadcasts then ask it
  for the members and send to each in Python (still once per socket).
* Mistakes are answered instead of ignored: a frame that is not an event
  envelope, or an event without a handler, gets an ``error`` event back; a
  handler that raises is logged (logger ``"roomcast"``), the client gets
  ``{"event": "error", "payload": {"message": "internal error", ...}}`` and
  the connection stays open (the original dropped bad frames silently and
  let an exception end the connection). A message without ``"payload"`` is
  handled with payload ``None`` (the original ignored it).
* Joining and leaving send nothing to the client, as in the original:
  roomcast's own notices (``roomcast:joined`` / ``roomcast:left``, which
  its JavaScript client uses to rejoin after a reconnection) are sent only
  with ``Application(room_notices=True)``. A ``roomcast:rejoin`` event
  joins nothing (see :meth:`roomcast.App.on_rejoin`, through ``app.app``).
* Rooms are bounded as in :class:`roomcast.App` (``max_rooms_per_socket``,
  ``max_rooms``): a join past a bound answers the client with an ``error``
  event naming it.
* ``to`` is a list of rooms: a single string raises :class:`TypeError` (the
  original iterated its characters as room names); ``to=None`` sends to
  every socket of the application. Leaving a room one is not in is not an
  error.
* Handlers and hooks may also be plain functions.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote

from ..app import App
from ..app import Socket as AppSocket
from ..server import Running
from ..websocket import ServerWebSocket, WebSocketDisconnect, WebSocketState

__all__ = ["Application", "CallableList", "EventRouter", "Hooks", "Next", "RoomManager", "Socket"]

logger = logging.getLogger("roomcast")

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[["Socket"], Any]
# What a before_on hook is handed to go on: ``await func(ws)``.
Next = Callable[["Socket"], Awaitable[None]]


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class CallableList(list[Callable[..., Any]]):
    """A list of callbacks that is also a decorator: ``@hooks.before_on``
    appends the function and returns it unchanged."""

    def __call__(self, func: F) -> F:
        if not callable(func):
            raise TypeError(f"a hook must be callable, not {type(func).__name__}")
        self.append(func)
        return func


class Hooks:
    """``app.hooks``: lists of callbacks, each usable as a decorator.

    * ``before_on``: ``hook(ws, func)`` around every event handler; all
      run, in order, each going on with ``await func(ws)``;
    * ``on_connect``: ``hook(ws, acceptance)`` before the upgrade is
      answered (see the module's docstring);
    * ``on_disconnect``: ``hook(ws)`` once the connection has closed
      (``ws.code`` holds the close code; ``await ws.rooms()`` still lists
      its rooms);
    * ``on_startup`` / ``on_shutdown``: ``hook()`` when serving starts and
      after it has stopped.
    """

    def __init__(self) -> None:
        self.before_on = CallableList()
        self.on_startup = CallableList()
        self.on_shutdown = CallableList()
        self.on_connect = CallableList()
        self.on_disconnect = CallableList()


class EventRouter:
    """Event name → handler. ``app.on(event)`` calls ``add``; each message
    of an event given to ``add`` asks ``router(event)`` for its handler, so
    a subclass may override ``__call__`` to route those differently; when
    it returns ``None`` the message is dropped, as in the original. (A
    message whose event never went through ``app.on`` gets an ``error``
    event back.)"""

    def __init__(self) -> None:
        self.__events: dict[str, Handler] = {}

    def __call__(self, event: str) -> Handler | None:
        return self.__events.get(event)

    def add(self, event: str, func: Handler) -> None:
        self.__events[event] = func


class RoomManager:
    """Which sockets are in which rooms.

    The default keeps the membership in roomcast's C core, where broadcasts
    are fanned out, and an index here in joining order for ``members`` and
    ``rooms``. Subclasses that call ``super()`` keep both; one that
    overrides ``members`` keeps its own membership, and broadcasts ask it.
    """

    def __init__(self) -> None:
        self.__sockets: dict[str, dict[Socket, None]] = {}
        self.__rooms: dict[Socket, dict[str, None]] = {}

    async def join(self, room: str, socket: Socket) -> None:
        if not socket.connected or room in self.__rooms.get(socket, ()):
            return
        await socket.socket.join(room)
        self.__rooms.setdefault(socket, {})[room] = None
        self.__sockets.setdefault(room, {})[socket] = None

    async def members(self, room: str) -> list[Socket]:
        return list(self.__sockets.get(room, ()))

    async def rooms(self, socket: Socket) -> list[str]:
        return list(self.__rooms.get(socket, ()))

    async def leave(self, room: str, socket: Socket) -> None:
        rooms = self.__rooms.get(socket)
        if rooms is None or room not in rooms:
            return
        del rooms[room]
        if not rooms:
            del self.__rooms[socket]
        members = self.__sockets[room]
        del members[socket]
        if not members:
            del self.__sockets[room]
        socket.socket.leave(room)

    async def flush(self, socket: Socket) -> None:
        """Leaves every room."""
        for room in await self.rooms(socket):
            await self.leave(room, socket)


class Socket:
    """One connection, as handlers and hooks see it.

    ``payload`` and ``event`` are those of the message being handled;
    ``scope`` is an ASGI-style dict of the request (``path``,
    ``query_string``, ``headers``, ``client``, ...); ``code`` is the close
    code once closed (or the code ``close()`` will send); ``connected``
    is true while the connection is open. ``socket`` is the underlying
    :class:`roomcast.Socket` and ``socket.ws`` the
    :class:`roomcast.ServerWebSocket`.
    """

    def __init__(self, app: Application, socket: AppSocket) -> None:
        self.socket = socket
        self.connected = False
        self.payload: Any = None
        self.event: str | None = None
        self.code: int | None = None
        self._app = app
        self._scope: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<microsockets.Socket #{self.socket.id} connected={self.connected}>"

    @property
    def scope(self) -> dict[str, Any]:
        if self._scope is None:
            self._scope = _scope_of(self.socket.ws)
        return self._scope

    async def emit(self, event: str, payload: Any = "") -> None:
        """Sends ``event`` to this socket only. Raises
        :class:`roomcast.WebSocketClosed` if it has gone."""
        await self.socket.emit(event, payload)

    async def broadcast(
        self, event: str, payload: Any = "", to: Iterable[str] | None = (), skip_self: bool = True
    ) -> None:
        """Sends ``event`` to every socket of the rooms ``to``, each socket
        once, not to this one unless ``skip_self`` is false. ``to=None``:
        every socket of the application."""
        if isinstance(to, str):
            raise TypeError("to= takes a list of rooms, not one room name")
        manager = self._app.room_manager
        if type(manager).members is RoomManager.members:
            rooms = None if to is None else list(to)
            self._app.app.broadcast(event, payload, to=rooms, exclude=self.socket if skip_self else None)
            return
        # The manager keeps its own membership: ask it.
        if to is None:
            targets = self._app.sockets()
        else:
            seen: dict[Socket, None] = {}
            for room in to:
                for member in await manager.members(room):
                    seen[member] = None
            targets = list(seen)
        for member in targets:
            if (skip_self and member is self) or not member.connected:
                continue
            try:
                await member.emit(event, payload)
            except WebSocketDisconnect:
                pass  # it is leaving; its disconnect hooks will run

    async def join(self, room: str) -> None:
        """Joins ``room`` (made on first use); joining twice does nothing."""
        if not isinstance(room, str):
            raise TypeError(f"a room is named by a str, not {type(room).__name__}")
        await self._app.room_manager.join(room, self)

    async def leave(self, room: str) -> None:
        """Leaves ``room``; not being in it is not an error."""
        await self._app.room_manager.leave(room, self)

    async def rooms(self) -> list[str]:
        """The rooms this socket is in, in joining order."""
        return list(await self._app.room_manager.rooms(self))

    async def close(self) -> None:
        """Leaves every room and closes the connection with ``self.code``
        (1000 if unset)."""
        await self.flush()
        self.connected = False
        await self.socket.close(self.code if self.code is not None else 1000)

    async def flush(self) -> None:
        """Leaves every room."""
        await self._app.room_manager.flush(self)


class Application:
    """An event application: ``@app.on(event)`` handlers, ``app.hooks``,
    rooms. ``app.app`` is the :class:`roomcast.App` that serves it (on any
    path; a plain GET of ``/roomcast.js`` gets roomcast's JavaScript
    client, which speaks the same envelope, unless ``serve_client=False``);
    keyword arguments other than ``event_router`` and ``room_manager`` are
    its options (``room_notices`` is off by default here: the original's
    wire has no such events)."""

    def __init__(
        self,
        *,
        event_router: Callable[[], EventRouter] = EventRouter,
        room_manager: Callable[[], RoomManager] = RoomManager,
        **options: Any,
    ) -> None:
        self.hooks = Hooks()
        self.event_router = event_router()
        self.room_manager = room_manager()
        options.setdefault("room_notices", False)
        self.app = App("/{path:path}", **options)
        self._sockets: dict[int, Socket] = {}
        self.app.on_connect(self._connect)
        self.app.on_disconnect(self._disconnect)
        self.app.on_startup(self._startup)
        self.app.on_shutdown(self._shutdown)

    def sockets(self) -> list[Socket]:
        """The sockets connected now."""
        return list(self._sockets.values())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """An ASGI app, as the original: ``uvicorn example:app`` (see
        :meth:`roomcast.App.__call__`)."""
        await self.app(scope, receive, send)

    def on(self, event: str) -> Callable[[F], F]:
        """Decorator: ``handler(ws)`` handles ``event``, after the
        ``before_on`` hooks."""
        if not isinstance(event, str):
            raise TypeError(f"an event is named by a str, not {type(event).__name__}")

        def decorator(func: F) -> F:
            if not callable(func):
                raise TypeError(f"handler of {event!r} must be callable, not {type(func).__name__}")
            self.event_router.add(event, func)
            self.app.on(event)(self._dispatch)
            return func

        return decorator

    # -- serving ------------------------------------------------------------------

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serves until SIGINT or SIGTERM (see :meth:`roomcast.Server.run`)."""
        self.app.run(host, port)

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 8000) -> AsyncIterator[Running]:
        """``async with app.serve(host, port) as running:`` serves on the
        running asyncio loop inside the block (see :meth:`roomcast.App.serve`)."""
        async with self.app.serve(host, port) as running:
            yield running

    # -- the roomcast.App handlers ----------------------------------------------------

    async def _startup(self) -> None:
        for hook in list(self.hooks.on_startup):
            await _call(hook)

    async def _shutdown(self) -> None:
        # Every connection has closed by now; only a socket whose handshake
        # failed after its hooks ran can be left.
        self._sockets.clear()
        for hook in list(self.hooks.on_shutdown):
            await _call(hook)

    async def _connect(self, app_socket: AppSocket) -> bool:
        ws = Socket(self, app_socket)
        acceptance: dict[str, Any] = {"headers": [], "subprotocol": None}
        for hook in list(self.hooks.on_connect):
            await _call(hook, ws, acceptance)
            if not acceptance:
                return False  # refused: HTTP 403
        websocket = app_socket.ws
        if websocket.client_state is WebSocketState.DISCONNECTED:
            # Gone while the hooks ran: no disconnect hook would follow the
            # failed accept, so it is never registered.
            return False
        headers = acceptance.get("headers") or []
        subprotocol = acceptance.get("subprotocol")
        if (headers or subprotocol is not None) and websocket.application_state is WebSocketState.CONNECTING:
            await websocket.accept(subprotocol, headers)
        self._sockets[app_socket.id] = ws
        ws.connected = True
        return True

    async def _disconnect(self, app_socket: AppSocket) -> None:
        ws = self._sockets.pop(app_socket.id, None)
        if ws is None:
            return
        ws.connected = False
        ws.code = await _close_code(app_socket.ws)
        try:
            for hook in list(self.hooks.on_disconnect):
                try:
                    await _call(hook, ws)
                except Exception:
                    logger.exception("on_disconnect hook %r failed for %r", hook, ws)
        finally:
            await self.room_manager.flush(ws)

    async def _dispatch(self, app_socket: AppSocket) -> None:
        ws = self._sockets.get(app_socket.id)
        if ws is None:
            return
        ws.event = app_socket.event
        ws.payload = app_socket.payload
        handler = self.event_router(ws.event)
        if handler is None:
            return  # a router that declines the event
        await self._run_hooks(ws, handler, 0)

    async def _run_hooks(self, ws: Socket, handler: Handler, index: int) -> None:
        hooks = self.hooks.before_on
        if index >= len(hooks):
            await _call(handler, ws)
            return

        async def go_on(socket: Socket) -> None:
            await self._run_hooks(socket, handler, index + 1)

        await _call(hooks[index], ws, go_on)


async def _close_code(websocket: ServerWebSocket) -> int | None:
    """The code the connection closed with, once it has closed."""
    if websocket.client_state is not WebSocketState.DISCONNECTED:
        return None
    # With the peer gone and nothing left to read, receive() returns the
    # disconnect message at once.
    message = await websocket.receive()
    code = message.get("code")
    return code if isinstance(code, int) else None


def _scope_of(websocket: ServerWebSocket) -> dict[str, Any]:
    """An ASGI ``websocket`` scope for the request, as the original gave."""
    url = websocket.url
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in websocket.headers.multi_items()]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": unquote(url.path),
        "raw_path": url.path.encode("latin-1", "replace"),
        "query_string": url.query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": headers,
        "client": [websocket.client.host, websocket.client.port],
        "server": None,
        "subprotocols": websocket.subprotocols,
    }
