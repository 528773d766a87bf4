"""Open TCP connections with kernel keepalive on and a retry policy: `connect` (blocking)
and `connect_async` (asyncio).

Each attempt tries every address the name resolves to (IPv6 and IPv4, in the resolver's
order, as ``socket.create_connection`` does), each with its own connect timeout. Keepalive is
configured on the socket *before* it connects, so there is no window without it, and a bad
setting is refused before the first connect. Retryable failures (see
`keepalive.reconnect.is_retryable_default`) are retried per the policy; anything else
propagates at once. When retrying stops, :class:`~keepalive.ConnectFailed` carries every
attempt's cause.

Every argument is checked before the first socket is created: a bad one raises an
:class:`~keepalive.InvalidSetting` (or :class:`~keepalive.InvalidSettingType`) naming it, and
:func:`check_address` is the address check shared with the supervisors and
``keepalive.aio.open_connection``.

One dial serves everything that connects: ``connect``, ``connect_async``, ``keepalive.trio``
and the supervisors make one attempt at a time through the same ``_Dialer`` (the supervisors,
which retry per their own core, build it once and call ``attempt``, ``attempt_async`` or
``attempt_with``). A blocking attempt can be made cancellable: with ``wait=``, each connect
is non-blocking and the caller's ``wait(sock, timeout)`` waits for it, so that the blocking
supervisor's ``close()`` interrupts a connect to a black hole. The async attempt and retry
loops are written once, for any event loop: an event loop's I/O (``_LoopIO``: resolve,
connect within a timeout, clock, sleep) is all that differs between asyncio and trio.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

if TYPE_CHECKING:
    import asyncio

from keepalive._validate import check_address, flag, positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.errors import ConnectFailed, InvalidSettingType
from keepalive.platforms import current
from keepalive.reconnect import RetryPolicy, RetryState, StopReason
from keepalive.sockets import configure
from keepalive.supervision import AttemptFailure

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "AttemptFailure",
    "check_address",
    "connect",
    "connect_async",
]

#: gRPC's MIN_CONNECT_TIMEOUT: long enough for a slow handshake across the world.
DEFAULT_CONNECT_TIMEOUT = 20.0

#: The longest wait (connect timeout, backoff delay) handed to the OS: longer ones are this
#: (about 292 years; 49 days on Windows), since socket timeouts, ``Event.wait`` and
#: ``time.sleep`` raise OverflowError beyond it.
_MAX_WAIT = threading.TIMEOUT_MAX


Wait: TypeAlias = Callable[[socket.socket, float], bool]
"""``wait(sock, timeout)`` for a cancellable connect: wait until ``sock`` is writable (True)
or ``timeout`` seconds passed, or something else woke the caller (False); raise to cancel
the attempt (the socket is closed, the exception propagates)."""

_Connected_co = TypeVar("_Connected_co", covariant=True)
_Connected = TypeVar("_Connected")

#: One ``getaddrinfo`` result: (family, type, proto, canonname, sockaddr).
_AddressInfo: TypeAlias = tuple[int, int, int, str, Any]


class _LoopIO(Protocol[_Connected_co]):
    """One event loop's I/O for the shared async dial (:meth:`_Dialer.attempt_with`,
    :meth:`_Dialer.dial_with`); every rule (addresses in order, a socket per address with
    keepalive set before the SYN, the per-address timeout, what is retried) stays the
    dialer's. ``_Connected_co`` is what a connect gives: a socket for asyncio, a
    ``trio.SocketStream`` for trio."""

    def now(self) -> float:
        """The loop's clock, in seconds (for the retry policy's deadline)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a backoff delay); a cancellation propagates."""
        ...

    async def resolve(self, host: str, port: int) -> Sequence[_AddressInfo]:
        """``getaddrinfo(host, port, type=SOCK_STREAM)``; raise OSError or ValueError."""
        ...

    async def connect(
        self, sock: socket.socket, sockaddr: Any, timeout: float
    ) -> _Connected_co | None:
        """Connect the non-blocking ``sock`` to ``sockaddr``: the connected result, or None
        when ``timeout`` seconds passed first (the connect stopped). A refused connect raises
        its OSError; a cancellation propagates once the connect is stopped. The dialer
        closes ``sock`` on any failure."""
        ...


# connect_ex() results that mean "under way" (EINTR: the connect goes on in the kernel).
_IN_PROGRESS = frozenset(
    code
    for code in (
        errno.EINPROGRESS,
        errno.EWOULDBLOCK,
        errno.EAGAIN,
        errno.EALREADY,
        errno.EINTR,
        getattr(errno, "WSAEWOULDBLOCK", None),
    )
    if code is not None
)


class _AttemptError(Exception):
    """All addresses of one attempt failed; ``last`` decides whether to retry."""

    def __init__(self, failures: list[AttemptFailure]) -> None:
        super().__init__(failures[-1].error)
        self.failures = failures
        self.last = failures[-1].error


def _peer_address(sock: socket.socket) -> tuple[Any, ...] | None:
    """The connected ``sock``'s peer, as an :class:`AttemptFailure` records it (None once it
    is not connected any more)."""
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    return tuple(peer) if isinstance(peer, tuple) else None


def _resolve_error(exc: OSError | ValueError) -> OSError:
    """A failed name resolution as the OSError it is. A name that Python's IDNA codec refuses
    (an empty label, one over 63 characters, a lone surrogate) or that holds a NUL never
    reaches a resolver, and raises UnicodeError or ValueError: it is reported like a name
    that does not exist, ``socket.gaierror(EAI_NONAME)`` (not retried)."""
    if isinstance(exc, OSError):
        return exc
    error = socket.gaierror(socket.EAI_NONAME, f"not a valid host name ({exc})")
    error.__cause__ = exc
    return error


async def _sock_connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, sockaddr: Any, timeout: float
) -> bool:
    """``loop.sock_connect`` within ``timeout`` seconds: True once connected, False when the
    timeout passed first.

    Not ``asyncio.wait_for``: before Python 3.12 it loses a cancellation that arrives as the
    connect completes (it returns the result, and the task goes on as if never cancelled).
    Here a cancellation always propagates: the connect runs in its own task, and
    ``asyncio.wait`` never swallows the caller's CancelledError. Either way the connect is
    stopped (and its selector registration gone) before this returns or raises; the caller
    closes the socket.
    """
    import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

    connecting = asyncio.ensure_future(loop.sock_connect(sock, sockaddr), loop=loop)
    try:
        done, _ = await asyncio.wait({connecting}, timeout=timeout)
    except asyncio.CancelledError:  # stop the connect, whatever its state, then propagate
        await _stop(connecting)
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit: no more awaiting
        connecting.cancel()
        raise
    if not done:
        await _stop(connecting)
        return False
    connecting.result()  # the connect's OSError, if any
    return True


async def _stop(connecting: asyncio.Future[None]) -> None:
    """Cancel ``connecting`` and wait until it is over (its outcome is dropped; a
    cancellation of the caller propagates, ``connecting`` being cancelled anyway)."""
    import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

    connecting.cancel()
    await asyncio.wait({connecting})
    if not connecting.cancelled():
        connecting.exception()  # retrieved: no "exception was never retrieved" warning


class _AsyncioIO:
    """:class:`_LoopIO` for asyncio (and uvloop): a connect gives the socket itself."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

        await asyncio.sleep(seconds)

    async def resolve(self, host: str, port: int) -> Sequence[_AddressInfo]:
        return await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    async def connect(
        self, sock: socket.socket, sockaddr: Any, timeout: float
    ) -> socket.socket | None:
        return sock if await _sock_connect(self._loop, sock, sockaddr, timeout) else None


