"""The server's limits, each a ``Server`` option: keepalive, idle timeout,
connection limit, slow-consumer policy, origins, subprotocols, fragments.

Every test drives real sockets; the raw client (tests/support/wsraw.py) is used
where a client library would answer pings or hide close codes.
"""

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import Room, Server
from support import wsraw

# Hang guards only: nothing here measures speed.
GUARD = 30.0


def _wait_for(predicate, what):
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def _echo_works(client, text="still here"):
    client.send_text(text)
    return client.recv_text() == text


# --- keepalive ---------------------------------------------------------------


def test_unanswered_ping_closes_with_1011_after_ping_timeout():
    server = wsraw.echo_server(ping_interval=0.3, ping_timeout=0.3)
    with wsraw.ServerThread(server) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        ping = client.recv_frame()
        assert ping.opcode == wsraw.OP_PING
        # No pong: the next frame is the close.
        close = client.recv_frame()
        assert close.opcode == wsraw.OP_CLOSE
        assert close.close_code == 1011
        assert close.close_reason == "keepalive ping timeout"


def test_answered_pings_keep_a_silent_connection_open():
    server = wsraw.echo_server(ping_interval=0.2, ping_timeout=0.2)
    with wsraw.ServerThread(server) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        for _ in range(5):
            ping = client.recv_frame()
            assert ping.opcode == wsraw.OP_PING
            client.send_frame(wsraw.OP_PONG, ping.payload)
        assert _echo_works(client)


# --- idle timeout --------------------------------------------------------------


def test_idle_timeout_closes_a_client_that_sends_nothing_with_1001():
    # Pings are answered all along: they do not count as activity.
    server = wsraw.echo_server(idle_timeout=1.0, ping_interval=0.2, ping_timeout=5)
    with wsraw.ServerThread(server) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        assert _echo_works(client)
        while True:
            frame = client.recv_frame()
            if frame.opcode == wsraw.OP_PING:
                client.send_frame(wsraw.OP_PONG, frame.payload)
                continue
            break
        assert frame.opcode == wsraw.OP_CLOSE
        assert (frame.close_code, frame.close_reason) == (1001, "idle timeout")
        assert st.running.stats()["idle_closes"] == 1


def test_messages_keep_a_connection_past_its_idle_timeout():
    server = wsraw.echo_server(idle_timeout=0.6)
    with wsraw.ServerThread(server) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # four idle timeouts
            assert _echo_works(client)
            time.sleep(0.1)  # a message every 0.1 s: six per idle timeout
        assert st.running.stats()["idle_closes"] == 0


def test_idle_timeout_is_off_by_default():
    with wsraw.ServerThread(wsraw.echo_server()) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        # The sweep that closes idle connections runs every 250 ms: one
        # second of silence is four sweeps, and a default timeout of 1 s or
        # less would have closed it.
        time.sleep(1.0)
        assert _echo_works(client)
        assert st.running.stats()["idle_closes"] == 0


# --- max_connections --------------------------------------------------------------


def test_connections_past_the_limit_get_503_and_the_others_are_untouched():
    with wsraw.ServerThread(wsraw.echo_server(max_connections=3)) as st:
        clients = [wsraw.WSClient.connect(st.port, "/echo") for _ in range(3)]
        try:
            refused = wsraw.http_exchange(st.port, wsraw.handshake_request("/echo", key=wsraw.new_key()))
            assert refused.status == 503
            assert refused.header("retry-after") == "1"
            assert b"too many connections" in refused.body
            assert st.running.stats()["connections_refused"] == 1
            for i, client in enumerate(clients):
                assert _echo_works(client, f"member {i}")

            # One leaves: its place is free again.
            clients.pop().close()
            _wait_for(lambda: st.running.stats()["connections"] == 2, "the close")
            clients.append(wsraw.WSClient.connect(st.port, "/echo"))
            assert _echo_works(clients[-1])
        finally:
            for client in clients:
                client.close()


