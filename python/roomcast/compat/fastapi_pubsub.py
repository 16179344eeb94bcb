"""The API of ``fastapi-pubsub``, on roomcast.

    from roomcast.compat.fastapi_pubsub import BasePubSubWebSocket

    class SimplePubSubWebsocket(BasePubSubWebSocket):
        async def generate_object_to_send(self):
            connections = self.connection_manager.get(self.channel_id)
            return {"num_connected_clients": len(connections)}

    @server.websocket("/ws/connected_clients")
    async def online_players_endpoint(websocket):
        ssw = SimplePubSubWebsocket(websocket, "connected_clients")
        await ssw.run()

``BasePubSubWebSocket(websocket, channel_id, redis_credentials=None)``
groups the connections of one ``channel_id``; ``run()`` accepts the
connection, joins the channel, calls :meth:`~BasePubSubWebSocket.process`
(every client of the channel gets what ``generate_object_to_send()``
returns, as JSON), reads (and ignores) the client's messages until it
leaves, then calls ``process()`` again for the others
(``send_message_on_exception=True``). ``connection_manager.get(channel_id)``
tells who is in the channel.

Each channel is a roomcast :class:`~roomcast.Room`: ``process()`` is one
push, serialised once and fanned out by the C core.

Differences from the original (fastapi-pubsub 0.1):

* ``generate_object_to_send()`` is called once per ``process()`` and its
  result pushed to every client of the channel, not called once per client
  (it takes no client: every client got the same object anyway, unless it
  counted its own calls).
* ``redis_credentials`` really works across processes. The channel is then
  a named room on roomcast's backplane, shared by every server on that
  Redis: ``process()`` reaches the clients of every server, and
  ``connection_manager.get(channel_id)`` is the set of member ids of every
  server (roomcast's presence), fetched from Redis just before each
  ``generate_object_to_send()``. The original stored Python objects in a
  Redis set, which cannot work (they are neither shared nor storable).
  The core that serves the websocket must have a backplane naming the
  same Redis (``credentials.url``): roomcast's :class:`~roomcast.Server`
  started with ``backplane=``, or, under uvicorn with ``--ws
  roomcast.uvicorn:WebSocketProtocol``, ``roomcast.uvicorn.configure(
  backplane=...)``; ``run()`` raises :class:`RuntimeError` saying so
  otherwise.
* With the in-memory manager (the default), ``get()`` returns this
  process's ``BasePubSubWebSocket`` objects of the channel, as the original.
* ``websocket`` is roomcast's :class:`~roomcast.ServerWebSocket`, or a
  Starlette (FastAPI) one under uvicorn, as in the original's README. With
  roomcast's protocol for uvicorn the C core serves it (pushes fanned out
  there, and ``redis_credentials`` work as above); with uvicorn's own
  websocket implementations pushes reach it through Python and channels
  are in memory only (local to the process).
* ``RedisCredentials`` is a dataclass with defaults (``localhost``, 6379,
  no user or password, db 0); setting its attributes one by one, as the
  original's bare class needed, still works. ``websocket_id`` (the older
  releases' name of ``channel_id``) is accepted and kept as an alias.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .._asgi import adopted
from ..room import AsgiWebSocket, Room
from ..websocket import ServerWebSocket, hub_of

__all__ = [
    "BaseConnectionManager",
    "BasePubSubWebSocket",
    "MemoryConnectionManager",
    "RedisConnectionManager",
    "RedisCredentials",
]


@dataclass
class RedisCredentials:
    """Where the channels live when they are shared across processes."""

    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def url(self) -> str:
        """The ``backplane=`` URL of roomcast's Server for this Redis."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


class BaseConnectionManager(ABC):
    @abstractmethod
    def get(self, key: str) -> set[Any]: ...

    @abstractmethod
    def add(self, key: str, obj: Any) -> None: ...

    @abstractmethod
    def remove(self, key: str, obj: Any) -> None: ...


class MemoryConnectionManager(BaseConnectionManager):
    """This process's channels: one instance, as in the original."""

    _instance: MemoryConnectionManager | None = None
    connections: dict[str, set[Any]]

    def __new__(cls) -> MemoryConnectionManager:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance.connections = {}
        return cls._instance

    def get(self, key: str) -> set[Any]:
        return self.connections.get(key, set())

    def add(self, key: str, obj: Any) -> None:
        self.connections.setdefault(key, set()).add(obj)

    def remove(self, key: str, obj: Any) -> None:
        members = self.connections.get(key)
        if members is not None:
            members.discard(obj)
            if not members:
                del self.connections[key]


