"""Per-room history: positions, the last N messages, and what a client
that comes back after a disconnection has missed.

A room with history gives each message pushed to it a :class:`Position`:
the room's *epoch* (16 hex digits, new each time the history starts from
nothing) and an *offset* that grows by one per message, from 1. The last
``size`` messages (those younger than ``ttl`` seconds, when a TTL is set)
are kept. A client that remembers the position of the last message it got
can ask for everything after it (:meth:`Store.since`): either exactly what
it missed, in order, or, when that is no longer possible, a plain
``recovered=False`` with the reason and nothing else, so that it knows to
reload its state instead of going on with a hole in it.

The history lives in this process (a :class:`Store` per room); a restart
starts a new epoch, which the clients are told as "epoch changed". The
messages are held as given (``str`` or ``bytes``), one reference each:
memory is at most ``size`` messages per room.

Ordering: the caller holds :attr:`Store.lock` while it takes a position
(:meth:`Store.add`) and hands the message to the core, and while it hands a
rejoining client its missed messages and joins it to the room. The core
takes commands in the order they were given, so a client gets the missed
messages and then the live ones with neither a gap nor a duplicate between
them, whichever thread publishes.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from typing import Any, NamedTuple

__all__ = ["History", "Position"]

EPOCH_CHANGED = "epoch changed"
TOO_OLD = "position too old"
AHEAD = "position ahead of the history"


class Position(NamedTuple):
    """Where a message stands in its room's history: the room's ``epoch``
    and the message's ``offset`` (1 for the first message of an epoch; a
    position with offset 0 stands before the first)."""

    epoch: str
    offset: int


class History(NamedTuple):
    """What :meth:`Room.history` and :meth:`App.history` answer.

    ``events``: ``(position, message)`` pairs in order, the messages after
    ``since``; ``recovered``: whether they are all of them (False: the
    position was too old, ahead of the history, or from another epoch, and
    ``events`` is empty); ``reason``: why not, or None; ``position``: the
    room's last position (offset 0 before any message)."""

    events: list[tuple[Position, Any]]
    recovered: bool
    reason: str | None
    position: Position


def check_history(size: Any, ttl: Any) -> None:
    """Raises ValueError unless ``size`` is a positive int and ``ttl`` is
    None or a positive, finite number of seconds."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"history must be a positive int (messages kept), not {size!r}")
    if ttl is not None and (
        not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not math.isfinite(ttl) or ttl <= 0
    ):
        raise ValueError(f"history_ttl must be a positive number of seconds or None, not {ttl!r}")


def parse_position(value: Any) -> Position:
    """A Position from a client's ``{"epoch": str, "offset": int}`` (or a
    Position); ValueError saying what is wrong otherwise."""
    if isinstance(value, Position):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        epoch, offset = value
    elif isinstance(value, dict):
        epoch, offset = value.get("epoch"), value.get("offset")
    else:
        raise ValueError(f"a position is {{'epoch': str, 'offset': int}}, not {type(value).__name__}")
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise ValueError("a position's epoch must be a string (at most 64 characters)")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("a position's offset must be an int >= 0")
    return Position(epoch, offset)


class Store:
    """One room's history in this process. Not thread-safe by itself:
    callers hold ``lock`` (see the module's notes on ordering)."""

    __slots__ = ("size", "ttl", "epoch", "offset", "lock", "_kept", "__weakref__")

    def __init__(self, size: int, ttl: float | None) -> None:
        check_history(size, ttl)
        self.size = size
        self.ttl = ttl
        self.epoch = secrets.token_hex(8)
        self.offset = 0
        self.lock = threading.Lock()
        # (offset, deadline or 0.0, message), oldest first.
        self._kept: deque[tuple[int, float, Any]] = deque()

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)

    def next(self) -> Position:
        """The position the next message will have."""
        return Position(self.epoch, self.offset + 1)

    def add(self, message: Any) -> Position:
        """Keeps ``message`` (``str`` or ``bytes``, as sent) at the next
        position and returns it."""
        self.offset += 1
        kept = self._kept
        if self.ttl is None:
            kept.append((self.offset, 0.0, message))
        else:
            now = time.monotonic()
            self._expire(now)
            kept.append((self.offset, now + self.ttl, message))
        if len(kept) > self.size:
            kept.popleft()
        return Position(self.epoch, self.offset)

    def _expire(self, now: float) -> None:
        kept = self._kept
        while kept and kept[0][1] <= now:
            kept.popleft()

    def empty(self) -> bool:
        """Whether nothing is kept (all expired): the store may go."""
        if self.ttl is not None:
            self._expire(time.monotonic())
        return not self._kept

    def since(self, position: Position | None) -> History:
        """The messages after ``position`` (all kept when None), or
        ``recovered=False`` with the reason."""
        if self.ttl is not None:
            self._expire(time.monotonic())
        kept = self._kept
        head = Position(self.epoch, self.offset)
        if position is None:
            return History([(Position(self.epoch, o), m) for o, _, m in kept], True, None, head)
        if position.epoch != self.epoch:
            return History([], False, EPOCH_CHANGED, head)
        if position.offset > self.offset:
            return History([], False, AHEAD, head)
        first = kept[0][0] if kept else self.offset + 1
        if position.offset < first - 1:
            return History([], False, TOO_OLD, head)
        # Offsets are consecutive: the entry after `position` is at a
        # known index.
        start = position.offset + 1 - first
        events = [(Position(self.epoch, kept[i][0]), kept[i][2]) for i in range(start, len(kept))]
        return History(events, True, None, head)
