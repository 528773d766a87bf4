"""keepalive.connect / connect_async against real loopback servers."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import loopback_peers
import pytest

import keepalive
from keepalive.dial import AttemptFailure, _AttemptError, _Dialer, _dialer, connect, connect_async
from keepalive.errors import ConnectFailed, InvalidSetting, InvalidSettingType
from keepalive.reconnect import Backoff

FAST = Backoff(initial=0.05, multiplier=1.0, max_delay=0.05, jitter="none", max_attempts=4)


def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def server() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


def test_connects_with_keepalive_configured(server: socket.socket) -> None:
    cfg = keepalive.KeepaliveConfig(idle=30, interval=5, count=4, user_timeout=50)
    with connect(server.getsockname(), keepalive=cfg) as sock:
        state = keepalive.inspect(sock)
        assert sock.gettimeout() is None  # blocking, as socket.create_connection leaves it
    assert (state.enabled, state.idle, state.interval, state.count) == (True, 30, 5, 4)
    assert state.user_timeout == 50


def test_keepalive_none_leaves_socket_alone(server: socket.socket) -> None:
    with connect(server.getsockname(), keepalive=None) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_no_retry_gives_one_attempt_with_its_cause() -> None:
    port = _free_port()
    with pytest.raises(ConnectFailed) as info:
        connect(("127.0.0.1", port))
    assert info.value.reason == "no retry"
    assert len(info.value.attempts) == 1
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert isinstance(info.value, ConnectionError)


def test_server_that_comes_up_later_is_reached() -> None:
    port = _free_port()
    listener: list[socket.socket] = []

    def start_late() -> None:
        time.sleep(0.12)
        listener.append(socket.create_server(("127.0.0.1", port)))

    starter = threading.Thread(target=start_late)
    starter.start()
    try:
        retry = Backoff(initial=0.05, multiplier=1.0, max_delay=0.05, jitter="none")
        with connect(("127.0.0.1", port), retry=retry) as sock:
            assert sock.getpeername()[1] == port
    finally:
        starter.join()
        for item in listener:
            item.close()


def test_exhausted_error_lists_every_attempt() -> None:
    port = _free_port()
    with pytest.raises(ConnectFailed) as info:
        connect(("127.0.0.1", port), retry=FAST)
    error = info.value
    assert error.reason == "exhausted"
    assert [failure.attempt for failure in error.attempts] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    assert all(isinstance(f, AttemptFailure) for f in error.attempts)
    assert all(isinstance(f.error, ConnectionRefusedError) for f in error.attempts)  # type: ignore[attr-defined]
    assert "4 attempt(s)" in str(error)


def test_deadline_stops_retrying() -> None:
    port = _free_port()
    retry = Backoff(initial=0.1, multiplier=1.0, max_delay=0.1, jitter="none", max_elapsed=0.25)
    with pytest.raises(ConnectFailed) as info:
        connect(("127.0.0.1", port), retry=retry)
    assert info.value.reason in ("deadline", "exhausted")
    assert 2 <= len(info.value.attempts) <= 3


def test_non_retryable_error_propagates_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name that does not exist; resolved by a stand-in so no DNS query leaves the machine.
    def no_such_name(*_args: Any, **_kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    retry = Backoff(initial=5.0, max_attempts=10)
    start = time.monotonic()
    with pytest.raises(socket.gaierror):
        connect(("name.invalid", 80), retry=retry)
    assert time.monotonic() - start < 5.0


def test_every_address_is_tried(monkeypatch: pytest.MonkeyPatch, server: socket.socket) -> None:
    refused = _free_port()
    live = server.getsockname()[1]
    real = socket.getaddrinfo

    def two_addresses(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "dual.test":
            return real(host, port, *args, **kwargs)
        stream = socket.SOCK_STREAM
        return [
            (socket.AF_INET, stream, 6, "", ("127.0.0.1", refused)),
            (socket.AF_INET, stream, 6, "", ("127.0.0.1", live)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    with connect(("dual.test", 1)) as sock:
        assert sock.getpeername() == ("127.0.0.1", live)


def test_cancel_during_backoff_returns_promptly() -> None:
    port = _free_port()
    cancel = threading.Event()
    retry = Backoff(initial=30.0, max_attempts=5)
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    start = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        connect(("127.0.0.1", port), retry=retry, cancel=cancel)
    elapsed = time.monotonic() - start - 0.2
    timer.join()
    assert info.value.reason == "cancelled"
    assert elapsed < 0.1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"address": "127.0.0.1:80"}, InvalidSettingType),
        ({"address": ("127.0.0.1", True)}, InvalidSettingType),
        ({"address": ("127.0.0.1", 80), "connect_timeout": 0}, InvalidSetting),
        ({"address": ("127.0.0.1", 80), "keepalive": {"idle": 1}}, InvalidSettingType),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    address = kwargs.pop("address")
    with pytest.raises(error):
        connect(address, **kwargs)


def test_out_of_range_setting_refused_before_connecting(server: socket.socket) -> None:
    with pytest.raises(InvalidSetting, match="count"):
        connect(server.getsockname(), keepalive=keepalive.KeepaliveConfig(count=1000))


def test_async_connect_and_retry() -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            sock = await connect_async(listener.getsockname())
            assert keepalive.inspect(sock).idle == keepalive.KeepaliveConfig().idle
            assert sock.getblocking() is False
            _reader, writer = await asyncio.open_connection(sock=sock)
            writer.close()
            await writer.wait_closed()
        finally:
            listener.close()
        with pytest.raises(ConnectFailed) as info:
            await connect_async(("127.0.0.1", _free_port()), retry=FAST)
        assert len(info.value.attempts) == 4

    asyncio.run(main())


def test_async_cancel_during_backoff_is_prompt() -> None:
    async def main() -> float:
        task = asyncio.ensure_future(
            connect_async(("127.0.0.1", _free_port()), retry=Backoff(initial=30.0))
        )
        await asyncio.sleep(0.2)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.1


# ---------------------------------------------------------------------------------------------
# One dial: connect() keeps its blocking connect; the supervisors make it cancellable


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback address whose SYNs go unanswered."""
    with loopback_peers.black_hole() as address:
        yield address