class RedisConnectionManager(BaseConnectionManager):
    """The channels of every server on one Redis: ``get()`` is the set of
    member ids (``"<server id>:<connection id>"``) as of the last
    :meth:`refresh`, which ``process()`` makes before
    ``generate_object_to_send()``. Membership itself follows the clients
    that join and leave: ``add`` and ``remove`` have nothing to do."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
    ) -> None:
        self.credentials = RedisCredentials(host, port, username, password, db)
        self._known: dict[str, set[Any]] = {}

    def get(self, key: str) -> set[Any]:
        return set(self._known.get(key, set()))

    def add(self, key: str, obj: Any) -> None:
        pass

    def remove(self, key: str, obj: Any) -> None:
        pass

    async def refresh(self, key: str) -> set[Any]:
        """Fetches the members of channel ``key`` on every server."""
        members = set(await _channel(key, True).members())
        self._known[key] = members
        return members


# channel -> its room; in memory and across servers are different rooms.
_rooms: dict[tuple[str, bool], Room] = {}
# The instance running for each member, for the room's handlers.
_running: dict[Any, BasePubSubWebSocket] = {}


async def _joined(room: Room, websocket: Any) -> None:
    self = _running.get(websocket)
    if self is not None:
        self.connection_manager.add(self.channel_id, self)
        await self.process()


async def _left(room: Room, websocket: Any) -> None:
    self = _running.pop(websocket, None)
    if self is not None:
        self.connection_manager.remove(self.channel_id, self)
        if self._notify_on_leave:
            await self.process()


def _channel(channel_id: str, shared: bool) -> Room:
    room = _rooms.get((channel_id, shared))
    if room is None:
        # Shared channels carry a prefix of their own among the rooms.
        room = Room(name=f"fastapi_pubsub:{channel_id}") if shared else Room()
        room.on_connect("after")(_joined)
        room.on_disconnect("after")(_left)
        _rooms[(channel_id, shared)] = room
    return room


class BasePubSubWebSocket(ABC):
    """One client of a channel; subclasses say what to send."""

    def __init__(
        self,
        websocket: ServerWebSocket | AsgiWebSocket,
        channel_id: str | None = None,
        redis_credentials: RedisCredentials | None = None,
        *,
        websocket_id: str | None = None,
    ) -> None:
        channel = channel_id if channel_id is not None else websocket_id
        if not isinstance(channel, str):
            raise TypeError("BasePubSubWebSocket needs a channel_id (str)")
        self.websocket: Any = websocket
        self.channel_id = channel
        self.websocket_id = channel
        self.redis_credentials = redis_credentials
        self.connection_manager: BaseConnectionManager
        if redis_credentials is not None:
            c = redis_credentials
            self.connection_manager = RedisConnectionManager(c.host, c.port, c.username, c.password, c.db)
        else:
            self.connection_manager = MemoryConnectionManager()
        self._room = _channel(channel, redis_credentials is not None)
        self._notify_on_leave = True

    async def send_json(self, data: Any) -> None:
        await self.send_message(json.dumps(data))

    async def send_message(self, message: str) -> None:
        await self.websocket.send_text(message)

    async def receive_message(self) -> str:
        return str(await self.websocket.receive_text())

    async def close(self) -> None:
        await self.websocket.close()

    def _check_backplane(self) -> None:
        c = self.redis_credentials
        if c is None:
            return
        ws = self.websocket
        if not isinstance(ws, ServerWebSocket):
            # A Starlette websocket: the core's when roomcast.uvicorn serves it.
            ws = adopted(getattr(ws, "scope", None) or {})
            if ws is None:
                raise RuntimeError(
                    "redis_credentials need the roomcast core: roomcast's Server started with backplane=..., "
                    "or uvicorn with --ws roomcast.uvicorn:WebSocketProtocol and roomcast.uvicorn.configure("
                    "backplane=...); the rooms of uvicorn's own websockets are local to its process"
                )
            where = f"call roomcast.uvicorn.configure(backplane={c.url!r})"
        else:
            where = f"start the Server with backplane={c.url!r}"
        if not hub_of(ws).backplane_is(c.host, c.port, c.db):
            raise RuntimeError(
                f"redis_credentials name {c.host}:{c.port}/{c.db}: {where} so that the channel is shared "
                "through that Redis"
            )

    async def run(self, send_message_on_exception: bool = True) -> None:
        """Accepts, joins the channel and calls ``process()``; returns when
        the client has gone, after calling ``process()`` for the others when
        ``send_message_on_exception``. Messages from the client are read and
        ignored, as in the original."""
        self._check_backplane()
        self._notify_on_leave = send_message_on_exception
        _running[self.websocket] = self
        try:
            await self._room.connect(self.websocket)
        finally:
            _running.pop(self.websocket, None)

    async def process(self) -> None:
        """Pushes ``await generate_object_to_send()`` to every client of the
        channel (of every server, with ``redis_credentials``)."""
        manager = self.connection_manager
        if isinstance(manager, RedisConnectionManager):
            await manager.refresh(self.channel_id)
        await self._room.push_json(await self.generate_object_to_send())

    @abstractmethod
    async def generate_object_to_send(self) -> Any: ...
