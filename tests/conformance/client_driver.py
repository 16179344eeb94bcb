"""Drives one of roomcast's clients through an Autobahn fuzzing server.

Not run by hand: tests/conformance/run.py starts it (with PYTHONPATH=python)
once the tool's fuzzing server listens.

    python client_driver.py async|sync ws://HOST:PORT AGENT

The protocol is the Autobahn TestSuite's, which kosoku's fuzzing server
speaks too: ``/getCaseCount`` sends the number of cases as one text
message; ``/runCase?case=N&agent=AGENT`` runs case N (1-based) with the
client, which echoes every message it receives, text as text and binary as
binary, until the server closes; ``/updateReports?agent=AGENT`` ends the
run and has the server write its report. Every connection goes through the
client under test: ``roomcast.connect`` (asyncio) or ``roomcast.WebSocket``
(the synchronous client, its blocking ``recv``). Neither sends keepalive
pings (they would show in the case logs), and both accept the suite's
largest messages (16 MiB).

One line is printed per case. Exit status: 0 when every case was driven
(whatever the verdicts, which are the server's to give), 2 when the server
could not be reached for the case count or the report.
"""

from __future__ import annotations

import asyncio
import sys
import time

import roomcast

MAX_MESSAGE = 64 * 2**20
OPTIONS = {"ping_interval": None, "max_message_size": MAX_MESSAGE, "max_receive_queue": MAX_MESSAGE}
# A hang guard only: the slowest case of the suite takes seconds.
CASE_TIMEOUT = 300.0


# -- the asyncio client ---------------------------------------------------------


async def async_echo(url: str) -> str:
    """Echoes until the server closes; returns how the connection ended."""
    try:
        ws = await roomcast.connect(url, **OPTIONS)
    except roomcast.ConnectionFailed as failed:
        return f"did not open: {failed.reason}"
    try:
        async for message in ws:
            await ws.send(message)
    except roomcast.ConnectionClosed:
        pass  # closed between a recv and its send: the case is over
    await ws.close()
    return f"closed {ws.close_code}"


async def async_text(url: str) -> str:
    async with roomcast.connect(url, **OPTIONS) as ws:
        message = await asyncio.wait_for(ws.recv(), CASE_TIMEOUT)
    return message if isinstance(message, str) else message.decode()


async def async_ended(url: str) -> None:
    ws = await roomcast.connect(url, **OPTIONS)
    async for _ in ws:
        pass


async def run_async(base: str, agent: str) -> int:
    count = int(await async_text(f"{base}/getCaseCount"))
    print(f"{count} cases for roomcast.connect (asyncio)", flush=True)
    started = time.monotonic()
    for n in range(1, count + 1):
        url = f"{base}/runCase?case={n}&agent={agent}"
        try:
            how = await asyncio.wait_for(async_echo(url), CASE_TIMEOUT)
        except asyncio.TimeoutError:
            how = f"still open after {CASE_TIMEOUT:.0f} s"
        print(f"[{n:>3}/{count}] {how}  ({time.monotonic() - started:.0f} s)", flush=True)
    await async_ended(f"{base}/updateReports?agent={agent}")
    return 0


# -- the synchronous client -----------------------------------------------------


def sync_echo(url: str) -> str:
    ws = roomcast.WebSocket(url, **OPTIONS)
    try:
        ws.wait_open(CASE_TIMEOUT)
    except roomcast.ConnectionFailed as failed:
        return f"did not open: {failed.reason}"
    try:
        while True:
            ws.send(ws.recv(CASE_TIMEOUT))
    except roomcast.ConnectionClosed:
        pass
    except TimeoutError:
        ws.close()
        return f"still open after {CASE_TIMEOUT:.0f} s"
    ws.wait_closed(CASE_TIMEOUT)
    return f"closed {ws.close_code}"


def run_sync(base: str, agent: str) -> int:
    with roomcast.WebSocket(f"{base}/getCaseCount", **OPTIONS) as ws:
        message = ws.recv(CASE_TIMEOUT)
    count = int(message if isinstance(message, str) else message.decode())
    print(f"{count} cases for roomcast.WebSocket (synchronous)", flush=True)
    started = time.monotonic()
    for n in range(1, count + 1):
        how = sync_echo(f"{base}/runCase?case={n}&agent={agent}")
        print(f"[{n:>3}/{count}] {how}  ({time.monotonic() - started:.0f} s)", flush=True)
    ws = roomcast.WebSocket(f"{base}/updateReports?agent={agent}", **OPTIONS)
    ws.wait_closed(CASE_TIMEOUT)
    return 0


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("async", "sync"):
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    kind, base, agent = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
    try:
        if kind == "async":
            return asyncio.run(run_async(base, agent))
        return run_sync(base, agent)
    except (roomcast.ConnectionFailed, roomcast.ConnectionClosed, TimeoutError, ValueError) as exc:
        print(f"the fuzzing server could not be driven: {exc!r}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
