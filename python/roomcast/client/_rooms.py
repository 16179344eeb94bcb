"""The rooms of a :class:`roomcast.App` a client is in, and its last
position in each history room: what ``rejoin=True`` sends back after a
reconnection.

The App's wire (JSON text frames ``{"event", "payload"}``) tells the
client ``roomcast:joined`` / ``roomcast:left`` (payload: the room),
``roomcast:position`` (payload ``{"room", "epoch", "offset", ...}``) after
a join of a history room, and each event of a history room carries
``"position": {"room", "epoch", "offset"}``. :class:`Rooms` reads those
from the received text frames (only the ones that can hold them: a frame
without ``roomcast:`` or ``"position"`` in it is not parsed) and, on each
reconnection, builds the ``roomcast:rejoin`` message: a room with a known
position as ``{"room", "epoch", "offset"}``, the others by name (what a
server without history expects).

Threads: :meth:`Rooms.observe` and :meth:`Rooms.rejoin_message` run on the
``"roomcast-client"`` thread, as the messages arrive (ahead of what the
application has read from its queue: the position is the last one
received, which is what a rejoin must send); :meth:`Rooms.rooms` and
:meth:`Rooms.positions` give copies to any thread, under ``_lock``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ..history import Position

__all__ = ["Rooms"]

JOINED = "roomcast:joined"
LEFT = "roomcast:left"
POSITION = "roomcast:position"
REJOIN = "roomcast:rejoin"


def _read_position(value: Any) -> tuple[str, str, int] | None:
    """``(room, epoch, offset)`` from ``{"room", "epoch", "offset"}``, or
    ``None`` for anything else (then ignored)."""
    if not isinstance(value, dict):
        return None
    room, epoch, offset = value.get("room"), value.get("epoch"), value.get("offset")
    if not isinstance(room, str) or not isinstance(epoch, str):
        return None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return None
    return room, epoch, offset


class Rooms:
    """The App rooms of one client connection and its positions in them,
    kept across reconnections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rooms: dict[str, None] = {}  # in the order joined
        self._positions: dict[str, Position] = {}

    def rooms(self) -> set[str]:
        with self._lock:
            return set(self._rooms)

    def positions(self) -> dict[str, Position]:
        with self._lock:
            return dict(self._positions)

    # the dispatcher thread
    def observe(self, data: str) -> None:
        """Notes what a received text frame says about rooms and positions."""
        if "roomcast:" not in data and '"position"' not in data:
            return  # neither a notice nor a positioned event: not parsed
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        event, payload = message.get("event"), message.get("payload")
        with self._lock:
            if event == JOINED and isinstance(payload, str):
                self._rooms[payload] = None
            elif event == LEFT and isinstance(payload, str):
                self._rooms.pop(payload, None)
                self._positions.pop(payload, None)
            elif event == POSITION:
                self._remember(_read_position(payload))
            if "position" in message:
                self._remember(_read_position(message["position"]))

    def _remember(self, position: tuple[str, str, int] | None) -> None:
        if position is not None:
            room, epoch, offset = position
            self._positions[room] = Position(epoch, offset)

    def rejoin_message(self) -> str | None:
        """The ``roomcast:rejoin`` envelope for the rooms the client is in,
        or ``None`` when it is in none."""
        with self._lock:
            if not self._rooms:
                return None
            items: list[Any] = []
            for room in self._rooms:
                known = self._positions.get(room)
                items.append(room if known is None else {"room": room, "epoch": known[0], "offset": known[1]})
        return json.dumps({"event": REJOIN, "payload": items}, separators=(",", ":"), ensure_ascii=False)
