"""Cancellation is never lost: :func:`keepalive.connect_async`,
:func:`keepalive.aio.open_connection` with ``retry=``, and :class:`keepalive.aio.Supervisor`.

Before Python 3.12, ``asyncio.wait_for`` returns its future's result when the awaiting task is
cancelled in the same loop iteration as that future completes, and the CancelledError is lost.
A dial built on it then went on as if never cancelled, and a supervisor closed during a
connect published a live connection while CLOSED, so ``aclose()`` waited forever. The race
is reproduced deterministically (the test cancels exactly when the connect completes, by a
wrapper around ``loop.sock_connect``) and by repetition (start/close at every point of the
first iterations). Every wait here is bounded: a lost cancellation fails, it does not hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import loops
import pytest

from keepalive import aio
from keepalive.aio.supervisor import Supervisor
from keepalive.dial import _Dialer, connect_async
from keepalive.reconnect import Backoff
from keepalive.supervision import SupervisorState

pytestmark = pytest.mark.usefixtures("event_loop_kind")  # asyncio's loop and uvloop's

BOUND = 5.0  # seconds: far more than any of these steps takes; reaching it is the failure


def run(coro: Coroutine[Any, Any, None], limit: float = 30.0) -> None:
    """Run a test's coroutine on its own loop, failing (not hanging) after ``limit`` s."""

    async def bounded() -> None:
        await asyncio.wait_for(coro, limit)

    loops.run(bounded())


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback listener that accepts nothing by itself (the kernel completes handshakes)."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=512)
    srv.setblocking(False)
    with srv:
        yield srv


def drain(srv: socket.socket) -> list[socket.socket]:
    """Accept every pending connection."""
    accepted: list[socket.socket] = []
    while True:
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            return accepted
        accepted.append(conn)


def peer_closed(conn: socket.socket) -> bool:
    """Whether the client end of an accepted connection is closed (EOF or reset)."""
    conn.settimeout(BOUND)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        conn.close()


ConnectHook = Callable[[socket.socket], None]


def cancel_when_connected(
    loop: asyncio.AbstractEventLoop, hook: ConnectHook, *, inline: bool
) -> list[socket.socket]:
    """Make ``loop.sock_connect`` call ``hook(sock)`` exactly when the connect completed:
    from a done callback of the connect's future (``inline=False``: before the task awaiting
    it resumes), or from the connecting coroutine itself, just before it returns. Returns
    the list of sockets connected so far."""
    original = loop.sock_connect
    socks: list[socket.socket] = []

    async def connect_then_hook(sock: socket.socket, address: Any) -> None:
        await original(sock, address)
        hook(sock)

    def sock_connect(sock: socket.socket, address: Any) -> Awaitable[None]:
        socks.append(sock)
        if inline:
            return connect_then_hook(sock, address)
        connecting = asyncio.ensure_future(original(sock, address))
        connecting.add_done_callback(lambda _: hook(sock))
        return connecting

    loop.sock_connect = sock_connect  # type: ignore[method-assign, assignment]
    return socks


# ---------------------------------------------------------------------------------------------
# connect_async and open_connection(retry=...)


@pytest.mark.parametrize("inline", [False, True], ids=["callback", "inline"])
def test_connect_async_cancelled_as_connect_completes(
    listener: socket.socket, inline: bool
) -> None:
    port = listener.getsockname()[1]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        victim: asyncio.Task[socket.socket] | None = None

        def cancel(_sock: socket.socket) -> None:
            assert victim is not None
            victim.cancel()

        socks = cancel_when_connected(loop, cancel, inline=inline)
        victim = asyncio.create_task(connect_async(("127.0.0.1", port)))
        await asyncio.wait({victim}, timeout=BOUND)
        assert victim.done()
        if not victim.cancelled():
            leaked = victim.result()
            leaked.close()
            pytest.fail("connect_async returned a socket although its task was cancelled")
        assert len(socks) == 1
        assert socks[0].fileno() == -1, "the socket of the completed connect was not closed"

    run(main())
    accepted = drain(listener)
    assert len(accepted) == 1
    assert peer_closed(accepted[0])


@pytest.mark.parametrize("inline", [False, True], ids=["callback", "inline"])
def test_open_connection_with_retry_cancelled_as_connect_completes(
    listener: socket.socket, inline: bool
) -> None:
    port = listener.getsockname()[1]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        victim: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None

        def cancel(_sock: socket.socket) -> None:
            assert victim is not None
            victim.cancel()

        socks = cancel_when_connected(loop, cancel, inline=inline)
        victim = asyncio.create_task(
            aio.open_connection("127.0.0.1", port, retry=Backoff.constant(0.05))
        )
        await asyncio.wait({victim}, timeout=BOUND)
        assert victim.done()
        if not victim.cancelled():
            _reader, writer = victim.result()
            writer.transport.abort()
            pytest.fail("open_connection(retry=...) returned streams although cancelled")
        assert [sock.fileno() for sock in socks] == [-1]

    run(main())
    accepted = drain(listener)
    assert len(accepted) == 1
    assert peer_closed(accepted[0])


