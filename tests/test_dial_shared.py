"""The one async dial on every event loop: ``_Dialer.attempt_with`` and ``dial_with`` hold
the attempt and retry loops; asyncio, uvloop and trio only lend their I/O (``_LoopIO``).

Each test runs on every front-end (``[asyncio]``, ``[uvloop]``, ``[trio]``) through its public
entry points (``keepalive.connect_async`` or ``keepalive.trio.open_connection``, and each
supervisor), against real loopback sockets: a bound but not listening socket refuses, a
listener with a full backlog never answers a SYN (a black hole). Names resolve through a
stand-in answering from a table, so no DNS query leaves the machine.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import loops
import pytest
import trio
from loopback_peers import black_hole

import keepalive
import keepalive.aio
import keepalive.trio
from keepalive.config import KeepaliveConfig
from keepalive.dial import (
    AttemptFailure,
    _AddressInfo,
    _AsyncioIO,
    _AttemptError,
    _Dialer,
    _dialer,
    _LoopIO,
)
from keepalive.errors import ConnectFailed
from keepalive.reconnect import Backoff
from keepalive.trio._dial import TRIO_IO

T = TypeVar("T")

#: Read back from each connected socket: proves the dialer's config reached it.
KEEPALIVE = KeepaliveConfig(idle=37, interval=7, count=3)
NAME = "multi.test"
SLACK = 1.0  # seconds a prompt stop may take on 2 cores shared by ~7 test runs


@dataclass(frozen=True)
class Dialled:
    """What a front-end's connect gave, read back before it was closed."""

    peer: tuple[Any, ...]
    keepalive_idle: float | None


@contextmanager
def refusing() -> Iterator[tuple[str, int]]:
    """A loopback address that refuses connections (bound, not listening)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        yield server.getsockname()


@contextmanager
def live() -> Iterator[tuple[str, int]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def address_infos(addresses: Sequence[tuple[str, int]]) -> list[_AddressInfo]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]


class Front(abc.ABC):
    """One event loop and the library's entry points on it."""

    name: str

    @abc.abstractmethod
    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    @abc.abstractmethod
    def resolve_locally(self, monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> None:
        """Inside a run: :data:`NAME` resolves to ``answers`` (other names as usual)."""
        raise NotImplementedError

    @abc.abstractmethod
    def io(self) -> _LoopIO[Any]:
        """Inside a run: the running loop's I/O for the shared dial."""
        raise NotImplementedError

    @abc.abstractmethod
    async def dial(self, address: tuple[str, int], **kwargs: Any) -> Dialled:
        """The front-end's public dial; the connection is read back, then closed."""
        raise NotImplementedError

    @abc.abstractmethod
    async def dial_cancelled_after(
        self, seconds: float, address: tuple[str, int], **kwargs: Any
    ) -> bool:
        """The public dial, cancelled after ``seconds``: whether the cancellation came out."""
        raise NotImplementedError

    @abc.abstractmethod
    async def supervised_peer(self, address: tuple[str, int]) -> tuple[Any, ...] | None:
        """The peer of the front-end's supervisor's first connection."""
        raise NotImplementedError

    @abc.abstractmethod
    async def close(self, connected: Any) -> None:
        """Close what ``io().connect`` gave."""
        raise NotImplementedError


class AsyncioFront(Front):
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        async def coroutine() -> T:
            return await main()

        if self.name == "asyncio":
            return asyncio.run(coroutine())
        factory = loops._uvloop().new_event_loop  # skips (fails in CI) without uvloop
        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=factory) as runner:
                return runner.run(coroutine())
        return loops._run_on_3_10(coroutine(), factory)

    def resolve_locally(self, monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != NAME:
                return await real(host, port, *args, **kwargs)
            return address_infos(answers)

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)

    def io(self) -> _LoopIO[Any]:
        return _AsyncioIO(asyncio.get_running_loop())

    async def dial(self, address: tuple[str, int], **kwargs: Any) -> Dialled:
        sock = await keepalive.connect_async(address, **kwargs)
        with sock:
            assert sock.getblocking() is False
            return Dialled(sock.getpeername(), keepalive.inspect(sock).idle)

    async def dial_cancelled_after(
        self, seconds: float, address: tuple[str, int], **kwargs: Any
    ) -> bool:
        task = asyncio.ensure_future(keepalive.connect_async(address, **kwargs))
        await asyncio.sleep(seconds)
        task.cancel()
        try:
            sock = await task
        except asyncio.CancelledError:
            return True
        sock.close()
        return False

    async def supervised_peer(self, address: tuple[str, int]) -> tuple[Any, ...] | None:
        async with keepalive.aio.Supervisor(address, keepalive=KEEPALIVE) as sup:
            conn = await sup.wait_connected(timeout=10)
        return conn.peer

    async def close(self, connected: Any) -> None:
        assert isinstance(connected, socket.socket)
        connected.close()