def _plain_dialer(address: tuple[str, int], timeout: float) -> _Dialer:
    return _dialer(
        address,
        keepalive=keepalive.KeepaliveConfig(),
        retry=None,
        connect_timeout=timeout,
        source_address=None,
        strict=True,
        rng=None,
    )


def test_connect_times_out_as_before(black_hole: tuple[str, int]) -> None:
    """connect() still connects blocking, with the socket's own timeout."""
    start = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        connect(black_hole, connect_timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2.0
    assert info.value.reason == "no retry"
    (failure,) = info.value.attempts
    assert isinstance(failure, AttemptFailure)
    assert failure.address == black_hole
    assert isinstance(failure.error, TimeoutError)
    assert str(failure.error) == "timed out"  # the socket module's, as before


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
def test_a_waiting_dial_is_cancelled_by_its_wait(black_hole: tuple[str, int]) -> None:
    class Stop(Exception):
        pass

    waits: list[float] = []

    def wait(sock: socket.socket, timeout: float) -> bool:
        waits.append(timeout)
        if len(waits) == 3:
            raise Stop
        time.sleep(0.01)  # (woken: not ready yet)
        return False

    fds = loopback_peers.open_fds()
    with pytest.raises(Stop):
        _plain_dialer(black_hole, 30.0).attempt(0, wait=wait)
    assert len(waits) == 3
    assert all(0 < timeout <= 30.0 for timeout in waits)
    assert loopback_peers.open_fds() == fds  # the connecting socket is closed


def test_a_waiting_dial_times_out_with_etimedout(black_hole: tuple[str, int]) -> None:
    def wait(sock: socket.socket, timeout: float) -> bool:
        time.sleep(min(timeout, 0.05))
        return False

    with pytest.raises(_AttemptError) as info:
        _plain_dialer(black_hole, 0.2).attempt(3, wait=wait)
    (failure,) = info.value.failures
    assert (failure.attempt, failure.address) == (3, black_hole)
    assert isinstance(failure.error, TimeoutError)
    assert failure.error.errno == errno.ETIMEDOUT


def test_a_waiting_dial_connects_a_blocking_socket_with_keepalive(server: socket.socket) -> None:
    ready: list[bool] = []

    def wait(sock: socket.socket, timeout: float) -> bool:
        _, writable, _ = select.select([], [sock], [], timeout)
        ready.append(bool(writable))
        return bool(writable)

    with _plain_dialer(server.getsockname(), 5.0).attempt(0, wait=wait) as sock:
        assert sock.getpeername() == server.getsockname()
        assert sock.gettimeout() is None  # blocking, as connect() returns it
        assert keepalive.inspect(sock).idle == keepalive.KeepaliveConfig().idle
    assert ready in ([], [True])  # (loopback may connect at once)


def test_a_waiting_dial_reports_a_refused_address(server: socket.socket) -> None:
    port = _free_port()
    with pytest.raises(_AttemptError) as info:
        _plain_dialer(("127.0.0.1", port), 5.0).attempt(0, wait=lambda sock, timeout: True)
    (failure,) = info.value.failures
    assert isinstance(failure.error, ConnectionRefusedError)
    assert failure.address == ("127.0.0.1", port)


def test_attempt_failure_is_one_type() -> None:
    from keepalive import dial, supervision

    assert dial.AttemptFailure is supervision.AttemptFailure
    assert "AttemptFailure" in dial.__all__
