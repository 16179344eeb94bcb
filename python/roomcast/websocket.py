"""The server side of one WebSocket connection, with Starlette's names.

A :class:`ServerWebSocket` is created by :class:`roomcast.Server` for every upgrade
request that matches a route and is handed to the route's endpoint. The
connection itself lives in the C core; this object queues commands to it and
receives its messages from the server's dispatcher.

Semantics worth knowing:

* Nothing is answered until the endpoint decides: ``accept()`` sends the
  ``101 Switching Protocols``; ``close()`` before ``accept()`` answers
  ``HTTP 403`` instead.
* Sends never wait for the peer. A frame is queued in the core's output
  queue for this connection; if that queue grows past the server's
  ``max_queue_bytes`` (a client that does not read fast enough), the core
  closes the connection with code 1008 and the next ``receive_*`` raises
  :class:`WebSocketDisconnect`.
* Messages are delivered in the order the peer sent them, and every message
  that arrived before the peer's close is delivered before
  :class:`WebSocketDisconnect` is raised.
* Received messages wait in a queue until read. When it holds more than
  the server's ``max_receive_queue`` bytes (an endpoint that reads more
  slowly than its client writes), the server stops reading from that client
  until half of it has been consumed; TCP then slows the client down. A
  message counts what it really holds in memory (see :func:`message_cost`),
  so a flood of empty messages fills the queue too.
* Once the server begins shutting down, every connection is being closed
  with 1001: ``send_*`` raise :class:`WebSocketClosed` and ``close()`` does
  nothing.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from types import SimpleNamespace
from typing import (
    TYPE_CHECKING,
    Any,
    NamedTuple,
)
from urllib.parse import SplitResult, parse_qsl, urlencode

from ._http import header_values, parse_raw_headers
from ._inbox import message_cost

if TYPE_CHECKING:
    import asyncio

    from ._hub import Hub

__all__ = [
    "Address",
    "Headers",
    "QueryParams",
    "URL",
    "ServerWebSocket",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketState",
]

Data = str | bytes


class WebSocketDisconnect(Exception):
    """The connection is closed; raised by ``receive_*`` once every message
    that arrived before the close has been read.

    ``code`` is the close code the peer sent (1005 if its close frame had
    none, 1006 if the TCP connection was lost without a close frame); when
    the server closed first, the code it sent: 1008 for a client that read
    too slowly, 1009 for a message over ``max_message_size``, 1007 for
    invalid UTF-8, 1002 for a protocol error, 1011 for a ping timeout, 1001
    when the server is shutting down. ``reason`` is the matching reason.
    """

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""
        super().__init__(code, self.reason)


class WebSocketClosed(WebSocketDisconnect):
    """Raised by ``send_*`` (and ``accept``) when the connection is already
    closed, by the peer or by this side.

    It is a :class:`WebSocketDisconnect`, so one ``except
    WebSocketDisconnect`` handles both directions. A send can still succeed
    locally and never reach a peer that is leaving at that very moment: the
    close is known only once the core reports it.
    """


class WebSocketState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class Address(NamedTuple):
    host: str
    port: int


class URL(SplitResult):
    """The request URL (``scheme``, ``netloc``, ``path``, ``query``,
    ``hostname``, ``port``); ``str(url)`` gives it back whole. ``path`` is
    exactly as the client sent it (still percent-encoded)."""

    def __str__(self) -> str:
        return self.geturl()


class _MultiMap(Mapping[str, str]):
    """Immutable mapping over a list of pairs that keeps repeated keys."""

    _pairs: list[tuple[str, str]]
    _last: bool = False

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = list(pairs)

    def _key(self, key: str) -> str:
        return key

    def __getitem__(self, key: str) -> str:
        key = self._key(key)
        found = [v for k, v in self._pairs if k == key]
        if not found:
            raise KeyError(key)
        return found[-1] if self._last else found[0]

    def getlist(self, key: str) -> list[str]:
        key = self._key(key)
        return [v for k, v in self._pairs if k == key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._pairs))

    def __len__(self) -> int:
        return len({k for k, _ in self._pairs})

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pairs!r})"


class Headers(_MultiMap):
    """Request headers: case-insensitive; ``headers[name]`` is the first
    value, ``getlist(name)`` all of them in request order."""

    def _key(self, key: str) -> str:
        return key.lower()


class QueryParams(_MultiMap):
    """Query string parameters: ``query_params[name]`` is the last value,
    ``getlist(name)`` all of them. Values are percent-decoded."""

    _last = True

    def __init__(self, query: str | Iterable[tuple[str, str]] = "") -> None:
        if isinstance(query, str):
            query = parse_qsl(query, keep_blank_values=True)
        super().__init__(query)

    def __str__(self) -> str:
        return urlencode(self._pairs)


_NOT_ACCEPTED = 'WebSocket is not connected. Need to call "accept" first.'


class _Derived:
    """What a ServerWebSocket makes on first use: most members never
    need any of it, so together they cost one slot until then."""

    __slots__ = ("state", "headers", "query_params", "scope")

    def __init__(self) -> None:
        self.scope: dict[str, Any] | None = None
        self.state: SimpleNamespace | None = None
        self.headers: Headers | None = None
        self.query_params: QueryParams | None = None


class _Inbox(deque[Data]):
    """Messages waiting to be read, with what reading them needs: made on
    the first message (or the first wait) and dropped once empty, so that
    a member that never speaks keeps one empty slot."""

    __slots__ = ("size", "paused", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.size = 0  # message_cost() of what waits
        self.paused = False  # the core stopped reading for it
        self.waiter: asyncio.Future[None] | None = None


_ABNORMAL = (1006, "")  # no close frame exchanged (yet)


class ServerWebSocket:
    """One server-side connection. Hashable (by identity), so it can be a
    dict key. Created by the server only.

    Attributes: ``client`` (:class:`Address` of the peer), ``url``,
    ``headers``, ``query_params``, ``path_params`` (the route's parameters,
    converted by its ``{name:int}``-style convertors), ``state`` (a free
    namespace for the application), ``client_state`` and
    ``application_state`` (:class:`WebSocketState`).

    Memory: a member of a room served by ``Server.route`` keeps only this
    object while idle, so it has slots, and what is derived (``client``,
    ``headers``, ``query_params``, ``state``, an empty ``path_params``) is
    made on first use.
    """

    __slots__ = (
        "_hub",
        "_conn",
        "_path",
        "_query",
        "_raw_headers",
        "_host",
        "_port",
        "_path_params",
        "_derived",
        "client_state",
        "application_state",
        "_inbox",
        "_closed",
        "subprotocol",
        "_driver",
        "_driven",
        "_tls",
    )

    def __init__(
        self,
        hub: Hub,
        conn: int,
        path: str,
        query: str,
        headers: bytes,
        host: str,
        port: int,
        path_params: dict[str, Any],
        tls: tuple[int, int, str | None, str | None] | None = None,
    ) -> None:
        self._hub = hub
        self._conn = conn
        self._path = path
        self._query = query
        self._raw_headers = headers
        self._host = host
        self._port = port
        self._path_params: dict[str, Any] | None = path_params or None
        # state, headers and query_params, made on first use of one.
        self._derived: _Derived | None = None
        # The peer's side: DISCONNECTED once the core reported the close.
        self.client_state = WebSocketState.CONNECTING
        # This side: CONNECTED after accept(), DISCONNECTED after close().
        self.application_state = WebSocketState.CONNECTING
        # Made on the first message: a member that never speaks keeps none.
        self._inbox: _Inbox | None = None
        # The close code and reason, once known.
        self._closed = _ABNORMAL
        # The subprotocol accept() chose, or None.
        self.subprotocol: str | None = None
        # driver(driven) runs on each message and on the close (see drive()).
        self._driver: Callable[[Any], None] | None = None
        self._driven: Any = None
        # Over TLS: (version, cipher suite, client subject, client chain PEM).
        self._tls = tls

    # -- request ----------------------------------------------------------

    @property
    def scope(self) -> dict[str, Any]:
        """The connection as an ASGI ``websocket`` scope: ``scheme`` (``"ws"``
        or ``"wss"``), ``path``, ``query_string``, ``headers``, ``client``,
        ``subprotocols``, and over TLS ``extensions["tls"]`` as ASGI's TLS
        extension names it (``client_cert_name``, the client certificate's
        subject as RFC 4514 text or ``None``; ``client_cert_chain``, PEM
        strings leaf first; ``tls_version``; ``cipher_suite``)."""
        derived = self._more()
        if derived.scope is None:
            extensions: dict[str, Any] = {}
            if self._tls is not None:
                version, cipher, subject, chain = self._tls
                extensions["tls"] = {
                    "server_cert": None,
                    "client_cert_chain": _pem_chain(chain),
                    "client_cert_name": subject,
                    "client_cert_error": None,
                    "tls_version": version,
                    "cipher_suite": cipher,
                }
            derived.scope = {
                "type": "websocket",
                "asgi": {"version": "3.0", "spec_version": "2.4"},
                "scheme": "wss" if self._tls is not None else "ws",
                "path": self._path,
                "raw_path": self._path.encode("latin-1", "replace"),
                "query_string": self._query.encode("latin-1", "replace"),
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in parse_raw_headers(self._raw_headers)
                ],
                "client": (self._host, self._port),
                "subprotocols": self.subprotocols,
                "extensions": extensions,
            }
        return derived.scope

    @property
    def client(self) -> Address:
        return Address(self._host, self._port)

    @property
    def path_params(self) -> dict[str, Any]:
        if self._path_params is None:
            self._path_params = {}
        return self._path_params

    @path_params.setter
    def path_params(self, value: dict[str, Any]) -> None:
        self._path_params = value

    def _more(self) -> _Derived:
        derived = self._derived
        if derived is None:
            derived = self._derived = _Derived()
        return derived

    @property
    def headers(self) -> Headers:
        derived = self._more()
        if derived.headers is None:
            derived.headers = Headers(parse_raw_headers(self._raw_headers))
        return derived.headers

    @property
    def close_code(self) -> int | None:
        """The close code once the connection has closed (1006 when no
        close frame was exchanged), else ``None``."""
        return self._closed[0] if self.client_state is WebSocketState.DISCONNECTED else None

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection has closed, else ``None``."""
        return self._closed[1] if self.client_state is WebSocketState.DISCONNECTED else None

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered (``Sec-WebSocket-Protocol``),
        in its order of preference."""
        offered: list[str] = []
        for value in header_values(self._raw_headers, "sec-websocket-protocol"):
            offered.extend(name.strip() for name in value.split(",") if name.strip())
        return offered

    @property
    def state(self) -> SimpleNamespace:
        """A free namespace for the application (Starlette's ``state``)."""
        derived = self._more()
        if derived.state is None:
            derived.state = SimpleNamespace()
        return derived.state

    @property
    def query_params(self) -> QueryParams:
        derived = self._more()
        if derived.query_params is None:
            derived.query_params = QueryParams(self._query)
        return derived.query_params

    @property
    def url(self) -> URL:
        netloc = self.headers.get("host", "")
        return URL("wss" if self._tls is not None else "ws", netloc, self._path, self._query, "")

    def __repr__(self) -> str:
        return f"<ServerWebSocket #{self.number} {self._path} from {self._host}:{self._port}>"

    @property
    def number(self) -> int:
        """A small number for this connection in logs and ``repr()``
        (``#3``): its slot in the core, unique among the connections open
        at the same time and reused after one closes, as a file descriptor
        is. (``id`` is the core's: slot and generation, unique for the
        server's life, and large.)"""
        return self._conn & 0xFFFFFFFF

    # -- what roomcast's own modules use --------------------------------------

    @property
    def id(self) -> int:
        """The connection's id in the core: unique in its server while it
        serves (the second part of a member id in presence)."""
        return self._conn

    # -- handshake ----------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Iterable[tuple[str | bytes, str | bytes]] | None = None,
    ) -> None:
        """Sends the ``101`` answer, with ``subprotocol`` as
        ``Sec-WebSocket-Protocol`` and extra response ``headers`` (str or
        latin-1 bytes pairs). Without ``subprotocol``, the first of the
        server's ``subprotocols`` that the client offered is chosen, if any.
        Raises :class:`RuntimeError` if already accepted or closed by this
        side; :class:`ValueError` if the client did not offer
        ``subprotocol``; :class:`WebSocketClosed` if the client has already
        gone."""
        if self.application_state is not WebSocketState.CONNECTING:
            raise RuntimeError("accept() called twice, or after close()")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"the client did not offer subprotocol {subprotocol!r} (it offered {self.subprotocols!r})")
        hub = self._hub
        if subprotocol is None and hub.subprotocols:
            offered = self.subprotocols
            subprotocol = next((p for p in hub.subprotocols if p in offered), None)
        if not hub.running:
            self._closed = (1001, "going away")
        if not hub.running or self.client_state is WebSocketState.DISCONNECTED:
            self.application_state = WebSocketState.DISCONNECTED
            raise WebSocketClosed(*self._closed)
        pairs = [(_latin1(k), _latin1(v)) for k, v in headers or ()]
        hub.accept(self._conn, subprotocol, pairs)
        self.subprotocol = subprotocol
        self.application_state = WebSocketState.CONNECTED
        self.client_state = WebSocketState.CONNECTED

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Starts the close handshake with ``code`` and ``reason`` (cut to
        123 bytes of UTF-8 if longer). Before ``accept()`` it refuses the upgrade with
        ``HTTP 403`` instead. Closing twice, or after the peer has gone, does
        nothing. Messages that arrive before the peer answers the close can
        still be received. Raises :class:`ValueError` for a code that RFC
        6455 does not allow an endpoint to send (the connection stays open).
        """
        state = self.application_state
        if self.client_state is not WebSocketState.DISCONNECTED:
            if state is WebSocketState.CONNECTING:
                self._hub.reject(self._conn, 403)
            elif state is WebSocketState.CONNECTED:
                self._hub.close(self._conn, code, reason)
        self.application_state = WebSocketState.DISCONNECTED

    def fail(self) -> None:
        """Ends the connection after an application error: HTTP 500 before
        accept, close 1011 after."""
        state = self.application_state
        self.application_state = WebSocketState.DISCONNECTED
        if self.client_state is WebSocketState.DISCONNECTED:
            return
        if state is WebSocketState.CONNECTING:
            self._hub.reject(self._conn, 500)
        elif state is WebSocketState.CONNECTED:
            self._hub.close(self._conn, 1011, "internal error")

    # -- sending ------------------------------------------------------------

    def _check_send(self) -> Hub:
        """The hub to send through, or the reason why not."""
        if self.application_state is WebSocketState.CONNECTED:
            if self.client_state is not WebSocketState.DISCONNECTED:
                if self._hub.running:
                    return self._hub
                raise WebSocketClosed(1001, "going away")
            raise WebSocketClosed(*self._closed)
        if self.application_state is WebSocketState.CONNECTING:
            raise RuntimeError(_NOT_ACCEPTED)
        raise WebSocketClosed(self._closed[0], self._closed[1] or "closed by the server")

    async def send_text(self, data: str) -> None:
        """Queues one text frame. Raises :class:`WebSocketClosed` once the
        connection is closed, :class:`RuntimeError` before ``accept()``."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() expects str, not {type(data).__name__}")
        self._check_send().send(self._conn, data)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Queues one binary frame; raises like :meth:`send_text`."""
        if isinstance(data, str):
            raise TypeError("send_bytes() expects a bytes-like object, not str")
        self._check_send().send(self._conn, data)

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Serialises ``data`` compactly (UTF-8, no ASCII escaping) and sends
        it as one text frame, or binary frame with ``mode="binary"``."""
        if mode not in ("text", "binary"):
            raise ValueError('mode must be "text" or "binary"')
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "text":
            await self.send_text(text)
        else:
            await self.send_bytes(text.encode())

    # -- receiving ----------------------------------------------------------

    def _wake(self) -> None:
        waiter = None if self._inbox is None else self._inbox.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._driver is not None:
            self._driver(self._driven)

    async def next_message(self) -> Data:
        """The next message, str (text frame) or bytes (binary frame);
        raises :class:`WebSocketDisconnect` once the peer has gone and
        every message before its close has been read."""
        if not self._inbox and self.application_state is WebSocketState.CONNECTING:
            if self.client_state is not WebSocketState.DISCONNECTED:
                raise RuntimeError(_NOT_ACCEPTED)
        return await wait_message(self)

    async def receive(self) -> dict[str, Any]:
        """The next event as an ASGI-style message, as Starlette returns it:
        ``{"type": "websocket.receive", "text": ...}`` (or ``"bytes"``), then
        ``{"type": "websocket.disconnect", "code": ..., "reason": ...}``."""
        try:
            data = await self.next_message()
        except WebSocketDisconnect as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        key = "text" if isinstance(data, str) else "bytes"
        return {"type": "websocket.receive", key: data}

    async def receive_text(self) -> str:
        """The next message, which must be a text frame (:class:`TypeError`
        otherwise; the message is consumed). Raises
        :class:`WebSocketDisconnect` when the peer has gone."""
        data = await self.next_message()
        if not isinstance(data, str):
            raise TypeError("expected a text message, received a binary one")
        return data

    async def receive_bytes(self) -> bytes:
        """The next message, which must be a binary frame (:class:`TypeError`
        otherwise)."""
        data = await self.next_message()
        if isinstance(data, str):
            raise TypeError("expected a binary message, received a text one")
        return data

    async def receive_json(self, mode: str = "text") -> Any:
        """The next message parsed as JSON. Text and binary frames are both
        accepted (binary is decoded as UTF-8), whatever ``mode`` says.
        Raises :class:`ValueError` (``json.JSONDecodeError`` or
        ``UnicodeDecodeError``) on a malformed message."""
        data = await self.next_message()
        return json.loads(data)

    async def iter_text(self) -> AsyncIterator[str]:
        """Yields text messages until the peer closes."""
        try:
            while True:
                yield await self.receive_text()
        except WebSocketDisconnect:
            pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """Yields binary messages until the peer closes."""
        try:
            while True:
                yield await self.receive_bytes()
        except WebSocketDisconnect:
            pass

    async def iter_json(self) -> AsyncIterator[Any]:
        """Yields parsed JSON messages until the peer closes."""
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            pass


