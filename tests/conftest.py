"""Shared test set-up: makes the package importable from the source tree and
runs ``async def`` tests with ``asyncio.run`` (no plugin needed)."""

import asyncio
import inspect
import sys
from pathlib import Path

import pytest

from support.polling import until

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "python"))

# An async test that hangs fails after this many seconds instead of blocking
# the run; generous, since the machine is slow and noisy.
ASYNC_TEST_TIMEOUT = 120


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
    starts an example (see tests/support/example_proc.py); all are killed after
    the test."""
    from support.example_proc import Example

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
    tests/support/redisproc.py), stopped after the test."""
    from support.redisproc import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(name="until")
def until_fixture():
    """``await until(predicate, what=...)`` (see support/polling.py), for test
    files that take it as a fixture rather than importing it."""
    return until


@pytest.fixture
def chromium():
    """A headless Chromium with a fresh profile (tests/support/browser.py);
    yields its browser-wide DevTools WebSocket URL."""
    from support.browser import headless_chromium

    with headless_chromium() as url:
        yield url
