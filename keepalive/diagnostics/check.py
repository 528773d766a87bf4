"""The ``check`` probe: connect to a peer with kernel keepalive, read the settings back, then
hold the connection with kernel keepalive alone or run the heartbeat, and say what happened.

:func:`run_check` renders nothing. It reports each stage, as it happens, to an ``on_event``
callback, and returns the :class:`CheckResult`; ``keepalive check`` renders both. The stages
come in this order:

1. :class:`Connecting`;
2. :class:`ConnectRetry` for each failed attempt that is retried;
3. :class:`Connected`: keepalive applied and read back (the result so far);
4. with a heartbeat, :class:`HeartbeatStarted` then :class:`HeartbeatProgress` ticks;
   with a duration alone, :class:`WatchStarted` then :class:`WatchProgress` ticks.

A failure ends the run at its stage: the result says why (``error_kind``, ``error``). Ctrl-C
during the watch or the heartbeat ends it early too, and the result keeps what was measured.
"""

from __future__ import annotations

import re
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from keepalive.config import KeepaliveConfig
from keepalive.diagnostics._text import format_endpoint
from keepalive.platforms import SETTINGS, Setting, current
from keepalive.sockets import configure, inspect

if TYPE_CHECKING:
    from keepalive.heartbeat import HeartbeatConfig
    from keepalive.sockets import ConfigureResult, SocketKeepalive

__all__ = [
    "CheckEvent",
    "CheckOptions",
    "CheckResult",
    "ConnectRetry",
    "Connected",
    "Connecting",
    "HeartbeatProgress",
    "HeartbeatRun",
    "HeartbeatStarted",
    "Outcome",
    "RttStats",
    "RttSummary",
    "SettingCheck",
    "WatchProgress",
    "WatchRun",
    "WatchStarted",
    "run_check",
]


#: How a watch or heartbeat run ended: still ``"alive"`` at the end of its duration, the peer
#: declared ``"dead"`` (heartbeat only), the connection ``"closed"`` by the peer or failed with an
#: ``"error"``, or ``"interrupted"`` by Ctrl-C.
Outcome = Literal["alive", "dead", "closed", "error", "interrupted"]


@dataclass(frozen=True)
class CheckOptions:
    """What to check. ``given`` names the keepalive settings chosen explicitly (the others are
    ``KeepaliveConfig``'s defaults); ``duration`` without ``heartbeat`` holds the connection
    with kernel keepalive alone for that long."""

    host: str
    port: int
    config: KeepaliveConfig
    given: frozenset[str]
    heartbeat: HeartbeatConfig | None
    ping: bytes | None
    pong: bytes | None
    duration: float | None
    retries: int
    connect_timeout: float


@dataclass(frozen=True)
class SettingCheck:
    """One setting: requested, what the platform stores, what the kernel reports."""

    setting: Setting
    requested: float | int | None
    given: bool
    stored: float | int | None
    read_back: float | int | None
    read_back_source: str
    option: str | None
    status: str
    detail: str

    @property
    def matches(self) -> bool | None:
        """Read back equals stored (None when nothing was requested)."""
        if self.requested is None or self.stored is None:
            return None
        return self.read_back is not None and float(self.read_back) == float(self.stored)


@dataclass(frozen=True)
class RttSummary:
    """Round-trip times in seconds: ``mdev`` is the population standard deviation."""

    samples: int
    min: float
    avg: float
    max: float
    mdev: float


@dataclass
class RttStats:
    samples: list[float] = field(default_factory=list)

    def summary(self) -> RttSummary | None:
        """None before the first sample."""
        values = self.samples
        if not values:
            return None
        return RttSummary(
            len(values),
            min(values),
            statistics.fmean(values),
            max(values),
            statistics.pstdev(values),
        )


@dataclass
class HeartbeatRun:
    """What the heartbeat saw during the check."""

    config: HeartbeatConfig
    ping: bytes
    pong: bytes
    duration: float
    elapsed: float = 0.0
    pings_sent: int | None = None
    pongs_received: int | None = None
    rtt: RttStats = field(default_factory=RttStats)
    last_rtt: float | None = None
    srtt: float | None = None
    other_bytes: int = 0
    outcome: Outcome = "alive"
    message: str | None = None
    dead_after: float | None = None


