"""The sans-I/O heartbeat core and pong filter, driven by a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import ast
import dataclasses
import doctest
import itertools
import math
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import keepalive.heartbeat as heartbeat_module
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.framing import make_pong_matcher
from keepalive.heartbeat import (
    Heartbeat,
    HeartbeatConfig,
    PeerDead,
    SendPing,
    Wait,
)

# Float sums such as last + interval + timeout + timeout may differ from last + bound in the
# last bits; timing assertions on arbitrary floats allow this much.
EPS = 1e-9


def ping(hb: Heartbeat, now: float) -> None:
    """Poll at ``now``, expect SendPing, and report the ping as written."""
    assert hb.poll(now) == SendPing()
    hb.ping_sent(now)


# --------------------------------------------------------------------- config


class TestConfig:
    def test_values_normalised_to_float(self) -> None:
        config = HeartbeatConfig(10, 5)
        assert config.interval == 10.0
        assert type(config.interval) is float
        assert type(config.timeout) is float
        assert config.misses == 1

    def test_equal_and_hashable_whatever_the_spelling(self) -> None:
        assert HeartbeatConfig(10, 5, 2) == HeartbeatConfig(10.0, 5.0, misses=2)
        assert hash(HeartbeatConfig(10, 5, 2)) == hash(HeartbeatConfig(10.0, 5.0, 2))
        assert len({HeartbeatConfig(1, 1), HeartbeatConfig(1.0, 1.0)}) == 1

    def test_frozen_and_slotted(self) -> None:
        config = HeartbeatConfig(1, 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.interval = 2.0  # type: ignore[misc]
        assert not hasattr(config, "__dict__")

    @pytest.mark.parametrize(
        ("interval", "timeout", "misses", "bound"),
        [(10, 5, 1, 15.0), (10, 5, 3, 25.0), (0.25, 0.5, 4, 2.25)],
    )
    def test_detection_bound(
        self, interval: float, timeout: float, misses: int, bound: float
    ) -> None:
        assert HeartbeatConfig(interval, timeout, misses).detection_bound == bound

    @pytest.mark.parametrize("field", ["interval", "timeout"])
    @pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf])
    def test_bad_seconds_values(self, field: str, value: float) -> None:
        kwargs: dict[str, object] = {"interval": 1, "timeout": 1, field: value}
        with pytest.raises(InvalidSetting) as caught:
            HeartbeatConfig(**kwargs)  # type: ignore[arg-type]
        assert not isinstance(caught.value, InvalidSettingType)
        assert caught.value.field == field
        assert caught.value.value is value or caught.value.value == value
        assert "> 0" in str(caught.value)
        assert field in str(caught.value)
        assert isinstance(caught.value, ValueError)

    @pytest.mark.parametrize("field", ["interval", "timeout"])
    @pytest.mark.parametrize("value", [True, False, "5", None, b"1", 1j])
    def test_bad_seconds_types(self, field: str, value: object) -> None:
        kwargs: dict[str, object] = {"interval": 1, "timeout": 1, field: value}
        with pytest.raises(InvalidSettingType) as caught:
            HeartbeatConfig(**kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field
        assert isinstance(caught.value, TypeError)
        assert repr(value) in str(caught.value)

    @pytest.mark.parametrize("value", [0, -3])
    def test_bad_misses_values(self, value: int) -> None:
        with pytest.raises(InvalidSetting) as caught:
            HeartbeatConfig(1, 1, value)
        assert caught.value.field == "misses"
        assert "from 1 to" in str(caught.value)

    @pytest.mark.parametrize("value", [True, 2.0, 1.5, "2", None])
    def test_bad_misses_types(self, value: object) -> None:
        with pytest.raises(InvalidSettingType) as caught:
            HeartbeatConfig(1, 1, value)  # type: ignore[arg-type]
        assert caught.value.field == "misses"
        assert "whole number" in str(caught.value)

    def test_heartbeat_refuses_other_config_types(self) -> None:
        with pytest.raises(InvalidSettingType) as caught:
            Heartbeat((10, 5), 0.0)  # type: ignore[arg-type]
        assert caught.value.field == "config"


# ---------------------------------------------------------------- transitions


class TestTransitions:
    def test_idle_waits_for_interval_then_pings(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=100.0)
        assert hb.deadline == 110.0
        assert hb.poll(100.0) == Wait(110.0)
        assert hb.poll(109.5) == Wait(110.0)  # early polls are harmless
        assert not hb.ping_in_flight
        assert hb.poll(110.0) == SendPing()
        # Until the driver reports the write, the ping stays due (deadline in the past).
        assert hb.poll(110.25) == SendPing()
        assert hb.deadline == 110.0
        hb.ping_sent(110.25)
        assert hb.ping_in_flight
        assert hb.pings_sent == 1
        assert hb.outstanding == 1
        assert hb.deadline == 114.25
        assert hb.poll(110.25) == Wait(114.25)

    def test_pong_measures_rtt_and_restarts_idle_timer(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        assert hb.rtt is None
        assert hb.srtt is None
        ping(hb, 10.0)
        hb.pong_received(11.0)
        assert hb.rtt == 1.0
        assert hb.srtt == 1.0  # the first sample sets it
        assert hb.pongs_received == 1
        assert hb.outstanding == 0
        assert hb.last_received == 11.0
        assert not hb.ping_in_flight
        assert hb.poll(11.0) == Wait(21.0)
        ping(hb, 21.0)
        hb.pong_received(21.5)
        assert hb.rtt == 0.5
        assert hb.srtt == 1.0 + (0.5 - 1.0) / 8  # RFC 6298, alpha 1/8
        assert hb.poll(21.5) == Wait(31.5)

    def test_timeout_is_a_miss_and_next_ping_goes_at_once(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4, misses=3), now=0.0)
        ping(hb, 10.0)
        assert hb.poll(13.75) == Wait(14.0)
        assert hb.poll(14.0) == SendPing()
        assert hb.misses == 1
        assert hb.deadline == 14.0
        assert not hb.dead
        hb.ping_sent(14.0)
        assert hb.outstanding == 2
        assert hb.poll(14.0) == Wait(18.0)
        ping(hb, 18.0)
        assert hb.misses == 2
        assert hb.poll(18.0) == Wait(22.0)

    def test_misses_exhausted_is_death_after_exactly_the_bound(self) -> None:
        config = HeartbeatConfig(interval=10, timeout=4, misses=3)
        hb = Heartbeat(config, now=5.0)
        hb.bytes_received(6.0)
        ping(hb, 16.0)
        ping(hb, 20.0)
        ping(hb, 24.0)
        verdict = hb.poll(28.0)
        assert isinstance(verdict, PeerDead)
        assert verdict.silent_for == config.detection_bound == 22.0
        assert 6.0 + verdict.silent_for == 28.0
        assert verdict.reason == "no reply to 3 heartbeat pings (timeout 4 s each)"
        assert hb.dead
        assert hb.verdict is verdict
        assert hb.misses == 3
        assert hb.deadline is None
        assert not hb.ping_in_flight

    def test_single_miss_reason_and_error(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=1, timeout=0.5), now=0.0)
        ping(hb, 1.0)
        verdict = hb.poll(1.5)
        assert verdict == PeerDead("no reply to 1 heartbeat ping (timeout 0.5 s each)", 1.5)
        error = verdict.as_error()
        assert isinstance(error, PeerUnresponsive)
        assert isinstance(error, ConnectionError)
        assert "1.500 s" in str(error)
        assert "no reply to 1 heartbeat ping" in str(error)

    def test_inbound_bytes_during_ping_window_reset_everything(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4, misses=2), now=0.0)
        ping(hb, 10.0)
        ping(hb, 14.0)  # after one miss
        assert hb.misses == 1
        hb.bytes_received(15.0)
        assert hb.misses == 0
        assert not hb.ping_in_flight
        assert hb.last_received == 15.0
        assert hb.outstanding == 2  # those pongs are still owed: the filter must know
        assert hb.poll(15.0) == Wait(25.0)
        assert hb.poll(18.0) == Wait(25.0)  # the old window's expiry no longer matters

    def test_inbound_bytes_cancel_a_pending_ping(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        assert hb.poll(10.0) == SendPing()
        hb.bytes_received(10.5)
        assert hb.poll(10.5) == Wait(20.5)

    def test_busy_peer_is_never_pinged(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        for step in range(1, 100):
            hb.bytes_received(step * 9.5)
            assert hb.poll(step * 9.5) == Wait(step * 9.5 + 10)
        assert hb.pings_sent == 0

    def test_deadline_can_move_earlier_when_bytes_arrive_during_a_long_timeout(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=1, timeout=10), now=0.0)
        ping(hb, 1.0)
        assert hb.deadline == 11.0
        hb.bytes_received(2.0)
        assert hb.deadline == 3.0

    def test_pings_not_asked_for_are_counted_but_start_no_window(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        hb.ping_sent(1.0)
        assert hb.outstanding == 1
        assert hb.pings_sent == 1
        assert not hb.ping_in_flight
        assert hb.poll(5.0) == Wait(10.0)  # no miss at 5.0
        hb.pong_received(1.25)
        assert hb.rtt == 0.25

    def test_ping_written_after_data_cancelled_it_starts_no_window(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=1), now=0.0)
        assert hb.poll(10.0) == SendPing()
        hb.bytes_received(10.0)
        hb.ping_sent(10.0)  # the driver had already written it
        assert not hb.ping_in_flight
        assert hb.poll(11.5) == Wait(20.0)

    def test_pong_without_outstanding_ping_is_life_without_rtt(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        hb.pong_received(3.0)
        assert hb.rtt is None
        assert hb.pongs_received == 1
        assert hb.outstanding == 0
        assert hb.poll(3.0) == Wait(13.0)

    def test_late_pong_pairs_with_oldest_ping(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4, misses=3), now=0.0)
        ping(hb, 10.0)
        ping(hb, 14.0)
        hb.pong_received(15.0)  # answers the ping of 10.0
        assert hb.rtt == 5.0
        assert hb.outstanding == 1
        hb.pong_received(15.5)  # answers the ping of 14.0
        assert hb.rtt == 1.5
        assert hb.outstanding == 0

    def test_many_unanswered_pings_keep_exact_count_and_bounded_memory(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=1000, timeout=4), now=0.0)
        for sent_at in range(70):
            hb.ping_sent(float(sent_at))
        assert hb.outstanding == 70
        for _ in range(6):  # the send times of pings 0..5 were not kept
            hb.pong_received(100.0)
            assert hb.rtt is None
        hb.pong_received(100.0)  # the 7th pong answers the ping sent at 6.0
        assert hb.rtt == 94.0
        hb.pong_received(100.0)
        assert hb.rtt == 93.0
        assert hb.outstanding == 62

    def test_rtt_is_never_negative_with_a_confused_clock(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        ping(hb, 10.0)
        hb.pong_received(9.0)
        assert hb.rtt == 0.0
        assert hb.last_received == 9.0

    def test_last_received_never_goes_back(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=5.0)
        hb.bytes_received(3.0)
        assert hb.last_received == 5.0

    def test_repr_names_state(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        assert "idle" in repr(hb)
        hb.poll(10.0)
        assert "ping due" in repr(hb)
        hb.ping_sent(10.0)
        assert "awaiting reply" in repr(hb)
        hb.poll(14.0)
        assert "dead" in repr(hb)


class TestStallProtection:
    def test_poll_late_by_more_than_timeout_rearms_instead_of_killing(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        ping(hb, 10.0)  # window expires at 14.0
        action = hb.poll(18.5)  # the loop was blocked: 4.5 s late > timeout
        assert action == Wait(22.5)
        assert not hb.dead
        assert hb.stalls == 1
        assert hb.misses == 0
        assert hb.ping_in_flight
        assert hb.outstanding == 1  # no new ping: the old one gets a fresh window
        hb.pong_received(19.0)  # the pong was waiting in the socket all along
        assert hb.rtt == 9.0  # honest: measured from the real send time
        assert hb.poll(19.0) == Wait(29.0)

    def test_rearmed_window_still_ends_in_death_when_polled_on_time(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        ping(hb, 10.0)
        assert hb.poll(30.0) == Wait(34.0)
        verdict = hb.poll(34.0)
        assert isinstance(verdict, PeerDead)
        assert verdict.silent_for == 34.0
        assert hb.stalls == 1

    def test_poll_late_by_exactly_timeout_is_a_miss(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        ping(hb, 10.0)
        assert isinstance(hb.poll(18.0), PeerDead)
        assert hb.stalls == 0

    def test_poll_late_by_less_than_timeout_counts_the_miss(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4, misses=2), now=0.0)
        ping(hb, 10.0)
        assert hb.poll(17.0) == SendPing()
        assert hb.misses == 1
        assert hb.stalls == 0

    def test_rearm_is_granted_once_per_ping(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4, misses=2), now=0.0)
        ping(hb, 10.0)
        assert hb.poll(20.0) == Wait(24.0)  # first stall: re-armed
        assert hb.poll(30.0) == SendPing()  # late again for the same ping: a miss
        assert hb.misses == 1
        hb.ping_sent(30.0)
        assert hb.poll(40.0) == Wait(44.0)  # a new ping gets its own re-arm
        verdict = hb.poll(50.0)
        assert isinstance(verdict, PeerDead)
        assert hb.stalls == 2
        assert verdict.silent_for == 50.0

    def test_inbound_bytes_restore_the_rearm(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        ping(hb, 10.0)
        assert hb.poll(20.0) == Wait(24.0)
        hb.bytes_received(21.0)
        ping(hb, 31.0)
        assert hb.poll(40.0) == Wait(44.0)
        assert hb.stalls == 2

    def test_late_poll_while_idle_just_pings(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=4), now=0.0)
        assert hb.poll(100.0) == SendPing()
        hb.ping_sent(100.0)
        assert hb.poll(100.0) == Wait(104.0)
        assert hb.stalls == 0


class TestAfterDeath:
    def test_everything_after_death_is_harmless(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=1, timeout=1), now=0.0)
        ping(hb, 1.0)
        verdict = hb.poll(2.0)
        assert isinstance(verdict, PeerDead)
        before = (hb.pings_sent, hb.pongs_received, hb.outstanding, hb.last_received)
        hb.bytes_received(2.5)
        hb.pong_received(2.5)
        hb.ping_sent(2.5)
        assert hb.poll(2.5) is verdict
        assert hb.poll(1000.0) is verdict
        assert hb.dead
        assert hb.deadline is None
        assert (hb.pings_sent, hb.pongs_received, hb.outstanding, hb.last_received) == before
        assert hb.rtt is None


class TestActions:
    def test_actions_are_small_frozen_values(self) -> None:
        assert SendPing() == SendPing()
        assert hash(Wait(1.0)) == hash(Wait(1.0))
        with pytest.raises(dataclasses.FrozenInstanceError):
            Wait(1.0).deadline = 2.0  # type: ignore[misc]
        dead = PeerDead("gone", 3.0)
        match dead:
            case PeerDead(reason, silent_for):
                assert (reason, silent_for) == ("gone", 3.0)
            case _:  # pragma: no cover
                pytest.fail("PeerDead does not match positionally")

    def test_module_docstring_example_runs(self) -> None:
        failures, tried = doctest.testmod(heartbeat_module, optionflags=doctest.ELLIPSIS)
        assert tried > 5
        assert failures == 0


class TestSansIO:
    def test_module_imports_no_io_or_clock(self) -> None:
        source = Path(heartbeat_module.__file__).read_text()
        imported: set[str] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        forbidden = {"time", "socket", "select", "selectors", "threading", "asyncio", "psutil"}
        assert not imported & forbidden
        assert imported <= {
            "__future__",
            "collections",
            "dataclasses",
            "enum",
            "heapq",
            "math",
            "types",
            "typing",
            "keepalive",
        }

    def test_import_pulls_in_neither_asyncio_nor_psutil(self) -> None:
        code = (
            "import sys, keepalive.heartbeat; "
            "print(sorted({'asyncio', 'psutil'} & set(sys.modules)))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == "[]"


# ------------------------------------------------------ hypothesis: event orders

# Dyadic seconds keep most sums exact; EPS covers the rest.
seconds = st.integers(min_value=1, max_value=40).map(lambda quarters: quarters / 4)
configs = st.builds(
    HeartbeatConfig,
    interval=seconds,
    timeout=seconds,
    misses=st.integers(min_value=1, max_value=4),
)
# Inbound events: (gap as a fraction of the detection bound, whether it is a pong).
inbound_events = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=1.5), st.booleans()), max_size=40
)


class FakeDriver:
    """Drives a Heartbeat on a fake clock, obeying its actions; records what happened."""

    def __init__(self, config: HeartbeatConfig) -> None:
        self.config = config
        self.clock = 0.0
        self.hb = Heartbeat(config, self.clock)
        self.death_time: float | None = None
        self.send_times: deque[float] = deque()  # model of the unanswered pings
        self.lag_since_inbound = 0.0  # lateness accumulated since the last inbound byte
        self.stalls_at_inbound = 0
        self.pings_at_inbound = 0

    def poll(self, now: float, lateness: float = 0.0, write_delay: float = 0.0) -> None:
        """Poll at ``now`` (``lateness`` past the deadline) and obey the action."""
        assert now >= self.clock
        self.clock = now
        self.lag_since_inbound += lateness
        action = self.hb.poll(now)
        if isinstance(action, SendPing):
            self.clock += write_delay
            self.lag_since_inbound += write_delay
            self.hb.ping_sent(self.clock)
            self.send_times.append(self.clock)
            follow_up = self.hb.poll(self.clock)
            assert isinstance(follow_up, Wait)
            assert follow_up.deadline == self.clock + self.config.timeout
        elif isinstance(action, Wait):
            assert action.deadline > now
        else:
            self.check_verdict(action)

    def check_verdict(self, verdict: PeerDead) -> None:
        self.death_time = self.clock
        assert self.hb.dead
        assert self.hb.deadline is None
        assert verdict.silent_for == self.clock - self.hb.last_received
        # The exact invariant: no verdict before detection_bound seconds of silence.
        assert verdict.silent_for >= self.config.detection_bound - EPS

    def inbound(self, is_pong: bool) -> None:
        """Deliver one inbound event at the current clock."""
        hb = self.hb
        if is_pong and hb.outstanding > 0:
            # Send times beyond the newest _MAX_TRACKED_PINGS unanswered are not kept.
            measurable = len(self.send_times) <= heartbeat_module._MAX_TRACKED_PINGS
            rtt_before = hb.rtt
            hb.pong_received(self.clock)
            sent_at = self.send_times.popleft()
            assert hb.rtt == (self.clock - sent_at if measurable else rtt_before)
        else:
            hb.bytes_received(self.clock)
        assert hb.last_received == self.clock
        assert hb.misses == 0
        assert hb.outstanding == len(self.send_times)
        self.lag_since_inbound = 0.0
        self.stalls_at_inbound = hb.stalls
        self.pings_at_inbound = hb.pings_sent


@settings(max_examples=300, deadline=None)
@given(config=configs, events=inbound_events)
def test_on_time_driver_dies_exactly_at_the_bound_and_never_before(
    config: HeartbeatConfig, events: list[tuple[float, bool]]
) -> None:
    bound = config.detection_bound
    driver = FakeDriver(config)
    hb = driver.hb
    for fraction, is_pong in events:
        arrival = driver.clock + fraction * bound
        gap = arrival - hb.last_received
        # Polls due before the byte arrives; at the same instant the byte is delivered first.
        while (deadline := hb.deadline) is not None and deadline < arrival:
            driver.poll(max(deadline, driver.clock))
        if hb.dead:
            assert gap >= bound - EPS
            assert driver.death_time is not None
            assert abs(driver.death_time - (hb.last_received + bound)) <= EPS
            return
        assert gap <= bound + EPS  # a longer gap would have been fatal
        driver.clock = arrival
        driver.inbound(is_pong)
    # The peer falls silent: the verdict comes exactly detection_bound after its last byte.
    silent_since = hb.last_received
    while not hb.dead:
        deadline = hb.deadline
        assert deadline is not None
        assert deadline <= silent_since + bound + EPS
        driver.poll(max(deadline, driver.clock))
    assert driver.death_time is not None
    assert abs(driver.death_time - (silent_since + bound)) <= EPS
    assert hb.pings_sent - driver.pings_at_inbound == config.misses
    assert hb.stalls == 0


@settings(max_examples=300, deadline=None)
@given(
    config=configs,
    events=inbound_events,
    lateness=st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=10),
    write_delays=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=10),
)
def test_late_driver_never_dies_early_and_dies_within_bound_plus_lag(
    config: HeartbeatConfig,
    events: list[tuple[float, bool]],
    lateness: list[float],
    write_delays: list[float],
) -> None:
    """Polls come late (some by more than timeout: stalls) and pings are written late."""
    bound = config.detection_bound
    driver = FakeDriver(config)
    hb = driver.hb
    late_by = itertools.cycle(lateness)  # fractions of timeout
    write_by = itertools.cycle(write_delays)

    def poll_late(before: float = math.inf) -> float | None:
        """Poll late at the next deadline, unless inbound bytes at ``before`` come first."""
        deadline = hb.deadline
        assert deadline is not None
        wake = max(deadline, driver.clock) + next(late_by) * config.timeout
        if wake >= before:
            return None
        driver.poll(wake, lateness=wake - deadline, write_delay=next(write_by))
        return wake

    for fraction, is_pong in events:
        arrival = driver.clock + fraction * bound
        while not hb.dead:
            deadline = hb.deadline
            assert deadline is not None
            if poll_late(before=arrival) is None:
                break
        if hb.dead:
            return  # check_verdict asserted silence >= bound
        # Bytes that arrived while the driver was blocked or writing are delivered when it
        # gets to them, and before any poll (readable sockets before due timers).
        driver.clock = max(arrival, driver.clock)
        driver.inbound(is_pong)
    silent_since = hb.last_received
    while not hb.dead:
        poll_late()
    assert driver.death_time is not None
    stalls = hb.stalls - driver.stalls_at_inbound
    # Each stall re-arm grants one more timeout; every second of lateness delays the verdict.
    allowance = driver.lag_since_inbound + stalls * config.timeout
    assert driver.death_time <= silent_since + bound + allowance + EPS
    assert driver.death_time >= silent_since + bound - EPS
    assert stalls <= config.misses  # one re-arm per ping at most, so the verdict always comes
    if max(lateness) <= 1.0:  # never late by more than timeout: no stall re-arm at all
        assert hb.stalls == 0


class HeartbeatMachine(RuleBasedStateMachine):
    """Arbitrary call orders (the driver may misbehave): nothing raises, invariants hold."""

    def __init__(self) -> None:
        super().__init__()
        self.config = HeartbeatConfig(interval=2, timeout=1, misses=2)
        self.now = 0.0
        self.hb = Heartbeat(self.config, self.now)
        self.unanswered = 0
        self.verdict: PeerDead | None = None
        self.pings_sent = 0

    @rule(seconds=st.floats(min_value=0.0, max_value=5.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def bytes_received(self) -> None:
        self.hb.bytes_received(self.now)
        if self.verdict is None:
            assert self.hb.deadline == self.now + self.config.interval

    @rule()
    def pong_received(self) -> None:
        self.hb.pong_received(self.now)
        if self.verdict is None and self.unanswered:
            self.unanswered -= 1

    @rule()
    def ping_sent(self) -> None:
        self.hb.ping_sent(self.now)
        if self.verdict is None:
            self.unanswered += 1
            self.pings_sent += 1

    @rule()
    def poll(self) -> None:
        action = self.hb.poll(self.now)
        if isinstance(action, Wait):
            assert action.deadline > self.now
        elif isinstance(action, PeerDead):
            if self.verdict is not None:
                assert action is self.verdict
            self.verdict = action
            assert action.silent_for >= self.config.detection_bound - EPS

    @precondition(lambda self: self.verdict is None)
    @rule()
    def obey(self) -> None:
        """Poll and send a ping if asked, as a good driver would."""
        if isinstance(self.hb.poll(self.now), SendPing):
            self.ping_sent()
        self.poll()

    @invariant()
    def consistent(self) -> None:
        hb = self.hb
        assert (hb.deadline is None) == hb.dead == (hb.verdict is not None)
        assert hb.outstanding == self.unanswered >= 0
        assert hb.pings_sent == self.pings_sent
        assert hb.misses < self.config.misses or hb.dead
        assert hb.rtt is None or hb.rtt >= 0
        assert hb.srtt is None or hb.srtt >= 0
        if hb.ping_in_flight:
            assert hb.deadline is not None


TestHeartbeatMachine = HeartbeatMachine.TestCase
TestHeartbeatMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ----------------------------------------------------------------- pong filter


def reference_filter(stream: bytes, token: bytes, limit: int) -> tuple[bytes, int]:
    """Remove up to ``limit`` tokens, leftmost first, scanning on after each removal."""
    parts: list[bytes] = []
    position = removed = 0
    while removed < limit and (found := stream.find(token, position)) >= 0:
        parts.append(stream[position:found])
        position = found + len(token)
        removed += 1
    parts.append(stream[position:])
    return b"".join(parts), removed


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(edges)]


def test_heartbeat_and_filter_together() -> None:
    """A fake driver: the pong arrives split, between application lines; a line that merely
    contains the pong, or one equal to it while nothing is owed, is the application's."""
    hb = Heartbeat(HeartbeatConfig(interval=5, timeout=2), now=0.0)
    matcher = make_pong_matcher(b"PONG\n")
    assert matcher is not None
    application = b""

    def receive(data: bytes, now: float) -> None:
        nonlocal application
        out, pongs = matcher.feed(data, hb.outstanding)
        application += out
        hb.received(now, len(data), pongs)

    receive(b"PONG\nhello ", 1.0)  # no ping outstanding: this is application data
    ping(hb, 6.0)
    receive(b"world PONG\n", 6.1)  # inside a line: not a pong
    assert hb.outstanding == 1
    receive(b"PO", 6.25)
    assert hb.rtt is None
    assert hb.outstanding == 1
    receive(b"NG\n!", 6.5)
    assert hb.rtt == 0.5
    assert hb.outstanding == 0
    application += matcher.flush()
    assert application == b"PONG\nhello world PONG\n!"
    assert hb.poll(6.5) == Wait(11.5)


