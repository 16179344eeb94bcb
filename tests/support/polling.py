"""Waiting for a condition inside a test's event loop.

``until`` polls instead of sleeping a fixed time: the suite runs on slow,
shared machines, so a test waits as long as it must and no longer.
"""

import asyncio

# How long `until` waits for a condition before failing: a hang guard, not a
# speed check (nothing in the suite measures time).
UNTIL_TIMEOUT = 30.0


async def until(predicate, timeout: float = UNTIL_TIMEOUT, what: str = "condition") -> None:
    """Polls ``predicate()`` on the running loop until it holds; fails
    naming ``what`` after ``timeout`` seconds. Tests import it with
    ``from support.polling import until`` (pytest puts tests/ on sys.path)
    or take the ``until`` fixture of conftest.py."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
