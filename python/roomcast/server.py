"""The server: routes, the asyncio side of the C core, static files.

The core runs its own loop thread (sockets, handshakes, framing, fan-out).
This module registers the core's event descriptor with the running asyncio
loop; each time it becomes readable, the whole batch of queued events is
dispatched at once:

* open: the path is matched against the routes (first match wins; no match
  answers HTTP 404), a :class:`~roomcast.ServerWebSocket` is created and a task
  runs the endpoint; for a room served with :meth:`Server.route` (and an
  :class:`~roomcast.App`'s sockets) the room takes the websocket instead
  and runs its handlers as events come, so that an idle member has no task;
* message: appended to that websocket's receive queue (no task per message),
  or handed to its room's handler;
* close: the websocket is marked closed and its readers get
  :class:`~roomcast.WebSocketDisconnect`;
* plain HTTP request (only when :meth:`Server.static` was used, or
  ``metrics_path``): the metrics at ``metrics_path``, a static file, 426
  for a websocket route, 404 otherwise;
* backplane (only with ``Server(backplane=...)``): the reply to a Redis
  command, or a change of the Redis connection's state (logged).

Whatever fails while an upgrade or a plain request is routed is answered:
HTTP 400 for a path parameter that matches its pattern but does not
convert (``{id:int}`` past ``int()``'s digit limit), 500 for anything else
(logged once on the ``"roomcast"`` logger).

How an endpoint ends decides what the client sees: it returns without
``accept()`` → HTTP 403; returns after ``accept()`` without ``close()`` →
close 1000; raises before ``accept()`` → HTTP 500, after → close 1011 (both
logged on the ``"roomcast"`` logger).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import (
    Any,
    Literal,
    TypeVar,
)

from . import _core, _metrics, _options
from ._core import Core
from ._http import header_values
from ._hub import Hub
from ._params import Binder, ParamError, Route
from ._static import Response, StaticFiles, file_response, is_small, text_response
from .backplane import Backplane, parse_url
from .room import BaseRoom
from .websocket import ServerWebSocket, WebSocketDisconnect, WebSocketState, feed, feed_close

__all__ = ["Running", "Server"]

logger = logging.getLogger("roomcast")

Endpoint = Callable[..., Awaitable[Any]]
E = TypeVar("E", bound=Endpoint)
# Takes a routed websocket and runs its life on the server's events (a
# room's attach): no task of the server's for it.
Starter = Callable[[ServerWebSocket], None]

EV_OPEN = _core.EV_OPEN
EV_MESSAGE = _core.EV_MESSAGE
EV_CLOSE = _core.EV_CLOSE
EV_REQUEST = _core.EV_REQUEST
EV_REDIS = _core.EV_REDIS
EV_BACKPLANE = _core.EV_BACKPLANE
EV_RECOVER = _core.EV_RECOVER

# How long serve() waits for the backplane's first connection at most.
SETTLE_SECONDS = 10.0


def _tls_settings(opts: dict[str, Any]) -> tuple[str, str | None, str | None, str | None, int] | None:
    """The checked ssl_* options as Core.set_tls takes them, or None
    without TLS. The files are read and checked now (ValueError naming the
    file and the problem), and again when the server starts serving."""
    certfile = opts["ssl_certfile"]
    if certfile is None:
        for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs"):
            if opts[name] is not None:
                raise ValueError(f"{name} is given but ssl_certfile is not: TLS needs the certificate")
        if opts["ssl_cert_reqs"]:
            raise ValueError("ssl_cert_reqs is set but ssl_certfile is not: TLS needs the certificate")
        return None
    settings = (
        certfile,
        opts["ssl_keyfile"],
        opts["ssl_keyfile_password"],
        opts["ssl_ca_certs"],
        opts["ssl_cert_reqs"],
    )
    Core.check_tls(*settings)
    return settings


def _say(message: str) -> None:
    """What :meth:`Server.run` tells its operator: logged at INFO on the
    ``"roomcast"`` logger when the program's logging shows that, else
    printed to stderr, so that a program that configured no logging still
    says where it listens."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info("%s", message)
    else:
        print(f"roomcast: {message}", file=sys.stderr, flush=True)


