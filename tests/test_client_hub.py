"""The process-wide client hub (roomcast/client/_hub.py): a client whose
asyncio loop has gone is closed alone, and the hub carries on for the
other clients of the process."""

import asyncio
import threading

import roomcast
from support.clientpeers import T, WebsocketsServer, wait_until
from support.wsraw import ServerThread, echo_server


def test_a_client_whose_loop_is_closed_gets_1001_and_the_others_go_on():
    gate = threading.Event()
    codes = []

    async def handler(ws):
        from websockets.exceptions import ConnectionClosed

        await asyncio.to_thread(gate.wait, T)
        await ws.send("nobody reads this")
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            codes.append(closed.rcvd.code if closed.rcvd else None)

    with ServerThread(echo_server()) as echo, WebsocketsServer(handler) as server:
        other = roomcast.WebSocket(f"ws://127.0.0.1:{echo.port}/echo")
        other.wait_open(T)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(roomcast.connect(server.url))
        loop.close()
        gate.set()  # its next event finds the loop closed
        wait_until(lambda: codes, what="the abandoned client's close")
        assert codes == [1001]
        other.send("still served")
        assert other.recv(T) == "still served"
        other.close()
        other.wait_closed(T)