def _pem_chain(chain: str | None) -> list[str]:
    """A PEM bundle as one string per certificate."""
    if not chain:
        return []
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end + "\n" for part in chain.split(end) if part.strip()]


def _latin1(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


# -- what roomcast's own modules use -------------------------------------------
#
# Functions of this module rather than methods: they are the server's and the
# rooms' plumbing, not part of a websocket's application API.


def hub_of(ws: ServerWebSocket) -> Hub:
    """The serving server's handle that ``ws`` belongs to."""
    return ws._hub


def drive(ws: ServerWebSocket, driver: Callable[[Any], None] | None, driven: Any = None) -> None:
    """From now on ``driver(driven)`` is called after each message of
    ``ws`` is queued and once it has closed (None: no more); the driver
    reads with :func:`take`. A room served by ``Server.route`` runs its
    members this way: no task waits for an idle member."""
    ws._driver = driver
    ws._driven = driven


def take(ws: ServerWebSocket) -> Data | None:
    """The next queued message of ``ws``, or None if none waits (never
    waits)."""
    inbox = ws._inbox
    if not inbox:
        return None
    data = inbox.popleft()
    inbox.size -= message_cost(data)
    hub = ws._hub
    if inbox.paused and inbox.size <= hub.max_receive_queue // 2:
        inbox.paused = False
        if ws.client_state is not WebSocketState.DISCONNECTED:
            hub.resume_reading(ws._conn)
    if not inbox and inbox.waiter is None:
        ws._inbox = None  # an empty deque is 600 bytes: made again when needed
    return data


async def wait_message(ws: ServerWebSocket) -> Data:
    """The next message of ``ws``, waiting for it whatever the state of
    the handshake (an ASGI app may wait before it accepts); raises
    :class:`WebSocketDisconnect` once it has closed and none is left."""
    while not ws._inbox:
        if ws.client_state is WebSocketState.DISCONNECTED:
            raise WebSocketDisconnect(*ws._closed)
        inbox = ws._inbox
        if inbox is None:
            inbox = ws._inbox = _Inbox()
        inbox.waiter = ws._hub.loop.create_future()
        try:
            await inbox.waiter
        finally:
            inbox.waiter = None
            if not inbox and ws._inbox is inbox:
                ws._inbox = None
    data = take(ws)
    assert data is not None
    return data


def feed(ws: ServerWebSocket, data: Data) -> None:
    """Queues a message from the peer (the server's dispatch)."""
    inbox = ws._inbox
    if inbox is None:
        inbox = ws._inbox = _Inbox()
    inbox.append(data)
    inbox.size += message_cost(data)
    hub = ws._hub
    if inbox.size > hub.max_receive_queue and not inbox.paused:
        if hub.pause_reading(ws._conn):
            inbox.paused = True
    ws._wake()


def feed_close(ws: ServerWebSocket, code: int, reason: str) -> None:
    """``ws`` has closed with ``code`` and ``reason`` (the server's dispatch)."""
    ws._closed = (code, reason)
    ws.client_state = WebSocketState.DISCONNECTED
    ws._wake()