@dataclass(frozen=True)
class WatchRun:
    """What holding the connection with kernel keepalive alone showed."""

    duration: float
    elapsed: float
    outcome: Outcome
    message: str | None
    bytes_received: int


@dataclass
class CheckResult:
    """Everything the check found; filled in stage by stage. ``local`` and ``remote`` are
    ``addr:port`` endpoints (IPv6 in brackets)."""

    options: CheckOptions
    platform: str = ""
    attempts: int = 0
    connect_seconds: float | None = None
    local: str | None = None
    remote: str | None = None
    family: str | None = None
    keepalive_enabled: bool | None = None
    settings: list[SettingCheck] = field(default_factory=list)
    detection_bound: float | None = None
    watch: WatchRun | None = None
    heartbeat: HeartbeatRun | None = None
    error_kind: str | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.error is None

    @property
    def interrupted(self) -> bool:
        """Ctrl-C ended the watch or the heartbeat early."""
        return self.error_kind in ("watch-interrupted", "heartbeat-interrupted")


# --- the stages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connecting:
    """The check starts. ``host_problem`` says why ``host`` cannot be a host name or address
    (it is refused without asking a resolver); None when it may be one."""

    host: str
    port: int
    host_problem: str | None


@dataclass(frozen=True)
class ConnectRetry:
    """Connection attempt ``attempt`` failed with ``error`` (in words); another follows."""

    attempt: int
    error: str


@dataclass(frozen=True)
class Connected:
    """Connected with keepalive applied and read back: ``result`` holds the connection, the
    settings and the detection bound (the watch or heartbeat fields are still empty)."""

    result: CheckResult


@dataclass(frozen=True)
class WatchStarted:
    """Holding the connection with kernel keepalive alone for ``duration`` seconds."""

    duration: float


@dataclass(frozen=True)
class WatchProgress:
    elapsed: float
    duration: float


@dataclass(frozen=True)
class HeartbeatStarted:
    """The heartbeat runs for ``run.duration`` seconds; ``run`` is filled in as it goes."""

    run: HeartbeatRun


@dataclass(frozen=True)
class HeartbeatProgress:
    elapsed: float
    duration: float
    pings_sent: int
    pongs_received: int
    rtt: float | None


CheckEvent = (
    Connecting
    | ConnectRetry
    | Connected
    | WatchStarted
    | WatchProgress
    | HeartbeatStarted
    | HeartbeatProgress
)


def _ignore(_event: CheckEvent) -> None:
    pass


# --- the probe -----------------------------------------------------------------------------------

_HOST_NAME_CHARACTERS = re.compile(r"^[A-Za-z0-9._:%\-\[\]]+$")


class _Unreachable(Exception):
    """The peer could not be reached: ``kind`` is ``"resolve"`` or ``"connect"``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def run_check(
    options: CheckOptions, on_event: Callable[[CheckEvent], None] | None = None
) -> CheckResult:
    """Connect, configure, read back; watch or run the heartbeat (see the module docstring).

    ``on_event`` receives each stage as it happens, on this thread. Raises
    :class:`~keepalive.errors.InvalidSetting` when this platform refuses a setting; every
    other failure is in the result.
    """
    emit = on_event or _ignore
    result = CheckResult(options, platform=current().name)
    problem = _host_problem(options.host)
    emit(Connecting(options.host, options.port, problem))
    try:
        if problem is not None:
            raise _Unreachable("resolve", f"cannot resolve {options.host!r}: {problem}")
        sock = _connect(options, result, emit)
    except _Unreachable as failure:
        result.error_kind, result.error = failure.kind, str(failure)
        return result
    with sock:
        result.local = format_endpoint(*_address(sock.getsockname()))
        result.remote = format_endpoint(*_address(sock.getpeername()))
        result.family = "ipv6" if sock.family == socket.AF_INET6 else "ipv4"
        try:
            applied = configure(sock, options.config, strict=False)
            state = inspect(sock)
        except OSError as error:
            result.error_kind = "socket"
            result.error = f"could not apply or read back keepalive: {error}"
            return result
        result.keepalive_enabled = state.enabled
        result.settings = _read_back(options, applied, state)
        result.detection_bound = options.config.detection_bound
        emit(Connected(result))
        if options.heartbeat is not None and options.ping is not None and options.pong is not None:
            run = HeartbeatRun(
                options.heartbeat, options.ping, options.pong, options.duration or 10.0
            )
            result.heartbeat = run
            emit(HeartbeatStarted(run))
            _run_heartbeat(sock, run, emit)
            if run.outcome != "alive":
                result.error_kind = f"heartbeat-{run.outcome}"
                result.error = run.message
        elif options.duration is not None:
            emit(WatchStarted(options.duration))
            result.watch = _watch_kernel(sock, options.duration, emit)
            if result.watch.outcome != "alive":
                result.error_kind = f"watch-{result.watch.outcome}"
                result.error = result.watch.message
    return result


def _host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a host name or address, without asking any resolver."""
    if not host:
        return "not a valid host name or address: it is empty"
    if not _HOST_NAME_CHARACTERS.match(host):
        return "not a valid host name or address (only letters, digits and . - _ : % may appear)"
    return None


