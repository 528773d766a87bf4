"""Open TCP connections with kernel keepalive on and a retry policy: `connect` (blocking)
and `connect_async` (asyncio).

Each attempt tries every address the name resolves to (IPv6 and IPv4, in the resolver's
order, as ``socket.create_connection`` does), each with its own connect timeout. Keepalive is
configured on the socket *before* it connects, so there is no window without it, and a bad
setting is refused before the first connect. Retryable failures (see
`keepalive.reconnect.is_retryable_default`) are retried per the policy; anything else
propagates at once. When retrying stops, :class:`~keepalive.ConnectFailed` carries every
attempt's cause.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keepalive._validate import positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.errors import ConnectFailed, InvalidSettingType
from keepalive.reconnect import RetryPolicy, RetryState, StopReason
from keepalive.sockets import configure

if TYPE_CHECKING:
    import random

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "AttemptFailure", "connect", "connect_async"]

#: gRPC's MIN_CONNECT_TIMEOUT: long enough for a slow handshake across the world.
DEFAULT_CONNECT_TIMEOUT = 20.0

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt: its number (0 is the first), the address tried (None when name
    resolution failed), and the error."""

    attempt: int
    address: tuple[Any, ...] | None
    error: BaseException

    def __str__(self) -> str:
        where = "resolving" if self.address is None else f"{self.address[0]} port {self.address[1]}"
        return f"attempt {self.attempt} ({where}): {self.error!r}"


class _AttemptError(Exception):
    """All addresses of one attempt failed; ``last`` decides whether to retry."""

    def __init__(self, failures: list[AttemptFailure]) -> None:
        super().__init__(failures[-1].error)
        self.failures = failures
        self.last = failures[-1].error


def _check_address(address: object) -> Address:
    if (
        not isinstance(address, tuple)
        or len(address) != 2
        or not isinstance(address[0], str)
        or isinstance(address[1], bool)
        or not isinstance(address[1], int)
    ):
        raise InvalidSettingType("address", address, "a (host: str, port: int) tuple")
    return address[0], address[1]


def _timeout(connect_timeout: float | None, retry: RetryPolicy | None) -> float:
    if connect_timeout is not None:
        return positive_seconds("connect_timeout", connect_timeout)
    return retry.connect_timeout if retry is not None else DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True)
class _Dialer:
    """What every attempt of one connect call shares."""

    host: str
    port: int
    timeout: float
    cfg: KeepaliveConfig | None
    strict: bool
    source_address: tuple[str, int] | None

    def new_socket(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self.cfg is not None:
                configure(sock, self.cfg, strict=self.strict)  # a bad setting raises here
            if self.source_address is not None:
                sock.bind(self.source_address)
        except BaseException:
            sock.close()
            raise
        return sock

    def attempt(self, attempt: int) -> socket.socket:
        try:
            infos = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            raise _AttemptError([AttemptFailure(attempt, None, exc)]) from exc
        failures: list[AttemptFailure] = []
        for family, _kind, _proto, _name, sockaddr in infos:
            sock = self.new_socket(family)
            try:
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
                sock.settimeout(None)
                return sock
            except OSError as exc:
                sock.close()
                failures.append(AttemptFailure(attempt, tuple(sockaddr), exc))
        raise self.failed(attempt, failures)

    async def attempt_async(self, attempt: int) -> socket.socket:
        import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _AttemptError([AttemptFailure(attempt, None, exc)]) from exc
        failures: list[AttemptFailure] = []
        for family, _kind, _proto, _name, sockaddr in infos:
            sock = self.new_socket(family)
            try:
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, sockaddr), self.timeout)
                return sock
            except (OSError, asyncio.TimeoutError) as exc:
                sock.close()
                error = exc if isinstance(exc, OSError) else TimeoutError("connect timed out")
                failures.append(AttemptFailure(attempt, tuple(sockaddr), error))
            except BaseException:
                sock.close()
                raise
        raise self.failed(attempt, failures)

    def failed(self, attempt: int, failures: list[AttemptFailure]) -> _AttemptError:
        if not failures:
            error = OSError(f"{self.host} resolved to no address")
            failures.append(AttemptFailure(attempt, None, error))
        return _AttemptError(failures)

    def next_delay(
        self,
        state: RetryState | None,
        failures: list[AttemptFailure],
        last: BaseException,
        now: float,
    ) -> float:
        """The wait before the next attempt, or raise what the caller must see."""
        if state is None:
            raise self.give_up(failures, "no retry", last)
        delay = state.next_delay(last, now=now)
        if delay is not None:
            return delay
        if state.stop_reason is StopReason.NOT_RETRYABLE:
            raise last
        reason = "deadline" if state.stop_reason is StopReason.DEADLINE else "exhausted"
        raise self.give_up(failures, reason, last)

    def give_up(
        self, failures: list[AttemptFailure], reason: str, last: BaseException
    ) -> ConnectFailed:
        tries = len({failure.attempt for failure in failures})
        message = (
            f"could not connect to {self.host} port {self.port} after {tries} attempt(s) "
            f"({reason}); last error: {last}"
        )
        error = ConnectFailed(message, tuple(failures), reason)
        error.__cause__ = last
        return error