def test_connect_async_cancel_at_every_step(listener: socket.socket) -> None:
    """Cancel after 0, 1, 2, ... loop iterations: a task whose cancel() was accepted (it was
    not done yet) must end cancelled, and never leave an open socket behind."""
    port = listener.getsockname()[1]

    async def main() -> None:
        lost = []
        for i in range(200):
            task = asyncio.create_task(connect_async(("127.0.0.1", port), keepalive=None))
            for _ in range(i % 12):
                await asyncio.sleep(0)
            accepted_cancel = task.cancel()
            await asyncio.wait({task}, timeout=BOUND)
            assert task.done(), f"cycle {i}: connect_async did not stop"
            if not task.cancelled():
                sock = task.result()
                sock.close()
                if accepted_cancel:
                    lost.append(i)
            for conn in drain(listener):
                conn.close()
        assert not lost, f"cancellation lost in cycles {lost}"

    run(main(), limit=60.0)


# ---------------------------------------------------------------------------------------------
# The supervisor


def test_supervisor_closed_as_connect_completes(listener: socket.socket) -> None:
    """close() exactly when the connect completes: aclose() returns, nothing is published,
    on_connect never runs, and the socket is closed."""
    port = listener.getsockname()[1]
    connected: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sup = Supervisor(("127.0.0.1", port), on_connect=connected.append)
        socks = cancel_when_connected(loop, lambda _sock: sup.close(), inline=False)
        sup.start()
        for _ in range(int(BOUND * 100)):
            if socks:
                break
            await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(sup.aclose())
        done, _ = await asyncio.wait({waiter}, timeout=BOUND)
        if not done:
            task = sup._task
            assert task is not None
            task.cancel()
            await asyncio.wait({task, waiter}, timeout=BOUND)
            pytest.fail(f"aclose() hung; state {sup.state}, connection {sup.connection!r}")
        assert sup.state is SupervisorState.CLOSED
        assert sup.connection is None
        assert sup.stats.connects == 0
        assert [sock.fileno() for sock in socks] == [-1]

    run(main())
    assert connected == []
    accepted = drain(listener)
    assert len(accepted) == 1
    assert peer_closed(accepted[0])


async def _aclose_bounded(sup: Supervisor) -> bool:
    """aclose() within BOUND seconds; on a hang, cancel the task (so the test can go on)
    and return False."""
    waiter = asyncio.ensure_future(sup.aclose())
    done, _ = await asyncio.wait({waiter}, timeout=BOUND)
    if done:
        waiter.result()
        return True
    task = sup._task
    if task is not None:
        task.cancel()
        await asyncio.wait({task, waiter}, timeout=BOUND)
    return False


def test_supervisor_start_aclose_cycles(listener: socket.socket) -> None:
    """200 start/aclose cycles, closing after 0..11 loop iterations (so at every step of the
    first connect): each aclose() returns promptly and leaves nothing published or open."""
    port = listener.getsockname()[1]

    async def main() -> None:
        hung = []
        for i in range(200):
            sup = Supervisor(("127.0.0.1", port))
            sup.start()
            for _ in range(i % 12):
                await asyncio.sleep(0)
            if not await _aclose_bounded(sup):
                hung.append(i)
                if len(hung) >= 2:
                    break
            assert sup.state is SupervisorState.CLOSED
            assert sup.connection is None
            for conn in drain(listener):
                assert peer_closed(conn), f"cycle {i}: a connection was left open"
        assert not hung, f"aclose() hung in cycles {hung}"

    run(main(), limit=90.0)


def test_supervisor_never_publishes_after_close_if_the_dial_swallows_it(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor itself holds: even with a dial that loses the cancellation (as
    ``asyncio.wait_for`` did before 3.12), a supervisor closed during the connect publishes
    nothing and aclose() returns."""
    port = listener.getsockname()[1]
    real = _Dialer.attempt_async

    async def main() -> None:
        entered = asyncio.Event()

        async def swallowing_dial(dialer: _Dialer, attempt: int) -> socket.socket:
            inner = asyncio.ensure_future(real(dialer, attempt))
            entered.set()
            try:
                return await asyncio.shield(inner)
            except asyncio.CancelledError:
                return await inner  # the cancellation is lost here

        monkeypatch.setattr(_Dialer, "attempt_async", swallowing_dial)
        published: list[object] = []
        sup = Supervisor(("127.0.0.1", port), on_connect=published.append)
        sup.start()
        await asyncio.wait_for(entered.wait(), BOUND)
        assert await _aclose_bounded(sup), f"aclose() hung (connection {sup.connection!r})"
        assert sup.state is SupervisorState.CLOSED
        assert sup.connection is None
        assert published == []

    run(main())
    accepted = drain(listener)
    assert len(accepted) == 1
    assert peer_closed(accepted[0])


def test_supervisor_hook_swallowing_the_cancellation_does_not_delay_close() -> None:
    """An on_backoff hook that catches the CancelledError of close() (bad manners, but it
    happens) must not leave aclose() waiting out the backoff sleep."""
    # A port that refuses: bind without listening.
    refuser = socket.socket()
    refuser.bind(("127.0.0.1", 0))
    port = refuser.getsockname()[1]

    async def main() -> None:
        entered = asyncio.Event()

        async def on_backoff(_delay: float, _error: BaseException | None) -> None:
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(BOUND)

        sup = Supervisor(("127.0.0.1", port), retry=Backoff.constant(60), on_backoff=on_backoff)
        sup.start()
        await asyncio.wait_for(entered.wait(), BOUND)
        assert await _aclose_bounded(sup), "aclose() waited for the backoff sleep"
        assert sup.state is SupervisorState.CLOSED

    try:
        run(main())
    finally:
        refuser.close()
