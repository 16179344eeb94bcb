"""History in Redis: the rooms with history of servers that share a
backplane (see :mod:`roomcast.history` for positions and the process's
own history).

Names in Redis (``E`` the escaped prefix, ``R`` the room's core name, the
bytes its channel ends with):

* ``E|history|R``, a stream: the last ``size`` messages, each entry's
  field ``m`` the message as it was PUBLISHed;
* ``E|history-meta|R``, a hash: ``e`` the epoch, ``o`` the last offset.

Pushes go through a script (:data:`_PUBLISH`), the pushes to a room made
in one iteration of the loop in one call (:class:`Publisher`): for each
it takes the next offset, writes the epoch and offset into the message
(the envelope's position, version 2 of csrc/proto/rc_bpwire.h, and for an
App event the ``"position"`` in its JSON, between the parts
:func:`app_message` makes), appends it to the stream, trims the stream to
``size`` entries (and to ``ttl``), and PUBLISHes it on the room's
channel. So the offsets are the same on every
server, the stream holds what was published in the order it was, and
every server, the publisher's included, delivers the room's messages from
its subscription in offset order. When the hash is gone (never made, or
expired with the TTL, or lost with Redis's data) the next script starts a
new epoch at offset 0 and empties the stream.

Reading (:data:`_READ`) gives the epoch, the last offset and the messages
after a position of the same epoch, oldest first; the C core turns them
into frames and joins the connection where they end
(``rc_server_recover_*``, csrc/include/rc_core.h).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import struct
import threading
from collections.abc import Callable
from typing import Any

from . import _core
from .history import AHEAD, EPOCH_CHANGED, TOO_OLD, Position

__all__ = ["Publisher", "Read", "app_message", "keys", "publisher_of", "read", "parse_stored"]

_PUBLISH = """
local meta, stream, channel = ARGV[1], ARGV[2], ARGV[3]
local publish = KEYS[1] and 'SPUBLISH' or 'PUBLISH'
local e = redis.call('HGET', meta, 'e')
if not e then
  e = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', e, 'o', 0)
end
local n = (#ARGV - 6) / 3
local o = redis.call('HINCRBY', meta, 'o', n) - n
for i = 7, #ARGV, 3 do
  o = o + 1
  local m = ARGV[i] .. e .. string.format('%020d', o) .. ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    m = m .. e .. '","offset":' .. string.format('%20d', o) .. ARGV[i + 2]
  end
  redis.call('XADD', stream, 'MAXLEN', ARGV[4], '*', 'm', m)
  redis.call(publish, channel, m)
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', stream, 'MINID', now - ttl)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
end
return {e, o}
"""

_READ = """
local meta, stream = ARGV[1], ARGV[2]
local since, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local e = redis.call('HGET', meta, 'e')
if not e then
  e = ARGV[5]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', e, 'o', 0)
  if ttl > 0 then redis.call('PEXPIRE', meta, ttl) end
  return {e, 0}
end
local o = tonumber(redis.call('HGET', meta, 'o'))
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', stream, 'MINID', now - ttl)
end
if since < 0 or since >= o or (ARGV[6] ~= '*' and e ~= ARGV[6]) then return {e, o} end
local r = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', o - since)
local out = {e, o}
for i = #r, 1, -1 do out[#out + 1] = r[i][2][2] end
return out
"""

_VERSION = 0x20
_TEXT = 0x01
_HISTORY = 0x04
_EXCLUDE = 0x08
_HEADER = 20


def keys(names: str, core_name: bytes, cluster: bool = False) -> tuple[bytes, bytes, bytes]:
    """The room's stream, hash and channel; on a Redis Cluster each starts
    with the room's tag (``_core.room_tag``), so all three are on one
    slot, the one its channel's shard owns."""
    head = names.encode("utf-8")
    if cluster:
        head = _core.room_tag(head + b"|" + core_name) + head
    return head + b"|history|" + core_name, head + b"|history-meta|" + core_name, head + b"|" + core_name


def app_message(head: str, room_json: str) -> tuple[bytes, bytes]:
    """An App event's payload, in the two parts around its position
    (which the script writes: the epoch, ``","offset":``, the offset
    padded with spaces, which JSON allows): ``head`` is
    ``'{"event":...,"payload":...'``."""
    return f'{head},"position":{{"room":{room_json},"epoch":"'.encode(), b"}}"


# The epoch a push offers in case the room's history starts from nothing:
# unique, not secret (64 random bits, drawn without a system call each).
_candidates = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _candidates.seed(secrets.randbits(128)))


# What one script call publishes at most: a burst's pushes share calls of
# this many messages (or bytes of them).
BATCH_MESSAGES = 64
BATCH_BYTES = 1 << 20

Then = Callable[[Position | None, str | None], None]