class TestTimerBuckets:
    def test_items_come_due_by_time_and_share_the_time_object(self) -> None:
        timers: heartbeat_module.TimerBuckets[str] = heartbeat_module.TimerBuckets()
        late = timers.add(2.0, "late")
        first = timers.add(1.0, "a")
        assert timers.add(1.0, "b") is first  # one float object per bucket
        assert timers.earliest() == 1.0
        assert timers.pop_due(0.5) is None
        assert timers.pop_due(1.0) == (1.0, ["a", "b"])
        assert timers.earliest() is late
        assert timers.entries() == 1
        assert timers.pop_due(10.0) == (2.0, ["late"])
        assert timers.earliest() is None
        assert timers.pop_due(10.0) is None

    def test_retain_drops_stale_entries_and_duplicates(self) -> None:
        timers: heartbeat_module.TimerBuckets[str] = heartbeat_module.TimerBuckets()
        live = {"a": 1.0, "b": 3.0}
        for when, item in [(1.0, "a"), (1.0, "a"), (2.0, "b"), (3.0, "b"), (4.0, "c")]:
            timers.add(when, item)
        timers.retain(lambda when, item: live.get(item) == when)
        assert timers.entries() == 2
        assert timers.pop_due(5.0) == (1.0, ["a"])
        assert timers.pop_due(5.0) == (3.0, ["b"])
        assert timers.pop_due(5.0) is None
        timers.add(1.0, "x")
        timers.clear()
        assert timers.earliest() is None

    @given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=40))
    def test_pops_in_time_order_with_every_item(self, adds: list[tuple[int, int]]) -> None:
        timers: heartbeat_module.TimerBuckets[int] = heartbeat_module.TimerBuckets()
        for when, item in adds:
            timers.add(float(when), item)
        popped: list[tuple[float, int]] = []
        while (due := timers.pop_due(math.inf)) is not None:
            popped.extend((due[0], item) for item in due[1])
        assert [when for when, _ in popped] == sorted(float(when) for when, _ in adds)
        assert sorted(popped) == sorted((float(when), item) for when, item in adds)


