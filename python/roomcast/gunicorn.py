"""A gunicorn worker: uvicorn with roomcast's WebSocket protocol.

    gunicorn app:app -k roomcast.gunicorn.Worker -w 4 -b 127.0.0.1:8000

is ``gunicorn -k uvicorn_worker.UvicornWorker`` (the ``uvicorn-worker``
package, or uvicorn's own ``uvicorn.workers`` where that is installed
instead) with ``ws="roomcast.uvicorn:WebSocketProtocol"``: each worker
process hands its websocket connections to its own roomcast core (see
:mod:`roomcast.uvicorn`). With ``roomcast.uvicorn.configure(backplane=...)``
in the app's module, a named room spans every worker.
"""

from __future__ import annotations

from typing import Any

try:
    from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]
except ImportError:  # the module uvicorn shipped before uvicorn-worker
    from uvicorn.workers import UvicornWorker

__all__ = ["Worker"]


class Worker(UvicornWorker):  # type: ignore[misc]
    """uvicorn's gunicorn worker, with roomcast's WebSocket protocol."""

    CONFIG_KWARGS: dict[str, Any] = {**UvicornWorker.CONFIG_KWARGS, "ws": "roomcast.uvicorn:WebSocketProtocol"}
