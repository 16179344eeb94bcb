"""permessage-deflate with a real browser: a page in headless Chromium
(support/browser.py, driven over the DevTools Protocol) opens a WebSocket
to a roomcast server and joins a room; the server pushes large JSON
messages, which reach the page compressed and intact.

That the page's socket negotiated deflate is read on both sides: the
handshake response headers that Chromium reports
(``Network.webSocketHandshakeResponseReceived``) and the server's counters
(``deflate_connections``, ``messages_deflated``). Chromium is required, as
in test_browser_demo.py.
"""

import asyncio
import json
import zlib

import pytest
from websockets.asyncio.client import connect

from roomcast import Room, Server
from support import deflate
from support.browser import POLL, DevTools, T, Tab
from support.deflate import RSV1, compress, ticker
from support.wsraw import OP_CLOSE, OP_TEXT

COUNT = 40

# Opens the socket from the page and keeps every message it receives.
OPEN = """new Promise((resolve, reject) => {
  window.got = [];
  window.ws = new WebSocket(URL);
  ws.onmessage = (event) => got.push(event.data);
  ws.onopen = () => resolve(ws.extensions);
  ws.onerror = () => reject(new Error("the WebSocket failed"));
})"""


class RecordingDevTools(DevTools):
    """DevTools that also keeps every event it receives."""

    def __init__(self, ws):
        self.events = []
        super().__init__(ws)

    async def read(self):
        try:
            async for raw in self.ws:
                reply = json.loads(raw)
                if "id" not in reply:
                    self.events.append(reply)
                    continue
                future = self.pending.pop(reply.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(reply)
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("DevTools connection closed"))


async def wait(predicate, what):
    deadline = asyncio.get_running_loop().time() + T
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(POLL)


def handshake_headers(events):
    """The response headers of the page's WebSocket handshakes, names
    lower-cased."""
    found = []
    for event in events:
        if event.get("method") == "Network.webSocketHandshakeResponseReceived":
            headers = event["params"]["response"]["headers"]
            found.append({k.lower(): v for k, v in headers.items()})
    return found


async def test_a_page_receives_compressed_json_pushes_intact(chromium):
    room = Room()
    server = Server(ping_interval=0)
    server.route("/room", room)
    messages = [json.loads(ticker(i, 2000 + 1500 * i)) for i in range(COUNT)]
    messages.append({"type": "short", "text": "tiny"})  # under the threshold: plain

    async with server.serve("127.0.0.1", 0) as running, connect(chromium, max_size=None, open_timeout=T) as cdp:
        devtools = RecordingDevTools(cdp)
        try:
            tab = await Tab.open(devtools, "A", "about:blank")
            await devtools.call("Network.enable", tab.session)
            url = json.dumps(f"ws://127.0.0.1:{running.port}/room")
            extensions = await tab.evaluate(OPEN.replace("URL", url), await_promise=True)
            assert extensions.startswith("permessage-deflate"), f"the page's ws.extensions is {extensions!r}"

            async def joined():
                return len(room) == 1

            await wait(joined, "the page in the room")
            for message in messages:
                await room.push_json(message)

            async def all_there():
                return await tab.evaluate("got.length") >= len(messages)

            await wait(all_there, f"{len(messages)} messages on the page")
            got = [json.loads(text) for text in await tab.evaluate("got")]
            stats = running.stats()
            headers = handshake_headers(devtools.events)
        finally:
            await devtools.close()

    assert got == messages
    assert len(headers) == 1, f"handshake responses seen: {headers}"
    answer = [p.strip() for p in headers[0].get("sec-websocket-extensions", "").split(";")]
    assert answer[0] == "permessage-deflate", headers[0]
    assert "server_no_context_takeover" in answer and "client_no_context_takeover" in answer
    assert stats["deflate_connections"] == 1
    # Every JSON push above the threshold went compressed (each compresses well).
    assert stats["messages_deflated"] == COUNT


# Joins the relay room and records what happens to the socket.
OPEN_RELAY = """new Promise((resolve, reject) => {
  window.got = [];
  window.closedWith = null;
  window.ws = new WebSocket(URL);
  ws.onmessage = (event) => got.push(event.data);
  ws.onclose = (event) => { closedWith = event.code; };
  ws.onopen = () => resolve(ws.extensions);
  ws.onerror = () => reject(new Error("the WebSocket failed"));
})"""


@pytest.mark.parametrize("after", [b"\xff\xfe\xfd", b""], ids=["junk", "no-empty-block"])
async def test_a_page_in_a_relay_room_survives_a_malformed_compressed_message(chromium, after):
    # A compressed message whose final block (BFINAL=1) is followed by
    # junk, or not by the 0x00 that RFC 7692 7.2.1 leaves (7.2.3.3): the
    # server's inflater stops at the final block; if the relay forwards
    # the sender's bytes as they came, Chromium inflates on past the final
    # block and fails the page's connection.
    room = Room(relay="all")
    server = Server(ping_interval=0)
    server.route("/relay", room)
    text = ticker(1, 3000)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bad = c.compress(text.encode()) + c.flush(zlib.Z_FINISH) + after
    after = ticker(2, 3000)

    async with server.serve("127.0.0.1", 0) as running, connect(chromium, max_size=None, open_timeout=T) as cdp:
        devtools = DevTools(cdp)
        try:
            tab = await Tab.open(devtools, "A", "about:blank")
            url = json.dumps(f"ws://127.0.0.1:{running.port}/relay")
            extensions = await tab.evaluate(OPEN_RELAY.replace("URL", url), await_promise=True)
            assert extensions.startswith("permessage-deflate"), extensions
            sender = await asyncio.to_thread(deflate.connect, running.port, "/relay")
            try:

                async def both_joined():
                    return len(room) == 2

                await wait(both_joined, "the page and the sender in the room")
                await asyncio.to_thread(sender.send_frame, OP_TEXT, bad, rsv=RSV1)
                # relay="all": the sender gets what the page gets, or is refused.
                first = await asyncio.to_thread(sender.recv_frame)
                if first.opcode == OP_CLOSE:
                    assert first.close_code == 1007, first.close_code
                    sender.close()
                    sender = await asyncio.to_thread(deflate.connect, running.port, "/relay")
                    await wait(both_joined, "the page and a new sender in the room")
                await asyncio.to_thread(sender.send_frame, OP_TEXT, compress(after.encode()), rsv=RSV1)

                async def settled():
                    return await tab.evaluate(f"got.includes({json.dumps(after)}) || closedWith !== null")

                await wait(settled, "the page to receive the message sent after, or to close")
                state = await tab.evaluate("({got: got, closed: closedWith})")
            finally:
                sender.close()
        finally:
            await devtools.close()

    # The sender may be refused (then the page sees only `after`); the
    # page itself must stay connected.
    assert state["closed"] is None, f"the page's socket was closed with {state['closed']}"
    assert state["got"] in ([text, after], [after]), state["got"][:2]