# ------------------------------------------------------------ the state machine, explicitly

State = heartbeat_module.HeartbeatState


def _in_state(state: heartbeat_module.HeartbeatState) -> Heartbeat:
    """A heartbeat (interval 10, timeout 5, misses 2) driven into ``state`` from t=0."""
    hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5, misses=2), now=0.0)
    if state is State.IDLE:
        return hb
    assert hb.poll(10.0) == SendPing()
    if state is State.PING_DUE:
        return hb
    hb.ping_sent(10.0)
    if state is State.AWAITING_REPLY:
        return hb
    assert hb.poll(15.0) == SendPing()
    hb.ping_sent(15.0)
    assert isinstance(hb.poll(20.0), PeerDead)
    return hb


def _fire(hb: Heartbeat, event: str) -> None:
    """Make ``event`` (a TRANSITIONS event name) happen to ``hb``."""
    deadline = hb.deadline
    if event == "inbound bytes":
        hb.received(12.0, 3, 0)
    elif event == "interval elapsed":
        assert deadline is not None
        hb.poll(deadline)
    elif event == "ping written":
        hb.ping_sent(10.0)
    elif event == "late poll forgiven":
        assert deadline is not None
        hb.poll(deadline + hb.config.timeout + 0.5)
    elif event == "ping unanswered":
        assert deadline is not None
        hb.poll(deadline)
    elif event == "last ping unanswered":
        assert deadline is not None
        hb.poll(deadline)  # first miss: ping again
        hb.ping_sent(deadline)
        hb.poll(deadline + hb.config.timeout)
    else:  # pragma: no cover
        raise AssertionError(event)


