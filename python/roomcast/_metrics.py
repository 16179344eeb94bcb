"""Prometheus metrics: ``Server(metrics_path="/metrics")``.

The core counts as it serves (``server.stats()``: atomic counters that the
loop thread adds to anyway); nothing here runs per message. A scrape reads
those counters once and turns them into Prometheus families through
``prometheus_client`` (an optional dependency: ``pip install
roomcast[metrics]``), on a registry of the server's own, so that two servers
in one process do not clash and the process's default registry is left to
the application.

Handshake refusals are one counter with a ``reason`` label. The core counts
those it decides (``bad_request``, ``method``, ``version``,
``not_websocket``, ``too_large``, ``capacity``, ``shutting_down``,
``timeout``); the server counts those Python decides (``origin``,
``not_found``, ``bad_path_parameter``, ``error``, and ``rejected_by_app``:
an endpoint, room or App hook that closed or failed before ``accept()``).

Several processes on one port (``roomcast --workers N``): when the
environment names ``PROMETHEUS_MULTIPROC_DIR``, each serving server writes
its counters there once a second (and the scraped one just before it
answers), through prometheus_client's multiprocess mode, and a scrape
answers with :class:`~prometheus_client.multiprocess.MultiProcessCollector`:
the sum over every worker, whichever one the kernel handed the scrape to.
Counters go into multiprocess Counters, as the increase since the last
write, so that a worker's file keeps what it counted after it has died: a
total never goes backwards when a worker dies and is restarted (the new
one has its own file). Gauges (open connections, rooms, ...) are
``livesum`` Gauges: :func:`worker_exited` removes a dead worker's, so they
count the living only. The directory must be emptied before the workers
start (prometheus_client's rule), which the supervisor does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

INSTALL_HINT = "metrics_path needs prometheus_client: pip install roomcast[metrics]"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker writes its counters for the others' scrapes (seconds).
EXPORT_INTERVAL = 1.0

# (family name, stats() key, help). Counter names get "_total" in the text.
COUNTERS = (
    ("roomcast_connections_accepted", "accepted_total", "Connections accepted (TCP), upgraded or not."),
    ("roomcast_messages_received", "messages_in", "WebSocket messages received from clients."),
    ("roomcast_deliveries", "deliveries", "Messages queued to members by room pushes, one per member."),
    ("roomcast_sent_bytes", "bytes_out", "Bytes written to client sockets (frames, HTTP answers, TLS records)."),
    ("roomcast_slow_consumer_closes", "slow_consumer_closes", "Connections closed (1008) for a full output queue."),
    ("roomcast_messages_dropped", "messages_dropped", "Queued messages dropped by slow_consumer='drop'."),
    ("roomcast_idle_closes", "idle_closes", "Connections closed (1001) at idle_timeout."),
    ("roomcast_tls_handshakes", "tls_handshakes", "TLS handshakes completed."),
    ("roomcast_tls_handshake_failures", "tls_handshake_failures", "TLS handshakes begun that did not complete."),
)
BACKPLANE_COUNTERS = (
    ("roomcast_backplane_published", "backplane_published", "Messages published to Redis (one per room push)."),
    ("roomcast_backplane_received", "backplane_received", "Messages received from other servers through Redis."),
    ("roomcast_backplane_reconnects", "backplane_reconnects", "Redis connections re-established."),
    ("roomcast_backplane_dropped", "backplane_dropped", "Publishes dropped while Redis was away (buffer full)."),
    (
        "roomcast_backplane_coalesced",
        "backplane_coalesced",
        "Messages of rooms with history from Redis held under load to share their members' writes.",
    ),
)
GAUGES = (
    ("roomcast_connections", "connections", "Open connections."),
    ("roomcast_rooms", "rooms_open", "Rooms with members on this server."),
)
BACKPLANE_GAUGES = (
    ("roomcast_backplane_up", "backplane_up", "1 while both Redis connections are ready."),
    ("roomcast_backplane_buffered_bytes", "backplane_buffered", "Bytes of publishes waiting for Redis."),
    ("roomcast_backplane_channels", "backplane_channels", "Room channels subscribed in Redis."),
)
REFUSED = "roomcast_handshakes_refused"
REFUSED_HELP = "Upgrade requests answered without 101, by reason."
# The core's refusals: reason label -> stats() key.
CORE_REFUSALS = {
    "bad_request": "refused_bad_request",
    "method": "refused_method",
    "version": "refused_version",
    "not_websocket": "refused_not_websocket",
    "too_large": "refused_too_large",
    "capacity": "connections_refused",
    "shutting_down": "refused_shutting_down",
    "timeout": "refused_timeout",
}
# The server's own (Metrics.refuse): listed so that a scrape shows them at 0.
PYTHON_REFUSALS = ("origin", "not_found", "bad_path_parameter", "error", "rejected_by_app")

Values = tuple[dict[str, int], dict[str, int], dict[str, int]]


def require() -> None:
    """Raises ImportError with the install line when prometheus_client is
    missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


