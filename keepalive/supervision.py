"""The supervised connection's core, sans I/O: its options, states, attempts, failure log,
the backoff and give-up decisions, which hook fires when, and what is logged.

Both drivers (`keepalive.sync.Supervisor`, `keepalive.aio.Supervisor`) run the same loop::

    connect (per the retry policy) -> configure kernel keepalive -> start the heartbeat
    -> on_connect(conn) -> hand the connection to the application
    -> on death: close it, on_disconnect(reason, error), on_backoff(delay, error), wait,
       reconnect

Each driver checks its arguments with :meth:`SupervisorOptions.check`, then tells a
:class:`SupervisorCore` what happened, passing the time in; the core answers with a
:class:`NextAttempt`: how long to wait before the next attempt, or that there is none (the
policy gave up, or the supervisor was closed), and :meth:`SupervisorCore.hook_calls` says
which hooks to call, in order, logging as it goes (:meth:`SupervisorCore.call_hooks` calls
them for the async drivers). The drivers keep only their I/O: dialing, TLS, ``on_connect``,
reading, waiting, cancelling, threads and tasks. The core never reads a clock, sleeps,
starts a thread or touches a socket.

Backoff across outages: a connection that stayed up for ``healthy_after`` seconds earns a
fresh start (the next outage backs off from the policy's initial delay again, and its first
reconnect is immediate); one that died sooner continues the same backoff sequence, so a
server that accepts and then drops every connection is not hammered.

The failure log (:attr:`SupervisorCore.failures`, ``ConnectFailed.attempts`` once no
connection will come) holds the current outage's failed attempts, the last 64: each
address an attempt's dial failed on, else the error that failed it after the dial (TLS,
``on_connect``, ...) with the peer's address; and, when the policy gives up after a
connection ended, that end. A connection clears it.

Logging goes to the ``keepalive.supervisor`` logger: DEBUG per attempt and on close, INFO
for connections made and failed attempts, WARNING for ended connections and failing
``on_connect`` or handlers, ERROR when giving up or when ``on_disconnect``/``on_backoff``
raise. The drivers call the core's event methods under their locks and its logging
methods outside them (a log handler may call back into the supervisor).
"""

from __future__ import annotations

import enum
import errno
import inspect
import logging
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from keepalive._validate import check_address, positive_seconds
from keepalive.errors import ConnectFailed, InvalidSettingType, PeerUnresponsive
from keepalive.reconnect import RetryPolicy, RetryState, StopReason

if TYPE_CHECKING:
    import ssl

    from keepalive.framing import PongMatcher
    from keepalive.heartbeat import HeartbeatConfig, PingSource

__all__ = [
    "AttemptFailure",
    "DisconnectReason",
    "NextAttempt",
    "SupervisorCore",
    "SupervisorOptions",
    "SupervisorState",
    "SupervisorStats",
    "classify_disconnect",
]

logger = logging.getLogger("keepalive.supervisor")
logging.getLogger("keepalive").addHandler(logging.NullHandler())

#: Attempt failures of the current outage kept for ``ConnectFailed.attempts``.
FAILURES_KEPT = 64


class SupervisorState(str, enum.Enum):
    """Where a supervised connection stands."""

    IDLE = "idle"  # created, not started
    CONNECTING = "connecting"  # an attempt is under way
    CONNECTED = "connected"  # the application has a live connection
    BACKING_OFF = "backing off"  # waiting before the next attempt
    FAILED = "failed"  # the retry policy gave up
    CLOSED = "closed"  # closed by the application

    def __str__(self) -> str:
        return self.value