class _LocalResolver(trio.abc.HostnameResolver):
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any, **kwargs: Any
    ) -> list[Any]:
        if host != NAME.encode():
            return socket.getaddrinfo(host, port, *args, **kwargs)
        return address_infos(self.answers)

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


class TrioFront(Front):
    name = "trio"

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        return trio.run(main)

    def resolve_locally(self, monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> None:
        trio.socket.set_custom_hostname_resolver(_LocalResolver(answers))  # for this run only

    def io(self) -> _LoopIO[Any]:
        return TRIO_IO

    async def dial(self, address: tuple[str, int], **kwargs: Any) -> Dialled:
        stream = await keepalive.trio.open_connection(*address, **kwargs)
        try:
            sock = stream.socket
            return Dialled(sock.getpeername(), keepalive.inspect(sock).idle)
        finally:
            await stream.aclose()

    async def dial_cancelled_after(
        self, seconds: float, address: tuple[str, int], **kwargs: Any
    ) -> bool:
        with trio.move_on_after(seconds) as scope:
            stream = await keepalive.trio.open_connection(*address, **kwargs)
            await stream.aclose()
        return scope.cancelled_caught

    async def supervised_peer(self, address: tuple[str, int]) -> tuple[Any, ...] | None:
        async with keepalive.trio.Supervisor(address, keepalive=KEEPALIVE) as sup:
            conn = await sup.wait_connected(10)
        return conn.peer

    async def close(self, connected: Any) -> None:
        assert isinstance(connected, trio.SocketStream)
        await connected.aclose()


@pytest.fixture(params=[*loops.selected_loops(), "trio"])
def front(request: pytest.FixtureRequest) -> Front:
    return TrioFront() if request.param == "trio" else AsyncioFront(request.param)


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Every attempt made through the shared loop: (number, the I/O's class)."""
    calls: list[tuple[int, str]] = []
    real = _Dialer.attempt_with

    async def recording(dialer: _Dialer, io: _LoopIO[T], attempt: int) -> T:
        calls.append((attempt, type(io).__name__))
        return await real(dialer, io, attempt)

    monkeypatch.setattr(_Dialer, "attempt_with", recording)
    return calls


def failures_of(error: ConnectFailed) -> list[AttemptFailure]:
    failures = [failure for failure in error.attempts if isinstance(failure, AttemptFailure)]
    assert len(failures) == len(error.attempts)
    return failures


def io_name(front: Front) -> str:
    return "_TrioIO" if front.name == "trio" else "_AsyncioIO"


# ---------------------------------------------------------------------------------------------
# Every address, in the resolver's order


def test_first_address_refuses_the_next_connects(
    front: Front, monkeypatch: pytest.MonkeyPatch, attempts: list[tuple[int, str]]
) -> None:
    async def main() -> Dialled:
        front.resolve_locally(monkeypatch, [refused, reachable])
        return await front.dial((NAME, 1), keepalive=KEEPALIVE)

    with refusing() as refused, live() as reachable:
        dialled = front.run(main)
    assert dialled == Dialled(reachable, KEEPALIVE.idle)
    assert attempts == [(0, io_name(front))]


def test_every_failure_of_every_attempt_is_reported_in_order(
    front: Front, monkeypatch: pytest.MonkeyPatch, attempts: list[tuple[int, str]]
) -> None:
    retry = Backoff.constant(0.01, max_attempts=2)

    async def main() -> None:
        front.resolve_locally(monkeypatch, [first, second])
        await front.dial((NAME, 1), retry=retry)

    with refusing() as first, refusing() as second, pytest.raises(ConnectFailed) as caught:
        front.run(main)
    error = caught.value
    assert [(f.attempt, f.address) for f in failures_of(error)] == [
        (0, first),
        (0, second),
        (1, first),
        (1, second),
    ]
    assert all(isinstance(f.error, ConnectionRefusedError) for f in failures_of(error))
    assert error.reason == "exhausted"
    assert str(error).startswith(f"could not connect to {NAME} port 1 after 2 attempt(s) ")
    assert attempts == [(0, io_name(front)), (1, io_name(front))]


def test_a_name_resolving_to_nothing_fails_with_its_message(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        front.resolve_locally(monkeypatch, [])
        await front.dial((NAME, 1))

    with pytest.raises(ConnectFailed) as caught:
        front.run(main)
    (failure,) = failures_of(caught.value)
    assert failure.address is None
    assert str(failure.error) == f"{NAME} resolved to no address"
    assert caught.value.reason == "no retry"


# ---------------------------------------------------------------------------------------------
# The connect timeout: per address, one error on every loop


def test_each_address_has_its_own_connect_timeout(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> tuple[Dialled, float]:
        front.resolve_locally(monkeypatch, [silent, reachable])
        start = time.monotonic()
        dialled = await front.dial((NAME, 1), keepalive=KEEPALIVE, connect_timeout=0.3)
        return dialled, time.monotonic() - start

    with black_hole() as silent, live() as reachable:
        dialled, elapsed = front.run(main)
    assert dialled == Dialled(reachable, KEEPALIVE.idle)
    assert 0.28 <= elapsed < 0.3 + SLACK  # the black hole's timeout, then the live address


def test_a_connect_timeout_is_the_same_error_on_every_loop(front: Front) -> None:
    async def main() -> None:
        await front.dial(silent, connect_timeout=0.2)

    with black_hole() as silent:
        start = time.monotonic()
        with pytest.raises(ConnectFailed) as caught:
            front.run(main)
        elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 0.2 + SLACK
    (failure,) = failures_of(caught.value)
    assert failure.address == silent
    assert isinstance(failure.error, TimeoutError)
    assert failure.error.errno == errno.ETIMEDOUT
    assert failure.error.strerror == "connect timed out after 0.2 s"  # as the blocking wait's
    assert caught.value.reason == "no retry"


# ---------------------------------------------------------------------------------------------
# Cancellation: never swallowed, nothing left open


@pytest.mark.parametrize("where", ["connect", "backoff"])
def test_cancelling_stops_the_dial_at_once(front: Front, where: str) -> None:
    """Cancelled 0.2 s in, during a connect to a black hole (30 s timeout) or a backoff wait
    (30 s): the cancellation comes out at once and the socket is closed."""

    async def main(address: tuple[str, int]) -> tuple[bool, float]:
        fds = open_fds()
        start = time.monotonic()
        retry = Backoff(initial=30.0, jitter="none") if where == "backoff" else None
        propagated = await front.dial_cancelled_after(
            0.2, address, connect_timeout=30.0, retry=retry
        )
        elapsed = time.monotonic() - start
        assert open_fds() == fds, "the dial left a socket open"
        return propagated, elapsed

    with black_hole() if where == "connect" else refusing() as address:
        propagated, elapsed = front.run(lambda: main(address))
    assert propagated, "the dial swallowed the cancellation"
    assert elapsed < 0.2 + SLACK


# ---------------------------------------------------------------------------------------------
# The shared attempt itself, driven with each loop's I/O


def test_each_connect_gets_a_configured_non_blocking_socket_and_the_timeout(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keepalive is on the socket before its connect starts (read back with getsockopt),
    the socket is non-blocking, and the dialer's timeout is handed to the loop."""
    seen: list[tuple[Any, float, int, int, bool]] = []

    class Recording:
        def __init__(self, io: _LoopIO[Any]) -> None:
            self.io = io

        def now(self) -> float:
            return self.io.now()

        async def sleep(self, seconds: float) -> None:
            await self.io.sleep(seconds)

        async def resolve(self, host: str, port: int) -> Sequence[_AddressInfo]:
            return await self.io.resolve(host, port)

        async def connect(self, sock: socket.socket, sockaddr: Any, timeout: float) -> Any:
            keepalive_on = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            seen.append((sockaddr, timeout, keepalive_on, idle, sock.getblocking()))
            return await self.io.connect(sock, sockaddr, timeout)

    dialer = _dialer((NAME, 1), keepalive=KEEPALIVE, retry=None, connect_timeout=0.7, strict=True)

    async def main() -> tuple[Any, ...]:
        front.resolve_locally(monkeypatch, [refused, reachable])
        connected = await dialer.attempt_with(Recording(front.io()), 5)
        try:
            sock = connected if isinstance(connected, socket.socket) else connected.socket
            return tuple(sock.getpeername())
        finally:
            await front.close(connected)

    with refusing() as refused, live() as reachable:
        peer = front.run(main)
    assert peer == reachable
    assert seen == [
        (refused, 0.7, 1, KEEPALIVE.idle, False),
        (reachable, 0.7, 1, KEEPALIVE.idle, False),
    ]


def test_an_attempt_closes_every_socket_it_gave_up_on(
    front: Front, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialer = _dialer((NAME, 1), keepalive=KEEPALIVE, retry=None, connect_timeout=0.2)

    async def main() -> tuple[_AttemptError, int]:
        front.resolve_locally(monkeypatch, [refused, silent])
        fds = open_fds()
        with pytest.raises(_AttemptError) as caught:
            await dialer.attempt_with(front.io(), 3)
        return caught.value, open_fds() - fds

    with refusing() as refused, black_hole() as silent:
        error, leaked = front.run(main)
    assert leaked == 0
    assert [(f.attempt, f.address, type(f.error)) for f in error.failures] == [
        (3, refused, ConnectionRefusedError),
        (3, silent, TimeoutError),
    ]


# ---------------------------------------------------------------------------------------------
# The supervisors dial through it too


def test_the_supervisor_dials_through_the_shared_loop(
    front: Front, monkeypatch: pytest.MonkeyPatch, attempts: list[tuple[int, str]]
) -> None:
    async def main() -> tuple[Any, ...] | None:
        front.resolve_locally(monkeypatch, [refused, reachable])
        return await front.supervised_peer((NAME, 1))

    with refusing() as refused, live() as reachable:
        peer = front.run(main)
    assert peer == reachable
    assert attempts == [(0, io_name(front))]
