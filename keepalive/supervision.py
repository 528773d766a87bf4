"""The supervised connection's bookkeeping, sans I/O: states, counters, why a connection
ended, and when to try again.

Both drivers (`keepalive.sync.Supervisor`, `keepalive.aio.Supervisor`) run the same loop::

    connect (per the retry policy) -> configure kernel keepalive -> start the heartbeat
    -> on_connect(conn) -> hand the connection to the application
    -> on death: close it, on_disconnect(reason), back off, reconnect

and tell a :class:`SupervisorCore` what happened, passing the time in. The core answers how
long to wait before the next attempt, or that the policy gave up. It never reads a clock.

Backoff across outages: a connection that stayed up for ``healthy_after`` seconds earns a
fresh start (the next outage backs off from the policy's initial delay again, and its first
reconnect is immediate); one that died sooner continues the same backoff sequence, so a
server that accepts and then drops every connection is not hammered.
"""

from __future__ import annotations

import enum
import errno
import random
from dataclasses import dataclass

from keepalive._validate import check_address, positive_seconds
from keepalive.errors import ConnectFailed, InvalidSettingType, PeerUnresponsive
from keepalive.reconnect import RetryPolicy, RetryState, StopReason

__all__ = [
    "DisconnectReason",
    "SupervisorCore",
    "SupervisorState",
    "SupervisorStats",
    "check_address",
    "check_callable",
    "classify_disconnect",
]


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
    """The reason for a connection's end, from the error that ended it (None: EOF)."""
    if error is None or isinstance(error, EOFError):
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


class SupervisorCore:
    """Pure bookkeeping of one supervised connection. Drivers call, in order:

    - :meth:`attempt_started` before each connect attempt;
    - :meth:`attempt_failed` when it (or ``on_connect``) failed: returns the delay before the
      next attempt, or None when the policy gives up (:attr:`state` is then FAILED and
      :attr:`stop_reason` says why);
    - :meth:`connected` once the connection is up and ``on_connect`` passed;
    - :meth:`disconnected` when it ended: returns the delay before reconnecting (0 after a
      healthy connection);
    - :meth:`closed` when the application closes the supervisor.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        healthy_after: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.healthy_after = positive_seconds("healthy_after", healthy_after, allow_zero=True)
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

    # -- events ------------------------------------------------------------------------------

    def attempt_started(self, now: float) -> None:
        if self.state is SupervisorState.CLOSED:
            return
        if self._retry is None:  # the first attempt of an outage
            self._retry = RetryState(self.policy, start=now, rng=self._rng)
        self.attempts += 1
        self.state = SupervisorState.CONNECTING

    def attempt_failed(self, error: BaseException, now: float) -> float | None:
        self.last_error = error
        if self.state is SupervisorState.CLOSED:
            return None
        retry = self._retry or RetryState(self.policy, start=now, rng=self._rng)
        self._retry = retry
        delay = retry.next_delay(error, now=now)
        if delay is None:
            self.stop_reason = retry.stop_reason
            self.state = SupervisorState.FAILED
            return None
        self.state = SupervisorState.BACKING_OFF
        return delay

    def connected(self, now: float) -> None:
        if self.state is SupervisorState.CLOSED:
            return
        self.connects += 1
        self.connected_since = now
        self.state = SupervisorState.CONNECTED

    def disconnected(
        self, reason: DisconnectReason, error: BaseException | None, now: float
    ) -> float | None:
        """Record the end of the live connection; the delay before reconnecting, or None
        when the policy gives up (or the supervisor is closed)."""
        uptime = self._end_uptime(now)
        self.disconnects += 1
        self.last_disconnect = reason
        if error is not None:
            self.last_error = error
        if self.state is SupervisorState.CLOSED:
            return None
        if uptime >= self.healthy_after:
            self._retry = None  # a fresh outage: back off from the start, reconnect at once
            self.state = SupervisorState.BACKING_OFF
            return 0.0
        # A short-lived connection: count it as a failed attempt of the same outage.
        return self.attempt_failed(error or ConnectionResetError("connection ended"), now)

    def closed(self, now: float) -> None:
        self._end_uptime(now)
        self.state = SupervisorState.CLOSED

    def failure(self, label: str, attempts: tuple[object, ...], *, closing: bool) -> ConnectFailed:
        """The error ``wait_connected`` raises once no connection will come: the supervisor
        was closed (reason ``"closed"``) or the policy gave up (``"not retryable"``,
        ``"exhausted"``, ``"deadline"``; ``"failed"`` otherwise), chained to the last error."""
        if closing:
            return ConnectFailed(f"the supervisor for {label} is closed", attempts, "closed")
        reason = _GIVE_UP_REASONS.get(self.stop_reason, "failed")
        last = self.last_error
        error = ConnectFailed(
            f"gave up on {label} after {self.attempts} attempt(s) ({reason}); last error: {last!r}",
            attempts,
            reason,
        )
        error.__cause__ = last
        return error

    # -- views -------------------------------------------------------------------------------

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


# -- argument checks shared by both supervisors -----------------------------------------

# check_address (from keepalive._validate) is the library's one address check, shared with
# keepalive.dial.connect() and keepalive.testing: the same types and port range everywhere.


def check_callable(field: str, value: object, shape: str) -> None:
    """A hook is a callable or None."""
    if value is not None and not callable(value):
        raise InvalidSettingType(field, value, f"a callable {shape} or None")