class DisconnectReason(str, enum.Enum):
    """Why a live connection ended."""

    PEER_CLOSED = "peer closed"  # orderly end of stream (FIN)
    RESET = "reset"  # ECONNRESET, EPIPE, ECONNABORTED
    HEARTBEAT_TIMEOUT = "heartbeat timeout"  # PeerUnresponsive from the heartbeat
    KERNEL_TIMEOUT = "kernel timeout"  # ETIMEDOUT: keepalive probes or TCP_USER_TIMEOUT
    ERROR = "error"  # anything else (including a failing on_connect or handler)
    CLOSED = "closed"  # the application closed the supervisor

    def __str__(self) -> str:
        return self.value


_GIVE_UP_REASONS: dict[StopReason | None, str] = {
    StopReason.NOT_RETRYABLE: "not retryable",
    StopReason.EXHAUSTED: "exhausted",
    StopReason.DEADLINE: "deadline",
}

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def classify_disconnect(error: BaseException | None) -> DisconnectReason:
    """The reason for a connection's end, from the error that ended it (None: EOF).

    An error that names no reason itself (a wrapper such as trio's ``BrokenResourceError``
    around the socket's ``OSError``, or a client library's own error) is judged by the errors
    it was raised from: the chain Python's tracebacks show (``__cause__``, else
    ``__context__`` unless raised ``from None``), outermost first; the first that names a
    reason gives it, else the reason is ``ERROR``."""
    if error is None:
        return DisconnectReason.PEER_CLOSED
    seen: set[int] = set()  # a chain assigned by hand may loop
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        reason = _reason_of(link)
        if reason is not DisconnectReason.ERROR:
            return reason
        seen.add(id(link))
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return DisconnectReason.ERROR


def _reason_of(error: BaseException) -> DisconnectReason:
    """The reason ``error`` itself names (``ERROR``: none)."""
    if isinstance(error, EOFError):
        return DisconnectReason.PEER_CLOSED
    if isinstance(error, PeerUnresponsive):
        return DisconnectReason.HEARTBEAT_TIMEOUT
    if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return DisconnectReason.RESET
    if isinstance(error, TimeoutError) or (
        isinstance(error, OSError) and error.errno == errno.ETIMEDOUT
    ):
        return DisconnectReason.KERNEL_TIMEOUT
    if isinstance(error, OSError) and error.errno in _RESET_ERRNOS:
        return DisconnectReason.RESET
    return DisconnectReason.ERROR


def ended_during_on_connect(
    reason: DisconnectReason, error: BaseException | None
) -> ConnectionAbortedError:
    """The error that fails an attempt whose connection ended while ``on_connect`` ran (the
    hook returned, but there is nothing to publish), chained to the end's error."""
    failed = ConnectionAbortedError(f"the connection ended during on_connect ({reason})")
    failed.__cause__ = error
    return failed


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    """One failed attempt: its number (0 is the first), the address tried (None when name
    resolution failed or the address is unknown), and the error. Also
    ``keepalive.dial.AttemptFailure``."""

    attempt: int
    address: tuple[Any, ...] | None
    error: BaseException

    def __str__(self) -> str:
        where = "resolving" if self.address is None else f"{self.address[0]} port {self.address[1]}"
        return f"attempt {self.attempt} ({where}): {self.error!r}"


@dataclass(frozen=True, slots=True)
class SupervisorStats:
    """A snapshot for monitoring. Times are seconds; ``uptime`` is the current connection's
    (0 when not connected)."""

    state: SupervisorState
    attempts: int  # connection attempts made, all outages together
    connects: int  # successful connections (on_connect passed)
    reconnects: int  # connections after the first
    disconnects: int
    last_error: BaseException | None
    last_disconnect: DisconnectReason | None
    uptime: float
    total_uptime: float


# ---------------------------------------------------------------------------------------------
# Options


OnDisconnect: TypeAlias = Callable[[DisconnectReason, BaseException | None], object]
"""``on_disconnect(reason, error)``: a published connection ended (``error`` None: no error)."""

