"""The JavaScript client (/roomcast.js) in a real headless Chromium, on the
chat demo (``examples/chat.py``), driven over the DevTools Protocol.

Two tabs talk through a room; then the server is killed (SIGKILL, as a crash)
and started again on the same port. Each page must reconnect by itself, fire
``reconnected``, rejoin its room, and send what was typed while the server
was down; a message sent after the restart must reach the other tab. A second
test runs the microsockets client surface of the same script against the
demo. Chromium is required, as in test_browser_demo.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from support.browser import CHAT, POLL, REPO, START, DevTools, T, Tab, here, shows, tail

# Reconnection backs off up to 10 s between attempts: a hang guard, not a
# speed expectation.
RECONNECT = 120


class ChatProcess:
    """``python examples/chat.py`` on a given port (0: any free one)."""

    def __init__(self, log_path, port):
        env = dict(os.environ)
        # Appended: a PYTHONPATH already set (make sanitize) names the build to use.
        paths = [env.get("PYTHONPATH", ""), str(REPO / "python")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHAT), "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START
        while True:
            match = re.search(r"listening on (http://127\.0\.0\.1:(\d+)/)", log_path.read_text(errors="replace"))
            if match:
                break
            if self.proc.poll() is not None:
                pytest.fail(f"chat.py exited with {self.proc.returncode}; its log:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"chat.py logged no 'listening on' in {START} s; its log:\n{tail(log_path)}")
            time.sleep(POLL)
        self.url = match.group(1)
        self.port = int(match.group(2))

    def kill(self):
        """SIGKILL: no close frames, the kernel drops the connections."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(T)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(T)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def chat(tmp_path):
    """Starts chat.py processes (``chat(port)``) and stops them all at the end."""
    started = []

    def start(port=0):
        process = ChatProcess(tmp_path / f"chat-{len(started)}.log", port)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# Records, in the page, what its socket reports about the connection itself.
RECORD = """(() => {
  window.seen = [];
  socket.on("close", (info) => seen.push(["close", info.code, info.willReconnect]));
  socket.on("open", (info) => seen.push(["open", info.reconnected]));
  socket.on("reconnected", (attempts) => seen.push(["reconnected", attempts]));
  return socket.readyState;
})()"""


def message(room, name, text):
    return {"room": room, "name": name, "text": text}


async def test_page_reconnects_and_rejoins_its_room_after_a_restart(chromium, chat):
    server = chat()
    token = uuid.uuid4().hex[:8]
    room = f"room-{token}"
    before = message(room, "Ada", f"before the restart {token}")
    reply = message(room, "Bob", f"reply {token}")
    queued = message(room, "Ada", f"typed while the server was down {token}")
    after = message(room, "Ada", f"after the restart {token}")

    async with connect(chromium, max_size=None, open_timeout=T, close_timeout=T) as ws:
        devtools = DevTools(ws)
        try:
            a = await Tab.open(devtools, "A", server.url)
            b = await Tab.open(devtools, "B", server.url)
            for tab in (a, b):
                await tab.wait_for("its socket open, in the lobby", lambda s: "lobby" in s["rooms"])
                await tab.join(room)
            for tab in (a, b):
                await tab.wait_for(f"'2 here' in {room}", here(room, 2))
                assert await tab.evaluate(RECORD) == 1, f"tab {tab.label}'s socket is not open"

            await a.say(room, before["name"], before["text"])
            await b.wait_for("A's message", shows(before))
            await b.say(room, reply["name"], reply["text"])
            await a.wait_for("B's reply", shows(reply))

            server.kill()
            for tab in (a, b):
                await tab.wait_for(
                    "the connection lost", lambda s: s["status"].startswith(("connection lost", "reconnecting"))
                )
            # Typed while nobody listens: the client keeps it for later.
            assert await a.say(room, queued["name"], queued["text"]) == "", "tab A did not take the message"
            assert await a.evaluate("socket.readyState") == 0, "tab A's socket is not waiting to reconnect"

            server = chat(server.port)
            for tab in (a, b):
                await tab.wait_for("'connected' again", lambda s: s["status"] == "connected", RECONNECT)
            # Counts are cleared while disconnected: two here again means both
            # tabs are back in the room on the new server.
            for tab in (a, b):
                await tab.wait_for(f"'2 here' in {room} after the restart", here(room, 2))
                seen = await tab.evaluate("seen")
                assert len(seen) == 3 and seen[:2] == [["close", 1006, True], ["open", True]], (
                    f"tab {tab.label}'s socket reported {seen}"
                )
                assert seen[2][0] == "reconnected" and seen[2][1] >= 1, f"tab {tab.label}'s socket reported {seen}"
            state = await a.wait_for("its own message typed while the server was down", shows(queued))
            assert state["log"].count(queued) == 1, f"tab A's queued message came back twice: {state['log']}"
            assert any(item.get("system") == "reconnected; rooms rejoined" for item in state["log"]), state["log"]

            await a.say(room, after["name"], after["text"])
            state = await b.wait_for("A's message after the restart", shows(after))
            assert state["rooms"].keys() == {"lobby", room}, f"tab B is in other rooms: {state['rooms']}"
        finally:
            await devtools.close()


# A page written for the microsockets client, as is: MicroSocket(url), on/off,
# send(event, payload), onopen/onclose. It also meets the server's error event
# for an event with no handler.
MICROSOCKETS_PAGE = """new Promise((resolve) => {
  const socket = MicroSocket("ws://" + location.host + "/");
  const seen = [];
  const dropped = () => seen.push("a handler removed by off() ran");
  socket.on("presence", dropped);
  socket.off("presence", dropped);
  socket.on("presence", (payload, event) => seen.push([event, payload]));
  socket.on("roomcast:joined", (room, event) => seen.push([event, room]));
  socket.on("error", (payload, event) => {
    seen.push([event, payload]);
    socket.close();
  });
  socket.onopen = () => {
    socket.send("join", { room: ROOM });
    socket.send("no such event");
  };
  socket.onclose = (event) => resolve({ seen: seen, code: event.code, readyState: socket.readyState });
})"""


async def test_a_microsockets_page_runs_on_the_same_script(chromium, chat):
    server = chat()
    room = f"micro-{uuid.uuid4().hex[:8]}"
    async with connect(chromium, max_size=None, open_timeout=T, close_timeout=T) as ws:
        devtools = DevTools(ws)
        try:
            tab = await Tab.open(devtools, "M", server.url)
            await tab.wait_for("the chat page loaded", lambda s: s["status"] == "connected")
            result = await tab.evaluate(MICROSOCKETS_PAGE.replace("ROOM", json.dumps(room)), await_promise=True)
        finally:
            await devtools.close()
    assert result == {
        "seen": [
            ["roomcast:joined", room],
            ["presence", {"room": room, "count": 1}],
            ["error", {"message": "no handler for event 'no such event'", "event": "no such event"}],
        ],
        "code": 1000,
        "readyState": 3,
    }