def _describe_os_error(error: BaseException) -> str:
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower() if error.strerror[:1].isupper() else error.strerror
    return str(error) or type(error).__name__


def _connect(
    options: CheckOptions, result: CheckResult, emit: Callable[[CheckEvent], None]
) -> socket.socket:
    """Connect with keepalive configured and the retry policy; _Unreachable when it fails."""
    from keepalive.dial import connect  # noqa: PLC0415
    from keepalive.errors import ConnectFailed  # noqa: PLC0415
    from keepalive.reconnect import Backoff, is_retryable_default  # noqa: PLC0415

    failures = [0]

    def retry_on(error: BaseException) -> bool:
        failures[0] += 1
        retryable = is_retryable_default(error)
        if retryable and failures[0] <= options.retries:
            emit(ConnectRetry(failures[0], _describe_os_error(error)))
        return retryable

    policy = Backoff(
        initial=0.25,
        multiplier=2.0,
        max_delay=2.0,
        max_attempts=options.retries + 1,
        connect_timeout=options.connect_timeout,
        retry_on=retry_on,
    )
    where = f"{options.host} port {options.port}"
    unresolved = f"cannot resolve {options.host!r}"
    started = time.monotonic()
    try:
        sock = connect(
            (options.host, options.port),
            keepalive=options.config,
            retry=policy,
            connect_timeout=options.connect_timeout,
            strict=False,
        )
    except ConnectFailed as error:
        result.attempts = len({getattr(a, "attempt", 0) for a in error.attempts})
        last = error.__cause__ if error.__cause__ is not None else error
        if isinstance(last, socket.gaierror):
            raise _Unreachable("resolve", f"{unresolved}: {_describe_os_error(last)}") from None
        plural = "s" if result.attempts != 1 else ""
        raise _Unreachable(
            "connect",
            f"cannot connect to {where}: {_describe_os_error(last)} "
            f"({result.attempts} attempt{plural})",
        ) from None
    except socket.gaierror as error:  # a name that does not exist is not retried
        result.attempts = failures[0]
        raise _Unreachable("resolve", f"{unresolved}: {_describe_os_error(error)}") from None
    except UnicodeError as error:  # IDNA refuses the name before any resolver is asked
        reason = error.__cause__ or error
        raise _Unreachable("resolve", f"{unresolved}: not a valid host name ({reason})") from None
    except OSError as error:  # not retryable: permission, address not available, ...
        result.attempts = failures[0] + 1
        raise _Unreachable(
            "connect", f"cannot connect to {where}: {_describe_os_error(error)}"
        ) from (None)
    result.connect_seconds = time.monotonic() - started
    result.attempts = failures[0] + 1
    return sock


def _read_back(
    options: CheckOptions, applied: ConfigureResult, state: SocketKeepalive
) -> list[SettingCheck]:
    checks: list[SettingCheck] = []
    for setting in SETTINGS:
        item = applied.get(setting)
        requested = getattr(options.config, setting)
        read_back = getattr(state, setting)
        source = state.source.get(setting, "")
        if item is None:
            spec = current().options.get(setting)
            option = spec.name if spec is not None else None
            checks.append(
                SettingCheck(
                    setting, None, False, None, read_back, source, option, "not requested", ""
                )
            )
            continue
        if (
            item.stored is not None
            and read_back is not None
            and float(read_back) != float(item.stored)
        ):
            status = "mismatch"
        else:
            status = str(item.status)
        checks.append(
            SettingCheck(
                setting,
                requested,
                setting in options.given,
                item.stored,
                read_back,
                source,
                item.option,
                status,
                item.detail,
            )
        )
    return checks