OnBackoff: TypeAlias = Callable[[float, BaseException | None], object]
"""``on_backoff(delay, error)``: the supervisor waits ``delay`` seconds before the next attempt."""


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    """The options both supervisors share, checked (see :meth:`check`). The dial's own
    (``keepalive``, ``connect_timeout``) are checked by the dialer the driver makes."""

    address: tuple[str, int]
    label: str  # for thread or task names and logs: ``name``, else ``host:port``
    heartbeat: HeartbeatConfig | None
    ping: PingSource
    new_matcher: Callable[[], PongMatcher | None]  # a fresh pong matcher per connection
    retry: RetryPolicy
    healthy_after: float
    on_connect: Callable[..., object] | None
    on_disconnect: OnDisconnect | None
    on_backoff: OnBackoff | None
    handler: Callable[..., object] | None
    rng: random.Random | None
    ssl: ssl.SSLContext | None
    server_hostname: str  # the address's host unless given

    @classmethod
    def check(
        cls,
        address: object,
        *,
        heartbeat: object,
        ping: object,
        pong: object,
        framing: object,
        pong_matcher: object,
        retry: object,
        healthy_after: object,
        on_connect: object,
        on_disconnect: object,
        on_backoff: object,
        handler: object,
        handler_shape: str,
        rng: object,
        name: object,
        ssl: object,
        server_hostname: object,
    ) -> SupervisorOptions:
        """Check a supervisor's arguments; a bad one raises an
        :class:`~keepalive.errors.InvalidSetting` naming it. ``handler_shape`` says what the
        driver's handler takes, for the message."""
        # (Imported here: keepalive.dial, which shares AttemptFailure, needs none of them.)
        from keepalive.framing import pong_matcher_factory  # noqa: PLC0415
        from keepalive.heartbeat import HeartbeatConfig, check_ping  # noqa: PLC0415

        host, port = check_address(address)
        if heartbeat is not None and not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig or None")
        check_ping(ping)
        new_matcher = pong_matcher_factory(pong, framing, pong_matcher)
        if isinstance(retry, type) or not isinstance(retry, RetryPolicy):
            raise InvalidSettingType("retry", retry, "a retry policy such as keepalive.Backoff()")
        healthy = positive_seconds("healthy_after", healthy_after, allow_zero=True)
        hooks = (
            _check_callable("on_connect", on_connect, "(conn)"),
            _check_callable("on_disconnect", on_disconnect, "(reason, error)"),
            _check_callable("on_backoff", on_backoff, "(delay, error)"),
            _check_callable("handler", handler, handler_shape),
        )
        if rng is not None and not isinstance(rng, random.Random):
            raise InvalidSettingType("rng", rng, "a random.Random instance or None")
        if name is not None and not isinstance(name, str):
            raise InvalidSettingType("name", name, "a string or None")
        context = None
        if ssl is not None:
            import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

            if not isinstance(ssl, ssl_module.SSLContext):
                raise InvalidSettingType("ssl", ssl, "an ssl.SSLContext or None")
            context = ssl
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise InvalidSettingType("server_hostname", server_hostname, "a string or None")
        return cls(
            address=(host, port),
            label=f"{host}:{port}" if name is None else name,
            heartbeat=heartbeat,
            ping=cast("PingSource", ping),  # checked by check_ping
            new_matcher=new_matcher,
            retry=retry,
            healthy_after=healthy,
            on_connect=hooks[0],
            on_disconnect=hooks[1],
            on_backoff=hooks[2],
            handler=hooks[3],
            rng=rng,
            ssl=context,
            server_hostname=host if server_hostname is None else server_hostname,
        )


def _check_callable(field: str, value: object, shape: str) -> Callable[..., object] | None:
    """A hook is a callable or None."""
    if value is not None and not callable(value):
        raise InvalidSettingType(field, value, f"a callable {shape} or None")
    return value


# ---------------------------------------------------------------------------------------------
# The core


