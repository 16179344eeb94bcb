"""An ASGI websocket channel over a connection the C core serves.

When an ASGI server hands a connection to the core (``roomcast.uvicorn``),
the application still talks ASGI: it gets a scope, awaits ``receive()`` and
calls ``send(message)``. :class:`Channel` turns those calls into the
:class:`~roomcast.ServerWebSocket`'s operations, with the semantics of
uvicorn's own websocket implementations:

* ``receive()`` gives ``websocket.connect`` first, then ``websocket.receive``
  for each message, then ``websocket.disconnect`` with the close code and
  reason (and again on every later call);
* ``websocket.accept`` answers 101 with its subprotocol and headers (after
  the server's default headers); ``websocket.close`` before it answers 403;
  ``websocket.http.response.start`` and ``.body`` (the
  ``websocket.http.response`` extension) answer with the app's own status,
  headers and body;
* a send once the client has gone raises :class:`ClientDisconnected` (an
  :class:`OSError`, which Starlette turns into its ``WebSocketDisconnect``);
  a send after the app's own close raises :class:`RuntimeError`.

The scope carries the websocket itself under the extension
``"roomcast.websocket"``, so that :meth:`roomcast.BaseRoom.connect`, given
the Starlette (FastAPI) ``WebSocket`` made from that scope, drives the
connection in the core (the C fan-out) rather than through ``send``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._hub import Hub
from .websocket import ServerWebSocket, WebSocketDisconnect, WebSocketState, hub_of, wait_message

__all__ = ["EXTENSION", "Channel", "ClientDisconnected", "adopted"]

# The scope's extension that carries the roomcast websocket.
EXTENSION = "roomcast.websocket"

Headers = list[tuple[bytes, bytes]]
# Headers of an HTTP answer that the core writes itself.
_CORE_HEADERS = frozenset({"content-length", "connection", "transfer-encoding"})


class ClientDisconnected(OSError):
    """A send to a connection whose client has gone."""


def adopted(scope: Mapping[str, Any]) -> ServerWebSocket | None:
    """The roomcast websocket behind an ASGI websocket scope, when the C
    core serves that connection; None otherwise."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    entry = extensions.get(EXTENSION)
    ws = entry.get("websocket") if isinstance(entry, dict) else None
    return ws if isinstance(ws, ServerWebSocket) else None


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


class Channel:
    """``receive`` and ``send`` of one adopted connection. ``default_headers``
    is called at the answer for the server's own headers (uvicorn's
    ``date`` and ``server``); ``told(answer)``, if given, hears how the
    handshake was answered: ``"[accepted]"`` or the HTTP status."""

    __slots__ = ("ws", "_connected", "_response", "_default_headers", "_told")

    def __init__(self, ws: ServerWebSocket, default_headers: Any = None, told: Any = None) -> None:
        self.ws = ws
        # told(answer) is called with "[accepted]" or the HTTP status of
        # the answer, for the server's log.
        self._told = told
        self._connected = False  # websocket.connect was given
        # (status, headers, body so far) of a websocket.http.response
        self._response: tuple[int, list[tuple[str, str]], bytearray] | None = None
        self._default_headers = default_headers

    @property
    def hub(self) -> Hub:
        return hub_of(self.ws)

    def _defaults(self) -> list[tuple[str, str]]:
        make = self._default_headers
        pairs: Headers = make() if make is not None else []
        return [(_text(k), _text(v)) for k, v in pairs]

    def _tell(self, answer: str) -> None:
        if self._told is not None:
            self._told(answer)

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        try:
            data = await wait_message(self.ws)
        except WebSocketDisconnect as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if isinstance(data, str):
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: Mapping[str, Any]) -> None:
        ws = self.ws
        kind = message["type"]
        state = ws.application_state
        if self._response is not None:
            self._respond(kind, message)
            return
        if ws.client_state is WebSocketState.DISCONNECTED:
            raise ClientDisconnected(f"the client has gone ({ws.close_code})")
        if state is WebSocketState.CONNECTING:
            if kind == "websocket.accept":
                headers = self._defaults() + [(_text(k), _text(v)) for k, v in message.get("headers") or ()]
                subprotocol = message.get("subprotocol")
                if not self.hub.accept(ws.id, subprotocol, headers):
                    raise ClientDisconnected("the server is shutting down")
                ws.subprotocol = subprotocol
                ws.application_state = WebSocketState.CONNECTED
                ws.client_state = WebSocketState.CONNECTED
                self._tell("[accepted]")
            elif kind == "websocket.close":
                await ws.close()  # 403
                self._tell("403")
            elif kind == "websocket.http.response.start":
                status = message["status"]
                if not isinstance(status, int) or not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status code {status!r} in response.")
                headers = [(_text(k), _text(v)) for k, v in message.get("headers") or ()]
                self._response = (status, headers, bytearray())
                self._tell(str(status))
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' "
                    f"or 'websocket.http.response.start' but got {kind!r}."
                )
            return
        if state is WebSocketState.CONNECTED:
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is None:
                    data = message.get("text")
                if data is None:
                    raise RuntimeError("a websocket.send message has neither 'bytes' nor 'text'")
                if not self.hub.send(ws.id, data):
                    raise ClientDisconnected("the server is shutting down")
            elif kind == "websocket.close":
                await ws.close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}.")
            return
        raise RuntimeError(f"Unexpected ASGI message {kind!r}, after sending 'websocket.close'.")

    def _respond(self, kind: str, message: Mapping[str, Any]) -> None:
        response = self._response
        assert response is not None
        if self.ws.application_state is WebSocketState.DISCONNECTED:
            raise RuntimeError(f"Unexpected ASGI message {kind!r}, after the HTTP response.")
        if kind != "websocket.http.response.body":
            raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body' but got {kind!r}.")
        response[2].extend(message.get("body") or b"")
        if message.get("more_body", False):
            return
        status, given, body = response
        # The core writes the body's length and closes after it.
        headers = [(k, v) for k, v in given if k.lower() not in _CORE_HEADERS]
        names = {name.lower() for name, _ in headers}
        extra = [pair for pair in self._defaults() if pair[0].lower() not in names]
        if "content-type" not in names:
            extra.append(("content-type", "text/plain; charset=utf-8"))
        self.ws.application_state = WebSocketState.DISCONNECTED
        self.hub.respond(self.ws.id, status, extra + headers, bytes(body), False)

    def fail(self) -> None:
        """The application raised: HTTP 500 before accept, close 1011
        after (unless it has answered or closed already)."""
        if self._response is not None and self.ws.application_state is not WebSocketState.DISCONNECTED:
            self.ws.application_state = WebSocketState.CONNECTING
        self.ws.fail()

    @property
    def answered(self) -> bool:
        """Whether the handshake has been answered (accepted, refused or
        responded to)."""
        return self.ws.application_state is not WebSocketState.CONNECTING or self._response is not None