@pytest.mark.parametrize(
    ("start", "event", "end"),
    [(state, event, end) for (state, event), end in heartbeat_module.TRANSITIONS.items()],
    ids=[f"{s.value}--{e}" for (s, e) in heartbeat_module.TRANSITIONS],
)
def test_every_transition_of_the_table_happens_as_listed(
    start: heartbeat_module.HeartbeatState, event: str, end: heartbeat_module.HeartbeatState
) -> None:
    hb = _in_state(start)
    assert hb.state is start
    _fire(hb, event)
    assert hb.state is end


def test_the_table_covers_every_live_state_and_dead_is_final() -> None:
    sources = {state for state, _ in heartbeat_module.TRANSITIONS}
    assert sources == {State.IDLE, State.PING_DUE, State.AWAITING_REPLY}
    hb = _in_state(State.DEAD)
    for event in ("inbound bytes", "ping written"):
        _fire(hb, event)
        assert hb.state is State.DEAD
    assert hb.unread(30.0, 100) is False
    assert hb.state is State.DEAD


class TestNewBytesOnly:
    def test_unread_bytes_count_once_when_they_appear(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        ping(hb, 10.0)
        assert hb.miss_possible(15.0)
        assert hb.unread(15.0, 5) is True  # new: life
        assert hb.state is State.IDLE
        ping(hb, 25.0)
        assert hb.unread(30.0, 5) is False  # the same 5 bytes: nothing new
        assert isinstance(hb.poll(30.0), PeerDead)

    def test_reads_take_bytes_off_so_later_arrivals_still_count(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert hb.unread(1.0, 10)
        hb.received(2.0, 8)  # the application read 8 of them: 2 left counted
        assert hb.unread(3.0, 2) is False
        assert hb.unread(4.0, 3) is True  # one more arrived

    def test_unread_bytes_the_peer_may_be_blocked_behind_count_as_life(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert hb.unread(1.0, 600, peer_blocked=True)
        ping(hb, 11.0)
        assert hb.unread(16.0, 600, peer_blocked=True) is True  # the peer waits for us
        assert hb.last_received == 16.0
        assert hb.unread(16.5, 600) is False  # the window opened: nothing new, no life
        assert hb.unread(17.0, 0, peer_blocked=True) is False  # nothing unread: no excuse

    def test_miss_possible_only_at_a_pings_expiry(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert not hb.miss_possible(100.0)  # idle: a poll would ask for a ping
        assert hb.poll(10.0) == SendPing()
        assert not hb.miss_possible(100.0)
        hb.ping_sent(10.0)
        assert not hb.miss_possible(14.9)
        assert hb.miss_possible(15.0)


class TestReceived:
    def test_without_a_matcher_the_first_bytes_after_a_ping_answer_it(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        hb.received(1.0, 4, None)  # no ping owed: plain life
        assert hb.pongs_received == 0
        ping(hb, 11.0)
        hb.received(11.5, 4, None)
        assert hb.pongs_received == 1
        assert hb.rtt == 0.5
        hb.received(12.0, 4, None)  # nothing owed any more
        assert hb.pongs_received == 1

    def test_pongs_counted_by_a_matcher(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        ping(hb, 10.0)
        hb.ping_sent(10.5)  # an extra ping
        hb.received(11.0, 10, 2)
        assert hb.pongs_received == 2
        assert hb.outstanding == 0


class TestPingStuck:
    def test_counts_the_ping_once_our_writes_stopped_for_timeout(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert hb.poll(10.0) == SendPing()
        assert hb.ping_stuck(11.0, stuck_since=8.0) == 15.0  # from when it fell due
        assert hb.ping_stuck(14.9, stuck_since=8.0) == 15.0
        assert hb.ping_stuck(15.0, stuck_since=8.0) is None  # counted as sent at 10.0
        assert hb.state is State.AWAITING_REPLY
        assert hb.pings_sent == 1
        assert isinstance(hb.poll(15.0), PeerDead)  # its window is over already

    def test_writes_that_stopped_later_than_the_due_time_count_from_then(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert hb.poll(10.0) == SendPing()
        assert hb.ping_stuck(13.0, stuck_since=12.0) == 17.0

    def test_only_meaningful_while_a_ping_is_due(self) -> None:
        hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5), now=0.0)
        assert hb.ping_stuck(100.0, stuck_since=0.0) is None
        assert hb.pings_sent == 0


class TestDriverHelpers:
    @pytest.mark.parametrize(
        ("interval", "timeout", "grid"),
        [(1.0, 10.0, 2.0**-6), (100.0, 100.0, 0.25), (1e-6, 1.0, 2.0**-20)],
    )
    def test_timer_grid(self, interval: float, timeout: float, grid: float) -> None:
        assert heartbeat_module.timer_grid(HeartbeatConfig(interval, timeout)) == grid

    def test_grid_time_rounds_up_never_down(self) -> None:
        assert heartbeat_module.grid_time(1.01, 0.25) == 1.25
        assert heartbeat_module.grid_time(1.25, 0.25) == 1.25

    def test_ping_checks(self) -> None:
        assert heartbeat_module.check_ping(bytearray(b"P")) == b"P"
        with pytest.raises(InvalidSetting):
            heartbeat_module.check_ping(b"")
        with pytest.raises(InvalidSettingType, match="encode text first"):
            heartbeat_module.check_ping("PING")
        with pytest.raises(InvalidSettingType):
            heartbeat_module.check_ping(5)
        maker = heartbeat_module.check_ping(lambda: b"X")
        assert heartbeat_module.next_ping(maker) == b"X"
        with pytest.raises(InvalidSettingType):
            heartbeat_module.next_ping(lambda: "X")
        with pytest.raises(InvalidSetting):
            heartbeat_module.next_ping(lambda: b"")

    def test_describe_stall(self) -> None:
        text = heartbeat_module.describe_stall(3.25, HeartbeatConfig(1, 2))
        assert "3.250 s late" in text
        assert "2 s more" in text
