"""The pure supervisor core: options, states, counters, backoff across outages, reasons, the
failure log, which hook fires when, and the log messages."""

from __future__ import annotations

import errno
import logging
import random
from typing import Any

import pytest

from keepalive import supervision
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.reconnect import Backoff, StopReason
from keepalive.supervision import (
    FAILURES_KEPT,
    AttemptFailure,
    DisconnectReason,
    NextAttempt,
    SupervisorCore,
    SupervisorOptions,
    SupervisorState,
    classify_disconnect,
)

STEADY = Backoff(initial=1.0, multiplier=2.0, max_delay=100.0, jitter="none")
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "refused")


def test_first_outage_backs_off_per_policy() -> None:
    core = SupervisorCore(STEADY)
    assert core.state is SupervisorState.IDLE
    delays: list[float] = []
    now = 0.0
    for _ in range(4):
        core.attempt_started(now)
        assert core.state is SupervisorState.CONNECTING  # type: ignore[comparison-overlap]
        delay = core.attempt_failed(REFUSED, now).delay
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
    assert core.attempt_failed(REFUSED, 0).delay == 1.0
    core.attempt_started(1)
    assert core.attempt_failed(REFUSED, 1).delay == 2.0
    core.attempt_started(3)
    core.connected(3)
    dead = PeerUnresponsive("no pong")
    assert core.disconnected(DisconnectReason.HEARTBEAT_TIMEOUT, dead, 20).delay == 0.0
    assert core.last_disconnect is DisconnectReason.HEARTBEAT_TIMEOUT
    core.attempt_started(20)
    assert core.attempt_failed(REFUSED, 20).delay == 1.0  # the sequence starts over
    stats = core.stats(21)
    assert stats.total_uptime == 17
    assert stats.disconnects == 1


def test_short_lived_connection_continues_the_backoff() -> None:
    core = SupervisorCore(STEADY, healthy_after=10)
    core.attempt_started(0)
    assert core.attempt_failed(REFUSED, 0).delay == 1.0
    core.attempt_started(1)
    core.connected(1)
    # Dropped after 2 s: not healthy, so the next wait is the sequence's next delay.
    assert core.disconnected(DisconnectReason.RESET, ConnectionResetError(), 3).delay == 2.0
    assert core.state is SupervisorState.BACKING_OFF


def test_policy_gives_up() -> None:
    core = SupervisorCore(Backoff(initial=1.0, max_attempts=2, jitter="none"))
    core.attempt_started(0)
    assert core.attempt_failed(REFUSED, 0).delay == 1.0
    core.attempt_started(1)
    assert core.attempt_failed(REFUSED, 1).delay is None
    assert core.state is SupervisorState.FAILED
    assert core.stop_reason is StopReason.EXHAUSTED


def test_non_retryable_error_fails_at_once() -> None:
    core = SupervisorCore(STEADY)
    core.attempt_started(0)
    assert core.attempt_failed(PermissionError("denied"), 0).delay is None
    assert core.stop_reason is StopReason.NOT_RETRYABLE


def test_closed_supervisor_never_retries() -> None:
    core = SupervisorCore(STEADY)
    core.attempt_started(0)
    core.connected(0)
    core.closed(4)
    assert core.state is SupervisorState.CLOSED
    assert core.disconnected(DisconnectReason.CLOSED, None, 4).delay is None
    assert core.attempt_failed(REFUSED, 5).delay is None
    core.attempt_started(6)
    assert core.state is SupervisorState.CLOSED
    assert core.stats(9).total_uptime == 4


def test_seeded_jitter_is_reproducible() -> None:
    def run(seed: int) -> list[float | None]:
        core = SupervisorCore(Backoff(jitter="full"), rng=random.Random(seed))
        out = []
        for step in range(5):
            core.attempt_started(step)
            out.append(core.attempt_failed(REFUSED, step).delay)
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