class Publisher:
    """The pushes of one room through one backplane. A push is the
    envelope's header (version 2), whose position the script writes after
    it, then its payload; for an App event, the payload and ``after`` are
    the parts around the event's own position (:func:`app_message`).

    The pushes made on the backplane's loop during one iteration of it go
    in one script call (:data:`BATCH_MESSAGES` at most), in the order they
    were made: the script takes their offsets together. A push from
    another thread goes at once, in a call of its own. ``then(position,
    error)`` runs on the backplane's loop with the push's answer."""

    __slots__ = (
        "_backplane",
        "_core_name",
        "_keys",
        "_routing",
        "_server",
        "_limits",
        "_lock",
        "_batch",
        "_bytes",
        "_listed",
    )

    def __init__(self, backplane: Any, core_name: bytes, size: int, ttl: float | None, listed: bool = False) -> None:
        self._backplane = backplane
        self._core_name = core_name
        # In the backplane's pending_pushes while a batch waits (see
        # publisher_of).
        self._listed = listed
        stream, meta, channel = keys(backplane.names, core_name, backplane.cluster)
        self._keys = (meta, stream, channel)
        # A cluster's script names its slot (its hash, KEYS[1]), and
        # SPUBLISHes on the room's shard.
        self._routing = ("1", meta) if backplane.cluster else ("0",)
        self._server = struct.pack(">QQ", backplane.server_number, 0)
        self._limits = (size, _ttl_ms(ttl))
        self._lock = threading.Lock()
        self._batch: list[tuple[bytes, bytes, bytes, Then | None]] = []
        self._bytes = 0

    @property
    def backplane(self) -> Any:
        return self._backplane

    def push(self, payload: bytes, is_text: bool, exclude: int, after: bytes = b"", then: Then | None = None) -> None:
        flags = _VERSION | _HISTORY | (_TEXT if is_text else 0) | (_EXCLUDE if exclude else 0)
        header = b"\0rc" + bytes((flags,)) + self._server
        if exclude:
            header += struct.pack(">Q", exclude)
        item = (header, payload, after, then)
        loop = self._backplane.loop
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if not here:
            self._send([item])
            return
        with self._lock:
            if not self._batch:
                loop.call_soon(self._flush)
                if self._listed:
                    self._backplane.pending_pushes[self._core_name] = self
            self._batch.append(item)
            self._bytes += len(payload) + len(after)
            full = len(self._batch) >= BATCH_MESSAGES or self._bytes >= BATCH_BYTES
        if full:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._batch, self._bytes = self._batch, [], 0
            if self._listed and self._backplane.pending_pushes.get(self._core_name) is self:
                del self._backplane.pending_pushes[self._core_name]
        if batch:
            self._send(batch)

    def _send(self, batch: list[tuple[bytes, bytes, bytes, Then | None]]) -> None:
        args: list[Any] = ["EVAL", _PUBLISH, *self._routing, *self._keys, *self._limits, _candidate()]
        for header, payload, after, _ in batch:
            args += (header, payload, after)
        thens = [then for *_, then in batch]

        def answered(reply: Any, error: str | None) -> None:
            last = None if error is not None else Position(reply[0].decode("ascii", "replace"), int(reply[1]))
            for k, then in enumerate(thens):
                if then is not None:
                    at = None if last is None else Position(last.epoch, last.offset - len(thens) + 1 + k)
                    then(at, error)

        self._backplane.call(tuple(args), answered)


def publisher_of(backplane: Any, core_name: bytes, size: int, ttl: float | None) -> Publisher:
    """The room's publisher through ``backplane`` for a room that keeps
    none (App rooms, which may be many): the one whose batch waits, if
    any, else a new one, listed while its batch waits."""
    found = backplane.pending_pushes.get(core_name)
    return found if found is not None else Publisher(backplane, core_name, size, ttl, listed=True)


def _candidate() -> str:
    return f"{_candidates.getrandbits(64):016x}"


def _ttl_ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, int(ttl * 1000))


def parse_stored(message: bytes) -> tuple[Position, bytes, bool]:
    """A message as Redis keeps it: its position, payload and whether it is
    text. ValueError if it is not a version-2 envelope."""
    if len(message) < _HEADER + 36 or message[:3] != b"\0rc" or message[3] & 0xF0 != _VERSION:
        raise ValueError("not a roomcast history message")
    flags = message[3]
    at = _HEADER + (8 if flags & _EXCLUDE else 0)
    epoch = message[at : at + 16].decode("ascii", "replace")
    offset = int(message[at + 16 : at + 36])
    return Position(epoch, offset), message[at + 36 :], bool(flags & _TEXT)


class Read:
    """What :func:`read` found: the epoch and last offset, the messages
    after the position asked for (as stored), and whether they are all of
    them (or why not)."""

    __slots__ = ("position", "messages", "recovered", "reason")

    def __init__(self, position: Position, messages: list[bytes], recovered: bool, reason: str | None) -> None:
        self.position = position
        self.messages = messages
        self.recovered = recovered
        self.reason = reason


async def read(
    backplane: Any,
    names: str,
    core_name: bytes,
    since: Position | None,
    ttl: float | None,
    *,
    everything: bool = False,
) -> Read:
    """Reads the room's history after ``since`` (when None: nothing, only
    the position; with ``everything``, all that is kept). Raises
    BackplaneError when Redis cannot answer."""
    stream, meta, _ = keys(names, core_name, backplane.cluster)
    routing = ("1", meta) if backplane.cluster else ("0",)
    if since is None:
        offset, epoch = (0, "*") if everything else (-1, "")
    else:
        offset, epoch = since.offset, since.epoch
    reply = await backplane.command(
        "EVAL", _READ, *routing, meta, stream, offset, _ttl_ms(ttl), secrets.token_hex(8), epoch
    )
    head = Position(reply[0].decode("ascii", "replace"), int(reply[1]))
    messages = list(reply[2:])
    if since is None:
        return Read(head, messages, True, None)
    if since.epoch != head.epoch:
        return Read(head, [], False, EPOCH_CHANGED)
    if since.offset > head.offset:
        return Read(head, [], False, AHEAD)
    want = head.offset - since.offset
    if len(messages) < want or (messages and parse_stored(messages[0])[0].offset != since.offset + 1):
        return Read(head, [], False, TOO_OLD)
    return Read(head, messages, True, None)
