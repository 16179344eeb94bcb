"""Shared test set-up: makes the package importable from the source tree and
runs ``async def`` tests with ``asyncio.run`` (no plugin needed)."""

import asyncio
import inspect
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "python"))

# An async test that hangs fails after this many seconds instead of blocking
# the run; generous, since the machine is slow and noisy.
ASYNC_TEST_TIMEOUT = 120

# How long `until` waits for a condition before failing: a hang guard, not a
# speed check (nothing in the suite measures time).
UNTIL_TIMEOUT = 30.0


async def until(predicate, timeout: float = UNTIL_TIMEOUT, what: str = "condition") -> None:
    """Polls ``predicate()`` on the running loop until it holds; fails
    naming ``what`` after ``timeout`` seconds. Tests import it with
    ``from conftest import until`` (tests/ is on sys.path, as for wsraw)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run():
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT)

    asyncio.run(run())
    return True


@pytest.fixture
def examples():
    """``await examples(script, *args, env=None, listen_on="stderr")``
    starts an example (see tests/example_proc.py); all are killed after
    the test."""
    from example_proc import Example

    started = []

    async def start(script, *args, **kw):
        example = await Example.start(script, *args, **kw)
        started.append(example)
        return example

    yield start
    for example in started:
        example.kill()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh ``redis-server`` on a free loopback port (see
    tests/redisproc.py), stopped after the test."""
    from redisproc import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(name="until")
def until_fixture():
    """``await until(predicate, what=...)`` (see :func:`until`), for test
    files that take it as a fixture rather than importing it."""
    return until