class _Wrapper(Exception):
    """A wrapper naming no reason itself, as trio's ``BrokenResourceError`` is."""


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer``, raised with ``raise outer from inner``."""
    try:
        raise outer from inner
    except BaseException as exc:
        return exc


def _raised_while_handling(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer``, raised inside ``except`` handling ``inner`` (implicit ``__context__``)."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - the implicit chain is what this builds
    except BaseException as exc:
        return exc


def _raised_from_none(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer``, raised inside ``except`` handling ``inner`` but ``from None``."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer from None
    except BaseException as exc:
        return exc


RESET = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # trio: BrokenResourceError from the socket's OSError (SSLStream adds a level)
        (lambda: _raised_from(_Wrapper("broken"), RESET), DisconnectReason.RESET),
        (
            lambda: _raised_from(_Wrapper("tls"), _raised_from(_Wrapper("broken"), RESET)),
            DisconnectReason.RESET,
        ),
        (
            lambda: _raised_from(_Wrapper(), OSError(errno.ETIMEDOUT, "timed out")),
            DisconnectReason.KERNEL_TIMEOUT,
        ),
        (
            lambda: _raised_from(_Wrapper(), PeerUnresponsive("x")),
            DisconnectReason.HEARTBEAT_TIMEOUT,
        ),
        (lambda: _raised_from(_Wrapper(), EOFError()), DisconnectReason.PEER_CLOSED),
        # an application's own error raised while handling the end
        (lambda: _raised_while_handling(ValueError("protocol"), RESET), DisconnectReason.RESET),
        (lambda: _raised_from_none(ValueError("protocol"), RESET), DisconnectReason.ERROR),
        # the outermost error that names a reason gives it
        (lambda: _raised_from(PeerUnresponsive("x"), RESET), DisconnectReason.HEARTBEAT_TIMEOUT),
        (lambda: _raised_from(BrokenPipeError(), TimeoutError()), DisconnectReason.RESET),
        # chains of both kinds are followed to their end
        (
            lambda: _raised_from(_Wrapper(), _raised_while_handling(ValueError(), RESET)),
            DisconnectReason.RESET,
        ),
        (lambda: _raised_from(_Wrapper(), ValueError("no reason")), DisconnectReason.ERROR),
    ],
    ids=[
        "wrapped-reset",
        "wrapped-twice-reset",
        "wrapped-etimedout",
        "wrapped-heartbeat",
        "wrapped-eof",
        "raised-while-handling-reset",
        "raised-from-none",
        "outer-heartbeat-wins",
        "outer-reset-wins",
        "cause-then-context",
        "wrapped-no-reason",
    ],
)
def test_classify_disconnect_looks_through_wrappers(make: Any, reason: DisconnectReason) -> None:
    assert classify_disconnect(make()) is reason


def test_classify_disconnect_follows_cause_before_context() -> None:
    error = _raised_while_handling(_Wrapper("outer"), TimeoutError())
    error.__cause__ = RESET  # both set: `raise ... from` wins, as in a traceback
    assert classify_disconnect(error) is DisconnectReason.RESET


def test_classify_disconnect_ends_on_a_chain_that_loops() -> None:
    first, second = _Wrapper("first"), _Wrapper("second")
    first.__cause__, second.__cause__ = second, first  # assigned by hand: a loop
    assert classify_disconnect(first) is DisconnectReason.ERROR


def test_bad_healthy_after() -> None:
    with pytest.raises(InvalidSetting, match="healthy_after"):
        SupervisorCore(STEADY, healthy_after=-1)


# ---------------------------------------------------------------------------------------------
# Options: one check for both supervisors


def _options(**overrides: object) -> SupervisorOptions:
    arguments: dict[str, object] = {
        "heartbeat": None,
        "ping": b"PING\n",
        "pong": b"PONG\n",
        "framing": None,
        "pong_matcher": None,
        "retry": STEADY,
        "healthy_after": 30.0,
        "on_connect": None,
        "on_disconnect": None,
        "on_backoff": None,
        "handler": None,
        "handler_shape": "(conn)",
        "rng": None,
        "name": None,
        "ssl": None,
        "server_hostname": None,
    }
    address = overrides.pop("address", ("db.internal", 7000))
    arguments.update(overrides)
    return SupervisorOptions.check(address, **arguments)  # type: ignore[arg-type]


def test_options_defaults_and_derived_values() -> None:
    options = _options()
    assert options.address == ("db.internal", 7000)
    assert options.label == "db.internal:7000"
    assert options.server_hostname == "db.internal"
    assert options.new_matcher() is not options.new_matcher()  # one matcher per connection
    named = _options(name="prices", server_hostname="tls.example", healthy_after=0)
    assert (named.label, named.server_hostname, named.healthy_after) == ("prices", "tls.example", 0)
    assert _options(pong=None).new_matcher() is None


@pytest.mark.parametrize(
    ("overrides", "field", "kind"),
    [
        ({"address": "db:7000"}, "address", InvalidSettingType),
        ({"address": ("db", 0)}, "port", InvalidSetting),
        ({"heartbeat": 5}, "heartbeat", InvalidSettingType),
        ({"ping": b""}, "ping", InvalidSetting),
        ({"pong": "PONG\n"}, "pong", InvalidSettingType),
        ({"retry": None}, "retry", InvalidSettingType),
        ({"retry": Backoff}, "retry", InvalidSettingType),  # the class, not a policy
        ({"healthy_after": -1}, "healthy_after", InvalidSetting),
        ({"on_connect": "yes"}, "on_connect", InvalidSettingType),
        ({"on_disconnect": 1}, "on_disconnect", InvalidSettingType),
        ({"on_backoff": b"x"}, "on_backoff", InvalidSettingType),
        ({"handler": 1}, "handler", InvalidSettingType),
        ({"rng": 42}, "rng", InvalidSettingType),
        ({"name": 42}, "name", InvalidSettingType),
        ({"ssl": "tls"}, "ssl", InvalidSettingType),
        ({"server_hostname": b"db"}, "server_hostname", InvalidSettingType),
    ],
)
def test_options_refuse_bad_arguments_by_name(
    overrides: dict[str, object], field: str, kind: type[InvalidSetting]
) -> None:
    with pytest.raises(kind) as caught:
        _options(**overrides)
    assert caught.value.field == field


def test_options_name_the_drivers_handler_shape() -> None:
    with pytest.raises(InvalidSettingType, match=r"\(reader, writer\)"):
        _options(handler=1, handler_shape="(reader, writer) returning an awaitable")


def test_internal_checks_are_private() -> None:
    from keepalive import _validate

    assert "check_callable" not in supervision.__all__
    assert "check_address" not in supervision.__all__
    assert not hasattr(supervision, "check_callable")
    # One address check in the library: the one in _validate, used as it is.
    assert supervision.check_address is _validate.check_address  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Attempts, the failure log and the error wait_connected raises


def test_attempt_numbers_and_none_once_closed() -> None:
    core = SupervisorCore(STEADY)
    assert core.attempt_started(0) == 0
    core.attempt_failed(REFUSED, 0)
    assert core.attempt_started(1) == 1
    assert core.closed(2) is True
    assert core.closed(3) is False  # once
    assert core.attempt_started(4) is None
    assert core.attempts == 2


def test_failure_log_records_the_dials_failures_or_one_for_the_error() -> None:
    core = SupervisorCore(STEADY)
    core.attempt_started(0)
    per_address = (
        AttemptFailure(0, ("::1", 7000, 0, 0), REFUSED),
        AttemptFailure(0, ("127.0.0.1", 7000), REFUSED),
    )
    core.attempt_failed(REFUSED, 0, failures=per_address)
    core.attempt_started(1)
    handshake = ConnectionResetError("TLS handshake")
    core.attempt_failed(handshake, 1, address=("127.0.0.1", 7000))
    core.attempt_started(3)
    refused = ValueError("on_connect refused")
    step = core.attempt_failed(refused, 3)  # not retryable: give up
    assert step.gave_up
    assert list(core.failures) == [
        *per_address,
        AttemptFailure(1, ("127.0.0.1", 7000), handshake),
        AttemptFailure(2, None, refused),
    ]
    error = core.failure()
    assert error.reason == "not retryable"
    assert error.attempts == tuple(core.failures)
    assert error.__cause__ is refused
    assert "gave up on the supervised connection after 3 attempt(s)" in str(error)


def test_failure_log_is_cleared_by_a_connection_and_bounded() -> None:
    core = SupervisorCore(Backoff.constant(0.001), label="db:1")
    for now in range(FAILURES_KEPT + 10):
        core.attempt_started(now)
        core.attempt_failed(REFUSED, now)
    assert len(core.failures) == FAILURES_KEPT
    assert core.failures[-1].attempt == FAILURES_KEPT + 9  # the newest are kept
    core.attempt_started(100)
    core.connected(100)
    assert not core.failures


def test_giving_up_after_a_short_connection_logs_its_end() -> None:
    core = SupervisorCore(Backoff(max_attempts=1), healthy_after=10)
    core.attempt_started(0)
    core.connected(0)
    step = core.disconnected(DisconnectReason.PEER_CLOSED, None, 1, peer=("10.0.0.5", 7000))
    assert step.gave_up
    assert step.ended == (DisconnectReason.PEER_CLOSED, None)
    (failure,) = core.failures
    assert (failure.attempt, failure.address) == (0, ("10.0.0.5", 7000))
    assert isinstance(failure.error, ConnectionResetError)
    assert core.last_error is failure.error  # the one the policy judged
    assert core.failure().reason == "exhausted"


def test_nothing_is_logged_after_close_and_the_error_says_closed() -> None:
    core = SupervisorCore(STEADY, label="db:1")
    core.attempt_started(0)
    core.attempt_failed(REFUSED, 0)
    core.closed(1)
    step = core.attempt_failed(ConnectionResetError(), 1)
    assert step.closing
    assert not step.gave_up
    assert len(core.failures) == 1
    error = core.failure()
    assert (error.reason, str(error)) == ("closed", "the supervisor for db:1 is closed")
    assert error.attempts == tuple(core.failures)


def test_crash_fails_unless_closed() -> None:
    core = SupervisorCore(STEADY)
    bug = RuntimeError("bug")
    core.crashed(bug)
    assert core.state is SupervisorState.FAILED
    assert core.failure().reason == "failed"
    assert core.failure().__cause__ is bug
    closed = SupervisorCore(STEADY)
    closed.closed(0)
    closed.crashed(bug)
    assert closed.state is SupervisorState.CLOSED


# ---------------------------------------------------------------------------------------------
# Which hook fires when, and what is logged


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def on_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        self.calls.append(("on_disconnect", (reason, error)))

    def on_backoff(self, delay: float, error: BaseException | None) -> None:
        self.calls.append(("on_backoff", (delay, error)))


def _core(hooks: Hooks, policy: Backoff = STEADY, **kwargs: Any) -> SupervisorCore:
    return SupervisorCore(
        policy,
        label="db:7000",
        on_disconnect=hooks.on_disconnect,
        on_backoff=hooks.on_backoff,
        **kwargs,
    )


def _run(core: SupervisorCore, step: NextAttempt) -> None:
    """What a driver does with a step's hook calls."""
    for name, hook, args in core.hook_calls(step):
        try:
            hook(*args)
        except Exception as exc:
            core.hook_raised(name, exc)


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "keepalive.supervisor"]


