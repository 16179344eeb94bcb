"""The clients' exceptions.

Raised on the thread that calls a client (``send``, ``recv``,
``wait_open``, ``await connect(...)``), or handed to ``onerror`` on the
``"roomcast-client"`` thread; they hold no state beyond their fields.
Every one is a :class:`ConnectionError`, so one ``except`` catches them
all.
"""

from __future__ import annotations

__all__ = ["ConnectionClosed", "ConnectionFailed", "InvalidStateError"]


class ConnectionClosed(ConnectionError):
    """The connection has closed: ``code`` and ``reason`` are the close
    code (1006 when no close frame was exchanged) and its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionFailed(ConnectionError):
    """A connection could not be opened, or was lost: ``reason`` says why
    ("connection refused", "TLS: certificate verify failed: ...",
    "HTTP 404 in handshake: Not Found", "handshake timeout (...)")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidStateError(ConnectionError):
    """``send()`` while the connection is not open yet (the browser's
    ``InvalidStateError``)."""