def test_a_refused_client_library_sees_503():
    async def main(port):
        async with connect(f"ws://127.0.0.1:{port}/echo") as first:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{port}/echo"):
                    pass
            assert refused.value.response.status_code == 503
            await first.send("ok")
            assert await first.recv() == "ok"

    with wsraw.ServerThread(wsraw.echo_server(max_connections=1)) as st:
        asyncio.run(main(st.port))


# --- slow consumers: the "drop" policy --------------------------------------------

QUEUE_LIMIT = 64 * 1024
ROUND = 32  # 1 KiB messages per round: half the queue limit
# The kernel buffers megabytes for the slow member before its queue fills:
# rounds go on until messages have been dropped, then a few more.
MAX_ROUNDS = 2048
EXTRA_ROUNDS = 8


def _numbered(i):
    return f"{i:08d}".ljust(1024, ".")


def test_drop_policy_keeps_a_slow_member_connected_with_the_newest_messages():
    server = Server(max_queue_bytes=QUEUE_LIMIT, slow_consumer="drop")
    room = Room()

    @room.on_receive("text")
    async def command(room, ws, msg):
        if msg == "hello":
            await ws.send_text("hello")
        elif msg.startswith("round "):
            first = int(msg[6:]) * ROUND
            for i in range(first, first + ROUND):
                await room.push_text(_numbered(i))

    server.route("/room", room)

    async def fast_member(st):
        # Reads each round before asking for the next, so its queue stays
        # short: it must get every message.
        async with connect(f"ws://127.0.0.1:{st.port}/room", max_size=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            got, extra = [], 0
            for k in range(MAX_ROUNDS):
                if st.running.stats()["messages_dropped"] > 0:
                    extra += 1
                    if extra > EXTRA_ROUNDS:
                        break
                await ws.send(f"round {k}")
                for _ in range(ROUND):
                    got.append(await ws.recv())
            return got

    with wsraw.ServerThread(server) as st:
        slow = wsraw.WSClient.connect(st.port, "/room", rcvbuf=4096)
        with slow:
            slow.send_text("hello")
            assert slow.recv_text() == "hello"
            fast = asyncio.run(fast_member(st))
            total = len(fast)
            assert fast == [_numbered(i) for i in range(total)]
            stats = st.running.stats()
            assert stats["messages_dropped"] > 0
            assert stats["slow_consumer_closes"] == 0

            # The slow member is still connected; what it gets is in order,
            # has gaps, and ends with the newest message.
            numbers = []
            while not numbers or numbers[-1] != total - 1:
                numbers.append(int(slow.recv_text()[:8]))
            assert numbers == sorted(set(numbers))
            assert total - len(numbers) == stats["messages_dropped"]
            slow.send_text("hello")
            assert slow.recv_text() == "hello"


# --- origins -------------------------------------------------------------------------


async def _status_of(url, **kw):
    """101 if the handshake succeeds, else the HTTP status."""
    try:
        async with connect(url, **kw) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_origins_allowlist_refuses_others_with_403():
    async def main(port):
        url = f"ws://127.0.0.1:{port}/echo"
        assert await _status_of(url, origin="https://good.example") == 101
        assert await _status_of(url, origin="https://evil.example") == 403
        assert await _status_of(url) == 403  # no Origin at all

    with wsraw.ServerThread(wsraw.echo_server(origins=["https://good.example"])) as st:
        asyncio.run(main(st.port))
        refused = wsraw.http_exchange(
            st.port,
            wsraw.handshake_request("/echo", key=wsraw.new_key(), extra_headers=[("Origin", "https://evil.example")]),
        )
        assert refused.status == 403
        assert b"origin not allowed" in refused.body
        # Two Origin headers are refused even when one is allowed.
        doubled = wsraw.http_exchange(
            st.port,
            wsraw.handshake_request(
                "/echo",
                key=wsraw.new_key(),
                extra_headers=[("Origin", "https://good.example"), ("Origin", "https://good.example")],
            ),
        )
        assert doubled.status == 403


def test_none_in_origins_admits_clients_without_origin():
    async def main(port):
        url = f"ws://127.0.0.1:{port}/echo"
        assert await _status_of(url) == 101
        assert await _status_of(url, origin="https://good.example") == 101
        assert await _status_of(url, origin="https://other.example") == 403

    with wsraw.ServerThread(wsraw.echo_server(origins=[None, "https://good.example"])) as st:
        asyncio.run(main(st.port))


# --- subprotocols ---------------------------------------------------------------------


def _subprotocol_server(**options):
    server = Server(**options)
    seen = []

    @server.websocket("/sub")
    async def endpoint(websocket):
        seen.append(websocket.subprotocols)
        await websocket.accept()
        await websocket.send_text(repr(websocket.subprotocol))
        await websocket.receive_text()

    @server.websocket("/forced")
    async def forced(websocket):
        try:
            await websocket.accept(subprotocol="not-offered")
        except ValueError as exc:
            await websocket.accept()
            await websocket.send_text(str(exc))
            await websocket.receive_text()

    return server, seen


@pytest.mark.parametrize(
    "offered, chosen",
    [
        (["chat.v1", "chat.v2"], "chat.v2"),  # the server's preference wins
        (["chat.v1"], "chat.v1"),
        (["other"], None),
        (None, None),
    ],
)
def test_subprotocol_is_chosen_by_server_preference(offered, chosen):
    server, seen = _subprotocol_server(subprotocols=["chat.v2", "chat.v1"])

    async def main(port):
        async with connect(f"ws://127.0.0.1:{port}/sub", subprotocols=offered) as ws:
            assert ws.subprotocol == chosen
            assert await ws.recv() == repr(chosen)
            await ws.send("bye")

    with wsraw.ServerThread(server) as st:
        asyncio.run(main(st.port))
    assert seen == [offered or []]


def test_accepting_a_subprotocol_the_client_did_not_offer_raises():
    server, _ = _subprotocol_server()

    async def main(port):
        async with connect(f"ws://127.0.0.1:{port}/forced", subprotocols=["a", "b"]) as ws:
            assert ws.subprotocol is None
            message = await ws.recv()
            assert "did not offer subprotocol 'not-offered'" in message
            assert "['a', 'b']" in message
            await ws.send("bye")

    with wsraw.ServerThread(server) as st:
        asyncio.run(main(st.port))


# --- fragments --------------------------------------------------------------------------


def test_a_flood_of_tiny_fragments_is_closed_with_1009_before_it_is_buffered():
    # The default 1 MiB limit allows a message in 1 MiB / 128 + 16 fragments.
    with wsraw.ServerThread(wsraw.echo_server()) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        flood = [wsraw.encode_frame(wsraw.OP_TEXT, b"x", fin=False)]
        flood += [wsraw.encode_frame(wsraw.OP_CONT, b"x", fin=False)] * 20000
        try:
            client.send_raw(b"".join(flood))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before it has read everything
        messages, close = client.recv_until_close()
        assert messages == []
        assert (close.close_code, close.close_reason) == (1009, "message in too many fragments")
        assert st.running.stats()["fragment_closes"] == 1
        with wsraw.WSClient.connect(st.port, "/echo") as other:
            assert _echo_works(other)


def test_a_message_in_many_fragments_under_the_limit_is_reassembled():
    with wsraw.ServerThread(wsraw.echo_server()) as st, wsraw.WSClient.connect(st.port, "/echo") as client:
        parts = [wsraw.encode_frame(wsraw.OP_TEXT, b"a", fin=False)]
        parts += [wsraw.encode_frame(wsraw.OP_CONT, b"b", fin=False)] * 4000
        parts.append(wsraw.encode_frame(wsraw.OP_CONT, b"c"))
        client.send_raw(b"".join(parts))
        assert client.recv_text() == "a" + "b" * 4000 + "c"


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"slow_consumer": "block"}, "slow_consumer must be 'close' or 'drop'"),
        ({"max_connections": 0}, "max_connections must be a positive integer or None, not 0"),
    ],
)
def test_bad_options_say_what_is_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        Server(**options)


