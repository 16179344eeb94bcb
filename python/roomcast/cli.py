"""The ``roomcast`` command: runs a :class:`~roomcast.Server` or
:class:`~roomcast.App` found at ``module:attribute``, as ``uvicorn
module:app`` does for an ASGI app.

    roomcast chat:app --port 8000
    roomcast chat:app --workers 4 --backplane redis://127.0.0.1:6379/0
    python -m roomcast chat:app            (the same command)

The module is imported with the current directory (or ``--app-dir``) first
on ``sys.path``; the attribute may be dotted (``mod:holder.app``); with
``--factory`` it is called without arguments and must return the server.

Every keyword option of ``Server.__init__`` is an option of the command
(``--max-message-size``, ``--ping-interval``, ``--ssl-certfile``, ...),
made from the signature, so ``--help`` lists them all with their defaults.
An option given on the command line replaces the object's own setting
through :meth:`Server.set_options`, which checks it as the constructor
does: a bad value is the constructor's error message.

``--workers N`` (N > 1): this process becomes a supervisor. It loads the
app once to check the command, then starts N workers, each ``python -m
roomcast ... --worker-child K``, which imports the app itself and listens
on the same host:port with ``SO_REUSEPORT`` (the kernel spreads new
connections between them). Rooms span the workers only through a
backplane, so N > 1 without one is refused. A worker that dies is logged
and started again, after a delay that doubles (up to ``MAX_BACKOFF``)
while workers keep dying young. SIGINT or SIGTERM to the supervisor is
passed on as SIGTERM to every worker (each closes its connections with
1001), the supervisor waits for them and exits 0; SIGHUP is passed on
(TLS certificates reload). A worker that cannot listen (the port is busy)
stops the supervisor, with the worker's error, instead of a restart loop.
Without ``PROMETHEUS_MULTIPROC_DIR`` in the environment the supervisor
makes a temporary one for the workers (prometheus_client's multiprocess
mode) and removes it at exit.

Exit codes: 0 after SIGINT or SIGTERM; 2 for a mistake in the command
(the module, the attribute, the object's type, an option's value,
``--workers`` without a backplane), in one line on stderr; 1 when the
address cannot be bound or serving fails.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import importlib
import inspect
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from .server import Server

__all__ = ["main"]

logger = logging.getLogger("roomcast.cli")

PROG = "roomcast"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# A worker that could not start (it could not listen, or load the app):
# the supervisor stops instead of starting it again.
EXIT_WORKER_STARTUP = 3
# Restart delays: the first after a young death, doubling up to the last.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
# A worker that lived this long (seconds) died of something else than its
# start: its slot's backoff starts over.
YOUNG = 10.0
# How long the supervisor waits for its workers to stop, past their
# close_timeout, before it kills them.
STOP_GRACE = 10.0
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
WORKER_ENV = "ROOMCAST_SUPERVISOR_PID"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class UsageError(Exception):
    """A mistake in the command: one line on stderr, exit code 2."""


# -- the options of Server.__init__ ------------------------------------------


def _union(annotation: str) -> list[str]:
    """The top-level members of ``A | B | None`` (brackets respected)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(annotation):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    return parts


# What each option of Server.__init__ does, in a line of --help (the
# docstring of Server says it in full). tests/test_cli.py checks that every
# option has its line.
ABOUT = {
    "max_message_size": "a larger incoming message closes its connection (1009)",
    "max_queue_bytes": "bytes queued to one client before slow_consumer acts",
    "ping_interval": "ping a client silent this long",
    "ping_timeout": "close (1011) a client that leaves a ping unanswered this long",
    "handshake_timeout": "time for the TLS handshake and the request head",
    "close_timeout": "time for a client to answer the close handshake",
    "max_header_bytes": "a larger request head gets 431",
    "max_headers": "more request headers get 431",
    "idle_timeout": "close (1001) a client that sends no message this long; 0: never",
    "max_connections": "past it, new connections get 503",
    "slow_consumer": "a client past max_queue_bytes: close it (1008) or drop its oldest messages",
    "origins": "only these Origin headers are served (403 otherwise)",
    "subprotocols": "the subprotocols served, most preferred first",
    "backlog": "the listen queue",
    "max_receive_queue": "received bytes waiting for a handler before reading pauses",
    "max_pending_bytes": "events waiting for the asyncio loop before the senders pause",
    "backplane": "redis://[[user]:password@]host[:port][/db] (rediss:// for TLS; redis+cluster://host:port,... "
    "for a Redis Cluster): rooms span servers",
    "backplane_prefix": "prefix of the Redis channels and keys",
    "backplane_buffer": "bytes of pushes kept while Redis is unreachable",
    "presence_ttl": "how soon a dead server leaves presence",
    "compression": "permessage-deflate with clients that offer it",
    "compression_threshold": "shorter messages go uncompressed",
    "ssl_certfile": "serve wss:// and https:// with this certificate chain (PEM)",
    "ssl_keyfile": "its private key (PEM), if not in ssl_certfile",
    "ssl_keyfile_password": "the password of an encrypted ssl_keyfile",
    "ssl_ca_certs": "CA certificates that client certificates are checked against",
    "ssl_cert_reqs": "client certificates: 0 none, 1 optional, 2 required",
    "metrics_path": "answer Prometheus metrics at this path (pip install roomcast[metrics])",
}


