"""History in Redis under load: a thousand members, so that writing to
them keeps the server busy and the core holds the room's messages from
Redis to share its members' writes (backplane_coalesced, see
csrc/loop/rc_backplane.c). What is held must still reach every member once
and in order, and a rejoin in the middle of it must recover exactly what
it missed, nothing twice. Real sockets and a real redis-server; the members
are raw sockets read once the broadcasts are over."""

import json
import resource
import threading
import time

import pytest

from support import wsraw
from support.historyapp import history_app

MEMBERS = 1000
EVENTS = 400
ROOM = "chat:load"


@pytest.fixture(autouse=True)
def enough_file_descriptors():
    # Both ends of every member live in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * MEMBERS + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def send(client, event, payload):
    client.send_text(json.dumps({"event": event, "payload": payload}))


def recv(client):
    return json.loads(client.recv_text())


def offsets_until(client, last, status_too=False):
    """The offsets of the events ``client`` gets up to ``last``, checking
    that each carries its own number; and the roomcast:position seen (with
    ``status_too``, read until it has come: when the history is read after
    the last event, the replay holds them all and the position follows
    it)."""
    offsets, status = [], None
    while not offsets or offsets[-1] < last or (status_too and status is None):
        message = recv(client)
        if message["event"] == "roomcast:position":
            status = message["payload"]
            continue
        if message["event"] == "roomcast:joined":
            continue
        assert message["event"] == "n", message
        assert message["payload"] == message["position"]["offset"] - 1
        offsets.append(message["position"]["offset"])
    return offsets, status


def test_under_load_held_messages_reach_everyone_once_in_order_and_a_rejoin_is_exact(redis_server):
    app = history_app(10_000, backplane=redis_server.url, max_queue_bytes=64 * 2**20)
    with wsraw.ServerThread(app) as server:
        members = []
        try:
            for _ in range(MEMBERS):
                members.append(wsraw.WSClient.connect(server.port, "/"))
                send(members[-1], "join", ROOM)
            epoch = None
            for member in members:
                assert recv(member) == {"event": "roomcast:joined", "payload": ROOM}
                status = recv(member)
                assert status["event"] == "roomcast:position" and status["payload"]["offset"] == 0
                epoch = status["payload"]["epoch"]

            # Broadcasts from this thread (each a script in Redis, answered
            # and published back), with a breath now and then; a client
            # rejoins from offset 50 while they go on.
            rejoined = None
            for i in range(EVENTS):
                app.broadcast("n", i, to=[ROOM])
                if i == EVENTS // 2:
                    rejoined = wsraw.WSClient.connect(server.port, "/")
                    send(rejoined, "roomcast:rejoin", [{"room": ROOM, "epoch": epoch, "offset": 50}])
                if i % 20 == 19:
                    time.sleep(0.002)

            offsets, status = offsets_until(rejoined, EVENTS, status_too=True)
            assert status is not None and status["recovered"] is True and status["epoch"] == epoch
            assert offsets == list(range(51, EVENTS + 1)), "the rejoin: a gap or a duplicate"
            rejoined.close()

            # Every member got every event once, in order: checked on a
            # tenth of them, spread over the room; the others drained.
            for k, member in enumerate(members):
                got, _ = offsets_until(member, EVENTS)
                if k % 10 == 0:
                    assert got == list(range(1, EVENTS + 1)), f"member {k}: a gap, a duplicate or a reordering"

            stats = server.running.stats()
            # Without this, the test would not have checked what it is for.
            assert stats["backplane_coalesced"] > 0, "the load did not make the core hold any message"
            assert stats["slow_consumer_closes"] == 0
        finally:
            closer = threading.Thread(target=lambda: [m.close() for m in members])
            closer.start()
            closer.join()
