"""The fan-out benchmark's ``picows`` peer: one room. Every text message
received on /bench is sent to every connected client, the sender included,
with ``WSTransport.send`` on each member's transport (picows has no
broadcast helper; a set of transports is its idiom). picows frames the
message again for each member.

    python picows_chat.py PORT

Prints ``listening on ws://127.0.0.1:PORT/bench`` on stdout once it accepts
connections; stops on SIGINT or SIGTERM. picows uses ``aiofastnet`` for its
sockets when that package is installed (it is one of picows' dependencies);
that default is kept.
"""

import asyncio
import signal
import sys

from _limits import raise_open_files_limit  # beside this script
from picows import WSListener, WSMsgType, ws_create_server

MEMBERS = set()


class ChatMember(WSListener):
    def __init__(self):
        # Parts of a fragmented message; None between messages.
        self.parts = None

    def on_ws_connected(self, transport):
        MEMBERS.add(transport)

    def on_ws_disconnected(self, transport):
        MEMBERS.discard(transport)

    def on_ws_frame(self, transport, frame):
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            if frame.fin:
                broadcast(frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif kind == WSMsgType.CONTINUATION and self.parts is not None:
            self.parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                message, self.parts = b"".join(self.parts), None
                broadcast(message)
        elif kind == WSMsgType.CLOSE:
            # picows leaves the closing handshake to the listener.
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def broadcast(message):
    # A copy: a failing send may end a connection, and so change MEMBERS,
    # while the loop runs.
    for member in tuple(MEMBERS):
        member.send(WSMsgType.TEXT, message)


def route(request):
    # Any other path gets picows' 404.
    if request.path == b"/bench":
        return ChatMember()
    return None


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    server = await ws_create_server(route, "127.0.0.1", port, backlog=1024)
    async with server:
        print(f"listening on ws://127.0.0.1:{port}/bench", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1])))