def test_subprotocols_must_be_a_list_of_names():
    with pytest.raises(TypeError, match="not one string"):
        Server(subprotocols="chat")


# --- a blocked asyncio loop --------------------------------------------------------------

PENDING_LIMIT = 1 << 20
FLOOD = 400  # messages of 64 KiB: 25 MiB, far past the limit


def test_a_blocked_loop_holds_the_senders_not_the_memory():
    import threading

    server = Server(max_pending_bytes=PENDING_LIMIT, max_message_size=1 << 17)
    counts = {"flood": 0, "in_order": True}
    blocked = threading.Event()
    release = threading.Event()  # set once the core has held the flood

    @server.websocket("/ws")
    async def endpoint(websocket):
        await websocket.accept()
        async for message in websocket.iter_text():
            if message == "block":
                blocked.set()
                release.wait(GUARD)  # a handler that blocks the whole loop
                blocked.clear()
                await websocket.send_text("unblocked")
            elif message.startswith("flood "):
                counts["in_order"] &= int(message[6:14]) == counts["flood"]
                counts["flood"] += 1
                if counts["flood"] == FLOOD:
                    await websocket.send_text("flood done")
            else:
                await websocket.send_text(message)

    payload = "x" * (64 * 1024 - 20)
    with wsraw.ServerThread(server) as st:
        blocker = wsraw.WSClient.connect(st.port, "/ws")
        flooder = wsraw.WSClient.connect(st.port, "/ws")
        quiet = wsraw.WSClient.connect(st.port, "/ws")
        with blocker, flooder, quiet:
            blocker.send_text("block")
            _wait_for(blocked.is_set, "the handler to block")

            def flood():
                for i in range(FLOOD):
                    flooder.send_text(f"flood {i:08d} {payload}")

            sender = threading.Thread(target=flood, daemon=True)
            sender.start()
            peak = 0
            deadline = time.monotonic() + GUARD
            while blocked.is_set():
                stats = st.running.stats()
                peak = max(peak, stats["event_bytes"])
                if stats["reads_held"] >= 1:
                    release.set()
                assert time.monotonic() < deadline, "the core never held the flood"
                time.sleep(0.01)
            # Past the limit by at most one read per sending connection.
            assert peak <= PENDING_LIMIT + 3 * 65536 + 4096
            assert st.running.stats()["reads_held"] >= 1

            assert blocker.recv_text() == "unblocked"
            sender.join(GUARD)
            assert not sender.is_alive()
            assert flooder.recv_text() == "flood done"
            assert counts == {"flood": FLOOD, "in_order": True}
            assert _echo_works(quiet)


def test_drop_policy_never_splits_a_control_frame():
    # wslay writes a pong as two buffers, header then payload; a payload
    # whose first byte looks like a text frame header must not be taken for
    # a droppable message.
    ping = b"\xd1" + b"12345678"
    server = wsraw.echo_server(max_queue_bytes=64 * 1024, slow_consumer="drop")
    with wsraw.ServerThread(server) as st:
        client = wsraw.WSClient.connect(st.port, "/echo", rcvbuf=4096)
        with client:
            pings = 0
            for k in range(3000):
                client.send_text("x" * 2000)
                if k % 4 == 0:
                    client.send_frame(wsraw.OP_PING, ping)
                    pings += 1
            pongs = 0
            while pongs < pings:
                frame = client.recv_frame()  # raises on a malformed frame
                assert frame.opcode in (wsraw.OP_TEXT, wsraw.OP_PONG), frame
                if frame.opcode == wsraw.OP_PONG:
                    assert frame.payload == ping
                    pongs += 1
                else:
                    assert frame.payload == b"x" * 2000
            assert st.running.stats()["messages_dropped"] > 0
