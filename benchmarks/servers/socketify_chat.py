"""The fan-out benchmark's ``socketify`` peer (the Python binding of
uWebSockets): one room as a uWS pub/sub topic. Every connection on /bench
subscribes to the topic "room" when it opens; every text message received
is published to that topic with ``app.publish``, which reaches every
subscriber, the sender included. uWS frames the message once per publish
and queues the same bytes to each subscriber in C.

    python socketify_chat.py PORT [deflate] [--tls CERTFILE KEYFILE]

Prints ``listening on ws://127.0.0.1:PORT/bench`` (``wss://`` with
``--tls``) on stdout once it accepts connections; stops on SIGINT or
SIGTERM. With ``--tls`` it is socketify's SSL app (``App(AppOptions(
key_file_name=..., cert_file_name=...))``: uSockets' OpenSSL, which
selects no ALPN protocol). Compression is off; with
``deflate``, uWS's shared compressor (``CompressOptions.SHARED_COMPRESSOR``:
permessage-deflate without context takeover, one compressor for all
connections; ``app.publish(..., compress=True)``, which compresses each
published message once). The idle
timeout is raised to uWS's maximum (960 s): the benchmark's clients only
listen, and uWS closes a connection that has sent nothing for that long.
uWS skips a subscriber whose unsent output exceeds ``max_backpressure``
(64 KiB, socketify's default); the load generator counts any such skip as
a lost message.
"""

import signal
import sys

from _limits import raise_open_files_limit  # beside this script
from _tls import tls_files
from socketify import App, AppListenOptions, AppOptions, CompressOptions, OpCode

TOPIC = "room"


def on_open(ws):
    ws.subscribe(TOPIC)


def main(port, compression, tls):
    app = App(AppOptions(cert_file_name=tls[0], key_file_name=tls[1]) if tls else None)
    # publish() compresses only when asked to (its compress=False default)
    compress = compression != CompressOptions.DISABLED

    def on_message(ws, message, opcode):
        if opcode == OpCode.TEXT:
            app.publish(TOPIC, message, OpCode.TEXT, compress)

    app.ws(
        "/bench",
        {
            "compression": compression,
            "idle_timeout": 960,
            "open": on_open,
            "message": on_message,
        },
    )

    def on_listen(config):
        print(f"listening on {'wss' if tls else 'ws'}://127.0.0.1:{config.port}/bench", flush=True)

    def on_stop(signum, frame):
        app.close()

    # socketify's run() handles SIGINT only.
    signal.signal(signal.SIGTERM, on_stop)
    app.listen(AppListenOptions(port=port, host="127.0.0.1"), on_listen)
    app.run()


if __name__ == "__main__":
    raise_open_files_limit()
    args, tls = tls_files(sys.argv[1:])
    deflate = args[1:] == ["deflate"]
    main(int(args[0]), CompressOptions.SHARED_COMPRESSOR if deflate else CompressOptions.DISABLED, tls)