class ServerOption:
    """One keyword option of ``Server.__init__`` as a command option: its
    text converted after its annotation, then checked by the server."""

    def __init__(self, param: inspect.Parameter) -> None:
        self.name = param.name
        self.flag = "--" + param.name.replace("_", "-")
        self.default = param.default
        annotation = (
            param.annotation if isinstance(param.annotation, str) else inspect.formatannotation(param.annotation)
        )
        parts = _union(annotation)
        self.annotation = annotation
        self.optional = "None" in parts
        self.base = next((p for p in parts if p != "None"), "str")
        self.choices = re.findall(r"""["']([^"']*)["']""", self.base) if self.base.startswith("Literal[") else []
        self.is_list = self.base.startswith(("Iterable[", "Sequence[", "list[", "tuple["))

    @property
    def metavar(self) -> str:
        if self.choices:
            return "{" + ",".join(self.choices + (["none"] if self.optional else [])) + "}"
        if self.is_list:
            return "A,B,..."
        if self.base == "int":
            return "N"
        if self.base == "float":
            return "SECONDS"
        if "PathLike" in self.annotation:
            return "FILE"
        return "URL" if self.name == "backplane" else "TEXT"

    @property
    def help(self) -> str:
        default = self.default
        if isinstance(default, (tuple, list)):
            shown = ",".join(map(str, default)) or "none"
        elif default is None:
            shown = "none"
        else:
            shown = str(default)
        extra = ""
        if self.is_list:
            extra = "comma-separated" + ("; an empty item means 'no header'" if "None" in self.base else "") + "; "
        elif self.optional and not self.choices:
            extra = "'none' for None; "
        about = ABOUT.get(self.name, "")
        return f"{about}; {extra}default: {shown}" if about else f"{extra}default: {shown}"

    def convert(self, text: str) -> Any:
        """The value for the server; text that does not convert is passed
        as it is, so that the server's check names the option and it."""
        if self.optional and text.lower() == "none":
            return None
        if self.is_list:
            items = [item.strip() for item in text.split(",")]
            if "None" in self.base:
                return [item or None for item in items]
            return [item for item in items if item]
        if self.base == "int":
            with contextlib.suppress(ValueError):
                return int(text)
        elif self.base == "float":
            with contextlib.suppress(ValueError):
                return float(text)
        elif self.base == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        return text


def server_options() -> list[ServerOption]:
    """Every keyword-only option of ``Server.__init__``, in its order."""
    params = inspect.signature(Server.__init__).parameters.values()
    return [ServerOption(p) for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


# -- the command line ----------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Runs a roomcast Server or App found at module:attribute.",
        epilog="Server options given here replace the object's own settings; "
        "the defaults shown are Server's. With --workers N > 1 the workers share "
        "one port (SO_REUSEPORT) and need a backplane so that rooms span them.",
        allow_abbrev=False,
    )
    parser.add_argument("target", metavar="module:attribute", help="e.g. chat:app (attribute may be dotted)")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", default="8000", help="default: 8000")
    parser.add_argument("--workers", default="1", metavar="N", help="processes on one port; default: 1")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="default: info")
    parser.add_argument("--app-dir", default=".", help="put first on sys.path to import the module; default: .")
    parser.add_argument("--factory", action="store_true", help="the attribute is a callable returning the server")
    parser.add_argument("--worker-child", type=int, default=0, help=argparse.SUPPRESS)
    group = parser.add_argument_group("server options (Server.__init__)")
    for option in server_options():
        group.add_argument(
            option.flag, dest="opt_" + option.name, metavar=option.metavar, default=None, help=option.help
        )
    return parser


