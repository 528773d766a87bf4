"""The soak test (benchmarks/soak.py): its checkers, and one short run end to end.

The checkers are pure (times are passed in), so their verdicts are tested here directly; the
slow test runs the whole soak for a minute: 100 supervised connections (50 sync, 50 asyncio)
through 10 fault-injecting proxies, and expects no violation.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from types import ModuleType

import pytest

SOAK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keepalive_soak", SOAK_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load()


# -- lines and streams -----------------------------------------------------------------------


def test_lines_are_deterministic_checksummed_and_distinct() -> None:
    line = soak.make_line(7, 42)
    assert line == soak.make_line(7, 42)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.startswith(b"7 42 ")
    assert line != soak.make_line(7, 43)
    assert line != soak.make_line(8, 42)
    assert line not in (b"PING\n", b"PONG\n")


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        (lambda: soak.make_line(1, 5).replace(b" ", b"x", 3), "corrupted"),
        (lambda: soak.make_line(1, 4), "duplicate"),
        (lambda: soak.make_line(1, 6), "gap"),
        (lambda: soak.make_line(2, 5), "foreign"),
        (lambda: b"garbage\n", "corrupted"),
    ],
)
def test_diagnose(received, expected) -> None:
    assert soak.diagnose(received(), 1, 5) == expected


def test_stream_accepts_its_echo_across_chunk_boundaries() -> None:
    stream = soak.LineStream(3)
    stream.begin()
    sent = b"".join(stream.next_line() for _ in range(3))
    assert stream.feed(sent[:10]) == (0, None)
    assert stream.feed(sent[10:-1]) == (2, None)
    assert stream.feed(sent[-1:]) == (1, None)
    assert stream.accepted == 3
    assert stream.bytes_accepted == len(sent)
    assert not stream.in_flight


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [
        (lambda lines: lines[1], "gap"),  # the first line lost
        (lambda lines: lines[0] + lines[0], None),  # checked below: the second copy
        (lambda lines: lines[0][:5] + b"Z" + lines[0][6:], "corrupted"),
    ],
)
def test_stream_flags_loss_duplication_and_corruption(tamper, kind) -> None:
    stream = soak.LineStream(3)
    stream.begin()
    lines = [stream.next_line() for _ in range(2)]
    accepted, problem = stream.feed(tamper(lines))
    assert problem is not None
    assert (kind or "duplicate") in problem
    assert accepted == (1 if kind is None else 0)


def test_stream_counts_the_cut_and_resends_from_the_first_unechoed_line() -> None:
    stream = soak.LineStream(1)
    stream.begin()
    lines = [stream.next_line() for _ in range(4)]
    stream.feed(lines[0] + lines[1][:7])  # line 2 partly echoed when the connection ends
    stream.end()
    assert stream.cut_lines == 3
    assert stream.cut_bytes == sum(len(line) for line in lines[1:])
    assert stream.cut_partial_bytes == 7
    stream.begin()
    assert stream.next_line() == lines[1]  # resent, numbered as before
    assert stream.lines_resent == 1
    assert stream.feed(lines[1]) == (1, None)
    assert stream.accepted == 2


def test_unexpected_echo_is_a_problem() -> None:
    stream = soak.LineStream(1)
    stream.begin()
    assert "unexpected" in stream.feed(b"hello\n")[1]


# -- hooks -----------------------------------------------------------------------------------


def test_hook_order_documented_sequences_pass() -> None:
    checker = soak.HookChecker()
    steps = [
        checker.on_backoff(0, 0.05, 1.0),  # attempt 0 failed before on_connect
        checker.on_connect(0),
        checker.on_disconnect(1),  # published, then ended
        checker.on_backoff(1, 0.08, 1.0),
        checker.on_connect(1),
        checker.on_backoff(1, 0.1, 1.0),  # ended during on_connect: not published
        checker.on_connect(1),
        checker.on_disconnect(2),  # the close: on_disconnect(CLOSED), no backoff
        checker.closed(2),
    ]
    assert steps == [[]] * len(steps)
    assert (checker.published, checker.unpublished, checker.failed) == (2, 1, 1)


@pytest.mark.parametrize(
    ("calls", "fragment"),
    [
        ([("on_disconnect", 1)], "on_disconnect in state ready"),
        ([("on_connect", 0), ("on_connect", 0)], "on_connect in state connected"),
        ([("on_connect", 0), ("on_disconnect", 1), ("on_connect", 1)], "in state ended"),
        ([("on_connect", 0), ("on_disconnect", 2)], "stats.connects 2 != 1"),
        ([("on_connect", 0), ("on_backoff", 1)], "stats.connects 1 != 0"),
        ([("on_connect", 0), ("on_disconnect", 1), ("closed", 2)], "closed with"),
    ],
)
def test_hook_order_violations_are_reported(calls, fragment) -> None:
    checker = soak.HookChecker()
    problems = []
    for name, connects in calls:
        if name == "on_backoff":
            problems += checker.on_backoff(connects, 0.1, 1.0)
        else:
            problems += getattr(checker, name)(connects)
    assert any(fragment in problem for problem in problems), problems


def test_backoff_delay_beyond_the_policy_is_reported() -> None:
    assert "outside" in soak.HookChecker().on_backoff(0, 1.5, 1.0)[0]


def test_no_hook_after_close() -> None:
    checker = soak.HookChecker()
    checker.closed(0)
    assert checker.on_connect(0) == ["on_connect in state closed"]


# -- attributing deaths to faults ------------------------------------------------------------


def _fault(kind: str, t0: float, t1: float | None, fault_id: int = 1) -> object:
    return soak.Fault(fault_id, 0, kind, t0, t0 + 0.001, t1)


HEARTBEAT = soak.DisconnectReason.HEARTBEAT_TIMEOUT.value
RESET = soak.DisconnectReason.RESET.value
LIMIT = soak.DETECTION_LIMIT


def test_heartbeat_death_in_a_freeze_is_timed_from_the_freeze() -> None:
    faults = [_fault("reset", 1.0, 1.0, 0), _fault("freeze", 10.0, 12.0)]
    fault, detection, problem = soak.attribute(10.8, 5.0, HEARTBEAT, faults, LIMIT)
    assert fault is faults[1]
    assert problem is None
    assert detection == pytest.approx(0.8)


def test_a_connection_made_during_the_freeze_is_timed_from_its_connect() -> None:
    faults = [_fault("freeze", 10.0, 12.0)]
    _, detection, problem = soak.attribute(11.85, 11.0, HEARTBEAT, faults, LIMIT)
    assert problem is None
    assert detection == pytest.approx(0.85)


def test_late_detection_is_a_violation() -> None:
    faults = [_fault("freeze", 10.0, 12.0)]
    _, detection, problem = soak.attribute(10.0 + LIMIT + 0.01, 5.0, HEARTBEAT, faults, LIMIT)
    assert detection == pytest.approx(LIMIT + 0.01)
    assert "detected" in problem


@pytest.mark.parametrize(
    ("reason", "faults", "conn_t", "fragment"),
    [
        (HEARTBEAT, [], 0.0, "no fault"),
        (HEARTBEAT, [_fault("reset", 10.0, 10.0)], 5.0, "after a reset"),
        (HEARTBEAT, [_fault("freeze", 10.0, 10.5)], 10.6, "made after the freeze ended"),
        (RESET, [_fault("freeze", 10.0, 12.0)], 5.0, "after a freeze"),
        (RESET, [_fault("reset", 10.0, 10.0)], 10.9, "made after the reset"),
        ("error", [_fault("reset", 10.0, 10.0)], 5.0, "unexpected reason"),
    ],
)
def test_deaths_no_fault_explains_are_unattributed(reason, faults, conn_t, fragment) -> None:
    _, detection, problem = soak.attribute(11.0, conn_t, reason, faults, LIMIT)
    assert detection is None
    assert fragment in problem


def test_reset_during_refuse_of_a_new_connection() -> None:
    faults = [_fault("refuse", 10.0, 11.5)]
    _, detection, problem = soak.attribute(11.2005, 11.2, RESET, faults, LIMIT)
    assert problem is None
    assert detection == pytest.approx(0.0005)


def test_live_at_and_first_at_or_after() -> None:
    history = [[1.0, 2.0], [2.5, None]]
    assert soak.live_at(history, 1.5) == [1.0, 2.0]
    assert soak.live_at(history, 2.2) is None
    assert soak.live_at(history, 3.0) == [2.5, None]
    assert soak.first_at_or_after([1.0, 2.0, 3.0], 1.5) == 2.0
    assert soak.first_at_or_after([1.0], 1.5) is None


# -- the auditor: heals and missed freezes ---------------------------------------------------


def _auditor() -> tuple[object, object, object]:
    violations = soak.Violations()
    rec = soak.Record(0, "sync", 0, violations, deque())
    auditor = soak.Auditor([rec], 1, violations)
    return auditor, rec, violations


def test_heal_is_timed_from_the_forward() -> None:
    auditor, rec, violations = _auditor()
    rec.history.append([0.0, 10.8])
    rec.history.append([11.0, None])
    auditor.fault_started(soak.Fault(1, 0, "freeze", 10.0, 10.001))
    auditor.fault_ended(1, 11.0)
    rec.accepts.extend([9.9, 11.5])
    auditor.step(11.6)
    assert auditor.heal["sync"].count == 1
    assert auditor.heal["sync"].max == pytest.approx(0.5)
    assert violations.total == 0


def test_no_heal_in_time_is_a_violation() -> None:
    auditor, _rec, violations = _auditor()
    auditor.fault_started(soak.Fault(1, 0, "reset", 10.0, 10.001))
    auditor.fault_ended(1, 10.0)
    auditor.step(10.0 + soak.HEAL_LIMIT + soak.REPORT_LAG + 0.1)
    assert violations.counts["heal"] == 1


def test_a_freeze_longer_than_the_limit_must_end_the_live_connection() -> None:
    auditor, rec, violations = _auditor()
    rec.history.append([1.0, None])  # live through the whole freeze: missed
    auditor.fault_started(soak.Fault(1, 0, "freeze", 10.0, 10.001))
    auditor.fault_ended(1, 12.0)
    auditor.step(20.0)
    assert violations.counts["missed"] == 1
    assert auditor.freeze_deaths_checked == 1


def test_histogram_quantiles() -> None:
    histogram = soak.Histogram()
    for ms in range(1, 101):
        histogram.add(ms / 1000)
    assert histogram.quantile(0.5) == pytest.approx(0.050)
    assert histogram.quantile(0.99) == pytest.approx(0.099)
    assert histogram.max == pytest.approx(0.100)
    again = soak.Histogram.from_json(histogram.to_json())
    assert again.summary() == histogram.summary()
    assert soak.Histogram().quantile(0.5) is None


LONG_CHECKS = os.environ.get("KEEPALIVE_LONG_CHECKS") == "1"
long_check = pytest.mark.skipif(
    not LONG_CHECKS,
    reason="minutes of real faults: set KEEPALIVE_LONG_CHECKS=1 to run it",
)


# -- the whole soak --------------------------------------------------------------------------


@long_check
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the soak reads /proc")
def test_soak_100_connections_for_a_minute(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    command = [sys.executable, str(SOAK_PATH), "--connections", "100", "--minutes", "1"]
    result = subprocess.run(
        [*command, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-4000:]
    assert report.exists()
