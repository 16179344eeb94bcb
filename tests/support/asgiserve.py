"""uvicorn serving an ASGI app (an object or an import string such as
``"examples.microsockets_readme:app"``) on a free port inside the test's
own loop, with the websocket implementation asked for: uvicorn's own
(``PYTHON``: the App serves its sockets in Python) or roomcast's
(``CORE``: the C core serves them).
"""

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import uvicorn

PYTHON = "websockets-sansio"
CORE = "roomcast.uvicorn:WebSocketProtocol"
T = 30  # seconds for uvicorn to stop
START = 60  # seconds: starting Python on a loaded machine can be slow
REPO = Path(__file__).resolve().parents[2]


class Served:
    """``async with Served(app, ws=...) as served:`` serves ``app`` on
    ``served.port`` (``served.url`` is its ws:// URL, no path);
    ``served.stop()`` ends it (lifespan shutdown included)."""

    def __init__(self, app, ws, lifespan="on", **config):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", ws=ws, ws_per_message_deflate=False, lifespan=lifespan, **config
        )
        self.server = uvicorn.Server(config)
        self.task = None

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                await self.task
                raise AssertionError("uvicorn stopped before it started serving")
            await asyncio.sleep(0.02)
        return self

    async def stop(self):
        if self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, T)
        finally:
            self.task = None
            self.sock.close()

    async def __aexit__(self, *exc):
        await self.stop()


async def http_get(port, path, method="GET"):
    """(status, headers (lower-case names), body) of one plain HTTP/1.1
    request, read until the server closes or the body is complete."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), T)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class UvicornProcess:
    """``python -m uvicorn TARGET --port 0 --ws WS`` as its users run it:
    a subprocess (cwd the repository, or ``app_dir``) whose port is read
    from uvicorn's "Uvicorn running on" line."""

    def __init__(self, proc):
        self.proc = proc
        self.log = []
        self.port = 0

    @classmethod
    async def start(cls, target, ws, *, app_dir=None, env=None):
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        paths = [environ.get("PYTHONPATH", ""), str(REPO / "python")]
        environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        args = ["-m", "uvicorn", target, "--host", "127.0.0.1", "--port", "0", "--ws", ws]
        if app_dir is not None:
            args += ["--app-dir", str(app_dir)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=str(REPO),
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        served = cls(proc)
        match = await served.wait_for_line(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
        served.port = int(match.group(1))
        return served

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    async def wait_for_line(self, pattern):
        while True:
            line = await asyncio.wait_for(self.proc.stderr.readline(), START)
            if not line:
                raise AssertionError("uvicorn ended; its log:\n" + "".join(self.log))
            self.log.append(line.decode(errors="replace"))
            match = re.search(pattern, self.log[-1])
            if match:
                return match

    async def stop(self, sig=signal.SIGTERM):
        """Sends ``sig``; returns the exit status and the rest of stderr."""
        self.proc.send_signal(sig)
        _, err = await asyncio.wait_for(self.proc.communicate(), START)
        self.log.append(err.decode(errors="replace"))
        return self.proc.returncode

    def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()