def _number(name: str, text: str, minimum: int, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {text!r}") from None
    if not minimum <= value <= maximum:
        raise UsageError(f"{name} must be an integer from {minimum} to {maximum}, not {value}")
    return value


# -- loading the app -------------------------------------------------------------


def load(target: str, app_dir: str, factory: bool) -> Server:
    """The Server or App at ``module:attribute``; UsageError for the
    mistakes a user makes (an exception raised by the module itself
    propagates: its traceback is the user's to read)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{target!r} is not module:attribute (for example chat:app)")
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"no module named {missing!r} (looked in {directory} and sys.path; see --app-dir)"
            ) from None
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        if not callable(obj):
            raise UsageError(f"{target} is not callable, and --factory calls it")
        obj = obj()
    if isinstance(obj, Server):
        return obj
    from .room import BaseRoom

    kind = type(obj).__name__
    if isinstance(obj, BaseRoom):
        hint = ": a Room is served by a Server (server.route('/path', room)); name the server"
    elif callable(obj) and not factory:
        hint = "; if it returns the server, add --factory"
    else:
        hint = ""
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    raise UsageError(f"{target} is {article} {kind}, not a roomcast.Server or roomcast.App{hint}")


def configure(server: Server, args: argparse.Namespace) -> None:
    """Applies the server options given on the command line."""
    given = {}
    for option in server_options():
        text = getattr(args, "opt_" + option.name)
        if text is not None:
            given[option.name] = option.convert(text)
    if not given:
        return
    try:
        server.set_options(**given)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        for name in given:  # the checks name the option as Python spells it
            if message.startswith(name + " "):
                message = "--" + name.replace("_", "-") + message[len(name) :]
        raise UsageError(message) from None


def prepare(args: argparse.Namespace) -> tuple[Server, str, int, int]:
    """The configured server, host, port and number of workers, or
    UsageError."""
    port = _number("--port", args.port, 0, 65535)
    workers = _number("--workers", args.workers, 1, 1024)
    server = load(args.target, args.app_dir, args.factory)
    configure(server, args)
    if workers > 1:
        if server._backplane_url is None:
            raise UsageError(
                f"--workers {workers} needs a backplane: without one each worker has its own rooms, "
                "so members on different workers would not see each other. "
                "Add --backplane redis://HOST:6379/0 (or use --workers 1)"
            )
        if port == 0:
            raise UsageError(f"--workers {workers} needs a fixed --port (with 0 each worker would get its own)")
    return server, args.host, port, workers


def _set_logging(level: str, who: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s [{who}] %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _set_process_name(name: str, parent_death: bool) -> None:
    """Linux only, best effort: the name ps and top show (15 bytes), and
    SIGTERM when the supervisor dies without stopping this worker."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        if parent_death:
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _error(what: object) -> None:
    """One error line in one write: the workers share the supervisor's
    stderr, and print's separate write of the newline let two workers'
    lines run together."""
    sys.stderr.write(f"{PROG}: error: {what}\n")
    sys.stderr.flush()


def _listen_failed(exc: OSError) -> bool:
    return exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL) or "cannot listen" in str(exc)


# -- one process -----------------------------------------------------------------


def run_one(server: Server, host: str, port: int, reuse_port: bool) -> int:
    try:
        server.run(host, port, reuse_port=reuse_port)
    except OSError as exc:
        if not _listen_failed(exc):
            raise
        _error(exc.strerror or exc)
        return EXIT_WORKER_STARTUP if reuse_port else EXIT_FAILED
    return EXIT_OK


def worker_main(args: argparse.Namespace) -> int:
    index = args.worker_child
    _set_logging(args.log_level, f"worker {index} pid {os.getpid()}")
    _set_process_name(f"roomcast-w{index}", parent_death=True)
    supervisor = os.environ.get(WORKER_ENV)
    if supervisor is not None and supervisor != str(os.getppid()):
        return EXIT_FAILED  # the supervisor died before this worker started
    try:
        server, host, port, _ = prepare(args)
    except UsageError as exc:
        _error(exc)
        return EXIT_WORKER_STARTUP
    return run_one(server, host, port, reuse_port=True)


# -- the supervisor ----------------------------------------------------------------


def _worker_exited(pid: int) -> None:
    """Tells the metrics module (prometheus_client's multiprocess mode)
    that a worker is gone; nothing when there is none."""
    try:
        from . import _metrics  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    try:
        _metrics.worker_exited(pid)
    except Exception:
        logger.exception("could not mark worker pid %d dead for the metrics", pid)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