@dataclass(frozen=True, slots=True)
class NextAttempt:
    """The core's answer to a failed attempt or an ended connection. The driver calls the
    hooks :meth:`SupervisorCore.hook_calls` gives for it, then, unless ``delay`` is None,
    waits ``delay`` seconds (ended early by a close) and makes the next attempt."""

    delay: float | None  # None: no next attempt (the policy gave up, or the supervisor closed)
    error: BaseException | None  # the failed attempt's error, or the one that ended the connection
    attempts: int  # attempts made so far
    closing: bool = False  # the supervisor is closed
    # After a published connection ended: on_disconnect's (reason, error), and its uptime.
    ended: tuple[DisconnectReason, BaseException | None] | None = None
    uptime: float = 0.0

    @property
    def gave_up(self) -> bool:
        """Whether the retry policy gave up (no next attempt, and not because of a close)."""
        return self.delay is None and not self.closing


HookCall: TypeAlias = tuple[str, Callable[..., object], tuple[Any, ...]]
"""``(name, hook, args)``: call ``hook(*args)``; if it raises, tell
:meth:`SupervisorCore.hook_raised`."""


async def call_hook(hook: Callable[..., object], *args: object) -> None:
    """Call a plain or async hook (for the async drivers: asyncio's and trio's alike)."""
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


