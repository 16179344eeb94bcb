"""The Redis backplane, Python side: the URL, command replies, presence.

The fan-out itself is in the C core (``csrc/loop/rc_backplane.c``): a push to a
named room is delivered to the local members at once and PUBLISHed once to
Redis; every other server subscribed to the room's channel delivers it to
its own members without waking Python. This module does what is not on the
hot path:

* :func:`parse_url` turns ``redis://[[username]:password@]host[:port][/db]``
  (``rediss://`` with TLS, its ``ssl_*`` options in the query) into the
  core's options (``ValueError`` saying what is wrong otherwise);
* :class:`Backplane` sends commands on the core's Redis connection and
  resolves their replies, logs the connection's ups and downs, and keeps
  this server's room members in Redis for presence.

Names in Redis. ``E`` is the prefix escaped (a ``\\`` before each ``\\``
and ``|``), so that the first unescaped ``|`` ends it and no two prefixes
share a name however they nest; a room's name comes last, whatever it
holds:

* ``E|<room>``: the room's channel (the C core publishes and subscribes);
* ``E|presence@S|<room>``, a hash: member (connection id) -> identity
  (JSON), expiring ``presence_ttl`` seconds after the last heartbeat of
  the server ``S``;
* ``E|presence|<room>``: the set of the servers that have members there.

On a Redis Cluster (``redis+cluster://``) each of these names starts with
the room's tag (``_core.room_tag``, ``{`` four letters ``}``), so that a
room's names share one slot and its scripts (which name that slot with
the room's server set as ``KEYS[1]``) run on its shard.

A server refreshes its hashes every ``presence_ttl / 3`` seconds, so a
server that dies drops out of ``count()`` and ``members()`` within
``presence_ttl``. A member that leaves is taken out at once; when Redis
cannot be told (it is away), the room is written again on reconnection,
as is every room whose hash a heartbeat finds gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import _core

__all__ = ["BackplaneError", "parse_url"]

logger = logging.getLogger("roomcast")


# One room's members of this server: written whole (resync) or one by one.
_FILL = """
local index = ARGV[1] .. '|presence|' .. ARGV[4]
local own = ARGV[1] .. '|presence@' .. ARGV[2] .. '|' .. ARGV[4]
if ARGV[5] == 'all' then redis.call('DEL', own) end
for i = 6, #ARGV, 2 do redis.call('HSET', own, ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', own) == 1 then
  redis.call('PEXPIRE', own, ARGV[3])
  redis.call('SADD', index, ARGV[2])
  redis.call('PEXPIRE', index, ARGV[3])
else
  redis.call('SREM', index, ARGV[2])