class Supervisor:
    """Starts ``count`` workers running ``command`` + ``--worker-child K``
    and keeps them running until SIGINT or SIGTERM."""

    def __init__(self, command: list[str], count: int, env: dict[str, str], stop_timeout: float) -> None:
        self.command = command
        self.count = count
        self.env = env
        self.stop_timeout = stop_timeout
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # slot -> its worker
        self.started: dict[int, float] = {}
        self.streak: dict[int, int] = dict.fromkeys(range(1, count + 1), 0)  # young deaths in a row
        self.due: dict[int, float] = {}  # slot -> when to start it again
        self.signals: list[int] = []

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _spawn(self, slot: int) -> None:
        proc = subprocess.Popen([*self.command, "--worker-child", str(slot)], env=self.env)
        self.procs[slot] = proc
        self.started[slot] = time.monotonic()
        logger.info("started worker %d (pid %d)", slot, proc.pid)

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        try:
            for slot in range(1, self.count + 1):
                self._spawn(slot)
            code = self._watch(wake_r)
            self._stop_all(wake_r)
            return code
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _wait(self, wake: socket.socket, timeout: float | None) -> None:
        select.select([wake], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while wake.recv(4096):
                pass

    def _watch(self, wake: socket.socket) -> int:
        """Until a stop signal (EXIT_OK) or a worker that cannot start
        (EXIT_FAILED)."""
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(self.due.values()) - now) if self.due else None
            if not self.signals:
                self._wait(wake, timeout)
            signals, self.signals = self.signals, []
            for signum in signals:
                if signum in (signal.SIGINT, signal.SIGTERM):
                    logger.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.procs))
                    return EXIT_OK
                if signum == signal.SIGHUP:
                    for proc in self.procs.values():
                        proc.send_signal(signal.SIGHUP)
            for slot, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.procs[slot]
                _worker_exited(proc.pid)
                if code in (EXIT_WORKER_STARTUP, EXIT_USAGE):
                    logger.error("worker %d (pid %d) could not start (its error is above); stopping", slot, proc.pid)
                    return EXIT_FAILED
                lived = time.monotonic() - self.started[slot]
                self.streak[slot] = self.streak[slot] + 1 if lived < YOUNG else 1
                delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self.streak[slot] - 1))
                logger.warning(
                    "worker %d (pid %d) exited with %s; restarting in %.1f s", slot, proc.pid, _describe(code), delay
                )
                self.due[slot] = time.monotonic() + delay
            now = time.monotonic()
            for slot, when in list(self.due.items()):
                if when <= now:
                    del self.due[slot]
                    self._spawn(slot)

    def _stop_all(self, wake: socket.socket) -> None:
        """SIGTERM to every worker, then wait; a worker still there after
        the grace time, or after a second stop signal, is killed."""
        self.due.clear()
        self.signals.clear()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        while self.procs:
            for slot, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    del self.procs[slot]
                    _worker_exited(proc.pid)
                    logger.info("worker %d (pid %d) stopped with %s", slot, proc.pid, _describe(code))
            if not self.procs:
                break
            hurry = any(s in (signal.SIGINT, signal.SIGTERM) for s in self.signals)
            self.signals.clear()
            if not killed and (hurry or time.monotonic() >= deadline):
                for proc in self.procs.values():
                    logger.warning("killing worker pid %d", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                killed = True
            self._wait(wake, 0.2)


def supervise(args: argparse.Namespace, argv: Sequence[str], server: Server, workers: int) -> int:
    _set_process_name("roomcast", parent_death=False)
    env = dict(os.environ)
    # The workers import this same roomcast, wherever it was found.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env[WORKER_ENV] = str(os.getpid())
    metrics_dir = None
    if not os.environ.get(METRICS_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="roomcast-metrics-")
        os.environ[METRICS_ENV] = env[METRICS_ENV] = metrics_dir  # the supervisor marks dead workers
    command = [sys.executable, "-m", "roomcast", *argv, "--app-dir", os.path.abspath(args.app_dir)]
    stop_timeout = float(server._options["close_timeout"]) + STOP_GRACE
    try:
        return Supervisor(command, workers, env, stop_timeout).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(METRICS_ENV, None)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``roomcast`` command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker_child:
        return worker_main(args)
    _set_logging(args.log_level, f"pid {os.getpid()}")
    try:
        server, host, port, workers = prepare(args)
    except UsageError as exc:
        _error(exc)
        return EXIT_USAGE
    if workers == 1:
        return run_one(server, host, port, reuse_port=False)
    _set_logging(args.log_level, f"supervisor pid {os.getpid()}")
    logger.info("starting %d workers on %s:%d", workers, host, port)
    return supervise(args, argv, server, workers)
