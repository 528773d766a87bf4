"""Tests for the pure backoff policies in keepalive.reconnect.

Distribution checks use fixed seeds and at least 10,000 draws. A mean must lie within five
standard errors of its theoretical value (the standard error estimated from the same draws),
which for every mode here is tighter than 3 % of the mean; shapes are checked with a
Kolmogorov-Smirnov statistic against the uniform law at the 0.1 % level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import math
import pickle
import random
import socket
import ssl
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keepalive import reconnect
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.reconnect import (
    Backoff,
    DecorrelatedJitter,
    EqualJitter,
    FullJitter,
    Jitter,
    NoJitter,
    ProportionalJitter,
    RetryPolicy,
    RetryState,
    StopReason,
    is_retryable_default,
)

# Kolmogorov-Smirnov critical value for alpha = 0.001: sqrt(-ln(alpha / 2) / 2).
KS_CRITICAL_0_1_PERCENT = math.sqrt(-math.log(0.0005) / 2)


def ks_uniform_statistic(samples: list[float]) -> float:
    """Largest gap between the empirical CDF of ``samples`` and the CDF of U(0, 1)."""
    ordered = sorted(samples)
    n = len(ordered)
    return max(max((i + 1) / n - u, u - i / n) for i, u in enumerate(ordered))


def assert_uniform(samples: list[float]) -> None:
    assert all(0.0 <= u <= 1.0 + 1e-12 for u in samples)
    statistic = ks_uniform_statistic(samples)
    assert statistic < KS_CRITICAL_0_1_PERCENT / math.sqrt(len(samples)), statistic


def assert_mean_close(observed: list[float], expected_mean: float) -> None:
    """Within 5 standard errors of ``expected_mean``, and within 3 % of it."""
    mean = statistics.fmean(observed)
    standard_error = statistics.stdev(observed) / math.sqrt(len(observed))
    assert abs(mean - expected_mean) <= 5 * standard_error, (mean, expected_mean, standard_error)
    assert abs(mean - expected_mean) <= 0.03 * abs(expected_mean), (mean, expected_mean)


def nominal_delays(initial: float, multiplier: float, cap: float, count: int) -> list[float]:
    """Independent closed form of the un-jittered schedule: min(cap, initial * mult ** k)."""
    return [min(cap, initial * multiplier**k) for k in range(count)]


def draw_runs(policy: Backoff, runs: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [list(policy.delays(rng)) for _ in range(runs)]


# ---------------------------------------------------------------------------------------------
# Deterministic schedules
# ---------------------------------------------------------------------------------------------


def test_defaults_are_grpc_connection_backoff() -> None:
    policy = Backoff()
    assert policy.initial == 1.0
    assert policy.multiplier == 1.6
    assert policy.max_delay == 120.0
    assert policy.jitter == ProportionalJitter(0.2)
    assert policy.connect_timeout == 20.0
    assert policy.max_attempts is None
    assert policy.max_elapsed is None
    assert policy.retry_on is is_retryable_default


def test_no_jitter_grows_by_multiplier_then_stays_at_cap() -> None:
    delays = list(itertools.islice(Backoff(jitter="none").delays(), 14))
    expected = [1, 1.6, 2.56, 4.096, 6.5536, 10.48576, 16.777216, 26.8435456, 42.94967296]
    expected += [68.719476736, 109.9511627776, 120, 120, 120]
    assert delays == pytest.approx(expected, rel=1e-12)
    assert delays[11:] == [120.0, 120.0, 120.0]  # the cap is exact, not approximate


def test_no_jitter_with_other_parameters() -> None:
    policy = Backoff(initial=0.5, multiplier=2, max_delay=3, jitter=0, max_attempts=6)
    assert list(policy.delays()) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_constant_schedule() -> None:
    policy = Backoff.constant(2.5, max_attempts=4)
    assert list(policy.delays()) == [2.5, 2.5, 2.5]
    assert policy == Backoff(
        initial=2.5, multiplier=1, max_delay=2.5, jitter="none", max_attempts=4
    )
    assert list(itertools.islice(Backoff.constant(7).delays(), 100)) == [7.0] * 100


def test_constant_with_jitter_stays_in_window() -> None:
    delays = list(Backoff.constant(10, jitter=0.5, max_attempts=1001).delays(random.Random(3)))
    assert len(delays) == 1000
    assert all(5.0 <= d <= 10.0 for d in delays)  # upper half cut off at max_delay = delay
    assert min(delays) < 5.5
    assert max(delays) > 9.5


def test_zero_delay_schedule_needs_max_attempts() -> None:
    assert list(Backoff.constant(0, max_attempts=4).delays()) == [0.0, 0.0, 0.0]
    for jitter in ("full", "equal", "decorrelated", 0.5):
        policy = Backoff.constant(0, jitter=jitter, max_attempts=3)
        assert list(policy.delays(random.Random(1))) == [0.0, 0.0]
    with pytest.raises(InvalidSetting) as caught:
        Backoff.constant(0)
    assert caught.value.field == "max_attempts"


# ---------------------------------------------------------------------------------------------
# Jitter modes: bounds and distributions
# ---------------------------------------------------------------------------------------------

WINDOWED_MODES: dict[str | float, Callable[[float, float], tuple[float, float]]] = {
    # mode -> (nominal, cap) -> the interval its delay is uniform on
    "proportional": lambda v, cap: (0.8 * v, min(1.2 * v, cap)),
    0.5: lambda v, cap: (0.5 * v, min(1.5 * v, cap)),
    "full": lambda v, cap: (0.0, v),
    "equal": lambda v, cap: (v / 2, v),
}


@pytest.mark.parametrize("mode", list(WINDOWED_MODES), ids=repr)
@pytest.mark.parametrize("cap", [30.0, 1e6], ids=["capped", "uncapped"])
def test_windowed_jitter_is_uniform_on_its_window(mode: str | float, cap: float) -> None:
    policy = Backoff(initial=1, multiplier=1.6, max_delay=cap, jitter=mode, max_attempts=21)
    nominals = nominal_delays(1, 1.6, cap, 20)
    runs = draw_runs(policy, runs=500, seed=20261125)  # 10,000 delays
    normalised, delays, window_means = [], [], []
    for run in runs:
        assert len(run) == 20
        for delay, nominal in zip(run, nominals, strict=True):
            low, high = WINDOWED_MODES[mode](nominal, cap)
            assert low * (1 - 1e-12) <= delay <= high * (1 + 1e-12)
            assert delay <= cap
            normalised.append((delay - low) / (high - low))
            delays.append(delay)
            window_means.append((low + high) / 2)
    assert_uniform(normalised)
    assert_mean_close(normalised, 0.5)
    assert_mean_close(delays, statistics.fmean(window_means))


@pytest.mark.parametrize(
    ("mode", "mean_ratio"), [("proportional", 1.0), ("full", 0.5), ("equal", 0.75)]
)
def test_mean_delay_over_nominal(mode: str, mean_ratio: float) -> None:
    """Theoretical means below the cap: proportional = v, full = v/2, equal = 3v/4."""
    policy = Backoff(initial=2, multiplier=1.6, max_delay=1e6, jitter=mode, max_attempts=11)
    nominals = nominal_delays(2, 1.6, 1e6, 10)
    runs = draw_runs(policy, runs=1000, seed=7)
    ratios = [delay / nominal for run in runs for delay, nominal in zip(run, nominals, strict=True)]
    assert len(ratios) == 10_000
    assert_mean_close(ratios, mean_ratio)


def capped_uniform_moments(low: float, high: float, cap: float) -> tuple[float, float]:
    """Mean of min(cap, U(low, high)) and the probability that the cap is hit."""
    if high <= cap:
        return (low + high) / 2, 0.0
    below = (cap - low) / (high - low)
    return below * (low + cap) / 2 + (1 - below) * cap, 1 - below


def test_decorrelated_jitter_first_steps_have_closed_form_means() -> None:
    """Uncapped: d1 ~ U(b, 3b) so E = 2b; d2 ~ U(b, 3 d1) so E = (b + 3 E[d1]) / 2 = 3.5b."""
    policy = Backoff(initial=1, max_delay=1e6, jitter="decorrelated", max_attempts=3)
    runs = draw_runs(policy, runs=10_000, seed=11)
    firsts = [run[0] for run in runs]
    seconds = [run[1] for run in runs]
    assert all(1 <= d1 <= 3 for d1 in firsts)
    assert all(1 <= d2 <= 3 * d1 for d1, d2 in zip(firsts, seconds, strict=True))
    assert_mean_close(firsts, 2.0)
    assert_mean_close(seconds, 3.5)
    assert_uniform([(d1 - 1) / 2 for d1 in firsts])


def test_decorrelated_jitter_capped_chain_matches_its_conditional_law() -> None:
    """Each delay is min(cap, U(base, 3 * previous)) given the previous one (base first).

    Checked over 10,000 steps of a chain that spends most of its time near the cap: the sum
    of delays against the sum of their conditional expectations (closed form for a capped
    uniform), the number of draws that hit the cap against its expectation, and uniformity
    of the draws whose window lies below the cap.
    """
    base, cap = 1.0, 30.0
    policy = Backoff(initial=base, max_delay=cap, jitter="decorrelated", max_attempts=21)
    runs = draw_runs(policy, runs=500, seed=99)
    delays, expectations, residuals, uncapped_positions = [], [], [], []
    capped_hits, expected_hits, hit_variance = 0, 0.0, 0.0
    for run in runs:
        assert len(run) == 20
        for previous, delay in zip([base, *run], run, strict=False):
            high = 3 * previous
            assert base <= delay <= min(cap, high)
            mean, p_cap = capped_uniform_moments(base, high, cap)
            delays.append(delay)
            expectations.append(mean)
            residuals.append(delay - mean)
            capped_hits += delay == cap
            expected_hits += p_cap
            hit_variance += p_cap * (1 - p_cap)
            if high <= cap:
                uncapped_positions.append((delay - base) / (high - base))
    # Residuals have mean 0 (3 % of 0 is no bound, so only the standard-error test applies).
    residual_se = statistics.stdev(residuals) / math.sqrt(len(residuals))
    assert abs(statistics.fmean(residuals)) <= 5 * residual_se
    assert abs(sum(delays) - sum(expectations)) <= 0.03 * sum(expectations)
    assert abs(capped_hits - expected_hits) <= 5 * math.sqrt(hit_variance)
    assert expected_hits > 1000  # the cap really is exercised
    assert len(uncapped_positions) > 1000
    assert_uniform(uncapped_positions)


def test_custom_growth_for_decorrelated_jitter() -> None:
    policy = Backoff(initial=1, max_delay=1e6, jitter=DecorrelatedJitter(growth=2), max_attempts=2)
    firsts = [run[0] for run in draw_runs(policy, runs=10_000, seed=5)]
    assert all(1 <= d <= 2 for d in firsts)
    assert_mean_close(firsts, 1.5)


# ---------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------

RANDOM_MODES: list[object] = [
    "proportional",
    "full",
    "equal",
    "decorrelated",
    0.5,
    ProportionalJitter(0.1),
]


@pytest.mark.parametrize("jitter", RANDOM_MODES, ids=repr)
def test_same_seed_same_sequence_different_seed_different(jitter: str | float | Jitter) -> None:
    policy = Backoff(jitter=jitter)

    def first(seed: int | None) -> list[float]:
        rng = None if seed is None else random.Random(seed)
        return list(itertools.islice(policy.delays(rng), 30))

    assert first(1234) == first(1234)
    assert first(1234) != first(1235)
    assert first(None) != first(None)  # a fresh unseeded generator each time


def test_policy_is_stateless_and_generators_are_independent() -> None:
    policy = Backoff(jitter="decorrelated", max_attempts=30)
    alone = list(policy.delays(random.Random(8)))
    first, second = policy.delays(random.Random(8)), policy.delays(random.Random(8))
    interleaved = [(next(first), next(second)) for _ in range(29)]
    assert [a for a, _ in interleaved] == alone
    assert [b for _, b in interleaved] == alone
    assert list(policy.delays(random.Random(8))) == alone


# ---------------------------------------------------------------------------------------------
# Stop conditions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("max_attempts", "count"), [(1, 0), (2, 1), (5, 4), (40, 39)])
def test_max_attempts_counts_the_first_attempt(max_attempts: int, count: int) -> None:
    policy = Backoff(max_attempts=max_attempts)
    assert len(list(policy.delays(random.Random(0)))) == count


def test_max_elapsed_stops_before_the_delay_that_would_pass_it() -> None:
    # 1 + 1.6 + 2.56 + 4.096 = 9.256; the next (6.5536) would reach 15.81 > 10.
    assert len(list(Backoff(jitter="none", max_elapsed=10).delays())) == 4
    # Reaching the bound exactly is allowed.
    assert list(Backoff.constant(2, max_elapsed=6).delays()) == [2.0, 2.0, 2.0]
    # Whichever limit comes first wins.
    assert len(list(Backoff(jitter="none", max_elapsed=10, max_attempts=3).delays())) == 2
    assert len(list(Backoff(jitter="none", max_elapsed=2, max_attempts=30).delays())) == 1
    assert list(Backoff(jitter="none", max_elapsed=0.5).delays()) == []


def test_endless_without_limits() -> None:
    assert len(list(itertools.islice(Backoff().delays(random.Random(1)), 5000))) == 5000


def test_deadline_is_start_plus_max_elapsed() -> None:
    assert Backoff(max_elapsed=30).deadline(100.0) == 130.0
    assert Backoff().deadline(100.0) is None


@st.composite
def policies(draw: st.DrawFn) -> Backoff:
    initial = draw(st.floats(0.001, 100))
    jitter = draw(
        st.one_of(
            st.sampled_from(["none", "proportional", "full", "equal", "decorrelated"]),
            st.floats(0, 0.99),
            st.builds(DecorrelatedJitter, st.floats(1, 10)),
        )
    )
    return Backoff(
        initial=initial,
        multiplier=draw(st.floats(1, 5)),
        max_delay=initial * draw(st.floats(1, 1000)),
        jitter=jitter,
        max_attempts=draw(st.none() | st.integers(1, 60)),
        max_elapsed=draw(st.none() | st.floats(0.001, 5000)),
    )


@settings(deadline=None, max_examples=300)
@given(policy=policies(), seed=st.integers(0, 2**32))
def test_properties_of_every_sequence(policy: Backoff, seed: int) -> None:
    limit = 200
    delays = list(itertools.islice(policy.delays(random.Random(seed)), limit))
    assert all(0 <= delay <= policy.max_delay for delay in delays)
    if isinstance(policy.jitter, DecorrelatedJitter):
        assert all(delay >= policy.initial for delay in delays)
    if policy.jitter == NoJitter():
        nominals = nominal_delays(policy.initial, policy.multiplier, policy.max_delay, len(delays))
        assert delays == pytest.approx(nominals, rel=1e-9)
    if policy.max_attempts is not None:
        assert len(delays) <= policy.max_attempts - 1
    if policy.max_elapsed is not None:
        assert sum(delays) <= policy.max_elapsed
    elif policy.max_attempts is not None:
        assert len(delays) == min(limit, policy.max_attempts - 1)
    else:
        assert len(delays) == limit


# ---------------------------------------------------------------------------------------------
# Custom jitter and custom policies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HalfJitter:
    """A user-written jitter: half the nominal delay, plus a fixed offset."""

    offset: float = 0.0

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        return nominal / 2 + self.offset


def test_custom_jitter_plugs_in_and_is_clamped() -> None:
    policy = Backoff(initial=2, multiplier=2, max_delay=16, jitter=HalfJitter(), max_attempts=6)
    assert list(policy.delays()) == [1.0, 2.0, 4.0, 8.0, 8.0]
    low = Backoff(initial=2, jitter=HalfJitter(offset=-100), max_attempts=3)
    assert list(low.delays()) == [0.0, 0.0]
    high = Backoff(initial=2, max_delay=5, jitter=HalfJitter(offset=1e9), max_attempts=3)
    assert list(high.delays()) == [5.0, 5.0]


@dataclass(frozen=True)
class BrokenJitter:
    result: object

    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        return self.result  # type: ignore[return-value]  # deliberately wrong


def test_broken_custom_jitter_fails_loudly() -> None:
    with pytest.raises(InvalidSetting) as caught:
        next(Backoff(jitter=BrokenJitter(math.nan)).delays())
    assert caught.value.field == "jitter"
    with pytest.raises(InvalidSettingType) as caught_type:
        next(Backoff(jitter=BrokenJitter("1")).delays())
    assert caught_type.value.field == "jitter"


@dataclass
class MutableJitter:
    def apply(
        self, nominal: float, previous: float | None, policy: Backoff, rng: random.Random
    ) -> float:
        return nominal


def test_unhashable_or_uninstantiated_jitter_is_refused() -> None:
    with pytest.raises(InvalidSettingType, match="hashable"):
        Backoff(jitter=MutableJitter())
    with pytest.raises(InvalidSettingType, match=r"FullJitter\(\)"):
        Backoff(jitter=FullJitter)  # type: ignore[arg-type]  # the class, not an instance


class ListedDelays:
    """A user-written policy: a fixed list of delays, retrying only refusals."""

    connect_timeout = 3.0

    def __init__(self, *delays: float) -> None:
        self._delays = delays

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        return iter(self._delays)

    def deadline(self, start: float) -> float | None:
        return None

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionRefusedError)


def test_retry_policy_protocol_is_met_by_backoff_and_custom_policies() -> None:
    custom: RetryPolicy = ListedDelays(0.1, 0.2)  # also checked statically by mypy
    builtin: RetryPolicy = Backoff.constant(1)
    assert isinstance(custom, RetryPolicy)
    assert isinstance(builtin, RetryPolicy)
    assert not isinstance(object(), RetryPolicy)
    state = RetryState(custom, start=0.0)
    refused = ConnectionRefusedError()
    assert state.next_delay(refused, now=0.0) == 0.1
    assert state.next_delay(refused, now=1.0) == 0.2
    assert state.next_delay(refused, now=2.0) is None
    assert state.stop_reason is StopReason.EXHAUSTED


def test_retry_state_refuses_a_custom_policys_invalid_delay() -> None:
    state = RetryState(ListedDelays(math.nan), start=0.0)
    with pytest.raises(InvalidSetting) as caught:
        state.next_delay(ConnectionRefusedError(), now=0.0)
    assert caught.value.field == "delays"


# ---------------------------------------------------------------------------------------------
# RetryState: the driver's bookkeeping
# ---------------------------------------------------------------------------------------------


def test_retry_state_grants_delays_until_attempts_run_out() -> None:
    state = RetryState(Backoff(jitter="none", max_attempts=3), start=0.0)
    refused = ConnectionRefusedError()
    assert state.next_delay(refused, now=0.1) == 1.0
    assert state.next_delay(refused, now=1.2) == 1.6
    assert (state.retries, state.total_delay) == (2, 2.6)
    assert state.next_delay(refused, now=3.0) is None
    assert state.stop_reason is StopReason.EXHAUSTED
    assert state.next_delay(refused, now=3.1) is None  # sticky
    assert state.retries == 2


def test_retry_state_stops_on_non_retryable_error() -> None:
    state = RetryState(Backoff(), start=0.0, rng=random.Random(1))
    assert state.next_delay(ValueError("bad address"), now=0.0) is None
    assert state.stop_reason is StopReason.NOT_RETRYABLE
    assert state.next_delay(ConnectionRefusedError(), now=0.0) is None  # sticky
    assert state.retries == 0


def test_retry_state_deadline_counts_time_spent_connecting() -> None:
    policy = Backoff(jitter="none", max_elapsed=10)
    state = RetryState(policy, start=100.0)
    assert state.deadline == 110.0
    refused = ConnectionRefusedError()
    assert state.next_delay(refused, now=100.5) == 1.0  # retry starts at 101.5
    # The delays alone (1 + 1.6) fit in 10 s, but connecting ate the time: 108.5 + 1.6 > 110.
    assert state.next_delay(refused, now=108.5) is None
    assert state.stop_reason is StopReason.DEADLINE
    assert "DEADLINE" in repr(state)
    exact = RetryState(policy, start=100.0)
    assert exact.next_delay(refused, now=109.0) == 1.0  # starting right at the deadline is fine


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_documented_driver_loop_against_a_refusing_loopback_port() -> None:
    """The loop from the module docstring, with real refusals and a fake clock and sleep."""
    port = closed_loopback_port()
    clock = [0.0]
    slept: list[float] = []
    policy = Backoff.constant(0.25, max_attempts=4, connect_timeout=2)

    def connect(timeout: float) -> socket.socket:
        clock[0] += 0.01
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def sleep(delay: float) -> None:
        slept.append(delay)
        clock[0] += delay

    state = RetryState(policy, start=clock[0], rng=random.Random(0))

    def connect_with_retries() -> socket.socket:
        while True:
            try:
                return connect(timeout=policy.connect_timeout)
            except Exception as exc:
                delay = state.next_delay(exc, now=clock[0])
                if delay is None:
                    raise
                sleep(delay)

    with pytest.raises(ConnectionRefusedError):
        connect_with_retries()
    assert slept == [0.25, 0.25, 0.25]
    assert state.retries == 3
    assert state.stop_reason is StopReason.EXHAUSTED


# ---------------------------------------------------------------------------------------------
# Retryable errors
# ---------------------------------------------------------------------------------------------

RETRYABLE = [
    ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    ConnectionAbortedError(errno.ECONNABORTED, "aborted"),
    BrokenPipeError(errno.EPIPE, "broken pipe"),
    ConnectionError("no errno"),
    TimeoutError(),  # socket.timeout is the same class since 3.10
    PeerUnresponsive("no pong in 10 s"),
    OSError(errno.ENETUNREACH, "network unreachable"),
    OSError(errno.EHOSTUNREACH, "host unreachable"),
    OSError(errno.ENETDOWN, "network down"),
    OSError(errno.EHOSTDOWN, "host down"),
    OSError(errno.ENETRESET, "network reset"),
    OSError(errno.ETIMEDOUT, "timed out"),
    OSError(errno.ECONNREFUSED, "refused"),
    OSError(errno.ECONNRESET, "reset"),
    OSError(errno.ECONNABORTED, "aborted"),
    OSError(errno.EAGAIN, "try again"),
    BlockingIOError(errno.EAGAIN, "try again"),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
]

NOT_RETRYABLE = [
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ssl.SSLError(errno.ECONNRESET, "an SSL error whose code happens to equal ECONNRESET"),
    ssl.SSLCertVerificationError(1, "certificate verify failed"),
    ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
    OSError(errno.EADDRNOTAVAIL, "cannot assign requested address"),
    PermissionError(errno.EACCES, "permission denied"),
    FileNotFoundError(errno.ENOENT, "no such file"),
    OSError(errno.EBADF, "bad file descriptor"),
    OSError("no errno at all"),
    ValueError("bad port"),
    TypeError("not a str"),
    RuntimeError("bug"),
    KeyboardInterrupt(),
    SystemExit(1),
    GeneratorExit(),
]


@pytest.mark.parametrize("exc", RETRYABLE, ids=repr)
def test_default_predicate_retries_transient_errors(exc: BaseException) -> None:
    assert is_retryable_default(exc) is True
    assert Backoff().is_retryable(exc) is True


@pytest.mark.parametrize("exc", NOT_RETRYABLE, ids=repr)
def test_default_predicate_refuses_permanent_errors(exc: BaseException) -> None:
    assert is_retryable_default(exc) is False
    assert Backoff().is_retryable(exc) is False


def test_real_loopback_errors_are_classified() -> None:
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", closed_loopback_port()), timeout=2)
    assert is_retryable_default(refused.value)

    left, right = socket.socketpair()
    with left, right:
        left.settimeout(0.01)
        with pytest.raises(TimeoutError) as timed_out:
            left.recv(1)
        assert is_retryable_default(timed_out.value)
        right.close()
        with pytest.raises(BrokenPipeError) as broken:
            left.sendall(b"x" * 1_000_000)
        assert is_retryable_default(broken.value)

    with socket.socket() as sock, pytest.raises(OSError, match="assign") as unassigned:
        sock.bind(("192.0.2.1", 0))  # TEST-NET-1, not on this host; bind sends nothing
    assert unassigned.value.errno == errno.EADDRNOTAVAIL
    assert not is_retryable_default(unassigned.value)

    with pytest.raises(socket.gaierror) as bad_name:  # numeric-only: no resolver traffic
        socket.getaddrinfo("not-an-address", 80, flags=socket.AI_NUMERICHOST)
    assert not is_retryable_default(bad_name.value)


def test_real_tls_handshake_failure_is_not_retryable() -> None:
    """A TLS client talking to a plain-text loopback server gets an SSLError."""
    server = socket.create_server(("127.0.0.1", 0))

    def plain_text_server() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(2)
            # The client may give up and reset at any point after its ClientHello.
            with contextlib.suppress(OSError):
                conn.recv(65536)  # the ClientHello
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass

    thread = threading.Thread(target=plain_text_server, daemon=True)
    thread.start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(server.getsockname(), timeout=2) as raw,
            pytest.raises(ssl.SSLError) as caught,
        ):
            context.wrap_socket(raw)
    finally:
        thread.join(timeout=5)
        server.close()
    assert not is_retryable_default(caught.value)
    assert not Backoff().is_retryable(caught.value)


def test_timeouts_of_asyncio_and_futures_are_retryable() -> None:
    """Distinct classes before Python 3.11, aliases of TimeoutError since: retried on both."""
    import asyncio
    import concurrent.futures

    assert is_retryable_default(asyncio.TimeoutError())
    assert is_retryable_default(concurrent.futures.TimeoutError())
    assert not is_retryable_default(asyncio.CancelledError())


def test_retry_on_exception_types() -> None:
    only_value_errors = Backoff(retry_on=(ValueError,))
    assert only_value_errors.is_retryable(ValueError())
    assert only_value_errors.is_retryable(InvalidSetting("x", 1, "y"))  # a subclass
    assert not only_value_errors.is_retryable(ConnectionRefusedError())
    single = Backoff(retry_on=ConnectionResetError)
    assert single.retry_on == (ConnectionResetError,)
    assert single.is_retryable(ConnectionResetError())
    assert not single.is_retryable(ConnectionRefusedError())
    assert not Backoff(retry_on=()).is_retryable(ConnectionRefusedError())


def test_retry_on_predicate() -> None:
    def only_refusals(exc: BaseException) -> bool:
        return isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED

    policy = Backoff(retry_on=only_refusals)
    assert policy.is_retryable(OSError(errno.ECONNREFUSED, "refused"))
    assert not policy.is_retryable(ConnectionResetError(errno.ECONNRESET, "reset"))
    truthy = Backoff(retry_on=lambda exc: "yes")  # type: ignore[arg-type]
    assert truthy.is_retryable(ValueError()) is True
    composed = Backoff(retry_on=lambda exc: is_retryable_default(exc) or isinstance(exc, EOFError))
    assert composed.is_retryable(EOFError())
    assert composed.is_retryable(TimeoutError())


def test_non_exceptions_are_never_retried_whatever_retry_on_says() -> None:
    for policy in (Backoff(retry_on=(BaseException,)), Backoff(retry_on=lambda exc: True)):
        assert not policy.is_retryable(KeyboardInterrupt())
        assert not policy.is_retryable(SystemExit(0))
        assert policy.is_retryable(ValueError())


@pytest.mark.parametrize("retry_on", [42, "ConnectionError", (ValueError, 3), int, [ValueError]])
def test_bad_retry_on_is_refused(retry_on: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        Backoff(retry_on=retry_on)  # type: ignore[arg-type]
    assert caught.value.field == "retry_on"


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_import_and_predicate_load_neither_asyncio_nor_ssl() -> None:
    code = (
        "import sys, errno\n"
        "import keepalive.reconnect as r\n"
        "assert r.is_retryable_default(OSError(errno.ECONNRESET, 'x'))\n"
        "assert not r.is_retryable_default(ValueError())\n"
        "print(sorted(m for m in ('asyncio', 'ssl', 'psutil') if m in sys.modules))\n"
    )
    assert run_python(code) == "[]"


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


class Opaque:
    """Not a jitter; its repr is stable, so pytest-xdist workers agree on the test ids."""

    def __repr__(self) -> str:
        return "Opaque()"


BAD_SETTINGS: list[tuple[dict[str, object], str, type[Exception]]] = [
    ({"initial": -1}, "initial", InvalidSetting),
    ({"initial": math.nan}, "initial", InvalidSetting),
    ({"initial": math.inf}, "initial", InvalidSetting),
    ({"initial": 0}, "initial", InvalidSetting),
    ({"initial": "1"}, "initial", InvalidSettingType),
    ({"initial": True}, "initial", InvalidSettingType),
    ({"multiplier": 0.5}, "multiplier", InvalidSetting),
    ({"multiplier": math.nan}, "multiplier", InvalidSetting),
    ({"multiplier": math.inf}, "multiplier", InvalidSetting),
    ({"multiplier": True}, "multiplier", InvalidSettingType),
    ({"initial": 2, "max_delay": 1}, "max_delay", InvalidSetting),
    ({"max_delay": -1}, "max_delay", InvalidSetting),
    ({"max_delay": math.nan}, "max_delay", InvalidSetting),
    ({"jitter": 1.0}, "jitter", InvalidSetting),
    ({"jitter": -0.1}, "jitter", InvalidSetting),
    ({"jitter": math.nan}, "jitter", InvalidSetting),
    ({"jitter": "Full"}, "jitter", InvalidSetting),
    ({"jitter": "gaussian"}, "jitter", InvalidSetting),
    ({"jitter": True}, "jitter", InvalidSettingType),
    ({"jitter": None}, "jitter", InvalidSettingType),
    ({"jitter": Opaque()}, "jitter", InvalidSettingType),
    ({"max_attempts": 0}, "max_attempts", InvalidSetting),
    ({"max_attempts": -3}, "max_attempts", InvalidSetting),
    ({"max_attempts": 2.0}, "max_attempts", InvalidSettingType),
    ({"max_attempts": True}, "max_attempts", InvalidSettingType),
    ({"max_elapsed": 0}, "max_elapsed", InvalidSetting),
    ({"max_elapsed": -5}, "max_elapsed", InvalidSetting),
    ({"max_elapsed": math.nan}, "max_elapsed", InvalidSetting),
    ({"connect_timeout": 0}, "connect_timeout", InvalidSetting),
    ({"connect_timeout": -1}, "connect_timeout", InvalidSetting),
    ({"connect_timeout": None}, "connect_timeout", InvalidSettingType),
]


@pytest.mark.parametrize(("kwargs", "field", "error"), BAD_SETTINGS, ids=repr)
def test_bad_settings_name_the_field(
    kwargs: dict[str, object], field: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        Backoff(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidSetting)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}=")
    assert "expected" in str(caught.value)
    if error is InvalidSettingType:
        assert isinstance(caught.value, TypeError)
    else:
        assert isinstance(caught.value, ValueError)


def test_bad_jitter_name_lists_the_names() -> None:
    with pytest.raises(InvalidSetting, match="'decorrelated'"):
        Backoff(jitter="gaussian")


def test_other_bad_values() -> None:
    with pytest.raises(InvalidSetting) as caught:
        Backoff.constant(-1)
    assert caught.value.field == "delay"
    with pytest.raises(InvalidSetting) as caught:
        ProportionalJitter(1.5)
    assert caught.value.field == "ProportionalJitter.fraction"
    with pytest.raises(InvalidSetting) as caught:
        DecorrelatedJitter(0.5)
    assert caught.value.field == "DecorrelatedJitter.growth"
    with pytest.raises(InvalidSettingType) as caught:
        Backoff().delays(42)  # type: ignore[arg-type]
    assert caught.value.field == "rng"


# ---------------------------------------------------------------------------------------------
# Value semantics
# ---------------------------------------------------------------------------------------------


def test_jitter_spellings_make_equal_hashable_policies() -> None:
    spellings = [Backoff(), Backoff(jitter=0.2), Backoff(jitter="proportional")]
    spellings.append(Backoff(jitter=ProportionalJitter(0.2)))
    assert len(set(spellings)) == 1
    assert Backoff(jitter=0) == Backoff(jitter="none") == Backoff(jitter=NoJitter())
    assert Backoff(jitter="full").jitter == FullJitter()
    assert Backoff(jitter="equal").jitter == EqualJitter()
    assert Backoff(jitter="decorrelated").jitter == DecorrelatedJitter(3.0)
    assert Backoff(max_attempts=3) != Backoff(max_attempts=4)
    assert {Backoff.constant(1): "a"}[Backoff.constant(1.0)] == "a"


def test_policy_is_frozen_and_replace_revalidates() -> None:
    policy = Backoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.initial = 2.0  # type: ignore[misc]
    assert dataclasses.replace(policy, max_attempts=3) == Backoff(max_attempts=3)
    with pytest.raises(InvalidSetting):
        dataclasses.replace(policy, max_attempts=0)


def test_policies_survive_pickle_for_worker_processes() -> None:
    for policy in (
        Backoff(),
        Backoff.constant(2, jitter="decorrelated", max_attempts=3),
        Backoff(jitter=DecorrelatedJitter(2.0), retry_on=(ValueError,), max_elapsed=9),
    ):
        copy = pickle.loads(pickle.dumps(policy))
        assert copy == policy
        seed = 4
        assert list(itertools.islice(copy.delays(random.Random(seed)), 20)) == list(
            itertools.islice(policy.delays(random.Random(seed)), 20)
        )


@pytest.mark.parametrize(
    "policy",
    [
        Backoff(),
        Backoff(jitter="decorrelated", max_attempts=5, max_elapsed=60.0, connect_timeout=3),
        Backoff(initial=0.1, multiplier=2, max_delay=10, jitter=DecorrelatedJitter(2.0)),
        Backoff.constant(2.5),
        Backoff.constant(0, jitter="full", max_attempts=3),
        Backoff(retry_on=(ConnectionResetError, TimeoutError)),
    ],
    ids=repr,
)
def test_repr_is_readable_and_round_trips(policy: Backoff) -> None:
    text = repr(policy)
    assert "0x" not in text
    namespace = {name: getattr(reconnect, name) for name in reconnect.__all__}
    namespace |= {"ConnectionResetError": ConnectionResetError, "TimeoutError": TimeoutError}
    assert eval(text, namespace) == policy


def test_repr_examples() -> None:
    assert repr(Backoff()) == (
        "Backoff(initial=1.0, multiplier=1.6, max_delay=120.0, "
        "jitter=ProportionalJitter(fraction=0.2), connect_timeout=20.0)"
    )
    assert repr(Backoff.constant(5, max_attempts=3)) == (
        "Backoff.constant(5.0, jitter=NoJitter(), max_attempts=3, connect_timeout=20.0)"
    )

    def only_resets(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionResetError)

    assert repr(Backoff(retry_on=only_resets)).endswith(
        "retry_on=" + only_resets.__qualname__ + ")"
    )