class SupervisorCore:
    """Pure bookkeeping of one supervised connection. Drivers call, in order:

    - :meth:`attempt_started` before each connect attempt (it returns the attempt's number,
      or None once closed);
    - :meth:`attempt_failed` when it (or ``on_connect``) failed, with the failures to log;
    - :meth:`connected` once the connection is up and ``on_connect`` passed;
    - :meth:`disconnected` when it ended;
    - :meth:`closed` when the application closes the supervisor.

    :meth:`attempt_failed` and :meth:`disconnected` answer with a :class:`NextAttempt`
    (when the policy gives up, :attr:`state` is FAILED and :attr:`stop_reason` says why);
    :meth:`hook_calls` turns it into the hook calls due. The ``log_*`` methods and
    :meth:`hook_calls` only log: drivers call them outside their locks.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        healthy_after: float = 30.0,
        rng: random.Random | None = None,
        label: str = "the supervised connection",
        on_disconnect: OnDisconnect | None = None,
        on_backoff: OnBackoff | None = None,
    ) -> None:
        self.policy = policy
        self.healthy_after = positive_seconds("healthy_after", healthy_after, allow_zero=True)
        self.label = label
        self.on_disconnect = on_disconnect
        self.on_backoff = on_backoff
        self._rng = rng
        self._retry: RetryState | None = None
        self.state = SupervisorState.IDLE
        self.stop_reason: StopReason | None = None
        self.attempts = 0
        self.connects = 0
        self.disconnects = 0
        self.last_error: BaseException | None = None
        self.last_disconnect: DisconnectReason | None = None
        self.connected_since: float | None = None
        self._uptime_before = 0.0
        self.failures: deque[AttemptFailure] = deque(maxlen=FAILURES_KEPT)

    @classmethod
    def for_options(cls, options: SupervisorOptions) -> SupervisorCore:
        """The core of a supervisor made with ``options``."""
        return cls(
            options.retry,
            healthy_after=options.healthy_after,
            rng=options.rng,
            label=options.label,
            on_disconnect=options.on_disconnect,
            on_backoff=options.on_backoff,
        )

    # -- events ------------------------------------------------------------------------------

    def attempt_started(self, now: float) -> int | None:
        """An attempt starts: its number (0 is the first), or None once closed."""
        if self.state is SupervisorState.CLOSED:
            return None
        if self._retry is None:  # the first attempt of an outage
            self._retry = RetryState(self.policy, start=now, rng=self._rng)
        self.attempts += 1
        self.state = SupervisorState.CONNECTING
        return self.attempts - 1

    def attempt_failed(
        self,
        error: BaseException,
        now: float,
        *,
        failures: Sequence[AttemptFailure] = (),
        address: tuple[Any, ...] | None = None,
    ) -> NextAttempt:
        """The current attempt failed with ``error`` (the one the policy judges): log
        ``failures`` (the dial's, per address), else one failure for ``error`` at
        ``address`` (the peer's, when the dial had succeeded)."""
        self.last_error = error
        if self.state is SupervisorState.CLOSED:
            return NextAttempt(None, error, self.attempts, closing=True)
        self.failures.extend(failures or (AttemptFailure(self.attempts - 1, address, error),))
        return NextAttempt(self._next_delay(error, now), error, self.attempts)

    def connected(self, now: float) -> None:
        """The attempt succeeded (``on_connect`` passed): the outage is over."""
        if self.state is SupervisorState.CLOSED:
            return
        self.connects += 1
        self.connected_since = now
        self.state = SupervisorState.CONNECTED
        self.failures.clear()

    def disconnected(
        self,
        reason: DisconnectReason,
        error: BaseException | None,
        now: float,
        *,
        peer: tuple[Any, ...] | None = None,
    ) -> NextAttempt:
        """The published connection (to ``peer``) ended, with ``error`` (None: no error)."""
        uptime = self._end_uptime(now)
        self.disconnects += 1
        self.last_disconnect = reason
        if error is not None:
            self.last_error = error
        closing = self.state is SupervisorState.CLOSED
        if closing:
            delay = None
        elif uptime >= self.healthy_after:
            self._retry = None  # a fresh outage: back off from the start, reconnect at once
            self.state = SupervisorState.BACKING_OFF
            delay = 0.0
        else:  # a short-lived connection: its end counts as a failed attempt of the outage
            judged = error or ConnectionResetError("connection ended")
            self.last_error = judged
            delay = self._next_delay(judged, now)
            if delay is None:
                self.failures.append(AttemptFailure(self.attempts - 1, peer, judged))
        return NextAttempt(
            delay, error, self.attempts, closing=closing, ended=(reason, error), uptime=uptime
        )

    def closed(self, now: float) -> bool:
        """The application closed the supervisor; False if it was closed already."""
        if self.state is SupervisorState.CLOSED:
            return False
        self._end_uptime(now)
        self.state = SupervisorState.CLOSED
        return True

    def crashed(self, error: BaseException) -> None:
        """The driver itself failed (a bug): no connection will come."""
        self.last_error = error
        if self.state is not SupervisorState.CLOSED:
            self.state = SupervisorState.FAILED

    def _next_delay(self, error: BaseException, now: float) -> float | None:
        retry = self._retry or RetryState(self.policy, start=now, rng=self._rng)
        self._retry = retry
        delay = retry.next_delay(error, now=now)
        if delay is None:
            self.stop_reason = retry.stop_reason
            self.state = SupervisorState.FAILED
            return None
        self.state = SupervisorState.BACKING_OFF
        return delay

    # -- what follows ------------------------------------------------------------------------

    def hook_calls(self, step: NextAttempt) -> Iterator[HookCall]:
        """The hooks to call after ``step``, in order, logging as it goes: after an ended
        connection ``on_disconnect(reason, error)``, then, unless there is no next attempt,
        ``on_backoff(delay, error)``. Once the supervisor is closed (a hook may close it) no
        further hook is due."""
        if step.ended is not None:
            reason, error = step.ended
            if step.closing:
                logger.info("connection to %s closed", self.label)
            else:
                logger.warning(
                    "connection to %s ended after %.3f s: %s%s",
                    self.label,
                    step.uptime,
                    reason,
                    "" if error is None else f" ({error!r})",
                )
            if self.on_disconnect is not None:
                yield "on_disconnect", self.on_disconnect, step.ended
        if step.delay is None:
            if step.gave_up:
                stop = self.stop_reason
                logger.error(
                    "giving up on %s after %d attempt(s) (%s); last error: %r",
                    self.label,
                    step.attempts,
                    "unknown" if stop is None else stop.value,
                    step.error,
                )
            return
        if step.ended is None:
            logger.info(
                "attempt %d to connect to %s failed (%s); retrying in %.3f s",
                step.attempts,
                self.label,
                step.error,
                step.delay,
            )
        if self.on_backoff is not None and self.state is not SupervisorState.CLOSED:
            yield "on_backoff", self.on_backoff, (step.delay, step.error)

    def hook_raised(self, name: str, error: BaseException) -> None:
        """A hook from :meth:`hook_calls` raised: logged, and otherwise ignored."""
        logger.error("%s hook for %s raised", name, self.label, exc_info=error)

    async def call_hooks(self, step: NextAttempt) -> None:
        """For the async drivers: call (and await) the hooks :meth:`hook_calls` gives for
        ``step``; one that raises goes to :meth:`hook_raised`."""
        for name, hook, args in self.hook_calls(step):
            try:
                await call_hook(hook, *args)
            except Exception as exc:
                self.hook_raised(name, exc)

    def failure(self) -> ConnectFailed:
        """The error ``wait_connected`` raises once no connection will come: the supervisor
        was closed (reason ``"closed"``) or the policy gave up (``"not retryable"``,
        ``"exhausted"``, ``"deadline"``; ``"failed"`` otherwise), chained to the last error;
        ``attempts`` is the failure log."""
        attempts = tuple(self.failures)
        if self.state is SupervisorState.CLOSED:
            return ConnectFailed(f"the supervisor for {self.label} is closed", attempts, "closed")
        reason = _GIVE_UP_REASONS.get(self.stop_reason, "failed")
        last = self.last_error
        error = ConnectFailed(
            f"gave up on {self.label} after {self.attempts} attempt(s) ({reason}); "
            f"last error: {last!r}",
            attempts,
            reason,
        )
        error.__cause__ = last
        return error

    # -- the log of the events without a NextAttempt -------------------------------------------

    def log_attempt(self, attempt: int) -> None:
        logger.debug("connecting to %s (attempt %d)", self.label, attempt + 1)

    def log_connected(self, attempt: int) -> None:
        logger.info(
            "connected to %s (attempt %d, connection %d)", self.label, attempt + 1, self.connects
        )

    def log_on_connect_failed(self, error: BaseException) -> None:
        logger.warning("on_connect for %s failed: %r", self.label, error, exc_info=error)

    def log_handler_raised(self, error: BaseException) -> None:
        logger.warning("handler for %s raised %r", self.label, error, exc_info=error)

    def log_closing(self) -> None:
        logger.debug("closing the supervisor for %s", self.label)

    def log_crashed(self, error: BaseException) -> None:
        logger.error("the supervisor for %s failed", self.label, exc_info=error)

    # -- views -------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether the application closed the supervisor."""
        return self.state is SupervisorState.CLOSED

    @property
    def finished(self) -> bool:
        """Whether no connection will come any more (closed, or the policy gave up):
        ``wait_connected`` raises :meth:`failure`."""
        return self.state is SupervisorState.CLOSED or self.state is SupervisorState.FAILED

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def uptime(self, now: float) -> float:
        return 0.0 if self.connected_since is None else max(0.0, now - self.connected_since)

    def stats(self, now: float) -> SupervisorStats:
        uptime = self.uptime(now)
        return SupervisorStats(
            state=self.state,
            attempts=self.attempts,
            connects=self.connects,
            reconnects=self.reconnects,
            disconnects=self.disconnects,
            last_error=self.last_error,
            last_disconnect=self.last_disconnect,
            uptime=uptime,
            total_uptime=self._uptime_before + uptime,
        )

    def _end_uptime(self, now: float) -> float:
        uptime = self.uptime(now)
        self._uptime_before += uptime
        self.connected_since = None
        return uptime