def _dialer(
    address: object,
    *,
    keepalive: KeepaliveConfig | None,
    retry: RetryPolicy | None,
    connect_timeout: float | None,
    source_address: tuple[str, int] | None,
    strict: bool,
) -> _Dialer:
    host, port = _check_address(address)
    if keepalive is not None and not isinstance(keepalive, KeepaliveConfig):
        raise InvalidSettingType("keepalive", keepalive, "a KeepaliveConfig or None")
    timeout = _timeout(connect_timeout, retry)
    return _Dialer(host, port, timeout, keepalive, strict, source_address)


def connect(
    address: tuple[str, int],
    *,
    keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
    retry: RetryPolicy | None = None,
    connect_timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
    strict: bool = True,
    cancel: threading.Event | None = None,
    rng: random.Random | None = None,
) -> socket.socket:
    """A connected, blocking TCP socket with kernel keepalive configured.

    ``keepalive=None`` leaves keepalive alone. ``retry`` (e.g. ``keepalive.Backoff()``)
    retries retryable failures; without it one attempt is made. ``connect_timeout`` applies
    to each address of each attempt (default: the policy's, else 20 s). Setting ``cancel``
    from another thread ends a backoff wait at once with ``ConnectFailed(reason="cancelled")``.
    """
    dialer = _dialer(
        address,
        keepalive=keepalive,
        retry=retry,
        connect_timeout=connect_timeout,
        source_address=source_address,
        strict=strict,
    )
    state = RetryState(retry, start=time.monotonic(), rng=rng) if retry is not None else None
    failures: list[AttemptFailure] = []
    attempt = 0
    while True:
        try:
            return dialer.attempt(attempt)
        except _AttemptError as exc:
            failures.extend(exc.failures)
            delay = dialer.next_delay(state, failures, exc.last, time.monotonic())
        if cancel is not None and cancel.wait(delay):
            raise dialer.give_up(failures, "cancelled", failures[-1].error)
        if cancel is None:
            time.sleep(delay)
        attempt += 1


async def connect_async(
    address: tuple[str, int],
    *,
    keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
    retry: RetryPolicy | None = None,
    connect_timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
    strict: bool = True,
    rng: random.Random | None = None,
) -> socket.socket:
    """:func:`connect` for asyncio: a connected, non-blocking socket, ready for
    ``loop.create_connection(sock=...)`` or ``asyncio.open_connection(sock=...)``.

    Cancelling the awaiting task stops it at once, during a connect or a backoff wait.
    """
    import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

    dialer = _dialer(
        address,
        keepalive=keepalive,
        retry=retry,
        connect_timeout=connect_timeout,
        source_address=source_address,
        strict=strict,
    )
    loop = asyncio.get_running_loop()
    state = RetryState(retry, start=loop.time(), rng=rng) if retry is not None else None
    failures: list[AttemptFailure] = []
    attempt = 0
    while True:
        try:
            return await dialer.attempt_async(attempt)
        except _AttemptError as exc:
            failures.extend(exc.failures)
            delay = dialer.next_delay(state, failures, exc.last, loop.time())
        await asyncio.sleep(delay)
        attempt += 1
