"""What the tests of the blocking and the asyncio supervisors share.

Both front-ends (and trio's, for the hooks) drive the same supervision core, so their tests
run the same scenarios: the
timings, the arguments to refuse, the record of the hooks' calls and the checks of what a
scenario leaves behind live here once (the peers that refuse or never answer live in
``loopback_peers``). Each front-end keeps its own test of each scenario (blocking calls in
``test_sync_supervisor.py``, coroutines in ``test_aio_supervisor.py``), so that a failure
names the front-end that broke.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import pytest

from keepalive.config import KeepaliveConfig
from keepalive.errors import ConnectFailed, InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.framing import Lines, MessagePongs
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff
from keepalive.supervision import DisconnectReason, SupervisorState, SupervisorStats

FAST = HeartbeatConfig(interval=0.2, timeout=0.3)  # detection bound 0.5 s
QUICK = Backoff.constant(0.05)  # retry every 50 ms
SLACK = 1.0  # seconds an event may come late on this shared 2-core machine
WAIT = 5.0  # generous bound for things that normally take milliseconds

# Arguments both supervisors refuse at construction: (the arguments, the field the error
# names, the error's type). A front-end's own parameters come on top of these.
BAD_ARGUMENTS: list[tuple[dict[str, object], str, type[Exception]]] = [
    ({"address": "127.0.0.1:80"}, "address", InvalidSettingType),
    ({"address": ("127.0.0.1", 0)}, "address", InvalidSetting),
    ({"keepalive": {"idle": 1}}, "keepalive", InvalidSettingType),
    ({"heartbeat": 5}, "heartbeat", InvalidSettingType),
    ({"ping": b""}, "ping", InvalidSetting),
    ({"ping": "PING\n"}, "ping", InvalidSettingType),
    ({"pong": "PONG\n"}, "pong", InvalidSettingType),
    ({"pong": MessagePongs(b"PONG\n", Lines())}, "pong", InvalidSettingType),
    ({"retry": 3}, "retry", InvalidSettingType),
    ({"healthy_after": -1}, "healthy_after", InvalidSetting),
    ({"connect_timeout": 0}, "connect_timeout", InvalidSetting),
    ({"on_connect": "yes"}, "on_connect", InvalidSettingType),
    ({"handler": 1}, "handler", InvalidSettingType),
    ({"rng": 42}, "rng", InvalidSettingType),
]


def refused_at_construction(
    supervisor: Callable[..., object], kwargs: dict[str, object], field: str, error: type[Exception]
) -> None:
    """``supervisor(**arguments)`` raises ``error`` naming ``field``: ``kwargs`` (one row of
    ``BAD_ARGUMENTS``) on top of arguments that are otherwise valid."""
    arguments: dict[str, object] = {"address": ("127.0.0.1", 9)}
    arguments.update(kwargs)
    with pytest.raises(error, match=field):
        supervisor(**arguments)


class PongMatchers:
    """A ``pong_matcher`` factory that keeps every matcher it made, in order."""

    def __init__(self) -> None:
        self.made: list[MessagePongs] = []

    def __call__(self) -> MessagePongs:
        self.made.append(MessagePongs(b"PONG\n", Lines()))
        return self.made[-1]


# ---------------------------------------------------------------------------------------------
# The hooks' calls

Connection = TypeVar("Connection")  # what the front-end hands to on_connect


class HookRecords(Generic[Connection]):
    """The hooks' calls, in order, and when each connect and disconnect came. A front-end's
    ``Events`` subclass adds the hooks themselves (blocking or coroutine functions) and a way
    to wait for them."""

    def __init__(self) -> None:
        self.disconnects: list[tuple[DisconnectReason, BaseException | None]] = []
        self.backoffs: list[tuple[float, BaseException | None]] = []
        self.connects: list[Connection] = []
        self.times: dict[str, list[float]] = {"disconnect": [], "connect": []}

    def record_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        self.disconnects.append((reason, error))
        self.times["disconnect"].append(time.monotonic())

    def record_backoff(self, delay: float, error: BaseException | None) -> None:
        self.backoffs.append((delay, error))

    def record_connect(self, conn: Connection) -> None:
        self.connects.append(conn)
        self.times["connect"].append(time.monotonic())

    def timed_out(self) -> AssertionError:
        """The failure of a wait for these records, with what they hold."""
        return AssertionError(f"timed out: disconnects={self.disconnects} backoffs={self.backoffs}")


# ---------------------------------------------------------------------------------------------
# What each scenario leaves behind


def came_up_after_refused_attempts(
    events: HookRecords[Connection], stats: SupervisorStats, conn: Connection
) -> None:
    """The server came up after a few refused attempts (``QUICK`` retries); ``stats`` was taken
    while connected, ``events`` after the application closed the supervisor."""
    assert stats.state is SupervisorState.CONNECTED
    assert (stats.connects, stats.reconnects, stats.disconnects) == (1, 0, 0)
    # Every refused attempt was followed by one backoff wait of the policy's delay.
    assert stats.attempts == len(events.backoffs) + 1 >= 4
    assert all(delay == 0.05 for delay, _ in events.backoffs)
    assert all(isinstance(error, ConnectionRefusedError) for _, error in events.backoffs)
    assert isinstance(stats.last_error, ConnectionRefusedError)
    assert events.connects == [conn]
    assert events.disconnects == [(DisconnectReason.CLOSED, None)]  # from closing


def failed_handshakes_were_retried(events: HookRecords[Connection], stats: SupervisorStats) -> None:
    """on_connect raised ``handshake N refused`` twice, then let the third connection through."""
    assert (stats.attempts, stats.connects, stats.disconnects) == (3, 1, 0)
    assert [str(error) for _, error in events.backoffs] == [
        "handshake 1 refused",
        "handshake 2 refused",
    ]
    assert events.disconnects == [(DisconnectReason.CLOSED, None)]  # only the published one


def exhausted_by_refusals(error: ConnectFailed, stats: SupervisorStats) -> None:
    """A policy of three attempts gave up on an address that refuses."""
    assert error.reason == "exhausted"
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert [failure.attempt for failure in error.attempts] == [0, 1, 2]  # type: ignore[attr-defined]
    assert (stats.attempts, stats.connects, stats.disconnects) == (3, 0, 0)


def reset_seen_at_once_and_reconnected(
    events: HookRecords[Connection], stats: SupervisorStats, killed: float
) -> None:
    """The server reset the first connection at ``killed``; a second one replaced it."""
    reason, error = events.disconnects[0]
    assert reason is DisconnectReason.RESET
    assert isinstance(error, ConnectionResetError)
    assert events.times["disconnect"][0] - killed < SLACK  # a reset is seen at once
    assert (stats.attempts, stats.connects, stats.reconnects, stats.disconnects) == (2, 2, 1, 1)
    assert stats.last_disconnect is DisconnectReason.RESET


def heartbeat_verdict_in_time(events: HookRecords[Connection], frozen: float) -> None:
    """The path froze at ``frozen``: the ``FAST`` heartbeat ended the connection in time."""
    detected = events.times["disconnect"][0] - frozen
    reason, error = events.disconnects[0]
    assert reason is DisconnectReason.HEARTBEAT_TIMEOUT
    assert isinstance(error, PeerUnresponsive)
    # The verdict comes FAST.detection_bound after the last pong, which came at most one
    # interval before the freeze.
    assert FAST.detection_bound - FAST.interval - 0.05 <= detected
    assert detected <= FAST.detection_bound + SLACK


def heartbeat_timeouts_until_closed(events: HookRecords[Connection]) -> None:
    """Every connection made while frozen died of the heartbeat; closing ended the last."""
    assert {reason for reason, _ in events.disconnects[:-1]} == {DisconnectReason.HEARTBEAT_TIMEOUT}
    assert events.disconnects[-1] == (DisconnectReason.CLOSED, None)


def kernel_verdict_in_time(
    events: HookRecords[Connection], cfg: KeepaliveConfig, detected: float
) -> None:
    """A black hole ended the connection through kernel keepalive ``cfg``, ``detected``
    seconds after it opened."""
    reason, error = events.disconnects[0]
    assert reason is DisconnectReason.KERNEL_TIMEOUT
    assert isinstance(error, OSError)
    assert error.errno == errno.ETIMEDOUT
    assert cfg.detection_bound - 0.5 <= detected <= cfg.detection_bound + SLACK


def backoff_went_on_then_started_over(
    events: HookRecords[Connection], stats: SupervisorStats
) -> None:
    """Three short connections, a healthy one, two short ones (initial 0.05 s, doubling)."""
    assert [delay for delay, _ in events.backoffs] == [0.05, 0.1, 0.2, 0.0, 0.05]
    assert all(isinstance(error, ConnectionResetError) for _, error in events.backoffs)
    assert [reason for reason, _ in events.disconnects[:5]] == [DisconnectReason.RESET] * 5
    assert (stats.attempts, stats.connects, stats.reconnects, stats.disconnects) == (6, 6, 5, 5)
    assert stats.total_uptime >= 2.1


def exhausted_by_short_connections(
    events: HookRecords[Connection], error: ConnectFailed, attempts: int
) -> None:
    """A policy of three attempts gave up after three connections the server reset."""
    assert error.reason == "exhausted"
    assert attempts == 3
    assert [reason for reason, _ in events.disconnects] == [DisconnectReason.RESET] * 3


def three_handlers_then_closed(events: HookRecords[Connection], stats: SupervisorStats) -> None:
    """Each of three handlers returned, the third after closing the supervisor."""
    assert events.disconnects == [(DisconnectReason.CLOSED, None)] * 3
    assert (stats.attempts, stats.connects, stats.disconnects) == (3, 3, 3)


def handler_ends(events: HookRecords[Connection], reconnects: int) -> None:
    """The first handler met the server's reset, the second raised, the third was closed."""
    reasons = [(reason, type(error)) for reason, error in events.disconnects]
    assert reasons == [
        (DisconnectReason.RESET, ConnectionResetError),
        (DisconnectReason.ERROR, RuntimeError),
        (DisconnectReason.CLOSED, type(None)),
    ]
    assert reconnects == 2


def broken_hook(*args: object) -> None:
    raise RuntimeError("hook bug")


async def broken_async_hook(*args: object) -> None:
    raise RuntimeError("async hook bug")


def raising_hooks_were_logged(records: list[logging.LogRecord]) -> None:
    """``on_disconnect=broken_hook, on_backoff=broken_async_hook``: both logged, both ignored."""
    messages = [record.getMessage() for record in records]
    assert any("on_disconnect hook for" in message for message in messages)
    assert any("on_backoff hook for" in message for message in messages)