def test_after_a_failed_attempt_on_backoff_fires(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    core = _core(hooks)
    core.attempt_started(0)
    step = core.attempt_failed(REFUSED, 0)
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        _run(core, step)
    assert hooks.calls == [("on_backoff", (1.0, REFUSED))]
    assert _messages(caplog) == [
        (
            logging.INFO,
            f"attempt 1 to connect to db:7000 failed ({REFUSED}); retrying in 1.000 s",
        )
    ]


def test_giving_up_after_a_failed_attempt_fires_nothing(caplog: pytest.LogCaptureFixture) -> None:
    hooks = Hooks()
    core = _core(hooks)
    core.attempt_started(0)
    denied = PermissionError("denied")
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        _run(core, core.attempt_failed(denied, 0))
    assert hooks.calls == []
    assert _messages(caplog) == [
        (
            logging.ERROR,
            "giving up on db:7000 after 1 attempt(s) (the error is not retryable); "
            "last error: PermissionError('denied')",
        )
    ]


def test_after_an_ended_connection_on_disconnect_then_on_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    core = _core(hooks, healthy_after=10)
    core.attempt_started(0)
    core.connected(0)
    reset = ConnectionResetError("reset")
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        _run(core, core.disconnected(DisconnectReason.RESET, reset, 2.5))
    assert hooks.calls == [
        ("on_disconnect", (DisconnectReason.RESET, reset)),
        ("on_backoff", (1.0, reset)),
    ]
    assert _messages(caplog) == [
        (
            logging.WARNING,
            "connection to db:7000 ended after 2.500 s: reset (ConnectionResetError('reset'))",
        )
    ]


def test_after_a_healthy_connection_the_backoff_is_zero() -> None:
    hooks = Hooks()
    core = _core(hooks, healthy_after=10)
    core.attempt_started(0)
    core.connected(0)
    _run(core, core.disconnected(DisconnectReason.PEER_CLOSED, None, 20))
    assert hooks.calls == [
        ("on_disconnect", (DisconnectReason.PEER_CLOSED, None)),
        ("on_backoff", (0.0, None)),
    ]


def test_giving_up_after_an_ended_connection_fires_on_disconnect_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    core = _core(hooks, Backoff(max_attempts=1), healthy_after=10)
    core.attempt_started(0)
    core.connected(0)
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        _run(core, core.disconnected(DisconnectReason.PEER_CLOSED, None, 1))
    assert hooks.calls == [("on_disconnect", (DisconnectReason.PEER_CLOSED, None))]
    assert [level for level, _ in _messages(caplog)] == [logging.WARNING, logging.ERROR]
    assert _messages(caplog)[1][1] == (
        "giving up on db:7000 after 1 attempt(s) (the policy allows no more retries); "
        "last error: None"
    )


def test_a_connection_ended_by_close_fires_on_disconnect_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    core = _core(hooks)
    core.attempt_started(0)
    core.connected(0)
    core.closed(5)
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        _run(core, core.disconnected(DisconnectReason.CLOSED, None, 5))
    assert hooks.calls == [("on_disconnect", (DisconnectReason.CLOSED, None))]
    assert _messages(caplog) == [(logging.INFO, "connection to db:7000 closed")]


def test_no_hook_after_close() -> None:
    hooks = Hooks()
    core = _core(hooks)
    core.attempt_started(0)
    core.closed(0)
    _run(core, core.attempt_failed(REFUSED, 0))
    assert hooks.calls == []


def test_a_close_from_on_disconnect_cancels_on_backoff() -> None:
    """The hook calls are decided one at a time: on_disconnect closing the supervisor
    means no on_backoff follows."""
    calls: list[str] = []

    def on_disconnect(reason: DisconnectReason, error: BaseException | None) -> None:
        calls.append("on_disconnect")
        core.closed(3)

    core = SupervisorCore(
        STEADY, on_disconnect=on_disconnect, on_backoff=lambda *_: calls.append("on_backoff")
    )
    core.attempt_started(0)
    core.connected(0)
    step = core.disconnected(DisconnectReason.RESET, ConnectionResetError(), 2)
    assert step.delay == 1.0  # decided before the hook closed it
    _run(core, step)
    assert calls == ["on_disconnect"]


def test_a_raising_hook_is_logged_and_the_next_one_still_fires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(*_: object) -> None:
        raise RuntimeError("hook bug")

    core = SupervisorCore(
        STEADY, label="db:7000", on_disconnect=broken, on_backoff=lambda *_: calls.append("b")
    )
    core.attempt_started(0)
    core.connected(0)
    with caplog.at_level(logging.ERROR, logger="keepalive.supervisor"):
        _run(core, core.disconnected(DisconnectReason.RESET, None, 1))
    assert calls == ["b"]
    (record,) = [r for r in caplog.records if "hook for" in r.getMessage()]
    assert record.getMessage() == "on_disconnect hook for db:7000 raised"
    assert record.exc_info is not None


def test_missing_hooks_are_not_called_but_the_log_is_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = SupervisorCore(STEADY, label="db:7000")
    core.attempt_started(0)
    with caplog.at_level(logging.INFO, logger="keepalive.supervisor"):
        assert list(core.hook_calls(core.attempt_failed(REFUSED, 0))) == []
    assert len(_messages(caplog)) == 1


def test_event_messages(caplog: pytest.LogCaptureFixture) -> None:
    core = SupervisorCore(STEADY, label="db:7000")
    boom = RuntimeError("boom")
    with caplog.at_level(logging.DEBUG, logger="keepalive.supervisor"):
        core.log_attempt(core.attempt_started(0) or 0)
        core.connected(0)
        core.log_connected(0)
        core.log_on_connect_failed(boom)
        core.log_handler_raised(boom)
        core.log_closing()
        core.log_crashed(boom)
    assert _messages(caplog) == [
        (logging.DEBUG, "connecting to db:7000 (attempt 1)"),
        (logging.INFO, "connected to db:7000 (attempt 1, connection 1)"),
        (logging.WARNING, "on_connect for db:7000 failed: RuntimeError('boom')"),
        (logging.WARNING, "handler for db:7000 raised RuntimeError('boom')"),
        (logging.DEBUG, "closing the supervisor for db:7000"),
        (logging.ERROR, "the supervisor for db:7000 failed"),
    ]
