"""uvicorn with roomcast's WebSocket protocol (``roomcast.uvicorn``), for
tests/test_uvicorn.py: in the test's own loop (:class:`Uvicorn`, the
pattern of uvicornapp.py with any uvicorn option) or as a separate
``python -m uvicorn`` process (:class:`UvicornProcess`), for the tests
that need worker processes or a signal.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import uvicorn

REPO = Path(__file__).resolve().parent.parent.parent
APPS = REPO / "tests" / "uvicorn_apps"
ROOMCAST_WS = "roomcast.uvicorn:WebSocketProtocol"
T = 30  # seconds for uvicorn to start or stop: a hang guard


class Uvicorn:
    """An ASGI app served by uvicorn on a free port, in this loop, with the
    roomcast protocol unless ``ws=`` names another; ``options`` are
    uvicorn.Config's."""

    def __init__(self, app, *, ws=ROOMCAST_WS, sndbuf=None, **options):
        self.sock = socket.socket()
        if sndbuf is not None:  # inherited by the accepted connections
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        options.setdefault("log_level", "warning")
        # uvicorn's own logging configuration would replace the handlers of
        # its loggers, the tests' among them.
        options.setdefault("log_config", None)
        options.setdefault("ws_per_message_deflate", False)
        self.config = uvicorn.Config(app, ws=ws, **options)
        self.server = uvicorn.Server(self.config)

    @property
    def scheme(self):
        return "wss" if self.config.is_ssl else "ws"

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def connections(self):
        """uvicorn's open connections (its server_state)."""
        return self.server.server_state.connections

    def adopter(self):
        """The roomcast core serving this loop's adopted connections, or
        None before the first one."""
        import roomcast.uvicorn

        return roomcast.uvicorn._adopters.get(asyncio.get_running_loop())

    def stats(self):
        adopter = self.adopter()
        assert adopter is not None, "no connection was handed to roomcast"
        return adopter._hub.stats()

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                await self.task
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await asyncio.wait_for(self.task, T)
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornProcess:
    """``python -m uvicorn MODULE:app --ws roomcast.uvicorn:WebSocketProtocol``
    with the apps of tests/uvicorn_apps/ importable, on a free port;
    ``args`` are more uvicorn flags, ``env`` more environment."""

    def __init__(self, target, *args, env=None, log_path=None):
        self.port = free_port()
        environment = dict(os.environ)
        path = [str(REPO / "python")]
        if environment.get("PYTHONPATH"):
            path.append(environment["PYTHONPATH"])
        environment["PYTHONPATH"] = os.pathsep.join(path)
        environment.update(env or {})
        command = [sys.executable, "-m", "uvicorn", target, "--app-dir", str(APPS)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--ws", ROOMCAST_WS, *args]
        self.log_path = log_path
        self.log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, env=environment, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    def url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    async def wait_listening(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + T
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited with {self.proc.returncode}: {self.output()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise AssertionError(f"uvicorn did not listen: {self.output()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    def output(self):
        if self.log_path is None:
            return ""
        return Path(self.log_path).read_text(errors="replace")

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout=T):
        """The exit status, waited for off the loop."""
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.log_path:
            self.log.close()