def _timeout(connect_timeout: object, retry: RetryPolicy | None) -> float:
    if connect_timeout is not None:
        seconds = positive_seconds("connect_timeout", connect_timeout)
    elif retry is not None:  # a custom policy's value is checked as strictly as ours
        seconds = positive_seconds("retry.connect_timeout", retry.connect_timeout)
    else:
        seconds = DEFAULT_CONNECT_TIMEOUT
    return min(seconds, _MAX_WAIT)


@dataclass(frozen=True, slots=True)
class _Dialer:
    """What every attempt of one connect call, or of one supervisor, shares."""

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

    def attempt(self, attempt: int, wait: Wait | None = None) -> socket.socket:
        """Attempt number ``attempt``: a connected, blocking socket, or :class:`_AttemptError`
        with a failure per address. Without ``wait`` each connect blocks (up to the
        timeout); with it each is non-blocking and ``wait`` waits for it (see :data:`Wait`)."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        except (OSError, ValueError) as exc:
            raise self.unresolved(attempt, exc) from None
        failures: list[AttemptFailure] = []
        for family, _kind, _proto, _name, sockaddr in infos:
            with self.trying(attempt, family, sockaddr, failures) as sock:
                if wait is None:
                    sock.settimeout(self.timeout)
                    sock.connect(sockaddr)
                    sock.settimeout(None)
                else:
                    self._connect_waiting(sock, sockaddr, wait)
                return sock
        raise self.failed(attempt, failures)

    async def attempt_async(self, attempt: int) -> socket.socket:
        """:meth:`attempt` for asyncio: a connected, non-blocking socket. Cancelling the
        awaiting task stops it at once (the socket is closed)."""
        import asyncio  # noqa: PLC0415 - `import keepalive` must not import asyncio

        return await self.attempt_with(_AsyncioIO(asyncio.get_running_loop()), attempt)

    async def attempt_with(self, io: _LoopIO[_Connected], attempt: int) -> _Connected:
        """:meth:`attempt` on any event loop, through its ``io``: what ``io.connect`` gives
        for the first address that connects, or :class:`_AttemptError` with a failure per
        address. Cancelling it stops it at once (the socket is closed)."""
        try:
            infos = await io.resolve(self.host, self.port)
        except (OSError, ValueError) as exc:
            raise self.unresolved(attempt, exc) from None
        failures: list[AttemptFailure] = []
        for family, _kind, _proto, _name, sockaddr in infos:
            with self.trying(attempt, family, sockaddr, failures) as sock:
                sock.setblocking(False)
                connected = await io.connect(sock, sockaddr, self.timeout)
                if connected is None:
                    raise self.timed_out()
                return connected
        raise self.failed(attempt, failures)

    async def dial_with(
        self,
        io: _LoopIO[_Connected],
        retry: RetryPolicy | None,
        rng: random.Random | None = None,
    ) -> _Connected:
        """Attempts through ``io`` per ``retry`` (one without it), with ``io.sleep`` between
        them: :func:`connect_async`'s loop on any event loop. Cancelling it stops it at once,
        during a connect or a backoff wait."""
        state = RetryState(retry, start=io.now(), rng=rng) if retry is not None else None
        failures: list[AttemptFailure] = []
        attempt = 0
        while True:
            try:
                return await self.attempt_with(io, attempt)
            except _AttemptError as exc:
                failures.extend(exc.failures)
                delay = self.next_delay(state, failures, exc.last, io.now())
            await io.sleep(delay)
            attempt += 1

    @contextlib.contextmanager
    def trying(
        self, attempt: int, family: int, sockaddr: Any, failures: list[AttemptFailure]
    ) -> Iterator[socket.socket]:
        """A new socket for one address of an attempt. A connect error closes it and is
        logged in ``failures`` (the attempt goes on with the next address); anything else
        (a cancellation, even one arriving as the connect completed) closes it and
        propagates."""
        sock = self.new_socket(family)
        try:
            yield sock
        except OSError as exc:  # TimeoutError included
            sock.close()
            failures.append(AttemptFailure(attempt, tuple(sockaddr), exc))
        except BaseException:
            sock.close()
            raise

    def _connect_waiting(self, sock: socket.socket, sockaddr: Any, wait: Wait) -> None:
        """A non-blocking connect within the timeout, waited for by ``wait``."""
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code in _IN_PROGRESS:
            deadline = time.monotonic() + self.timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self.timed_out()
                if wait(sock, remaining):
                    break
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        sock.setblocking(True)

    def timed_out(self) -> TimeoutError:
        """An address's failure when its connect took longer than the timeout."""
        return TimeoutError(errno.ETIMEDOUT, f"connect timed out after {self.timeout:g} s")

    def unresolved(self, attempt: int, exc: OSError | ValueError) -> _AttemptError:
        """The attempt's failure when name resolution failed."""
        return _AttemptError([AttemptFailure(attempt, None, _resolve_error(exc))])

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
            return min(delay, _MAX_WAIT)
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
    keepalive: object,
    retry: object,
    connect_timeout: object,
    source_address: object = None,
    strict: object = True,
    rng: object = None,
) -> _Dialer:
    """Check every argument, before any socket exists; the shared state of the attempts."""
    host, port = check_address(address)
    if keepalive is not None and not isinstance(keepalive, KeepaliveConfig):
        raise InvalidSettingType("keepalive", keepalive, "a KeepaliveConfig or None")
    cfg = keepalive if isinstance(keepalive, KeepaliveConfig) else None
    if retry is not None and (isinstance(retry, type) or not isinstance(retry, RetryPolicy)):
        raise InvalidSettingType(
            "retry", retry, "a retry policy such as keepalive.Backoff(), or None"
        )
    policy = retry if isinstance(retry, RetryPolicy) and not isinstance(retry, type) else None
    timeout = _timeout(connect_timeout, policy)
    source = (
        None
        if source_address is None
        else check_address(source_address, field="source_address", allow_port_zero=True)
    )
    strict_flag = flag("strict", strict)
    if rng is not None and not isinstance(rng, random.Random):
        raise InvalidSettingType("rng", rng, "a random.Random instance or None")
    if cfg is not None:
        # Ranges and (strict) support on this platform: refused here, not on the first socket.
        current().plan(cfg, strict=strict_flag)
    return _Dialer(host, port, timeout, cfg, strict_flag, source)


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
        rng=rng,
    )
    if cancel is not None and (
        isinstance(cancel, type) or not callable(getattr(cancel, "wait", None))
    ):
        raise InvalidSettingType("cancel", cancel, "a threading.Event (an instance) or None")
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
        rng=rng,
    )
    return await dialer.dial_with(_AsyncioIO(asyncio.get_running_loop()), retry, rng)
