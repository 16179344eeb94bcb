"""roomcast.compat.fastapi_pubsub: the README example of fastapi-pubsub,
in memory in one server process, and with Redis credentials across two
server processes sharing a real redis-server."""

import asyncio
import json
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roomcast import Server
from roomcast.compat.fastapi_pubsub import BasePubSubWebSocket, MemoryConnectionManager, RedisCredentials

T = 60


async def count_of(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), T))["num_connected_clients"]


async def test_readme_example_in_memory(examples):
    example = await examples("fastapi_pubsub_readme.py", "0")
    uri = f"ws://127.0.0.1:{example.port}/ws/connected_clients"
    async with connect(uri) as a:
        assert await count_of(a) == 1
        async with connect(uri) as b:
            assert await count_of(a) == 2
            assert await count_of(b) == 2
        assert await count_of(a) == 1  # told when b left
    assert await example.stop(signal.SIGTERM) == 0


async def subscribers(redis_server, n):
    """Waits until n servers have subscribed the channel: from then on a
    push from any server reaches their clients."""
    channel = "roomcast:|fastapi_pubsub:connected_clients"
    for _ in range(600):
        if redis_server.command("PUBSUB", "NUMSUB", channel)[1] >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {n} servers subscribed {channel}")


async def test_redis_credentials_work_across_processes(examples, redis_server):
    env = {"REDIS_URL": redis_server.url}
    one = await examples("fastapi_pubsub_readme.py", "0", env=env)
    two = await examples("fastapi_pubsub_readme.py", "0", env=env)
    path = "/ws/connected_clients"
    async with connect(f"ws://127.0.0.1:{one.port}{path}") as a:
        assert await count_of(a) == 1
        await subscribers(redis_server, 1)
        async with connect(f"ws://127.0.0.1:{two.port}{path}") as b:
            assert await count_of(b) == 2  # counted on both servers
            assert await count_of(a) == 2  # and pushed across them
            await subscribers(redis_server, 2)
            async with connect(f"ws://127.0.0.1:{one.port}{path}") as c:
                for ws in (a, b, c):
                    assert await count_of(ws) == 3
            # Read before b leaves: a count made as c leaves may already
            # miss b if b leaves at once (presence is read from Redis).
            assert await count_of(a) == 2  # c left
            assert await count_of(b) == 2
        assert await count_of(a) == 1  # b left, on the other server
    for example in (one, two):
        assert await example.stop(signal.SIGTERM) == 0


class Counting(BasePubSubWebSocket):
    async def generate_object_to_send(self):
        return sorted(type(c).__name__ for c in self.connection_manager.get(self.channel_id))


async def test_in_memory_manager_holds_the_instances_and_credentials_need_a_backplane(redis_server):
    server = Server()
    failures = []

    @server.websocket("/mem")
    async def mem(websocket):
        await Counting(websocket, "mem").run()

    @server.websocket("/redis")
    async def needs_backplane(websocket):
        creds = RedisCredentials()
        creds.port = redis_server.port  # set one by one, as the original needed
        creds.host = "127.0.0.1"
        try:
            await Counting(websocket, channel_id="r", redis_credentials=creds).run()
        except RuntimeError as exc:
            failures.append(str(exc))
            raise

    async with server.serve("127.0.0.1", 0) as running:
        async with connect(f"ws://127.0.0.1:{running.port}/mem") as a:
            assert json.loads(await asyncio.wait_for(a.recv(), T)) == ["Counting"]
            assert MemoryConnectionManager() is MemoryConnectionManager()
        with pytest.raises(InvalidStatus) as refused:  # raised before accept: 500
            await connect(f"ws://127.0.0.1:{running.port}/redis")
        assert refused.value.response.status_code == 500
    assert failures and "backplane=" in failures[0]
    assert RedisCredentials(host="h", port=1, username="u", password="p w", db=2).url == "redis://u:p%20w@h:1/2"
    with pytest.raises(TypeError):
        Counting(None)
