"""What a received message costs while it waits to be read, the same on
both sides.

Every receive queue in the package (a server connection's, counted against
the server's ``max_receive_queue``; a room's pushes waiting for a Starlette
socket; a client's, counted against its ``max_receive_queue``) charges a
message with :func:`message_cost`, so that a flood of empty messages fills
a queue as surely as large ones. The server side (:mod:`roomcast.websocket`,
:mod:`roomcast.room`) and the clients (:mod:`roomcast.client`) import it
from here, so neither side imports the other.

A pure function: it runs on whichever thread fills or drains a queue.
"""

from __future__ import annotations

import sys

__all__ = ["message_cost"]

# A queued message's place in its deque: one pointer.
_QUEUE_SLOT = 8


def message_cost(data: str | bytes) -> int:
    """What a received message costs while it waits in a receive queue, for
    ``max_receive_queue``: the object itself (header included, so an empty
    message is not free) and its slot in the queue."""
    return sys.getsizeof(data) + _QUEUE_SLOT
