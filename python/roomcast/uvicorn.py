"""roomcast's WebSocket protocol for uvicorn: the C core serves the
connections of an ASGI (FastAPI, Starlette) app.

    uvicorn app:app --ws roomcast.uvicorn:WebSocketProtocol
    uvicorn.run(app, ws="roomcast.uvicorn:WebSocketProtocol")

uvicorn accepts the connection and parses the HTTP upgrade request as
usual, then hands it to :class:`WebSocketProtocol`, which takes the socket
out of asyncio (a duplicate of its descriptor, with the request uvicorn
read) and gives it to a roomcast core, one per uvicorn process. From then
on the core's thread reads, frames and writes that connection; nothing the
client sent is lost or reordered, because asyncio stops reading before the
hand-over and the core reads everything after it.

The ASGI app runs as under uvicorn's own websocket implementations (the
same scope, ``accept``/``close``/``send``/``receive``, the
``websocket.http.response`` extension). What changes is what
:meth:`roomcast.BaseRoom.connect` can do with the Starlette ``WebSocket``
of such a connection: its members are the core's, so a push is framed once
and written to every member in C, with the bounded queue, the
slow-consumer policy, relay rooms and named rooms on the backplane, as for
roomcast's own :class:`~roomcast.Server`.

The core's options (``max_queue_bytes``, ``slow_consumer``,
``backplane``, ... every keyword of :class:`~roomcast.Server`) are set
once per process with :func:`configure`, typically next to the app. An
:class:`~roomcast.App` served by uvicorn passes its own. uvicorn's
``--ws-max-size``, ``--ws-ping-interval``, ``--ws-ping-timeout`` and
``--ws-per-message-deflate`` are the core's ``max_message_size``,
``ping_interval``, ``ping_timeout`` and ``compression`` (``"deflate"``
or ``None``) unless :func:`configure` names them.

A connection that cannot be handed over is served by uvicorn's own
implementation (``--ws auto``), never refused: uvicorn terminated TLS
itself (the TLS state lives in asyncio; logged once), or no core could
take it.

On shutdown (SIGINT, SIGTERM, ``--reload``), uvicorn asks each connection
to close: the core closes every adopted connection with 1001 "going away"
and uvicorn waits for the apps to return, as it does for its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import WS_PROTOCOLS, Config
from uvicorn.importer import import_from_string
from uvicorn.protocols.utils import get_client_addr, get_local_addr, get_path_with_query_string, get_remote_addr
from uvicorn.server import ServerState

from ._asgi import EXTENSION, Channel, ClientDisconnected
from ._core import Core
from ._http import parse_raw_headers
from .server import Server
from .websocket import ServerWebSocket, WebSocketState

__all__ = ["WebSocketProtocol", "configure"]

logger = logging.getLogger("uvicorn.error")

# Options that uvicorn's own flags set unless configure() names them.
_FROM_UVICORN = ("max_message_size", "ping_interval", "ping_timeout", "compression")
# A request head as uvicorn re-serialised it may be larger than what
# roomcast's own server reads (h11 allows 16 KiB): uvicorn bounded it
# already, so the core takes up to its own largest bound.
_HEAD_BYTES = 60000
_HEAD_COUNT = 128  # the core's largest bound

_configured: dict[str, Any] = {}
_configured_by: str | None = None
_tls_logged = False


def configure(**options: Any) -> None:
    """Sets the core's options for the connections uvicorn hands to
    roomcast in this process: any keyword of :class:`~roomcast.Server`
    (``max_queue_bytes=``, ``slow_consumer=``, ``backplane=``,
    ``max_connections=``, ...). Checked at once, like the server's. Call
    it before uvicorn serves (at import of the app's module); a call once
    the core runs applies to the next one (after a restart)."""
    _set_options(options, "configure()")


def _set_options(options: dict[str, Any], source: str) -> None:
    global _configured_by
    Server(**options)  # checks every value, with the server's messages
    if _configured_by is not None and _configured_by != source and _configured != options:
        raise RuntimeError(
            f"roomcast.uvicorn is configured by {_configured_by} already; {source} asks for other options"
        )
    _configured.clear()
    _configured.update(options)
    _configured_by = source


class _Adopter(Server):
    """The core that serves one event loop's adopted connections: a
    :class:`~roomcast.Server` that does not listen, whose upgrade requests
    come from :class:`WebSocketProtocol` rather than from routes."""

    def __init__(self, config: Config) -> None:
        options: dict[str, Any] = {"max_header_bytes": _HEAD_BYTES, "max_headers": _HEAD_COUNT}
        options["max_message_size"] = config.ws_max_size
        options["ping_interval"] = config.ws_ping_interval
        options["ping_timeout"] = config.ws_ping_timeout
        options["compression"] = "deflate" if getattr(config, "ws_per_message_deflate", True) else None
        options.update(_configured)
        super().__init__(**options)
        # Every adopted connection's protocol, until its close.
        self._protocols: dict[int, WebSocketProtocol] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        core = Core(**self._options, **self._backplane_options)
        core.start()
        hub, fd = self._begin(core, loop)
        self._task = loop.create_task(self._live(hub, core, fd))

    async def _live(self, hub: Any, core: Core, fd: int) -> None:
        # Lives as long as uvicorn serves: ended by the first shutdown(),
        # or cancelled with the loop's other tasks when it closes.
        try:
            await self._stop.wait()
        finally:
            try:
                await self._shutdown(hub, core, fd)
            finally:
                if _adopters.get(hub.loop) is self:
                    del _adopters[hub.loop]
                # The core has ended: every connection has too.
                protocols = list(self._protocols.values())
                self._protocols.clear()
                for protocol in protocols:
                    protocol.closed()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._core is None

    def stop(self) -> None:
        self._stop.set()

    def adopt(self, fd: int, head: bytes, protocol: WebSocketProtocol) -> int:
        core = self._core
        if core is None:
            os.close(fd)
            raise ClientDisconnected("the core has stopped")
        conn = core.adopt(fd, head)
        self._protocols[conn] = protocol
        return conn

    def _on_close(self, conn: int, code: int, reason: str) -> None:
        super()._on_close(conn, code, reason)
        protocol = self._protocols.pop(conn, None)
        if protocol is not None:
            protocol.closed()

    def _on_open(self, conn: int, path: str, query: str, headers: bytes, host: str, port: int, tls: Any) -> None:
        hub = self._hub
        assert hub is not None
        protocol = self._protocols.get(conn)
        if protocol is None:
            hub.reject(conn, 500)
            return
        ws = ServerWebSocket(hub, conn, hub.shared(path), query, headers, hub.shared(host), port, {})
        self._conns[conn] = ws
        protocol.opened(ws, path, query, headers)


_adopters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Adopter] = weakref.WeakKeyDictionary()


def _adopter(loop: asyncio.AbstractEventLoop, config: Config) -> _Adopter:
    adopter = _adopters.get(loop)
    if adopter is None or adopter.stopping:
        adopter = _Adopter(config)
        adopter.start(loop)
        _adopters[loop] = adopter
    return adopter


def _read_past_head(http: object) -> bytes:
    """What uvicorn's HTTP protocol ``http`` read after the request head:
    frames of a client that did not wait for the 101. h11 keeps them (its
    connection's ``trailing_data``); httptools drops them, in uvicorn's own
    implementations too."""
    conn = getattr(http, "conn", None)
    trailing = getattr(conn, "trailing_data", None)
    if isinstance(trailing, tuple) and trailing and isinstance(trailing[0], (bytes, bytearray)):
        return bytes(trailing[0])
    return b""


def _fallback_class() -> Callable[..., asyncio.Protocol]:
    """uvicorn's own implementation, the one its ``--ws auto`` picks."""
    cls: Callable[..., asyncio.Protocol] = import_from_string(
        WS_PROTOCOLS["auto"] or "uvicorn.protocols.websockets.wsproto_impl:WSProtocol"
    )
    return cls


class WebSocketProtocol(asyncio.Protocol):
    """uvicorn's ``--ws`` class that hands each upgraded connection to the
    roomcast core (see the module's docstring)."""

    def __new__(
        cls,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> Any:
        if config.is_ssl:
            # uvicorn's TLS lives in asyncio: its connections stay there.
            global _tls_logged
            if not _tls_logged:
                _tls_logged = True
                logger.warning(
                    "roomcast.uvicorn: uvicorn terminates TLS itself, so its connections cannot be handed"
                    " to the roomcast core; they are served by uvicorn's own websocket implementation"
                    " (put TLS in a proxy in front to get the C fan-out)"
                )
            return _fallback_class()(config=config, server_state=server_state, app_state=app_state)
        return super().__new__(cls)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path = config.root_path
        self.app_state = app_state
        self.server_state = server_state
        # uvicorn's sets, typed for its own protocols.
        self.connections: set[Any] = cast(Any, server_state).connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.conn = 0  # the core's id once handed over
        self.ws: ServerWebSocket | None = None
        self.scope: dict[str, Any] = {}
        self.channel: Channel | None = None
        self.task: asyncio.Task[None] | None = None
        self._adopter: _Adopter | None = None
        self._fallback: asyncio.Protocol | None = None
        # uvicorn's HTTP protocol that hands the upgrade over: it holds what
        # was read past the request head. Whether the transport is already
        # ours when the head reaches us differs between uvicorn's versions
        # (0.55 calls set_protocol first), so it is taken while it is not.
        self._http: object = None
        self._closed = False

    # -- asyncio's side: until the hand-over -------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not always an asyncio.Transport: uvloop's has the same methods.
        transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        self.transport = transport
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        http = transport.get_protocol()
        self._http = http if http is not self else None

    def data_received(self, data: bytes) -> None:
        if self._fallback is not None:
            self._fallback.data_received(data)
            return
        transport = self.transport
        if self.conn or transport is None:
            return  # asyncio reads nothing after the hand-over
        sock = transport.get_extra_info("socket")
        try:
            adopter = _adopter(self.loop, self.config)
            transport.pause_reading()
            fd = os.dup(sock.fileno())
            past = _read_past_head(self._http)
            self._http = None
            self.conn = adopter.adopt(fd, data + past, self)  # the core owns fd now
        except Exception as exc:
            logger.warning("roomcast.uvicorn: the core could not take a connection (%s); uvicorn serves it", exc)
            self._fall_back(data)
            return
        self._adopter = adopter
        # asyncio forgets its socket (closing its descriptor only): the
        # connection lives on in the core's duplicate.
        transport.abort()

    def _fall_back(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.connections.discard(self)
        fallback = _fallback_class()(config=self.config, server_state=self.server_state, app_state=self.app_state)
        self._fallback = fallback
        fallback.connection_made(transport)
        transport.resume_reading()
        fallback.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fallback is not None:
            self._fallback.connection_lost(exc)
        elif not self.conn:
            self.connections.discard(self)  # lost before the hand-over
        # else: asyncio let go of the socket; the core serves it

    def eof_received(self) -> bool | None:
        if self._fallback is not None:
            return self._fallback.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._fallback is not None:
            self._fallback.pause_writing()

    def resume_writing(self) -> None:
        if self._fallback is not None:
            self._fallback.resume_writing()

    def shutdown(self) -> None:
        """uvicorn is shutting down: the core closes every adopted
        connection with 1001 (once, for all of them)."""
        if self._fallback is not None:
            shutdown = getattr(self._fallback, "shutdown", None)
            if shutdown is not None:
                shutdown()
            return
        if self._adopter is not None:
            self._adopter.stop()

    # -- the core's side -----------------------------------------------------------

    def opened(self, ws: ServerWebSocket, path: str, query: str, headers: bytes) -> None:
        """The core has read the upgrade request: the app runs."""
        self.ws = ws
        root = self.root_path
        pairs = parse_raw_headers(headers)
        subprotocols: list[str] = []
        for name, value in pairs:
            if name == "sec-websocket-protocol":
                subprotocols.extend(token.strip() for token in value.split(",") if token.strip())
        raw_path = path.encode("latin-1")
        scope = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + unquote(path),
            "raw_path": root.encode("ascii") + raw_path,
            "query_string": query.encode("latin-1"),
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs],
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}, EXTENSION: {"websocket": ws}},
        }
        self.scope = scope
        self.channel = Channel(ws, self._default_headers, self._told)
        task = self.loop.create_task(self._run_asgi(scope, self.channel))
        self.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _told(self, answer: str) -> None:
        # The line uvicorn's own implementations log.
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                '%s - "WebSocket %s" %s',
                get_client_addr(cast(Any, self.scope)),
                get_path_with_query_string(cast(Any, self.scope)),
                answer,
            )

    def _default_headers(self) -> list[tuple[bytes, bytes]]:
        return list(self.server_state.default_headers)

    async def _run_asgi(self, scope: dict[str, Any], channel: Channel) -> None:
        ws = channel.ws
        try:
            result = await self.app(scope, channel.receive, channel.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            channel.fail()
        else:
            if not channel.answered:
                if ws.client_state is not WebSocketState.DISCONNECTED:
                    logger.error("ASGI callable returned without completing handshake.")
                channel.fail()
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        if ws.application_state is WebSocketState.CONNECTED and ws.client_state is not WebSocketState.DISCONNECTED:
            await ws.close()  # the app returned with the connection open: 1000
        self._done()

    def closed(self) -> None:
        """The core reported the connection's end."""
        self._closed = True
        if self.channel is None:
            self.connections.discard(self)  # it never reached the app
        else:
            self._done()

    def _done(self) -> None:
        # uvicorn waits for its connections at shutdown: this one counts
        # until both the app has returned and the core has closed it.
        task = self.task
        if self._closed and (task is None or task.done() or task is asyncio.current_task()):
            self.connections.discard(self)
