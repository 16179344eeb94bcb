"""History in Redis: the rooms with history of servers that share a
backplane (see :mod:`roomcast.history` for positions and the process's
own history).

Names in Redis (``E`` the escaped prefix, ``R`` the room's core name, the
bytes its channel ends with):

* ``E|history|R``, a stream: the last ``size`` messages, each entry's
  field ``m`` the message as it was PUBLISHed;
* ``E|history-meta|R``, a hash: ``e`` the epoch, ``o`` the last offset.

A push is one script (:data:`_PUBLISH`): it takes the next offset, writes
the epoch and offset into the message (the envelope's position, version 2
of csrc/proto/rc_bpwire.h, and for an App event the ``"position"`` in its
JSON, left as a hole of fixed width by :func:`app_message`), appends it to
the stream, trims the stream to ``size`` entries (and to ``ttl``), and
PUBLISHes it on the room's channel. So the offsets are the same on every
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

import secrets
import struct
from typing import Any

from .history import AHEAD, EPOCH_CHANGED, TOO_OLD, Position

__all__ = ["Read", "app_message", "keys", "publish_args", "read", "parse_stored"]

_PUBLISH = """
local meta, stream = ARGV[1], ARGV[2]
local size, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local e = redis.call('HGET', meta, 'e')
if not e then
  e = ARGV[7]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', e, 'o', 0)
end
local o = redis.call('HINCRBY', meta, 'o', 1)
local m = ARGV[4]
local b = tonumber(ARGV[8])
m = string.sub(m, 1, b - 1) .. e .. string.format('%020d', o) .. string.sub(m, b + 36)
local h = tonumber(ARGV[9])
if h > 0 then
  m = string.sub(m, 1, h - 1) .. e .. string.sub(m, h + 16, h + 26) .. string.format('%20d', o) .. string.sub(m, h + 47)
end
redis.call('XADD', stream, 'MAXLEN', size, '*', 'm', m)
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', stream, 'MINID', now - ttl)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
end
redis.call('PUBLISH', ARGV[3], m)
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
_EPOCH_HOLE = "?" * 16
_OFFSET_HOLE = " " * 20
# The hole an App event leaves for its position: the epoch, then 11 bytes
# the script keeps, then the offset (spaces before digits are JSON).
_APP_HOLE = _EPOCH_HOLE + '","offset":' + _OFFSET_HOLE


def keys(names: str, core_name: bytes) -> tuple[bytes, bytes, bytes]:
    """The room's stream, hash and channel."""
    head = names.encode("utf-8")
    return head + b"|history|" + core_name, head + b"|history-meta|" + core_name, head + b"|" + core_name


def app_message(head: str, room_json: str) -> tuple[bytes, int]:
    """An App event's payload with the hole of its position: ``head`` is
    ``'{"event":...,"payload":...'``. Returns the payload and where its
    hole starts."""
    before = f'{head},"position":{{"room":{room_json},"epoch":"'
    data = (before + _APP_HOLE + "}}").encode("utf-8")
    return data, len(before.encode("utf-8"))


def publish_args(
    names: str,
    core_name: bytes,
    server_id: int,
    payload: bytes,
    is_text: bool,
    exclude: int,
    size: int,
    ttl: float | None,
    hole: int | None,
) -> tuple[Any, ...]:
    """The EVAL of one push: the envelope (version 2) with the position's
    hole, for the script to fill."""
    flags = _VERSION | _HISTORY | (_TEXT if is_text else 0) | (_EXCLUDE if exclude else 0)
    header = b"\0rc" + bytes([flags]) + struct.pack(">QQ", server_id, 0)
    if exclude:
        header += struct.pack(">Q", exclude)
    block = len(header)
    message = header + _EPOCH_HOLE.encode() + b"0" * 20 + payload
    at = 0 if hole is None else block + 36 + hole + 1
    stream, meta, channel = keys(names, core_name)
    return (
        "EVAL",
        _PUBLISH,
        "0",
        meta,
        stream,
        channel,
        message,
        size,
        _ttl_ms(ttl),
        secrets.token_hex(8),
        block + 1,
        at,
    )


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
    stream, meta, _ = keys(names, core_name)
    if since is None:
        offset, epoch = (0, "*") if everything else (-1, "")
    else:
        offset, epoch = since.offset, since.epoch
    reply = await backplane.command("EVAL", _READ, "0", meta, stream, offset, _ttl_ms(ttl), secrets.token_hex(8), epoch)
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
