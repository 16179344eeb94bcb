"""The fan-out benchmark's server under test: one roomcast room in which every
text message is pushed to all members, the sender included.

    python roomcast_chat.py PORT [REDIS_URL] [--rooms NAME,...] [--deflate] [--tls CERTFILE KEYFILE]

With REDIS_URL (the cross-server benchmark) the room is named and the
server on that Redis backplane, so that several of these processes share
the room: a push reaches this server's members at once and the others'
through Redis, which deliver it in C.

With --rooms (and REDIS_URL) the server has one such room per name, the
k-th at ``/bench/k`` (the paths of ``loadgen --rooms``), each relaying to
its own members: the names say where each room's channel lives, on a
Redis Cluster the shard of its slot.

With --deflate the server negotiates permessage-deflate
(``compression="deflate"``, messages from 128 bytes compressed, once for
every member that negotiated it); without it, ``compression=None``, so
that the uncompressed rows stay uncompressed whatever the clients offer.

With --tls the Server serves TLS (``ssl_certfile=CERTFILE,
ssl_keyfile=KEYFILE``; the core's OpenSSL, TLS 1.2 or later, ALPN
http/1.1); a roomcast without TLS exits with status 3 (the benchmark
records it as unavailable).

Prints ``listening on ws://127.0.0.1:PORT/`` (``wss://`` with --tls) on
stdout once it accepts connections; stops on SIGINT or SIGTERM.
"""

import logging
import sys

from _limits import raise_open_files_limit  # beside this script
from _tls import tls_files

from roomcast import Room, Server

argv, tls = tls_files(sys.argv[1:])
names: list[str] = []  # --rooms: the rooms at /bench/0, /bench/1, ...
if "--rooms" in argv:
    i = argv.index("--rooms")
    names, argv = argv[i + 1].split(","), argv[:i] + argv[i + 2 :]
args = [a for a in argv if a != "--deflate"]
deflate = "--deflate" in sys.argv[1:]
shared = len(args) > 1
if names and not shared:
    raise SystemExit("--rooms needs REDIS_URL")


async def relay(room, websocket, message):
    await room.push_text(message)


def chat_room(name: str | None) -> Room:
    room = Room(name=name)
    room.on_receive("text")(relay)
    return room


if __name__ == "__main__":
    raise_open_files_limit()
    # Server.run() announces its address on the "roomcast" logger: sent to
    # stdout, that line tells the benchmark runner the server is ready.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # The backplane's buffer as large as the output queues: a burst must
    # not be dropped on its way to Redis.
    backplane = dict(backplane=args[1], backplane_buffer=64 * 2**20) if shared else {}
    compression = dict(compression="deflate", compression_threshold=128) if deflate else dict(compression=None)
    certificate = dict(ssl_certfile=tls[0], ssl_keyfile=tls[1]) if tls else {}
    try:
        server = Server(max_queue_bytes=64 * 2**20, **backplane, **compression, **certificate)
    except TypeError as exc:  # a roomcast without TLS (or deflate)
        print(f"this roomcast cannot serve the benchmark's options: {exc}", file=sys.stderr)
        sys.exit(3)
    if names:
        for k, name in enumerate(names):
            server.route(f"/bench/{k}", chat_room(name))
    else:
        server.route("/bench", chat_room("bench" if shared else None))
    server.run(host="127.0.0.1", port=int(args[0]))