class Running:
    """What ``async with server.serve(...)`` yields: the bound ``host`` and
    ``port`` (the real one when 0 was asked for) and ``url``."""

    def __init__(self, server: Server, hub: Hub, host: str, port: int, scheme: str = "ws") -> None:
        self.server = server
        self.host = host
        self.port = port
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{netloc}:{port}/"
        self._hub = hub

    def stats(self) -> dict[str, int]:
        """The core's counters (connections, rooms, slow_consumer_closes,
        ...; with a backplane ``backplane_up``, ``backplane_published``,
        ``backplane_received``, ``backplane_reconnects``,
        ``backplane_buffered``, ``backplane_dropped``, ...)."""
        return self._hub.stats()

    @property
    def server_id(self) -> str:
        """This server's random id (16 hex digits), new each time it
        serves: the first part of its members' ids in presence."""
        return self._hub.server_id


class Server:
    """A WebSocket server. Options are keyword-only and go to the core:

    * ``max_message_size``: a larger incoming message closes its connection
      with 1009;
    * ``max_queue_bytes`` and ``slow_consumer``: what happens when a
      connection's output queue would grow past ``max_queue_bytes`` (a
      client that does not read fast enough). ``"close"`` (the default)
      closes it with 1008; ``"drop"`` drops its oldest queued messages
      until the queue is half full and counts them in ``stats()``
      (``messages_dropped``). Either way one slow client never slows the
      others or grows memory without bound;
    * ``ping_interval`` / ``ping_timeout`` (seconds; 0 or ``None``
      disables pings, or only their timeout): a
      client silent for ``ping_interval`` gets a ping; one that leaves it
      unanswered for ``ping_timeout`` is closed with 1011 "keepalive ping
      timeout" (not while the server itself holds reading, see below);
    * ``handshake_timeout``, ``close_timeout`` (seconds),
      ``max_header_bytes``, ``max_headers``: limits of the handshake and of
      the close handshake;
    * ``idle_timeout`` (seconds; 0, the default, or ``None`` disables it): a client
      that sends no message for this long is closed with 1001 "idle
      timeout" (pings and pongs do not count as messages);
    * ``max_connections`` (default ``None``: no limit but the process's
      open-file limit): past it, new connections get HTTP 503 and the
      connections already open are untouched;
    * ``origins``: when given, only a handshake whose ``Origin`` header is
      in the list is served (exact match; put ``None`` in the list to also
      accept clients that send no ``Origin``, as non-browser clients do);
      others get HTTP 403;
    * ``subprotocols``: the subprotocols this server speaks, most preferred
      first. ``accept()`` without a ``subprotocol`` picks the first of these
      that the client offered (none if it offered none of them);
      ``websocket.subprotocols`` lists what the client offered;
    * ``backlog``: the listen queue;
    * ``compression`` (``"deflate"``, the default, or ``None``):
      permessage-deflate (RFC 7692) with every client that offers it, as
      browsers do. A message pushed to a room is compressed once, however
      many members get it, and members without deflate get it plain; the
      server answers ``server_no_context_takeover`` and
      ``client_no_context_takeover``, so no compression state is kept per
      connection. Messages shorter than ``compression_threshold`` bytes
      (128), or that would not shrink, go uncompressed. A compressed message
      from a client is inflated before handlers see it, and one that would
      inflate past ``max_message_size`` is closed with 1009.
    * ``metrics_path`` (``None``, the default: off): a GET of this path on
      the server's port answers Prometheus' text format (OpenMetrics when
      the scraper asks for it): connections, messages, deliveries, bytes,
      rooms, the backplane's counters, handshakes refused by reason. Needs
      ``prometheus_client`` (``pip install roomcast[metrics]``); read from
      the core's own counters at each scrape, so serving pays nothing for
      it. With ``PROMETHEUS_MULTIPROC_DIR`` set (``roomcast --workers``),
      a scrape sums every worker's.

    Scaling out: with ``backplane="redis://[[user]:password@]host[:port]
    [/db]"`` (``rediss://`` through TLS, its ``ssl_*`` options in the
    query; ``redis+cluster://host:port[,host:port...]`` on a Redis Cluster,
    each room on its shard: :func:`roomcast.backplane.parse_url`), rooms with a name (``Room(name=...)``, every
    :class:`~roomcast.App` room) are shared with every server on the same
    Redis and ``backplane_prefix`` (the channel of a room is the prefix,
    with ``\\`` and ``|`` escaped, then ``|`` and its name): a push is
    delivered to this server's members at once and published to Redis
    once, and each other server delivers it to its own members, in C.
    When Redis is unreachable the server keeps serving its own members
    and reconnects with backoff; pushes made meanwhile
    wait in a buffer of ``backplane_buffer`` bytes (1 MiB) and go out in
    order once it is back; past that they are dropped and counted
    (``stats()["backplane_dropped"]``). ``presence_ttl`` (seconds, 30):
    how soon a server that died leaves ``room.count()`` and
    ``room.members()``.

    Two options bound what waits for Python. ``max_receive_queue`` (bytes):
    when this much received data waits for an endpoint to read it, the
    server stops reading from that client until half of it has been read.
    ``max_pending_bytes`` (64 MiB): when this much (all connections
    together) waits for the asyncio loop to take it, because the loop is
    blocked or too busy, the core stops reading from the clients that send
    until the loop has caught up by half; the others are not affected.

    Every option is checked here, not when serving starts: a value of the
    wrong type raises :class:`TypeError`, one out of range
    :class:`ValueError`, both naming the option and the value
    (``max_message_size must be a positive integer, not -1``).

    One server serves one address at a time; it can serve again after it
    has stopped.
    """

    def __init__(
        self,
        *,
        max_message_size: int = 2**20,
        max_queue_bytes: int = 2**20,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        handshake_timeout: float = 10,
        close_timeout: float = 5,
        max_header_bytes: int = 8192,
        max_headers: int = 100,
        idle_timeout: float | None = 0,
        max_connections: int | None = None,
        slow_consumer: Literal["close", "drop"] = "close",
        origins: Iterable[str | None] | None = None,
        subprotocols: Sequence[str] = (),
        backlog: int = 1024,
        max_receive_queue: int = 2**20,
        max_pending_bytes: int = 64 * 2**20,
        backplane: str | None = None,
        backplane_prefix: str = "roomcast:",
        backplane_buffer: int = 2**20,
        presence_ttl: float = 30,
        compression: Literal["deflate"] | None = "deflate",
        compression_threshold: int = 128,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
        ssl_keyfile_password: str | None = None,
        ssl_ca_certs: str | os.PathLike[str] | None = None,
        ssl_cert_reqs: int = 0,
        metrics_path: str | None = None,
    ) -> None:
        given = locals()  # the options as passed, for the table of rules
        opts = _options.check_all(_options.SERVER, {name: given[name] for name in _options.SERVER})
        # As given, for set_options().
        self._settings: dict[str, Any] = {name: value for name, value in given.items() if name != "self"}
        self._tls = _tls_settings(opts)
        self._options: dict[str, Any] = {
            "max_message_size": opts["max_message_size"],
            "max_queue_bytes": opts["max_queue_bytes"],
            "ping_interval": opts["ping_interval"],
            "ping_timeout": opts["ping_timeout"],
            "handshake_timeout": opts["handshake_timeout"],
            "close_timeout": opts["close_timeout"],
            "max_header_bytes": opts["max_header_bytes"],
            "max_headers": opts["max_headers"],
            "idle_timeout": opts["idle_timeout"],
            "max_connections": opts["max_connections"] or 0,
            "drop_oldest": opts["slow_consumer"] == "drop",
            "max_event_bytes": opts["max_pending_bytes"],
            "compression": opts["compression"] == "deflate",
            "compression_threshold": opts["compression_threshold"],
        }
        self._backplane_options: dict[str, Any] = {}
        self._backplane_key: tuple[str, int, str] | None = None
        if backplane is not None:
            url = parse_url(backplane)
            self._backplane_options = dict(url, backplane_prefix=backplane_prefix, backplane_buffer=backplane_buffer)
            # Servers of one process on the same Redis and prefix publish a
            # push to a named room once between them.
            self._backplane_key = (url["backplane_host"], url["backplane_port"], backplane_prefix)
        self._backplane_url = backplane
        self._presence_ttl = opts["presence_ttl"]
        self._origins = None if opts["origins"] is None else frozenset(opts["origins"])
        self._subprotocols = opts["subprotocols"]
        self._backlog = opts["backlog"]
        self._max_receive_queue = opts["max_receive_queue"]
        self._routes: list[tuple[Route, Endpoint, Binder | None, Starter | None]] = []
        self._static: list[StaticFiles] = []
        # The serving session's handle (None when not serving): every
        # command to the core goes through it.
        self._hub: Hub | None = None
        # The core whose events are polled, until its loop has ended.
        self._poll_core: Core | None = None
        self._conns: dict[int, ServerWebSocket] = {}
        # The scrapes' answers and the refusals Python decides (None: off).
        self._metrics = (
            None if opts["metrics_path"] is None else _metrics.Metrics(opts["metrics_path"], backplane is not None)
        )

    @property
    def _core(self) -> Core | None:
        """The core while it takes commands (tests ask it directly)."""
        hub = self._hub
        return self._poll_core if hub is not None and hub.running else None

    @property
    def _backplane(self) -> Backplane | None:
        hub = self._hub
        return hub.backplane if hub is not None else None

    # -- configuration ---------------------------------------------------

    def websocket(self, path: str) -> Callable[[E], E]:
        """Decorator: ``endpoint(websocket, **params)`` handles upgrade
        requests for ``path``, e.g. ``"/chat/{room}"`` or
        ``"/user/{id:int}"`` (convertors: str, int, float, path, uuid).

        The endpoint receives the path parameters whose names it declares,
        converted to its annotation when that is int, float or str; a value
        that does not convert makes the route not match. It is a
        :class:`TypeError`, raised here, to declare a parameter the path
        does not have (unless it has a default)."""
        route = Route(path)

        def decorator(endpoint: E) -> E:
            self._add_route(route, endpoint)
            return endpoint

        return decorator

    def route(self, path: str, room: BaseRoom) -> None:
        """Serves ``room`` at ``path``: as an endpoint that calls
        ``room.connect``, except that an idle member costs no task (the
        room runs its handlers when events come, see ``room.attach``)."""
        if not isinstance(room, BaseRoom):
            what = type(room).__name__
            if isinstance(room, Server):  # an App
                hint = f"; the {what} is a server itself: serve it with its own run() or serve()"
            elif isinstance(room, type) and issubclass(room, BaseRoom):
                hint = f": make one first, server.route({path!r}, {room.__name__}())"
            else:
                hint = ", e.g. room = Room(), then server.route(path, room)"
            raise TypeError(f"server.route() takes a Room, not {what} {room!r}{hint}")
        # A subclass with its own connect() keeps it: it runs as an endpoint.
        own = type(room).connect is BaseRoom.connect
        self._add_route(Route(path), room.connect, room.attach if own else None)

    def _add_route(self, route: Route, endpoint: Endpoint, starter: Starter | None = None) -> None:
        if not callable(endpoint):
            raise TypeError(f"endpoint must be callable, not {type(endpoint).__name__}")
        binder = Binder(endpoint, 1)
        missing = [n for n in binder.required() if n not in route.converters]
        if missing:
            raise TypeError(f"endpoint {endpoint!r} declares {missing} which {route.pattern!r} does not provide")
        self._routes.append((route, endpoint, binder if binder else None, starter))

    def static(self, url_prefix: str, directory: str | os.PathLike[str]) -> None:
        """Serves the files of ``directory`` for plain GET and HEAD requests
        under ``url_prefix`` (``index.html`` for a directory; no path can
        leave ``directory``). Call before serving. Once used, a plain
        request for a websocket route gets ``426 Upgrade Required`` and any
        other path 404."""
        if self._poll_core is not None:
            raise RuntimeError("static() must be called before the server starts")
        self._static.append(StaticFiles(url_prefix, directory))
        self._static.sort(key=lambda s: len(s.prefix), reverse=True)

    def set_options(self, **options: Any) -> None:
        """Changes some of the constructor's options before serving (the
        ``roomcast`` command's options do this): they are checked as the
        constructor checks them, with the same errors, and the others keep
        their values. Routes and static directories are kept."""
        if self._poll_core is not None:
            raise RuntimeError("set_options() must be called before the server starts")
        unknown = sorted(set(options) - set(self._settings))
        if unknown:
            raise TypeError(f"{unknown[0]!r} is not a server option")
        routes, static = self._routes, self._static
        Server.__init__(self, **{**self._settings, **options})
        self._routes, self._static = routes, static

    # -- running ----------------------------------------------------------

    def reload_certificates(self) -> None:
        """Reads the ``ssl_*`` files again (renewed certificates) and serves
        connections accepted from now on with them; open connections keep
        theirs. Raises :class:`ValueError` naming the file and the problem,
        and then the certificate in use stays. Under :meth:`run`, SIGHUP
        calls it."""
        if self._tls is None:
            raise RuntimeError("this server has no TLS (ssl_certfile) to reload")
        core = self._core
        if core is None:
            Core.check_tls(*self._tls)
        else:
            core.set_tls(*self._tls)

    def _reload_on_signal(self) -> None:
        try:
            self.reload_certificates()
        except (ValueError, RuntimeError) as exc:
            logger.error("roomcast kept its certificate: %s", exc)
        else:
            logger.info("certificates reloaded")

    def run(self, host: str = "127.0.0.1", port: int = 8000, *, reuse_port: bool = False) -> None:
        """Serves until SIGINT (Ctrl-C) or SIGTERM, then closes every
        connection with 1001 and returns. Blocks; starts its own asyncio
        loop. Says where it listens: at INFO on the ``"roomcast"`` logger
        when the program's logging shows that, else on stderr
        (``roomcast: listening on ws://127.0.0.1:8000/ (Ctrl-C to stop)``). With
        TLS, SIGHUP reloads the certificates (:meth:`reload_certificates`).
        ``reuse_port``: as for :meth:`serve`."""
        asyncio.run(self._run_until_signal(host, port, reuse_port))

    async def _run_until_signal(self, host: str, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        handlers: list[tuple[signal.Signals, Callable[[], None]]] = [
            (signal.SIGINT, stop.set),
            (signal.SIGTERM, stop.set),
        ]
        if self._tls is not None:
            handlers.append((signal.SIGHUP, self._reload_on_signal))
        for sig, handler in handlers:
            try:
                loop.add_signal_handler(sig, handler)
                installed.append(sig)
            except (ValueError, NotImplementedError, RuntimeError):
                pass  # not the main thread, or no signals here
        try:
            serving = self.serve(host, port, reuse_port=True) if reuse_port else self.serve(host, port)
            async with serving as running:
                _say(f"listening on {running.url} (Ctrl-C to stop)")
                await stop.wait()
                _say("shutting down")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 8000, *, reuse_port: bool = False
    ) -> AsyncIterator[Running]:
        """``async with server.serve(host, port) as running:`` serves on the
        running asyncio loop inside the block (``running.port`` is the bound
        port; pass 0 for any free one). Leaving the block stops listening,
        closes every connection with 1001 "going away", waits up to
        ``close_timeout`` for the clients to answer and for the endpoints
        to return, and cancels those that do not. Raises :class:`OSError`
        if the address cannot be bound. With a backplane, the block starts
        once Redis is connected, or once the first attempt has failed (the
        server then serves its own members and keeps trying).

        ``reuse_port=True`` sets ``SO_REUSEPORT`` on the listening socket:
        several processes of the same user may then serve one address, and
        the kernel spreads new connections between them (``roomcast
        --workers``)."""
        if self._poll_core is not None:
            raise RuntimeError("this server is already serving")
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        port = _options.PORT("port", port)
        loop = asyncio.get_running_loop()
        plain = bool(self._static) or self._metrics is not None
        core = Core(**self._options, **self._backplane_options, http_requests=plain)
        if self._tls is not None:
            core.set_tls(*self._tls)
        bound = core.listen(host, port, self._backlog, bool(reuse_port))
        hub, fd = self._begin(core, loop)
        try:
            backplane = hub.backplane
            if backplane is not None:
                # Serve once Redis is there, or its first attempt has failed
                # (it goes on trying): members then see the other servers.
                try:
                    await asyncio.wait_for(backplane.settled.wait(), SETTLE_SECONDS)
                except asyncio.TimeoutError:
                    pass
            tls = self._tls is not None
            scheme = ("https" if tls else "http") if self._static else ("wss" if tls else "ws")
            yield Running(self, hub, host, bound, scheme)
        finally:
            await self._shutdown(hub, core, fd)

    def _begin(self, core: Core, loop: asyncio.AbstractEventLoop) -> tuple[Hub, int]:
        """A serving session on ``core``, whose loop thread runs already:
        its hub, its backplane, and its events read on ``loop``. Returns
        the hub and the descriptor that :meth:`_shutdown` takes."""
        # Commands made on this loop wake the core once per loop iteration.
        core.set_batching(loop.call_soon)
        fd = core.fileno()
        backplane = None
        if self._backplane_options:
            backplane = Backplane(
                core,
                loop,
                self._backplane_options["backplane_prefix"],
                self._presence_ttl,
                self._backplane_url or "",
                cluster=bool(self._backplane_options.get("backplane_cluster")),
            )
        hub = Hub(
            core,
            loop,
            backplane=backplane,
            backplane_key=self._backplane_key,
            backplane_db=self._backplane_options.get("backplane_db"),
            subprotocols=self._subprotocols,
            max_receive_queue=self._max_receive_queue,
        )
        self._hub = hub
        self._poll_core = core
        if backplane is not None:
            backplane.start()
        hub.start()
        if self._metrics is not None:
            self._metrics.start(hub.stats, loop)
        loop.add_reader(fd, self._drain)
        return hub, fd

    async def _shutdown(self, hub: Hub, core: Core, fd: int) -> None:
        loop = asyncio.get_running_loop()
        backplane = hub.backplane
        if backplane is not None:
            await backplane.close()  # this server's members leave presence
        hub.stop()  # no command can reach a core whose loop has ended
        try:
            # stop() blocks for the close handshakes; events keep flowing
            # through the reader meanwhile, so endpoints see their close.
            await loop.run_in_executor(None, core.stop, 1001, "going away")
        finally:
            loop.remove_reader(fd)
            self._dispatch(core.poll())
            self._poll_core = None
            if self._metrics is not None:
                self._metrics.stop()  # the last counts, while the core has them
            hub.finish()
            if backplane is not None:
                backplane.fail_waiting()
            self._hub = None
            for ws in self._conns.values():
                feed_close(ws, 1006, "")  # every conn should have had its close event
            self._conns.clear()
        tasks = hub.tasks()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._options["close_timeout"])
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- events -----------------------------------------------------------

    def _drain(self) -> None:
        core = self._poll_core
        if core is not None:
            self._dispatch(core.poll())
            if self._hub is not None and self._hub.backplane is not None:
                # Once the handlers woken here have run: the core may
                # write what its backplane holds for them (rc_server_idle).
                asyncio.get_running_loop().call_soon(core.idle)

    def _dispatch(self, events: list[Any]) -> None:
        conns = self._conns
        hub = self._hub
        backplane = hub.backplane if hub is not None else None
        for event in events:
            kind = event[0]
            try:
                if kind == EV_MESSAGE:
                    ws = conns.get(event[1])
                    if ws is not None:
                        feed(ws, event[2])
                elif kind == EV_CLOSE:
                    self._on_close(event[1], event[2], event[3])
                elif kind == EV_REDIS:
                    if backplane is not None:
                        backplane.on_reply(event[1], event[2], event[3])
                elif kind == EV_BACKPLANE:
                    if backplane is not None:
                        backplane.on_state(event[1], event[2])
                elif kind == EV_RECOVER:
                    if hub is not None:
                        hub.on_recover(event[1], event[2], event[3])
                elif hub is None or not hub.running:
                    continue  # shutting down: the core closes these itself
                elif kind == EV_OPEN or kind == EV_REQUEST:
                    self._decide(kind, event)
            except Exception:
                logger.exception("roomcast failed to dispatch event %r", event[:2])

    def _on_close(self, conn: int, code: int, reason: str) -> None:
        """A connection's last event."""
        ws = self._conns.pop(conn, None)
        if ws is not None:
            if (
                self._metrics is not None
                and ws.client_state is WebSocketState.CONNECTING  # never accepted
                and ws.application_state is WebSocketState.DISCONNECTED  # closed or failed by the app
            ):
                self._metrics.refuse("rejected_by_app")
            feed_close(ws, code, reason)

    def _decide(self, kind: int, event: Any) -> None:
        """Routes an upgrade or a plain request. Whatever fails while
        deciding is answered, or the client would wait for an answer that
        never comes: HTTP 400 for a path parameter that does not convert,
        500 for anything else, logged once here."""
        conn = event[1]
        path = event[2 if kind == EV_OPEN else 3]
        try:
            if kind == EV_OPEN:
                self._on_open(*event[1:])
            else:
                self._on_request(*event[1:])
            return
        except ParamError as exc:
            logger.warning("roomcast answered 400 to %.200r: %s", path, exc)
            status, text, why = 400, b"bad path parameter\n", "bad_path_parameter"
        except Exception:
            logger.exception("roomcast answered 500 to %.200r: routing failed", path)
            status, text, why = 500, b"internal server error\n", "error"
        if kind == EV_OPEN:
            self._refused(why)
        self._conns.pop(conn, None)
        hub = self._hub
        if hub is None:
            return  # stopping: the core answers what is still pending
        try:
            if kind == EV_OPEN:
                hub.reject(conn, status, text)
            else:
                hub.respond(conn, status, [("Content-Type", "text/plain; charset=utf-8")], text, event[2] == "HEAD")
        except Exception:
            logger.exception("roomcast could not answer %d", status)

    def _on_open(self, conn: int, path: str, query: str, headers: bytes, host: str, port: int, tls: Any) -> None:
        hub = self._hub
        assert hub is not None
        if not self._origin_allowed(header_values(headers, "origin")):
            self._refused("origin")
            hub.reject(conn, 403, b"origin not allowed\n")
            return
        found = self._match(path)
        if found is None:
            self._refused("not_found")
            hub.reject(conn, 404)
            return
        endpoint, starter, params, kwargs = found
        ws = ServerWebSocket(hub, conn, hub.shared(path), query, headers, hub.shared(host), port, params, tls)
        self._conns[conn] = ws
        if starter is not None:
            starter(ws)  # the room runs it on events: no task of ours
        else:
            hub.spawn(self._run_endpoint(ws, endpoint, kwargs))

    def _refused(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.refuse(reason)

    def _match(self, path: str) -> tuple[Endpoint, Starter | None, dict[str, Any], dict[str, Any]] | None:
        """The first route that takes ``path``: its endpoint, its starter,
        the path's parameters and the endpoint's converted arguments."""
        for route, endpoint, binder, starter in self._routes:
            params = route.match(path)
            if params is None:
                continue
            try:
                kwargs = binder.bind(params) if binder is not None else {}
            except ValueError:
                continue  # an annotation the value does not convert to
            return endpoint, starter, params, kwargs
        return None

    async def _run_endpoint(self, ws: ServerWebSocket, endpoint: Endpoint, kwargs: dict[str, Any]) -> None:
        try:
            result = endpoint(ws, **kwargs)
            if inspect.isawaitable(result):
                await result
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("websocket endpoint %r failed for %r", endpoint, ws)
            ws.fail()
            return
        if ws.application_state is not WebSocketState.DISCONNECTED:
            await ws.close()  # 403 if never accepted, else close 1000

    def _on_request(self, conn: int, method: str, path: str, query: str, headers: bytes, host: str, port: int) -> None:
        hub = self._hub
        assert hub is not None
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            status, hdrs, body = text_response(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
            hub.respond(conn, status, hdrs, body, head)
            return
        metrics = self._metrics
        if metrics is not None and path == metrics.path:
            accept = header_values(headers, "accept")
            status, hdrs, body = metrics.answer(", ".join(accept) if accept else None)
            hub.respond(conn, status, hdrs, body, head)
            return
        answer = self._plain_answer(path)
        if isinstance(answer, str):
            self._send_file(hub, conn, answer, head)
            return
        status, hdrs, body = answer
        hub.respond(conn, status, hdrs, body, head)

    def _plain_answer(self, path: str) -> Response | str:
        """The answer to a plain GET of ``path``, or the real path of the
        static file to send: a static file, 426 for a websocket route, 404
        otherwise."""
        for static in self._static:
            found = static.lookup(path)
            if isinstance(found, str) or (found is not None and found[0] != 404):
                return found
        if any(entry[0].match(path) is not None for entry in self._routes):
            return text_response(426, "Upgrade Required", [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        return text_response(404, "Not Found")

    def _origin_allowed(self, origin: list[str]) -> bool:
        """Whether the ``Origin`` header's values pass ``origins``: two
        Origin headers are never a browser's, so they are refused."""
        if self._origins is None:
            return True
        return len(origin) <= 1 and (origin[0] if origin else None) in self._origins

    def _send_file(self, hub: Hub, conn: int, real: str, head: bool) -> None:
        if is_small(real):
            status, hdrs, body = file_response(real)
            hub.respond(conn, status, hdrs, body, head)
            return

        async def send_large() -> None:
            status, hdrs, body = await hub.loop.run_in_executor(None, file_response, real)
            hub.respond(conn, status, hdrs, body, head)  # a no-op once stopping

        hub.spawn(send_large())
