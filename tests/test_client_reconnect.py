"""Opt-in reconnection: across a restart of the roomcast server, with
exponential backoff and jitter, bounded attempts, an event that says it
reconnected, and the cases where it must not reconnect."""

import asyncio
import threading
import time

import pytest

import roomcast
from roomcast import ConnectionClosed, WebSocket
from roomcast.client._settings import Policy as _Policy
from support.clientpeers import RawServer, T, accept, close_frame, idle, read_request, wait_until
from support.polling import until
from support.wsraw import ServerThread, echo_server


def test_sync_client_reconnects_across_a_server_restart():
    events = []
    lock = threading.Lock()

    def note(*event):
        with lock:
            events.append(event)

    with ServerThread(echo_server()) as first:
        port = first.port
        ws = WebSocket(f"ws://127.0.0.1:{port}/echo", reconnect=True, min_delay=0.05, max_delay=0.2, max_attempts=None)
        ws.onopen = lambda: note("open", ws.readyState)
        ws.onmessage = lambda m: note("message", m)
        ws.onerror = lambda e: note("error", e.reason)
        ws.onclose = lambda code, reason: note("close", code, reason, ws.readyState)
        ws.onreconnect = lambda attempts: note("reconnect", attempts)
        wait_until(lambda: ("open", 1) in events)
        ws.send("before")
        wait_until(lambda: ("message", "before") in events)
    # The server stopped (1001): the client reports the close, stays
    # CONNECTING and retries while nothing listens.
    wait_until(lambda: sum(e[0] == "error" for e in events) >= 2, what="failed attempts")
    assert ("close", 1001, "going away", WebSocket.CONNECTING) in events
    assert ws.readyState == WebSocket.CONNECTING
    assert {e[1] for e in events if e[0] == "error"} == {"connection refused"}
    with ServerThread(echo_server(), port=port):
        wait_until(lambda: any(e[0] == "reconnect" for e in events), what="the reconnection")
        assert ws.readyState == WebSocket.OPEN
        ws.send("after")
        wait_until(lambda: ("message", "after") in events)
        ws.close()
        ws.wait_closed(T)
    names = [e[0] for e in events]
    (attempts,) = [e[1] for e in events if e[0] == "reconnect"]
    assert attempts == names.count("error") + 1 >= 3  # each failed try, then the one that worked
    assert names[:3] == ["open", "message", "close"]
    assert names[-4:] == ["open", "reconnect", "message", "close"]
    assert events[-1][:2] == ("close", 1000) and events[-1][3] == WebSocket.CLOSED


async def test_asyncio_client_reconnects_across_a_server_restart():
    reconnected = []
    with ServerThread(echo_server()) as first:
        port = first.port
        ws = await roomcast.connect(
            f"ws://127.0.0.1:{port}/echo",
            reconnect=True,
            min_delay=0.05,
            max_delay=0.2,
            on_reconnect=reconnected.append,
        )
        await ws.send("one")
        assert await asyncio.wait_for(ws.recv(), T) == "one"
    pending = asyncio.ensure_future(ws.recv())  # waits through the outage
    await until(lambda: ws.state == 0, what="the client to see the outage")
    # The close that began the outage has been handled (state 0) and the
    # recv() still waits. 0.5 s more is at least two failed attempts on the
    # closed port (max_delay 0.2 s): one that ended recv() would show here.
    await asyncio.sleep(0.5)
    assert ws.state == 0 and not pending.done()
    with pytest.raises(roomcast.InvalidStateError):
        await ws.send("while down")
    with ServerThread(echo_server(), port=port):
        await until(lambda: reconnected, what="the reconnection")
        assert reconnected and reconnected[0] >= 1 and ws.reconnects == 1
        await ws.send("two")
        assert await asyncio.wait_for(pending, T) == "two"
        await ws.close()
    assert ws.close_code == 1000


def test_attempts_are_bounded_and_the_last_failure_closes():
    ws = WebSocket("ws://127.0.0.1:1/", reconnect=True, min_delay=0.01, max_delay=0.02, max_attempts=3)
    errors, closes = [], []
    ws.onerror = lambda e: errors.append(e.reason)
    ws.onclose = lambda code, reason: closes.append((code, reason))
    ws.wait_closed(T)
    wait_until(lambda: closes)
    assert errors == ["connection refused"] * 4  # the first try and three more
    assert closes == [(1006, "connection refused")]
    assert ws.readyState == WebSocket.CLOSED
    with pytest.raises(ConnectionClosed):
        ws.recv(0)


def test_backoff_grows_exponentially_with_full_jitter_and_a_ceiling():
    policy = _Policy(True, 0.25, 10.0, None)
    for attempt in range(1, 12):
        ceiling = min(10.0, 0.25 * 2**attempt)
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.25 <= d <= ceiling for d in delays)
        if ceiling > 1:  # jitter: spread over the range, not one value
            assert max(delays) - min(delays) > (ceiling - 0.25) / 3
    assert policy.delay(1000) <= 10.0


@pytest.mark.parametrize("code, reconnects", [(1000, False), (1008, False), (1001, True), (4000, True)])
def test_which_server_closes_are_reconnected(code, reconnects):
    def script(sock, reader):
        try:
            accept(sock, read_request(reader))
            sock.sendall(close_frame(code, "closing"))
        except (ConnectionError, EOFError):
            # Only where reconnections go on: ws.close() below may end one
            # in the middle of its handshake.
            assert reconnects and server.connections >= 3
            return
        idle(sock)

    with RawServer(script) as server:
        ws = WebSocket(server.url, reconnect=True, min_delay=0.01, max_delay=0.02, max_attempts=2)
        if reconnects:
            wait_until(lambda: server.connections >= 3, what="reconnections")
            ws.close()
        else:
            ws.wait_closed(T)
            # A reconnection would start within max_delay (0.02 s) of the
            # close; 0.3 s is fifteen times that.
            time.sleep(0.3)
            assert server.connections == 1
            assert ws.close_code == code
        ws.wait_closed(T)


def test_close_while_waiting_to_reconnect_stops_for_good():
    # min_delay == max_delay: the next attempt is exactly 1 s after the
    # first failure, so the wait below covers it.
    ws = WebSocket("ws://127.0.0.1:1/", reconnect=True, min_delay=1.0, max_delay=1.0, max_attempts=None)
    closes = []
    ws.onclose = lambda code, reason: closes.append((code, reason))
    errors = []
    ws.onerror = lambda e: errors.append(e)
    wait_until(lambda: errors)  # the first try failed; the next is a second away
    ws.close(4000, "never mind")
    ws.wait_closed(T)
    wait_until(lambda: closes)
    # The attempt that was due 1 s after the first failure (which came
    # before the close) would have failed by now, with a second error.
    time.sleep(1.5)
    assert closes == [(4000, "never mind")] and len(errors) == 1
