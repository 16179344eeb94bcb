"""The chat demo as its users see it: ``examples/chat.py`` served to two tabs
of a real headless Chromium, driven over the Chrome DevTools Protocol.

Both tabs join the lobby; tab A types a name and a message and presses Send:
both tabs must show the message and count two people in the lobby. Tab A then
joins a second room: what it says there reaches only itself. Chromium is a test
dependency (Debian package ``chromium``, installed by ``make deps``): without
it this test fails rather than skips, so a missing browser is never mistaken
for a passing demo.
"""

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from support.browser import CHAT, POLL, REPO, START, DevTools, T, Tab, here, shows, stop, tail


@pytest.fixture
def chat_server(tmp_path):
    """``python examples/chat.py --port 0``, as a user runs it; yields the
    page's URL, read from the "listening on" line of its log."""
    log_path = tmp_path / "chat.log"
    env = dict(os.environ)
    # Appended: a PYTHONPATH already set (make sanitize) names the build to use.
    paths = [env.get("PYTHONPATH", ""), str(REPO / "python")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(CHAT), "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + START
        while True:
            log_text = log_path.read_text(errors="replace")
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", log_text)
            if match:
                break
            if proc.poll() is not None:
                pytest.fail(f"chat.py exited with {proc.returncode}; its log:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"chat.py logged no 'listening on' in {START} s; its log:\n{tail(log_path)}")
            time.sleep(POLL)
        yield match.group(1)
    finally:
        stop(proc)


async def test_two_tabs_chat_through_the_page(chromium, chat_server):
    name = "Ada"
    # Markup must arrive as text, and the token tells this run's messages apart.
    token = uuid.uuid4().hex[:8]
    hello = {"room": "lobby", "name": name, "text": f"hello <b>both</b> tabs {token}"}
    aside = {"room": f"side-{token}", "name": name, "text": f"only for the side room {token}"}
    again = {"room": "lobby", "name": name, "text": f"back in the lobby {token}"}

    async with connect(chromium, max_size=None, open_timeout=T, close_timeout=T) as ws:
        devtools = DevTools(ws)
        try:
            # Each page joins the lobby by itself; presence reaches both.
            a = await Tab.open(devtools, "A", chat_server)
            await a.wait_for(
                "its socket open, in the lobby", lambda s: s["status"] == "connected" and "lobby" in s["rooms"]
            )
            b = await Tab.open(devtools, "B", chat_server)
            await b.wait_for("'2 here' in the lobby", here("lobby", 2))
            await a.wait_for("'2 here' in the lobby", here("lobby", 2))

            left_in_input = await a.say("lobby", name, hello["text"])
            assert left_in_input == "", f"tab A did not send (its input still holds {left_in_input!r})"
            await b.wait_for(f"{name}'s message", shows(hello))
            state = await a.wait_for(f"its own message from {name}", shows(hello))
            assert state["log"].count(hello) == 1, f"tab A shows the message twice: {state['log']}"

            # A second room, for tab A only: it is in both rooms at once, and
            # what it says there does not reach tab B.
            await a.join(aside["room"])
            await a.wait_for(f"itself alone in {aside['room']}", here(aside["room"], 1))
            state = await a.wait_for("the new room picked for sending", lambda s: s["to"] == aside["room"])
            assert here("lobby", 2)(state), f"tab A left the lobby on joining another room: {state['rooms']}"
            await a.say(aside["room"], name, aside["text"])
            await a.wait_for("its message in the side room", shows(aside))
            # Both messages leave tab A's socket in this order: once B shows the
            # second, it would already show the first had it been sent to B.
            await a.say("lobby", name, again["text"])
            state = await b.wait_for("the second lobby message", shows(again))
            assert aside not in state["log"], f"tab B got a message of a room it is not in: {state['log']}"
            assert aside["room"] not in state["rooms"], f"tab B lists a room it never joined: {state['rooms']}"

            # Closing a tab is leaving its rooms: the other tab counts one again.
            await b.close()
            await a.wait_for("'1 here' in the lobby after tab B closed", here("lobby", 1))
        finally:
            await devtools.close()
