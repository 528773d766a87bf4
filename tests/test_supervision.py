"""The pure supervisor core: states, counters, backoff across outages, reasons."""

from __future__ import annotations

import errno
import random

import pytest

from keepalive.errors import InvalidSetting, PeerUnresponsive
from keepalive.reconnect import Backoff, StopReason
from keepalive.supervision import (
    DisconnectReason,
    SupervisorCore,
    SupervisorState,
    classify_disconnect,
)

STEADY = Backoff(initial=1.0, multiplier=2.0, max_delay=100.0, jitter="none")
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "refused")


def test_first_outage_backs_off_per_policy() -> None:
    core = SupervisorCore(STEADY)
    assert core.state is SupervisorState.IDLE
    delays = []
    now = 0.0
    for _ in range(4):
        core.attempt_started(now)
        assert core.state is SupervisorState.CONNECTING
        delay = core.attempt_failed(REFUSED, now)
        assert delay is not None
        assert core.state is SupervisorState.BACKING_OFF
        delays.append(delay)
        now += delay
    assert delays == [1.0, 2.0, 4.0, 8.0]
    core.attempt_started(now)
    core.connected(now)
    stats = core.stats(now + 5)
    assert stats.state is SupervisorState.CONNECTED
    assert (stats.attempts, stats.connects, stats.reconnects) == (5, 1, 0)
    assert stats.uptime == 5
    assert stats.last_error is REFUSED


def test_healthy_connection_resets_backoff_and_reconnects_at_once() -> None:
    core = SupervisorCore(STEADY, healthy_after=10)
    core.attempt_started(0)
    assert core.attempt_failed(REFUSED, 0) == 1.0
    core.attempt_started(1)
    assert core.attempt_failed(REFUSED, 1) == 2.0
    core.attempt_started(3)
    core.connected(3)
    dead = PeerUnresponsive("no pong")
    assert core.disconnected(DisconnectReason.HEARTBEAT_TIMEOUT, dead, 20) == 0.0
    assert core.last_disconnect is DisconnectReason.HEARTBEAT_TIMEOUT
    core.attempt_started(20)
    assert core.attempt_failed(REFUSED, 20) == 1.0  # the sequence starts over
    stats = core.stats(21)
    assert stats.total_uptime == 17
    assert stats.disconnects == 1


def test_short_lived_connection_continues_the_backoff() -> None:
    core = SupervisorCore(STEADY, healthy_after=10)
    core.attempt_started(0)
    assert core.attempt_failed(REFUSED, 0) == 1.0
    core.attempt_started(1)
    core.connected(1)
    # Dropped after 2 s: not healthy, so the next wait is the sequence's next delay.
    assert core.disconnected(DisconnectReason.RESET, ConnectionResetError(), 3) == 2.0
    assert core.state is SupervisorState.BACKING_OFF


def test_policy_gives_up() -> None:
    core = SupervisorCore(Backoff(initial=1.0, max_attempts=2, jitter="none"))
    core.attempt_started(0)
    assert core.attempt_failed(REFUSED, 0) == 1.0
    core.attempt_started(1)
    assert core.attempt_failed(REFUSED, 1) is None
    assert core.state is SupervisorState.FAILED
    assert core.stop_reason is StopReason.EXHAUSTED


def test_non_retryable_error_fails_at_once() -> None:
    core = SupervisorCore(STEADY)
    core.attempt_started(0)
    assert core.attempt_failed(PermissionError("denied"), 0) is None
    assert core.stop_reason is StopReason.NOT_RETRYABLE


def test_closed_supervisor_never_retries() -> None:
    core = SupervisorCore(STEADY)
    core.attempt_started(0)
    core.connected(0)
    core.closed(4)
    assert core.state is SupervisorState.CLOSED
    assert core.disconnected(DisconnectReason.CLOSED, None, 4) is None
    assert core.attempt_failed(REFUSED, 5) is None
    core.attempt_started(6)
    assert core.state is SupervisorState.CLOSED
    assert core.stats(9).total_uptime == 4


def test_seeded_jitter_is_reproducible() -> None:
    def run(seed: int) -> list[float | None]:
        core = SupervisorCore(Backoff(jitter="full"), rng=random.Random(seed))
        out = []
        for step in range(5):
            core.attempt_started(step)
            out.append(core.attempt_failed(REFUSED, step))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (None, DisconnectReason.PEER_CLOSED),
        (EOFError(), DisconnectReason.PEER_CLOSED),
        (PeerUnresponsive("x"), DisconnectReason.HEARTBEAT_TIMEOUT),
        (ConnectionResetError(), DisconnectReason.RESET),
        (BrokenPipeError(), DisconnectReason.RESET),
        (OSError(errno.ECONNABORTED, "aborted"), DisconnectReason.RESET),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), DisconnectReason.KERNEL_TIMEOUT),
        (OSError(errno.ETIMEDOUT, "timed out"), DisconnectReason.KERNEL_TIMEOUT),
        (ValueError("protocol"), DisconnectReason.ERROR),
    ],
)
def test_classify_disconnect(error: BaseException | None, reason: DisconnectReason) -> None:
    assert classify_disconnect(error) is reason


def test_bad_healthy_after() -> None:
    with pytest.raises(InvalidSetting, match="healthy_after"):
        SupervisorCore(STEADY, healthy_after=-1)