def _address(raw: object) -> tuple[str, int]:
    host, port = raw[0], raw[1]  # type: ignore[index]
    return str(host), int(port)


def _watch_kernel(
    sock: socket.socket, duration: float, emit: Callable[[CheckEvent], None]
) -> WatchRun:
    """Hold the connection for ``duration`` seconds with kernel keepalive alone: did the
    kernel (or the peer) end it?"""
    import selectors  # noqa: PLC0415

    started = time.monotonic()
    deadline = started + duration
    received = 0
    outcome: Outcome = "alive"
    message: str | None = None
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while (now := time.monotonic()) < deadline:
                emit(WatchProgress(now - started, duration))
                if not selector.select(min(0.25, deadline - now)):
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as error:
                    outcome = "error"
                    message = f"the connection failed: {_describe_os_error(error)}"
                    break
                if not data:
                    outcome, message = "closed", "the peer closed the connection"
                    break
                received += len(data)
    except KeyboardInterrupt:  # stop early, still report
        outcome, message = "interrupted", "interrupted before the end of --duration"
    return WatchRun(duration, time.monotonic() - started, outcome, message, received)


_SAMPLE_EVERY = 0.05  # seconds between looks at the heartbeat's counters


def _run_heartbeat(
    sock: socket.socket, run: HeartbeatRun, emit: Callable[[CheckEvent], None]
) -> None:
    """Run the heartbeat (keepalive.sync.monitor) for ``run.duration`` seconds, reading every
    inbound byte so pongs are seen at once; fill ``run`` with what happened."""
    from keepalive.errors import PeerUnresponsive  # noqa: PLC0415
    from keepalive.framing import FixedSize  # noqa: PLC0415
    from keepalive.sync import monitor  # noqa: PLC0415

    # Pongs are matched as whole messages: lines when the pong ends with a newline; any other
    # pong as records of its own size (what a pure echo of the ping sends back).
    framing = None if run.pong.endswith(b"\n") else FixedSize(len(run.pong))
    conn = monitor(sock, heartbeat=run.config, ping=run.ping, pong=run.pong, framing=framing)
    conn.settimeout(_SAMPLE_EVERY)  # recv returns at least this often to sample the counters
    started = time.monotonic()
    deadline = started + run.duration
    pongs_seen = 0
    try:
        while (now := time.monotonic()) < deadline:
            stats = conn.stats
            if stats.pongs_received > pongs_seen and stats.rtt is not None:
                # One sample per look; pongs closer together than _SAMPLE_EVERY (only with a
                # ping interval that short) contribute their latest RTT only.
                run.rtt.samples.append(stats.rtt)
            pongs_seen = stats.pongs_received
            run.last_rtt, run.srtt = stats.rtt, stats.srtt
            emit(
                HeartbeatProgress(
                    now - started, run.duration, stats.pings_sent, stats.pongs_received, stats.rtt
                )
            )
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except PeerUnresponsive as error:
                verdict = conn.verdict
                run.outcome, run.message = "dead", f"peer declared dead: {error}"
                run.dead_after = verdict.silent_for if verdict is not None else None
                break
            except OSError as error:
                run.outcome = "error"
                run.message = f"the connection failed: {_describe_os_error(error)}"
                break
            if not data:
                run.outcome, run.message = "closed", "the peer closed the connection"
                break
            run.other_bytes += len(data)
    except KeyboardInterrupt:  # stop early, still report what was measured
        run.outcome, run.message = "interrupted", "interrupted before the end of --duration"
    finally:
        run.elapsed = time.monotonic() - started
        stats = conn.stats
        if stats.pongs_received > pongs_seen and stats.rtt is not None:
            run.rtt.samples.append(stats.rtt)
        run.pings_sent, run.pongs_received = stats.pings_sent, stats.pongs_received
        run.last_rtt, run.srtt = stats.rtt, stats.srtt
        conn.close()
