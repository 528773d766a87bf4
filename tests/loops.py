"""Every asyncio test on every event loop keepalive.aio supports: asyncio's own and uvloop's.

A test opts in by using the ``event_loop_kind`` fixture (usually through
``pytestmark = pytest.mark.usefixtures("event_loop_kind")``) and running its coroutines
with :func:`run` from here instead of ``asyncio.run``. It then runs once per loop, with ids
``[asyncio]`` and ``[uvloop]``. A synchronous test in such a module is marked
``@pytest.mark.no_event_loop`` and runs once.

``KEEPALIVE_TEST_LOOPS`` (comma-separated, default ``asyncio,uvloop``) limits the loops, e.g.
``KEEPALIVE_TEST_LOOPS=asyncio`` where uvloop is tested on another Python already. Where
uvloop is not installed its tests skip, and fail when ``KEEPALIVE_REQUIRE_INTEGRATIONS=1``
(CI). Loops are made by a loop factory handed to ``asyncio.Runner`` (3.11+), never through
the event loop policy, which Python 3.14 deprecates.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from servers import unavailable

LOOPS_VARIABLE = "KEEPALIVE_TEST_LOOPS"
SUPPORTED_LOOPS = ("asyncio", "uvloop")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_chosen: str | None = None  # the loop of the running test (set by the fixture)


def selected_loops() -> list[str]:
    """The loops named by ``KEEPALIVE_TEST_LOOPS``, in the order given."""
    raw = os.environ.get(LOOPS_VARIABLE, ",".join(SUPPORTED_LOOPS))
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUPPORTED_LOOPS]
    if unknown or not names:
        raise pytest.UsageError(
            f"{LOOPS_VARIABLE}={raw!r}: expected a comma-separated list of"
            f" {', '.join(SUPPORTED_LOOPS)}"
        )
    return list(dict.fromkeys(names))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_event_loop: a synchronous test in a module whose tests run on every loop"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "event_loop_kind" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("no_event_loop") is not None:
        return
    names = selected_loops()
    metafunc.parametrize("event_loop_kind", names, indirect=True, ids=names)


@pytest.fixture
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The event loop :func:`run` uses in this test: ``"asyncio"`` or ``"uvloop"`` (None in
    a test marked ``no_event_loop``)."""
    global _chosen
    name: str | None = getattr(request, "param", None)
    if name is None:
        yield None
        return
    if name == "uvloop":
        _uvloop()  # skips, or fails in CI, before the test starts
        _warm_up_uvloop()
    _chosen = name
    try:
        yield name
    finally:
        _chosen = None


def _uvloop() -> Any:
    if sys.platform == "win32":
        pytest.skip("uvloop does not support Windows")
    try:
        import uvloop
    except ImportError as exc:
        unavailable(f"uvloop is not installed: {exc}")
    return uvloop


_uvloop_warm = False


def _warm_up_uvloop() -> None:
    """Run one uvloop loop per process before the first test on it: uvloop's first loop opens a
    pipe that lives as long as the process, which a test counting its own fds would charge to
    the code under test."""
    global _uvloop_warm
    if not _uvloop_warm:
        loop = _uvloop().new_event_loop()
        try:
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()
        _uvloop_warm = True


def current_loop() -> str:
    """The loop this test runs on; an error for a test that did not ask for one."""
    if _chosen is None:
        raise RuntimeError(
            "this test runs coroutines with loops.run() but does not use the"
            " event_loop_kind fixture: add pytest.mark.usefixtures('event_loop_kind')"
        )
    return _chosen


def on_uvloop() -> bool:
    return current_loop() == "uvloop"


def skip_on_uvloop(reason: str) -> None:
    """Skip the running test on uvloop only, for a behaviour uvloop does not have by design."""
    if on_uvloop():
        pytest.skip(f"not on uvloop: {reason}")


def loop_factory() -> LoopFactory | None:
    """The factory of this test's loop (None: asyncio's default loop)."""
    if current_loop() == "uvloop":
        factory: LoopFactory = _uvloop().new_event_loop
        return factory
    return None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)`` on this test's event loop."""
    factory = loop_factory()
    if factory is None:
        return asyncio.run(coroutine)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)
    return _run_on_3_10(coroutine, factory)


def _run_on_3_10(coroutine: Coroutine[Any, Any, T], factory: LoopFactory) -> T:
    """What asyncio.Runner(loop_factory=...) does on 3.11+ (3.10 has no Runner)."""
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coroutine)
    finally:
        try:
            tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Look at ``predicate`` every 2 ms until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.002)