class Metrics:
    """One server's metrics: its Python-side refusals, the stats of the
    session it serves, and the answer to a scrape."""

    def __init__(self, path: str, backplane: bool) -> None:
        require()
        _check_multiproc()
        self.path = path
        self._backplane = backplane
        self._refused = dict.fromkeys(PYTHON_REFUSALS, 0)
        self._stats: Callable[[], dict[str, int]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._registry: Any = None

    # -- counting (the server calls it, off the hot path) ---------------------

    def refuse(self, reason: str) -> None:
        self._refused[reason] = self._refused.get(reason, 0) + 1

    # -- a serving session ------------------------------------------------------

    def start(self, stats: Callable[[], dict[str, int]], loop: asyncio.AbstractEventLoop) -> None:
        self._stats = stats
        if _multiproc_dir() is not None:
            _shared().add(self)
            self._tick(loop)

    def stop(self) -> None:
        """The session ends (its core still answers stats()): its last counts
        are written, and its gauges leave this process's sums."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if _multiproc_dir() is not None:
            _shared().remove(self)
        self._stats = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        _shared().export()
        self._timer = loop.call_later(EXPORT_INTERVAL, self._tick, loop)

    def values(self) -> Values:
        """The counters, the gauges and the refusals by reason, now."""
        stats = self._stats() if self._stats is not None else {}
        counters = COUNTERS + (BACKPLANE_COUNTERS if self._backplane else ())
        gauges = GAUGES + (BACKPLANE_GAUGES if self._backplane else ())
        refused = {reason: stats.get(key, 0) for reason, key in CORE_REFUSALS.items()}
        for reason, n in self._refused.items():
            refused[reason] = refused.get(reason, 0) + n
        return (
            {name: stats.get(key, 0) for name, key, _ in counters},
            {name: stats.get(key, 0) for name, key, _ in gauges},
            refused,
        )

    # -- a scrape ---------------------------------------------------------------

    def answer(self, accept: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        """The response to a scrape: the text format, or OpenMetrics when
        ``Accept`` asks for it."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        if _multiproc_dir() is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            _shared().export()  # this worker's counts, fresh
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            if self._registry is None:
                self._registry = CollectorRegistry()
                self._registry.register(_Collector(self))
            registry = self._registry
        encoder, content_type = choose_encoder(accept or "")
        return 200, [("Content-Type", content_type), ("Cache-Control", "no-store")], encoder(registry)


class _Collector:
    """Families from one server's counters, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters, gauges, refused = self._metrics.values()
        helps = {name: text for name, _, text in COUNTERS + BACKPLANE_COUNTERS + GAUGES + BACKPLANE_GAUGES}
        for name, value in counters.items():
            yield CounterMetricFamily(name, helps[name], value=value)
        for name, value in gauges.items():
            yield GaugeMetricFamily(name, helps[name], value=value)
        family = CounterMetricFamily(REFUSED, REFUSED_HELP, labels=["reason"])
        for reason, value in sorted(refused.items()):
            family.add_metric([reason], value)
        yield family


# -- several processes: prometheus_client's multiprocess mode ---------------------


def _multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _check_multiproc() -> None:
    """In multiprocess mode: the directory exists, and prometheus_client
    saw it when it was imported (it chooses where values live then)."""
    where = _multiproc_dir()
    if where is None:
        return
    if not os.path.isdir(where):
        raise ValueError(f"{MULTIPROC_ENV} names {where!r}, which is not a directory")
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        raise RuntimeError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported: set it before the process starts"
        )


class _Shared:
    """This process's multiprocess metrics, written from every serving
    server of the process: counters by their increase since the last write
    (per server; a new session's core starts again from 0), gauges as the
    sum over the servers that serve now."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self._lock = threading.Lock()
        self._sources: dict[Metrics, Values] = {}
        self._counters = {name: Counter(name, text, registry=None) for name, _, text in COUNTERS + BACKPLANE_COUNTERS}
        self._gauges = {
            name: Gauge(name, text, registry=None, multiprocess_mode="livesum")
            for name, _, text in GAUGES + BACKPLANE_GAUGES
        }
        self._refused = Counter(REFUSED, REFUSED_HELP, ["reason"], registry=None)
        for reason in (*CORE_REFUSALS, *PYTHON_REFUSALS):
            self._refused.labels(reason)  # shown at 0 until it happens

    def add(self, source: Metrics) -> None:
        with self._lock:
            self._sources[source] = ({}, {}, {})

    def remove(self, source: Metrics) -> None:
        with self._lock:
            if source in self._sources:
                self._write_source(source)
                del self._sources[source]
                self._write_gauges()

    def export(self) -> None:
        with self._lock:
            for source in list(self._sources):
                self._write_source(source)
            self._write_gauges()

    def _write_source(self, source: Metrics) -> None:
        counters, gauges, refused = now = source.values()
        last_counters, _, last_refused = self._sources[source]
        for name, value in counters.items():
            self._add(self._counters[name], value, last_counters.get(name, 0))
        for reason, value in refused.items():
            self._add(self._refused.labels(reason), value, last_refused.get(reason, 0))
        self._sources[source] = now

    @staticmethod
    def _add(counter: Any, value: int, last: int) -> None:
        grown = value - last if value >= last else value  # less: a new core
        if grown > 0:
            counter.inc(grown)

    def _write_gauges(self) -> None:
        for name, gauge in self._gauges.items():
            gauge.set(sum(gauges.get(name, 0) for _, gauges, _ in self._sources.values()))


_shared_metrics: _Shared | None = None
_shared_lock = threading.Lock()


def _shared() -> _Shared:
    global _shared_metrics
    with _shared_lock:
        if _shared_metrics is None:
            _shared_metrics = _Shared()
        return _shared_metrics


def worker_exited(pid: int) -> None:
    """A worker process has ended (the supervisor calls it): its gauges leave
    the sums of later scrapes, its counters stay in them (the totals never
    go backwards). Does nothing outside multiprocess mode or without
    prometheus_client."""
    if _multiproc_dir() is None:
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
