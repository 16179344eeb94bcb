"""The hub: the one handle on a serving server's C core.

A :class:`Hub` is made by :meth:`Server.serve` for one serving session and
owns what that session shares with its rooms, websockets and apps: the
core (commands go through it alone), the ids of the core rooms that stand
for each :class:`~roomcast.BaseRoom` and each name, the backplane and its
key, presence, and the tasks it started. ``Room``, ``ServerWebSocket``,
``App`` and the compat modules ask it through methods; none of them holds
the core.

Lifetime: the hub takes commands from :meth:`start` until :meth:`stop`
(shutdown has begun: the core's loop is ending, so no command may reach
it), after which every command is a no-op and :attr:`running` is false.
The hubs that take commands are in a process-wide set, which a push to a
named room uses to reach every server of this process.

Room ids: a room without a name gets one core room per hub, made when its
first member joins here; a name (of a kind: ``Room(name=...)``, an App
room, an App's room of every socket) gets one core room per hub, shared by
whoever holds it, freed with its last holder. The relay mode of a core room
is fixed at birth, so the holders of one name must agree on it.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from . import _core

if TYPE_CHECKING:
    from .backplane import Backplane

__all__ = ["APP_ALL_KIND", "APP_KIND", "EVERYONE", "Hub", "ROOM_KIND", "publish", "serving"]

# Kinds of named rooms: an App room and a Room(name=...) called alike are
# two rooms, here and on the backplane (see core_name).
ROOM_KIND = "room"  # Room(name=...)
APP_KIND = "app"  # the rooms an App's sockets join
APP_ALL_KIND = "app*"  # an App's room of every socket
EVERYONE = "everyone"  # the one name of kind APP_ALL_KIND
_RELAY_NAMES = {_core.RELAY_NONE: None, _core.RELAY_ALL: "all", _core.RELAY_OTHERS: "others"}

# Strings that many connections share (the path of a route, the peer's
# address), kept once: at most this many distinct ones, so that a client
# cannot grow the table.
_SHARED_MAX = 256

Data = str | bytes | bytearray | memoryview

# The hubs taking commands now, for a push to a named room that has no
# member here yet: it still goes to the other servers through the backplane.
_serving: weakref.WeakSet[Hub] = weakref.WeakSet()
# Bumped when a hub starts or stops serving: what was chosen among them
# before may be cached until it changes.
_serving_generation = 0
# When a hub learned a room, across hubs: a push goes through the hubs
# that learned the room first (its members' servers, before those that
# learned it only to publish).
_learned = itertools.count()


def core_name(kind: str, name: str) -> bytes:
    """The name the core (and the backplane's channel) knows a room by. A
    Room(name=...) keeps its own, so that its channel is the documented
    escaped prefix, "|", name; the others start with a byte that UTF-8
    never has (0xFF), then their kind, so that no Room name can equal
    one."""
    data = name.encode("utf-8")
    return data if kind == ROOM_KIND else b"\xff" + kind.encode() + b":" + data


def serving() -> list[Hub]:
    """The hubs that take commands now."""
    return list(_serving)


def serving_generation() -> int:
    """Changes whenever :func:`serving` does."""
    return _serving_generation


def _serving_changed() -> None:
    global _serving_generation
    _serving_generation += 1


class Hub:
    """One serving session of a server: see the module's docstring."""

    def __init__(
        self,
        core: _core.Core,
        loop: asyncio.AbstractEventLoop,
        *,
        backplane: Backplane | None = None,
        backplane_key: tuple[str, int, str] | None = None,
        backplane_db: int | None = None,
        subprotocols: Iterable[str] = (),
        max_receive_queue: int = 2**20,
    ) -> None:
        # Takes commands while serving; None once shutdown has begun.
        self._core: _core.Core | None = core
        # Answers stats() until the core's loop has ended.
        self._stats_core: _core.Core | None = core
        self.loop = loop
        self.server_id = f"{core.server_id():016x}"
        self.subprotocols = tuple(subprotocols)
        self.max_receive_queue = max_receive_queue
        self.backplane = backplane
        # Servers of one process on the same Redis and prefix publish a
        # push to a named room once between them.
        self._backplane_key = backplane_key if backplane is not None else None
        self._backplane_db = backplane_db
        # (kind, name) -> [core room id, holders, relay mode]
        self._names: dict[tuple[str, str], list[int]] = {}
        # Each room object's core room here, and when it was learned.
        self._rooms: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
        self._shared: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # (conn, core room) -> what waits for the core's RC_EV_RECOVER.
        self._recovering: dict[tuple[int, int], asyncio.Future[bool]] = {}

    # -- life ---------------------------------------------------------------

    def start(self) -> None:
        _serving.add(self)
        _serving_changed()

    def stop(self) -> None:
        """Shutdown has begun: no more commands."""
        _serving.discard(self)
        _serving_changed()
        self._core = None

    def finish(self) -> None:
        """The core's loop has ended: forgets every room."""
        self.stop()
        self._stats_core = None
        self._rooms.clear()
        self._names.clear()
        self.backplane = None

    @property
    def backplane_key(self) -> tuple[str, int, str] | None:
        """The Redis and prefix of the backplane as its URL spells them, or
        None."""
        return self._backplane_key

    def backplane_keys(self) -> tuple[Any, ...]:
        """What names this server's Redis and prefix: its URL's host, port
        and prefix and, once Redis has told it, Redis's own run id and the
        prefix. Servers of a process that share one of them share the
        backplane and publish once between them, however their URLs spell
        it (``localhost`` and ``127.0.0.1``, say)."""
        key = self._backplane_key
        if key is None:
            return ()
        identity = self.backplane.identity if self.backplane is not None else None
        return (key,) if identity is None else (key, (identity, key[2]))

    @property
    def running(self) -> bool:
        return self._core is not None

    def stats(self) -> dict[str, int]:
        """The core's counters; empty once it has stopped."""
        core = self._stats_core
        return core.stats() if core is not None else {}

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task the server waits for (then cancels) when it stops."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def tasks(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    def shared(self, text: str) -> str:
        """``text``, as the one copy kept for every connection that has it
        (while the table has room)."""
        kept = self._shared.get(text)
        if kept is not None:
            return kept
        if len(self._shared) < _SHARED_MAX:
            self._shared[text] = text
        return text

    def member_id(self, conn: int) -> str:
        """A member's id in presence: unique across servers."""
        return f"{self.server_id}:{conn}"

    # -- one connection -------------------------------------------------------
    # Each returns False (doing nothing) once the hub has stopped.

    def accept(self, conn: int, subprotocol: str | None, headers: list[tuple[str, str]]) -> bool:
        core = self._core
        if core is None:
            return False
        core.accept(conn, subprotocol, headers)
        return True

    def reject(self, conn: int, status: int, body: bytes = b"") -> bool:
        core = self._core
        if core is None:
            return False
        if body:
            core.reject(conn, status, body)
        else:
            core.reject(conn, status)
        return True

    def respond(self, conn: int, status: int, headers: list[tuple[str, str]], body: bytes, head: bool) -> bool:
        core = self._core
        if core is None:
            return False
        core.respond(conn, status, headers, body, head)
        return True

    def close(self, conn: int, code: int, reason: str) -> bool:
        core = self._core
        if core is None:
            return False
        core.close(conn, code, reason)
        return True

    def send(self, conn: int, data: Data) -> bool:
        core = self._core
        if core is None:
            return False
        core.send(conn, data)
        return True

    def pause_reading(self, conn: int) -> bool:
        core = self._core
        if core is None:
            return False
        core.pause_reading(conn)
        return True

    def resume_reading(self, conn: int) -> bool:
        core = self._core
        if core is None:
            return False
        core.resume_reading(conn)
        return True

    # -- core rooms by id (App) ---------------------------------------------------

    def join(self, conn: int, room_id: int, relay: int = _core.RELAY_NONE) -> bool:
        core = self._core
        if core is None:
            return False
        core.join(conn, room_id, relay)
        return True

    def leave(self, conn: int, room_id: int) -> None:
        core = self._core
        if core is not None:
            core.leave(conn, room_id)

    def broadcast(self, kind: str, names: list[str] | None, data: str, exclude: int) -> None:
        """Sends ``data`` once to every member of the named rooms of
        ``kind`` (None: the room of every socket, ``APP_ALL_KIND``), each
        member once. With a backplane, names with no member here still
        reach the other servers. Thread-safe: a dict lookup is atomic under
        the GIL, and a command from another thread wakes the core itself."""
        core = self._core
        if core is None:
            return
        table = self._names
        extra: list[int] = []
        if names is None:
            entry = table.get((APP_ALL_KIND, EVERYONE))
            ids = [entry[0]] if entry is not None else []
        else:
            ids = [entry[0] for entry in (table.get((kind, name)) for name in names) if entry is not None]
            if self.backplane is not None:
                # A room for this one broadcast carries the names that
                # have no member here (other servers may have some).
                for name in names:
                    if (kind, name) not in table:
                        extra.append(core.room_new())
                        core.room_name(extra[-1], core_name(kind, name))
        if not ids and not extra:
            return
        core.broadcast(ids + extra, data, exclude)
        for room_id in extra:
            core.room_free(room_id)

    # -- joining a room whose history Redis keeps -------------------------------

    async def recover_ready(self, conn: int, room_id: int, timeout: float) -> bool:
        """Asks the core to keep ``room_id``'s messages for ``conn`` once
        its channel is subscribed; True when it is (the history may be read
        now), False when it cannot be or does not happen within
        ``timeout`` seconds (Redis is away). Either way recover_end or
        recover_cancel must follow."""
        core = self._core
        if core is None:
            return False
        future: asyncio.Future[bool] = self.loop.create_future()
        self._recovering[(conn, room_id)] = future
        try:
            core.recover_begin(conn, room_id)
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self._recovering.pop((conn, room_id), None)

    def on_recover(self, conn: int, code: int, room_id: int) -> None:
        future = self._recovering.get((conn, room_id))
        if future is not None and not future.done():
            future.set_result(code == 1)

    def recover_end(
        self, conn: int, room_id: int, first: str | None, messages: list[bytes], after: str, last: int
    ) -> None:
        core = self._core
        if core is not None:
            core.recover_end(conn, room_id, first, messages, after, last)

    def recover_cancel(self, conn: int, room_id: int) -> None:
        core = self._core
        if core is not None:
            core.recover_cancel(conn, room_id)

    # -- names -----------------------------------------------------------------

    def name_acquire(self, kind: str, name: str, relay: int = _core.RELAY_NONE) -> int:
        """The core room of ``name`` among the rooms of ``kind`` on this
        server, made on first use with its relay mode (fixed for its whole
        life) and held until released; rooms of one name are one room, so
        they must agree on the mode (ValueError otherwise)."""
        key = (kind, name)
        entry = self._names.get(key)
        if entry is None:
            core = self._core
            if core is None:
                raise RuntimeError("the server is not running")
            room_id = core.room_new(relay)
            core.room_name(room_id, core_name(kind, name))
            entry = self._names[key] = [room_id, 0, relay]
        elif entry[2] != relay:
            raise ValueError(
                f"the room {name!r} is served here with relay={_RELAY_NAMES[entry[2]]!r}:"
                f" a Room(name={name!r}, relay={_RELAY_NAMES[relay]!r}) cannot share it"
            )
        entry[1] += 1
        return entry[0]

    def name_release(self, kind: str, name: str) -> None:
        key = (kind, name)
        entry = self._names.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._names[key]
            if self._core is not None:
                self._core.room_free(entry[0])

    # -- Room members ----------------------------------------------------------

    def _room_id(self, room: Any, name: str | None, relay: int) -> int:
        entry = self._rooms.get(room)
        if entry is not None:
            return entry[0]
        if self._core is None:
            raise RuntimeError("the server of this websocket is not running")
        if name is not None:
            room_id = self.name_acquire(ROOM_KIND, name, relay)
        else:
            room_id = self._core.room_new(relay)
        self._rooms[room] = (room_id, next(_learned))
        return room_id

    def room_join(self, room: Any, name: str | None, relay: int, conn: int, identity: Any) -> bool:
        """``conn`` joins ``room`` (its core room made on first use here);
        a named room's member enters presence. False once stopping."""
        core = self._core
        if core is None:
            return False
        room_id = self._room_id(room, name, relay)
        core.join(conn, room_id, relay)
        if self.backplane is not None and name is not None:
            self.backplane.join(name, conn, identity)
        return True

    def room_leave(self, room: Any, name: str | None, conn: int) -> None:
        entry = self._rooms.get(room)
        if entry is not None and self._core is not None:
            self._core.leave(conn, entry[0])
        if self.backplane is not None and name is not None:
            self.backplane.leave(name, conn)

    def knows(self, room: Any) -> bool:
        return room in self._rooms

    def learned(self, room: Any) -> float:
        """When this hub learned ``room`` (inf: it has not)."""
        entry = self._rooms.get(room)
        return float("inf") if entry is None else entry[1]

    # -- presence ----------------------------------------------------------------

    def has_presence(self) -> bool:
        return self.backplane is not None and self._core is not None

    async def count(self, name: str) -> int:
        assert self.backplane is not None
        return await self.backplane.count(name)

    async def members(self, name: str) -> dict[str, Any]:
        assert self.backplane is not None
        return await self.backplane.members(name)

    def backplane_is(self, host: str, port: int, db: int | None) -> bool:
        """Whether this server's backplane is that Redis (and database)."""
        key = self._backplane_key
        return key is not None and (key[0], key[1], self._backplane_db) == (host, port, db)

    # -- pushes ------------------------------------------------------------------

    def publish_to(self, room: Any, data: Data, exclude: int) -> None:
        """Publishes to ``room``'s members of this server (a no-op if it
        has none here yet)."""
        core = self._core
        entry = self._rooms.get(room)
        if core is not None and entry is not None:
            core.publish(entry[0], data, exclude)

    def publish_named(self, room: Any, name: str, relay: int, data: Data, exclude: int, done: set[Any]) -> None:
        """Publishes to a named room through this server: its members here
        and, with a backplane, every other server's. ``done`` holds the
        backplane keys already published through (one publish per Redis
        and prefix in this process, see backplane_keys)."""
        if self._core is None:
            return
        if self.backplane is not None:
            self._room_id(room, name, relay)  # even with no member here
            keys = self.backplane_keys()
            if not done.isdisjoint(keys):
                return
            done.update(keys)
        self.publish_to(room, data, exclude)


def publish(room: Any, name: str | None, relay: int, data: Data, exclude_hub: Hub | None, exclude_conn: int) -> None:
    """One push to ``room`` on every server of this process that serves it
    (for a named room: once per backplane, through the excluded member's
    server first, so that the exclusion holds across servers)."""
    hubs = serving()
    if name is None:
        for hub in hubs:
            hub.publish_to(room, data, exclude_conn if hub is exclude_hub else 0)
        return
    hubs = [h for h in hubs if h.knows(room) or h.backplane is not None]
    # Through a server with members first (the excluded one's first of
    # all): while Redis is away, a push still reaches them.
    hubs.sort(key=lambda h: (h is not exclude_hub, h.learned(room)))
    done: set[Any] = set()
    for hub in hubs:
        hub.publish_named(room, name, relay, data, exclude_conn if hub is exclude_hub else 0, done)


def presence_hub(room: Any) -> Hub | None:
    """A serving hub whose backplane knows ``room``'s members: one it has
    members on first."""
    hubs = serving()
    hubs.sort(key=lambda h: h.learned(room))
    for hub in hubs:
        if hub.has_presence():
            return hub
    return None
