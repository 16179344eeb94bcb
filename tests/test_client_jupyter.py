"""The synchronous client in a real Jupyter kernel (ipykernel, started
with jupyter_client), where an asyncio loop is already running on the
thread that runs the cells: callbacks, recv(), and the asyncio client with
a top-level await."""

import json
import os
from pathlib import Path

import pytest

from support.wsraw import ServerThread, echo_server

jupyter_client = pytest.importorskip("jupyter_client.manager")

REPO = Path(__file__).resolve().parent.parent

CELL_SYNC = """
import asyncio, json, threading, time
import roomcast
loop_running = asyncio.get_event_loop().is_running()
ws = roomcast.WebSocket(URL)
seen = []
ws.onmessage = lambda m: seen.append((m, threading.current_thread().name))
ws.wait_open(60)
ws.send("from a notebook")
deadline = time.monotonic() + 60
while not seen and time.monotonic() < deadline:
    time.sleep(0.01)
ws.close()
ws.wait_closed(60)
plain = roomcast.WebSocket(URL)
plain.wait_open(60)
plain.send(b"bytes too")
echoed = plain.recv(60)
plain.close()
print(json.dumps({"loop_running": loop_running, "seen": seen,
                  "echoed": echoed.decode(), "state": ws.readyState}))
"""

CELL_ASYNC = """
async with roomcast.connect(URL) as conn:
    await conn.send("awaited at the top level")
    reply = await conn.recv()
print(json.dumps({"reply": reply, "code": conn.close_code}))
"""


def run_cell(kc, code):
    out, errors = [], []

    def hook(msg):
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
    assert reply["content"]["status"] == "ok", "".join(errors)
    return json.loads("".join(out).strip().splitlines()[-1])


def test_clients_in_a_jupyter_kernel():
    env = dict(os.environ)
    # Appended: a PYTHONPATH already set (make sanitize) names the build.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO / "python")) if p)
    with ServerThread(echo_server()) as srv:
        km, kc = jupyter_client.start_new_kernel(kernel_name="python3", env=env, startup_timeout=120)
        try:
            kc.execute_interactive(f"URL = 'ws://127.0.0.1:{srv.port}/echo'", timeout=60)
            result = run_cell(kc, CELL_SYNC)
            assert result == {
                "loop_running": True,
                "seen": [["from a notebook", "roomcast-client"]],
                "echoed": "bytes too",
                "state": 3,
            }
            assert run_cell(kc, CELL_ASYNC) == {"reply": "awaited at the top level", "code": 1000}
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
