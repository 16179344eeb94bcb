"""The API of ``nwebsocket`` (its ``WebSocket`` class), on roomcast's
synchronous client.

    from roomcast.compat.nwebsocket import WebSocket   # was: from nwebsocket import WebSocket

    wscn = WebSocket("wss://example.com/raw")
    wscn.onmessage = lambda m: print(m)
    wscn.onopen = lambda: print("Opened connection")
    wscn.onclose = lambda: print("Closed connection")
    wscn.onerror = lambda e: print("Connection error", e)

    while not wscn.readyState:
        time.sleep(1e-4)
    wscn.send("text")
    wscn.close()

``WebSocket(url, options=None)`` starts connecting at once. The callbacks
are nwebsocket's: ``onopen()``, ``onmessage(message)`` (``str`` or
``bytes``), ``onerror(error)`` and ``onclose()``, set on the instance or
overridden in a subclass; ``readyState`` with ``CONNECTING`` (0), ``OPEN``
(1), ``CLOSING`` (2) and ``CLOSED`` (3); ``url``; ``options``
(``maxPayload``: the largest message accepted, 1 MiB by default);
``send(message)`` raises :class:`ConnectionError` unless connected;
``close()`` closes and blocks until the close is acknowledged;
``str(ws)`` is ``<WebSocket url=... readyState=...>``.

Where it differs from the original, and why:

* The connection runs in roomcast's C core, not in a curio loop on a
  thread per socket; the callbacks run on roomcast's ``"roomcast-client"``
  thread, shared by every client of the process (the original ran each
  socket's callbacks on that socket's own thread). A callback that
  blocks delays the others.
* ``onerror`` gets a :class:`roomcast.ConnectionFailed` whose ``reason``
  says what went wrong ("connection refused", "TLS: certificate verify
  failed: ...", "HTTP 404 in handshake: Not Found"); the original passed
  wsproto's ``RejectConnection(400)`` whatever the cause. After a failed
  attempt ``onclose()`` follows too (the original stopped at
  ``onerror``), as a browser does; ``close_code`` and ``close_reason``
  say how it ended.
* ``readyState`` passes through ``CLOSING`` while the close handshake
  runs; the original jumped from ``OPEN`` to ``CLOSED``.
* ``wss://`` verifies the server's certificate and host name (the
  original used curio's defaults). ``options`` takes roomcast's client
  settings besides ``maxPayload``: ``protocols``, ``headers``, ``ssl``
  (:class:`roomcast.TLS`), ``reconnect``, ``open_timeout``,
  ``ping_interval``... (see :class:`roomcast.WebSocket`); an unknown key
  is a :class:`TypeError`.
* ``send`` returns at once, without the original's sleep after each
  message, and raises :class:`ConnectionError` also once closed (the
  subclasses :class:`roomcast.InvalidStateError` and
  :class:`roomcast.ConnectionClosed`). ``send`` takes ``str`` and
  bytes-like objects only, not wsproto events such as ``Ping()``: the
  core answers pings and sends keepalive pings itself.
* ``close()`` called from a callback starts the close and returns
  (waiting there would wait for the callback thread itself).
* The query string of the URL is sent (the original dropped it), and the
  port defaults to 80 or 443 by scheme as in the original.
"""

from __future__ import annotations

from typing import Any

from .. import _options
from .. import client as _client
from ..client._hub import on_dispatcher

__all__ = ["WebSocket"]


class _Client(_client.WebSocket):
    """roomcast's client, reporting to the nwebsocket-style owner."""

    def __init__(self, owner: WebSocket, url: str, **kw: Any) -> None:
        self._owner = owner
        super().__init__(url, **kw)

    def onopen(self) -> None:
        self._owner.onopen()

    def onmessage(self, message: _client.Data) -> None:
        self._owner.onmessage(message)

    def onerror(self, error: _client.ConnectionFailed) -> None:
        self._owner.onerror(error)

    def onclose(self, code: int, reason: str) -> None:
        self._owner.onclose()


class WebSocket:
    """nwebsocket's ``WebSocket`` (see the module's docstring)."""

    CONNECTING = _client.CONNECTING
    OPEN = _client.OPEN
    CLOSING = _client.CLOSING
    CLOSED = _client.CLOSED

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options: dict[str, Any] = {"maxPayload": 1024 * 1024} if options is None else options
        kw = dict(self.options)
        max_payload = kw.pop("maxPayload", 1024 * 1024)
        if isinstance(max_payload, float) and max_payload.is_integer():
            max_payload = int(max_payload)  # a JavaScript number
        max_payload = _options.integer(1)("maxPayload", max_payload)
        self._ws = _Client(self, url, max_message_size=max_payload, **kw)

    @property
    def readyState(self) -> int:
        return self._ws.readyState

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    def __str__(self) -> str:
        return f"<WebSocket url={self.url} readyState={self.readyState}>"

    def __repr__(self) -> str:
        return self.__str__()

    def onopen(self) -> None:
        """Called once the handshake is complete."""

    def onclose(self) -> None:
        """Called once the connection has closed."""

    def onerror(self, error: _client.ConnectionFailed) -> None:
        """Called when the connection fails; ``error.reason`` says why."""

    def onmessage(self, message: _client.Data) -> None:
        """Called for each message: ``str`` (text) or ``bytes`` (binary)."""

    def send(self, message: _client.SendData) -> None:
        """Sends ``message`` (str: text, bytes: binary). Raises
        :class:`ConnectionError` if the connection is not open."""
        self._ws.send(message)

    def close(self) -> None:
        """Closes the connection and blocks until the close is
        acknowledged (from a callback: starts it and returns)."""
        self._ws.close()
        if not on_dispatcher():
            self._ws.wait_closed()
