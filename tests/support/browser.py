"""A real headless Chromium for the browser tests, driven over the Chrome
DevTools Protocol: ``headless_chromium()`` starts one with a fresh profile
(the ``chromium`` fixture of tests/conftest.py), ``DevTools`` and ``Tab``
talk to it, ``here`` and ``shows`` are conditions on a chat page's state.
"""

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHAT = REPO / "examples" / "chat.py"
T = 30  # seconds for the page to reach a state
START = 60  # seconds to start Python or Chromium on a loaded machine
POLL = 0.1


def tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def stop(proc, group=False):
    """Ends a process a browser test started (and, with group=True, the helper
    processes in its session): politely, then by force; always bounded."""

    def signal_it(sig):
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    if proc.poll() is None:
        signal_it(signal.SIGTERM)
        try:
            proc.wait(T)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while a renderer or zygote of its session lives on.
    if group or proc.poll() is None:
        signal_it(signal.SIGKILL)
    proc.wait(T)


@contextlib.contextmanager
def headless_chromium():
    """A headless Chromium with a fresh profile; yields its browser-wide
    DevTools WebSocket URL."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail(
            "chromium is not installed: this test drives the chat page in a real "
            "browser. Install it with `apt-get install chromium` (`make deps` does).",
            pytrace=False,
        )
    profile = tempfile.mkdtemp(prefix="roomcast-chromium-")
    log_path = Path(profile).with_name(Path(profile).name + ".log")
    # The browser is not under test: keep a sanitizer runtime preloaded for the
    # server (make sanitize) out of it.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "--headless=new",
                    "--no-sandbox",  # root in a container has no usable sandbox
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--mute-audio",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # one process group to end at the close
            )
        # Chromium writes "<port>\n<browser path>\n" here once it listens.
        active = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START
        while True:
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2 and lines[0].isdigit() and lines[1].startswith("/devtools/browser/"):
                break
            if proc.poll() is not None:
                pytest.fail(f"chromium exited with {proc.returncode}; its output:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"chromium wrote no DevToolsActivePort in {START} s; its output:\n{tail(log_path)}")
            time.sleep(POLL)
        yield f"ws://127.0.0.1:{lines[0]}{lines[1]}"
    finally:
        if proc is not None:
            stop(proc, group=True)
        shutil.rmtree(profile, ignore_errors=True)
        log_path.unlink(missing_ok=True)


class DevTools:
    """A minimal DevTools client on the browser-wide endpoint: commands are
    matched to replies by id; tabs are addressed by session id (flat mode)."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        try:
            async for raw in self.ws:
                reply = json.loads(raw)
                future = self.pending.pop(reply.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(reply)
                # Events (no id) are not needed: the test polls the DOM.
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("DevTools connection closed"))

    async def call(self, method, session=None, **params):
        command_id = next(self.ids)
        command = {"id": command_id, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        await self.ws.send(json.dumps(command))
        try:
            reply = await asyncio.wait_for(future, T)
        finally:
            self.pending.pop(command_id, None)
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply["result"]

    async def close(self):
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


# What a person looking at the tab sees: the status line, the rooms it is in
# with their presence counts, the room picked for sending, and the chat log.
PAGE_STATE = """(() => {
  const text = (node, selector) => {
    const found = node.querySelector(selector);
    return found ? found.textContent : null;
  };
  const status = document.getElementById("status");
  const to = document.getElementById("to");
  const rooms = {};
  for (const item of document.querySelectorAll("#rooms li")) rooms[item.dataset.room] = text(item, ".count");
  const log = Array.from(document.querySelectorAll("#log li"), (item) => {
    const room = item.dataset.room || null;
    const name = text(item, ".name");
    const prefix = (room === null ? "" : "#" + room) + (name === null ? "" : name);
    const rest = item.textContent.slice(prefix.length);
    return name === null ? { room: room, system: rest } : { room: room, name: name, text: rest };
  });
  return { url: location.href, status: status && status.textContent, rooms: rooms, to: to && to.value, log: log };
})()"""


class Tab:
    def __init__(self, devtools, label, target, session):
        self.devtools = devtools
        self.label = label
        self.target = target
        self.session = session

    @classmethod
    async def open(cls, devtools, label, url):
        target = (await devtools.call("Target.createTarget", url=url))["targetId"]
        session = (await devtools.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        return cls(devtools, label, target, session)

    async def evaluate(self, expression, await_promise=False):
        result = await self.devtools.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed in tab {self.label}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, what, accept, timeout=T):
        """Polls the page until accept(state) holds; on timeout fails showing
        what the page showed last."""
        deadline = asyncio.get_running_loop().time() + timeout
        state = None
        while True:
            try:
                state = await self.evaluate(PAGE_STATE)
            except RuntimeError as exc:
                # Between navigation and load there is briefly no document.
                state = str(exc)
            if isinstance(state, dict) and accept(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                shown = json.dumps(state, indent=2, ensure_ascii=False) if isinstance(state, dict) else state
                raise AssertionError(f"tab {self.label} never showed {what} within {timeout} s; it showed:\n{shown}")
            await asyncio.sleep(POLL)

    async def join(self, room):
        """Types a room name in the join form and presses Join."""
        await self.evaluate(
            f"""(() => {{
              document.getElementById("room").value = {json.dumps(room)};
              document.querySelector("#join-form button").click();
            }})()"""
        )

    async def say(self, room, name, text):
        """Picks the room, types a name and a message, presses Send; returns
        what is left in the message input (empty once sent)."""
        return await self.evaluate(
            f"""(() => {{
              document.getElementById("to").value = {json.dumps(room)};
              document.getElementById("name").value = {json.dumps(name)};
              const text = document.getElementById("text");
              text.value = {json.dumps(text)};
              document.querySelector("#form button").click();
              return text.value;
            }})()"""
        )

    async def close(self):
        await self.devtools.call("Target.closeTarget", targetId=self.target)


def here(room, count):
    """The tab lists ``room`` with ``count`` people in it."""
    return lambda state: state["rooms"].get(room) == f"{count} here"


def shows(message):
    return lambda state: message in state["log"]