end
return 1
"""

_LEAVE = """
local index = ARGV[1] .. '|presence|' .. ARGV[4]
local own = ARGV[1] .. '|presence@' .. ARGV[2] .. '|' .. ARGV[4]
for i = 5, #ARGV do redis.call('HDEL', own, ARGV[i]) end
if redis.call('EXISTS', own) == 0 then redis.call('SREM', index, ARGV[2]) end
return 1
"""

# The heartbeat: returns the rooms whose hash has gone (to be written again).
_BEAT = """
local missing = {}
for i = 4, #ARGV do
  local index = ARGV[1] .. '|presence|' .. ARGV[i]
  local own = ARGV[1] .. '|presence@' .. ARGV[2] .. '|' .. ARGV[i]
  if redis.call('PEXPIRE', own, ARGV[3]) == 1 then
    redis.call('SADD', index, ARGV[2])
    redis.call('PEXPIRE', index, ARGV[3])
  else
    missing[#missing + 1] = ARGV[i]
  end
end
return missing
"""

# count: the number of members; members: server:member, identity, ...
# Servers whose hash has expired are dropped from the set on the way.
_QUERY = """
local index = ARGV[1] .. '|presence|' .. ARGV[2]
local out, n = {}, 0
for _, sid in ipairs(redis.call('SMEMBERS', index)) do
  local own = ARGV[1] .. '|presence@' .. sid .. '|' .. ARGV[2]
  if redis.call('EXISTS', own) == 0 then
    redis.call('SREM', index, sid)
  elseif ARGV[3] == 'count' then
    n = n + redis.call('HLEN', own)
  else
    local h = redis.call('HGETALL', own)
    for i = 1, #h, 2 do
      out[#out + 1] = sid .. ':' .. h[i]
      out[#out + 1] = h[i + 1]
    end
  end
end
if ARGV[3] == 'count' then return n end
return out
"""

_BATCH = 500  # rooms per heartbeat script, members per fill script


class BackplaneError(ConnectionError):
    """A command for the Redis backplane failed: the backplane is not
    connected (Redis is unreachable; the server keeps serving its own
    members and reconnects), the connection was lost before the reply, or
    Redis answered with an error (the message says which)."""


def escape_prefix(prefix: str) -> str:
    """``backplane_prefix`` as Redis names begin with it (see the module's
    docstring); csrc/proto/rc_bpwire.c's rc_bpwire_chan_head does the same."""
    return prefix.replace("\\", "\\\\").replace("|", "\\|")


def _masked(url: str) -> str:
    """url with its password replaced by ``***``, for error messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{colon}{'***' if colon else ''}@{tail}"


def parse_url(url: str) -> dict[str, Any]:
    """The core's backplane options for ``redis://[[user]:password@]host
    [:port][/db]`` or, through TLS, ``rediss://...[?option=value&...]``;
    raises :class:`ValueError` for anything else (the message shows the URL
    with its password masked).

    TLS options (redis-py's names): ``ssl_ca_certs`` (a PEM file of the
    roots Redis's certificate must lead to; default: the system's),
    ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate, for a Redis
    started with ``tls-auth-clients``; the key unencrypted, in the
    certificate's file when not given), ``ssl_check_hostname`` (``true``,
    the default: the certificate must name the URL's host) and
    ``ssl_cert_reqs`` (``required``, the default, or ``none``: no check at
    all, so anyone on the path can pose as Redis). The files are read now:
    a missing or unreadable one is a ``ValueError`` naming it.

    A Redis Cluster: ``redis+cluster://[[user]:password@]host:port[,host:port
    ...]`` (``rediss+cluster://`` through TLS, with the same options), its
    seed nodes; the rest of the cluster is learnt from them, and each room
    lives on the shard that owns its channel (sharded pub/sub, Redis 7)."""
    if not isinstance(url, str):
        raise TypeError(f"backplane must be a redis:// URL string, not {type(url).__name__}")
    try:
        return _parse_url(url)
    except ValueError as exc:
        raise ValueError(str(exc).replace(repr(url), repr(_masked(url)))) from None


_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


def _parse_url(url: str) -> dict[str, Any]:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme.endswith("+cluster"):
        return _parse_cluster_url(url, scheme)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL", ...
        raise ValueError(f"backplane URL cannot be parsed ({exc}): {url!r}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"backplane URL must start with redis://, rediss:// (TLS) or redis+cluster:// (a Redis Cluster): {url!r}"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"backplane URL has an invalid port: {url!r}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"backplane URL has no host: {url!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"backplane URL's database must be a number, not {path!r}")
    if parts.fragment:
        raise ValueError(f"backplane URL takes no fragment: {url!r}")
    options = {
        "backplane_host": host,
        "backplane_port": port,
        "backplane_db": int(path or 0),
        "backplane_username": unquote(parts.username) if parts.username else None,
        "backplane_password": unquote(parts.password) if parts.password is not None else None,
    }
    if parts.scheme == "rediss":
        options.update(_tls_options(parts.query, url))
    elif parts.query:
        raise ValueError(f"backplane URL takes options only with rediss:// (TLS): {url!r}")
    return options


def _parse_cluster_url(url: str, scheme: str) -> dict[str, Any]:
    """redis+cluster://[[user]:password@]host:port[,host:port...][?TLS options]."""
    if scheme not in _SCHEMES:
        raise ValueError(f"backplane URL must start with redis+cluster:// or rediss+cluster:// (TLS): {url!r}")
    rest = url.partition("://")[2]
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    if fragment:
        raise ValueError(f"backplane URL takes no fragment: {url!r}")
    netloc, slash, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"backplane URL: a Redis Cluster has database 0 only, not {path.strip('/')!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon else None
    seeds = []
    for seed in hosts.split(","):
        try:
            parts = urlsplit(f"//{seed}")
            port = parts.port
        except ValueError:
            raise ValueError(f"backplane URL has an invalid node {seed!r}: {url!r}") from None
        if not parts.hostname or port is None or parts.path or parts.username or parts.password is not None:
            raise ValueError(f"backplane URL: each node of a Redis Cluster is host:port, not {seed!r}: {url!r}")
        host = parts.hostname
        seeds.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    options: dict[str, Any] = {
        "backplane_host": ",".join(seeds),
        "backplane_port": int(seeds[0].rpartition(":")[2]),
        "backplane_db": 0,
        "backplane_username": username,
        "backplane_password": password,
        "backplane_cluster": True,
    }
    if scheme == "rediss+cluster":
        options.update(_tls_options(query, url))
    elif query:
        raise ValueError(f"backplane URL takes options only with rediss+cluster:// (TLS): {url!r}")
    return options


_TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "ssl_cert_reqs")
_TRUTH = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _tls_options(query: str, url: str) -> dict[str, Any]:
    """The core's TLS options for the query of a rediss:// URL."""
    given: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _TLS_QUERY:
            raise ValueError(f"backplane URL: unknown option {name!r} (known: {', '.join(_TLS_QUERY)}): {url!r}")
        if name in given:
            raise ValueError(f"backplane URL gives {name} twice: {url!r}")
        if not value:
            raise ValueError(f"backplane URL: {name} is empty: {url!r}")
        given[name] = value
    reqs = given.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("required", "none"):
        raise ValueError(f"backplane URL: ssl_cert_reqs must be 'required' or 'none', not {reqs!r}")
    hostname = given.get("ssl_check_hostname", "true" if reqs == "required" else "false").lower()
    if hostname not in _TRUTH:
        raise ValueError(f"backplane URL: ssl_check_hostname must be true or false, not {hostname!r}")
    if reqs == "none" and _TRUTH[hostname]:
        raise ValueError("backplane URL: ssl_check_hostname=true needs ssl_cert_reqs=required")
    if "ssl_keyfile" in given and "ssl_certfile" not in given:
        raise ValueError("backplane URL: ssl_keyfile needs ssl_certfile")
    checks = 2 if reqs == "none" else 0 if _TRUTH[hostname] else 1
    # Read again when the core is made: a relative path keeps meaning the
    # file it names now.
    files = [
        os.path.abspath(given[name]) if name in given else None
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    ]
    try:
        _core.Core.check_backplane_tls(checks, *files)
    except ValueError as exc:
        raise ValueError(f"backplane URL: {exc}") from None
    return {
        "backplane_tls": True,
        "backplane_tls_checks": checks,
        "backplane_tls_ca": files[0],
        "backplane_tls_cert": files[1],
        "backplane_tls_key": files[2],
    }


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Backplane:
    """The backplane of one serving :class:`~roomcast.Server`."""

    def __init__(
        self,
        core: _core.Core,
        loop: asyncio.AbstractEventLoop,
        prefix: str,
        presence_ttl: float,
        where: str,
        cluster: bool = False,
    ) -> None:
        self._core = core
        # A Redis Cluster: each room's names start with its tag (its
        # channel's slot), and its scripts name that slot.
        self.cluster = cluster
        # Room (core name) -> its _redis_history.Publisher while pushes
        # wait for the end of the loop's iteration (App rooms keep none).
        self.pending_pushes: dict[bytes, Any] = {}
        self._loop = loop
        self.prefix = prefix
        self._names = escape_prefix(prefix)  # the head of every Redis name
        self.names = self._names
        self.server_number = core.server_id()
        self.server_id = f"{self.server_number:016x}"
        self._ttl_ms = str(max(1, int(presence_ttl * 1000)))
        self._beat_every = presence_ttl / 3
        self._where = where
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any] | str | Callable[[Any, str | None], None] | None] = {}
        self.up = False
        # Redis's run id (INFO server), once connected: the process's
        # servers on one Redis know each other by it (_hub.backplane_keys).
        self.identity: str | None = None
        self._warned = False
        # room -> {member: identity as JSON}: this server's members there.
        self._members: dict[str, dict[str, str]] = {}
        # Rooms whose last update Redis may have missed (it was away, or
        # the connection went before the reply): written again, whole, when
        # it is back.
        self._stale: set[str] = set()
        self._beat: asyncio.Task[None] | None = None
        self._closing = False
        # Set by the first news of the connection: up, or a failed attempt.
        self.settled = asyncio.Event()

    def start(self) -> None:
        self._beat = self._loop.create_task(self._heartbeat())

    # -- commands -------------------------------------------------------------

    def _send(
        self, args: tuple[Any, ...], future: asyncio.Future[Any] | str | Callable[[Any, str | None], None] | None
    ) -> None:
        """future: what waits for the reply, or the room a presence update
        is about (str), or what to call with (reply, error), or None. Any
        thread."""
        token = next(self._tokens)
        try:
            self._core.redis(token, *args)
        except RuntimeError as exc:  # the core has stopped
            if isinstance(future, asyncio.Future):
                future.set_exception(BackplaneError(str(exc)))
            elif callable(future):
                future(None, str(exc))
            return
        self._waiting[token] = future

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop replies are given on (the server's)."""
        return self._loop

    async def command(self, *args: Any) -> Any:
        """Sends one command; its reply (bytes, int, str, None or a list of
        them). Raises :class:`BackplaneError`."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._send(args, future)
        return await future

    def call(self, args: tuple[Any, ...], then: Callable[[Any, str | None], None]) -> None:
        """Sends one command from any thread; ``then(reply, error)`` runs on
        the loop with its reply."""
        self._send(args, then)

    def _fire(self, room: str, *args: Any) -> None:
        """A presence update of room, whose reply nobody waits for: when it
        fails, the room is written again once Redis is back."""
        self._send(args, room)

    def on_reply(self, token: int, value: Any, error: str | None) -> None:
        future = self._waiting.pop(token, None)
        if callable(future) and not isinstance(future, asyncio.Future):
            try:
                future(value, error)
            except Exception:
                logger.exception("backplane: a reply's handler failed")
        elif not isinstance(future, asyncio.Future):
            if error is not None and not self._closing:
                logger.debug("backplane: a presence update failed: %s", error)
                if future is not None:
                    self._stale.add(future)
        elif not future.done():
            if error is not None:
                future.set_exception(BackplaneError(error))
            else:
                future.set_result(value)

    def on_state(self, code: int, text: str) -> None:
        self.settled.set()
        if code == _core.BACKPLANE_UP:
            logger.info("backplane: %s", text)
            self.up = True
            self._warned = False
            self._stale.update(self._members)
            self._resync_stale()
            if not self.cluster:  # a cluster's nodes each have their own
                self._send(("INFO", "server"), self._learn_identity)
        elif code == _core.BACKPLANE_DOWN:
            self.up = False
            logger.warning("backplane: lost Redis (%s); serving local members only, reconnecting", text)
        elif not self._warned:
            self._warned = True  # one warning per outage; the rest at debug
            logger.warning("backplane: cannot reach Redis at %s (will retry with backoff)", text)
        else:
            logger.debug("backplane: %s", text)

    def _learn_identity(self, reply: Any, error: str | None) -> None:
        """Keeps Redis's run id from its INFO (a Redis that refuses INFO
        is known by its URL alone)."""
        if error is not None or not isinstance(reply, bytes | str):
            return
        for line in _text(reply).splitlines():
            if line.startswith("run_id:"):
                self.identity = "run_id:" + line[7:].strip()
                return

    # -- presence -------------------------------------------------------------

    def _names_of(self, room: str) -> str:
        """The head of room's names: ``E``, on a cluster after the room's tag."""
        if not self.cluster:
            return self._names
        tag = _core.room_tag(f"{self._names}|{room}".encode())
        return tag.decode("ascii") + self._names

    def _keys(self, names: str, room: str) -> tuple[str, ...]:
        """A presence script's keys: none on one Redis; on a cluster the
        room's set of servers, KEYS[1], which says which shard runs it."""
        return ("1", f"{names}|presence|{room}") if self.cluster else ("0",)

    def _script(self, script: str, names: str, room: str) -> tuple[str, ...]:
        return ("EVAL", script, *self._keys(names, room))

    def _head(self, room: str) -> tuple[str, ...]:
        """Its keys, then its ARGV's head, for _FILL and _LEAVE."""
        names = self._names_of(room)
        return (*self._keys(names, room), names, self.server_id, self._ttl_ms, room)

    def join(self, room: str, member: int, identity: Any) -> None:
        members = self._members.setdefault(room, {})
        ident = json.dumps(identity, separators=(",", ":"))
        members[str(member)] = ident
        self._fire(room, "EVAL", _FILL, *self._head(room), "one", str(member), ident)

    def leave(self, room: str, member: int) -> None:
        members = self._members.get(room)
        if members is None or members.pop(str(member), None) is None:
            return
        if not members:
            del self._members[room]
        self._fire(room, "EVAL", _LEAVE, *self._head(room), str(member))

    def _resync_stale(self) -> None:
        rooms, self._stale = list(self._stale), set()
        self._resync(rooms)

    def _resync(self, rooms: list[str]) -> None:
        """Writes each room's members here whole (none: takes this server
        out of the room)."""
        for room in rooms:
            pairs = list(self._members.get(room, {}).items())
            for start in range(0, max(1, len(pairs)), _BATCH):
                flat = [x for pair in pairs[start : start + _BATCH] for x in pair]
                self._fire(room, "EVAL", _FILL, *self._head(room), "all" if start == 0 else "one", *flat)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat_every)
            self._resync_stale()
            # One script per head: all rooms on one Redis, a room's tag on
            # a cluster.
            by_names: dict[str, list[str]] = {}
            for room in self._members:
                by_names.setdefault(self._names_of(room), []).append(room)
            try:
                for names, rooms in by_names.items():
                    for start in range(0, len(rooms), _BATCH):
                        batch = rooms[start : start + _BATCH]
                        head = (names, self.server_id, self._ttl_ms)
                        script = self._script(_BEAT, names, batch[0])
                        missing = await self.command(*script, *head, *batch)
                        self._resync([_text(room) for room in missing or ()])
            except BackplaneError:
                continue  # down: the reconnection writes everything again

    async def count(self, room: str) -> int:
        names = self._names_of(room)
        result = await self.command(*self._script(_QUERY, names, room), names, room, "count")
        return int(result)

    async def members(self, room: str) -> dict[str, Any]:
        names = self._names_of(room)
        flat = await self.command(*self._script(_QUERY, names, room), names, room, "members")
        out: dict[str, Any] = {}
        for i in range(0, len(flat) - 1, 2):
            try:
                out[_text(flat[i])] = json.loads(flat[i + 1])
            except ValueError:
                out[_text(flat[i])] = None
        return out

    async def close(self, timeout: float = 1.0) -> None:
        """Stops the heartbeat and removes this server's members from
        presence (waiting up to ``timeout`` for Redis)."""
        self._closing = True
        if self._beat is not None:
            self._beat.cancel()
            try:
                await self._beat
            except asyncio.CancelledError:
                pass
        if not self.up or not self._members:
            return
        pending = []
        for room, members in list(self._members.items()):
            pending.append(self.command("EVAL", _LEAVE, *self._head(room), *members))
        self._members.clear()
        try:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout)
        except asyncio.TimeoutError:
            pass

    def fail_waiting(self) -> None:
        """The core has stopped: nothing waits for a reply any more."""
        for future in self._waiting.values():
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_exception(BackplaneError("the server has stopped"))
        self._waiting.clear()
