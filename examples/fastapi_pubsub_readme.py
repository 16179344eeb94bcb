"""The example of the fastapi-pubsub README, on roomcast.

Only the imports and the endpoint decorator differ from the README (plus the
server start at the bottom). Run: python examples/fastapi_pubsub_readme.py
[PORT] (or PORT in the environment; default 8000), then connect to
ws://127.0.0.1:PORT/ws/connected_clients: every client is told how many are
connected each time one comes or goes.

With REDIS_URL in the environment (redis://host:port/db), the channel is
shared by every server started so on that Redis, through roomcast's
backplane: the count is of the clients of all of them.
"""

import os
import sys
from urllib.parse import urlsplit

from roomcast import Server
from roomcast import ServerWebSocket as WebSocket
from roomcast.compat.fastapi_pubsub import BasePubSubWebSocket, RedisCredentials

redis_url = os.environ.get("REDIS_URL")
credentials = None
if redis_url:
    parts = urlsplit(redis_url)
    credentials = RedisCredentials(
        host=parts.hostname or "localhost", port=parts.port or 6379, db=int(parts.path.strip("/") or 0)
    )

server = Server(backplane=credentials.url if credentials else None)


class SimplePubSubWebsocket(BasePubSubWebSocket):
    async def generate_object_to_send(self):
        # any logic that you want to implement to send to connected users
        connections = self.connection_manager.get(self.channel_id)
        return {"num_connected_clients": len(connections)}


@server.websocket("/ws/connected_clients")
async def online_players_endpoint(websocket: WebSocket):
    ssw = SimplePubSubWebsocket(websocket, "connected_clients", redis_credentials=credentials)
    await ssw.run()


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8000"))
    server.run(host="127.0.0.1", port=port)
