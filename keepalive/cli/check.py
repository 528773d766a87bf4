"""``keepalive check HOST PORT``: connect with a retry policy, apply keepalive, read it back,
print the detection bound; with ``--ping``, run the heartbeat and report round-trip times.

The probing is :func:`keepalive.diagnostics.check.run_check`; this module turns the arguments
into its options and renders the stages it reports, as they happen: text sections on stdout,
retries and a live progress line on stderr, or one JSON document at the end with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from keepalive.cli._arguments import (
    KEEPALIVE_OPTIONS,
    add_keepalive_options,
    bytes_arg,
    encode_escapes,
    float_arg,
    int_arg,
    keepalive_config,
    port_arg,
    setting_error,
)
from keepalive.cli._output import (
    EXIT_DEAD,
    EXIT_INTERRUPTED,
    EXIT_OK,
    JSON_SCHEMA_VERSION,
    SETTING_LABELS,
    Cell,
    ProgressLine,
    UsageError,
    Writer,
    emit_json,
    number,
    plural,
    seconds,
    seconds_long,
)
from keepalive.errors import InvalidSetting
from keepalive.platforms import Setting, current

if TYPE_CHECKING:
    from keepalive.diagnostics.check import (
        CheckEvent,
        CheckOptions,
        CheckResult,
        HeartbeatRun,
        SettingCheck,
        WatchRun,
    )

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]

NAME = "check"
HELP = "connect to HOST PORT, apply keepalive, read it back; --ping runs a heartbeat"
DESCRIPTION = (
    "Connect (retrying per a small backoff policy) with kernel keepalive set before "
    "the connection is made, read the settings back from the kernel and print the "
    "detection bound. With --ping, run the application heartbeat for --duration "
    "seconds and report round-trip times; exit 1 if the peer is declared dead. "
    "--ping/--pong take escapes: \\n \\r \\t \\0 \\\\ \\xHH."
)

# The option behind each setting a refusal may name.
_OPTIONS = {
    **KEEPALIVE_OPTIONS,
    "timeout": "--ping-timeout",
    "misses": "--misses",
    "pong": "--pong",
    "ping": "--ping",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST", help="host name or address")
    parser.add_argument("port", metavar="PORT", type=port_arg, help="TCP port, 1..65535")
    add_keepalive_options(parser)
    group = parser.add_argument_group("heartbeat")
    group.add_argument(
        "--ping", type=bytes_arg, metavar="BYTES", help="run the heartbeat, e.g. 'PING\\n'"
    )
    group.add_argument(
        "--pong",
        type=bytes_arg,
        metavar="BYTES",
        help="the peer's answer (default: the ping, echoed); matched as a whole line, or, "
        "without a trailing newline, as records of its own size",
    )
    group.add_argument(
        "--duration",
        type=float_arg,
        metavar="S",
        help="how long to run the heartbeat (default 10); without --ping, hold the "
        "connection this long with kernel keepalive alone",
    )
    group.add_argument(
        "--ping-interval", type=float_arg, metavar="S", help="idle time before a ping (default 1)"
    )
    group.add_argument(
        "--ping-timeout", type=float_arg, metavar="S", help="time for an answer (default 2)"
    )
    group.add_argument(
        "--misses", type=int_arg, metavar="N", help="unanswered pings before dead (default 2)"
    )
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--retries", type=int_arg, default=2, metavar="N", help="connect retries (default 2)"
    )
    group.add_argument(
        "--connect-timeout",
        type=float_arg,
        default=5.0,
        metavar="S",
        help="per attempt and address (default 5)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the heartbeat's events to stderr (-vv: every ping and pong)",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    from keepalive.diagnostics.check import run_check  # noqa: PLC0415

    options = _options(args)
    stages = _StageRenderer(None if args.json else Writer(out), Writer(sys.stderr))
    try:
        result = run_check(options, stages)
    except InvalidSetting as error:
        raise setting_error(error, _OPTIONS) from None
    finally:
        stages.progress.clear()
    status = _exit_status(result)
    if args.json:
        emit_json(out, _result_json(result, status))
        if result.error:
            stages.log(result.error)
    elif stages.writer is not None:
        _render_outcome(result, status, stages.writer)
    return status


def _exit_status(result: CheckResult) -> int:
    """0 healthy, 130 stopped by Ctrl-C, else 1 (dead or unreachable)."""
    if result.healthy:
        return EXIT_OK
    return EXIT_INTERRUPTED if result.interrupted else EXIT_DEAD


def _options(args: argparse.Namespace) -> CheckOptions:
    """Validate the arguments into the probe's options; UsageError with a clear message."""
    from keepalive.diagnostics.check import CheckOptions  # noqa: PLC0415
    from keepalive.heartbeat import HeartbeatConfig  # noqa: PLC0415

    config, given = keepalive_config(args)
    heartbeat_only = {
        "--pong": args.pong,
        "--ping-interval": args.ping_interval,
        "--ping-timeout": args.ping_timeout,
        "--misses": args.misses,
    }
    heartbeat: HeartbeatConfig | None = None
    if args.ping is None:
        stray = [name for name, value in heartbeat_only.items() if value is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)} only apply with --ping")
    else:
        try:
            heartbeat = HeartbeatConfig(
                interval=args.ping_interval if args.ping_interval is not None else 1.0,
                timeout=args.ping_timeout if args.ping_timeout is not None else 2.0,
                misses=args.misses if args.misses is not None else 2,
            )
        except InvalidSetting as error:
            raise setting_error(error, {**_OPTIONS, "interval": "--ping-interval"}) from None
    duration = args.duration
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration: expected a number of seconds > 0, got {number(duration)}")
    if heartbeat is not None and duration is None:
        duration = 10.0
    if args.retries < 0:
        raise UsageError(f"--retries: expected a whole number >= 0, got {args.retries}")
    if args.connect_timeout <= 0:
        shown = number(args.connect_timeout)
        raise UsageError(f"--connect-timeout: expected a number of seconds > 0, got {shown}")
    host: str = args.host
    if host.startswith("[") and host.endswith("]"):  # [::1], as in URLs
        host = host[1:-1]
    return CheckOptions(
        host=host,
        port=args.port,
        config=config,
        given=given,
        heartbeat=heartbeat,
        ping=args.ping,
        pong=(args.pong if args.pong is not None else args.ping) if args.ping else None,
        duration=duration,
        retries=args.retries,
        connect_timeout=args.connect_timeout,
    )


# --- the stages, rendered as they come -----------------------------------------------------------


class _StageRenderer:
    """The probe's ``on_event``: sections on ``writer`` (None with ``--json``), retries and the
    live progress line on ``err``."""

    def __init__(self, writer: Writer | None, err: Writer) -> None:
        self.writer = writer
        self.err = err
        self.progress = ProgressLine(err.stream)

    def log(self, message: str) -> None:
        self.err.line(f"keepalive check: {message}", "dim")
        self.err.flush()

    def __call__(self, event: CheckEvent) -> None:
        from keepalive.diagnostics import check as probe  # noqa: PLC0415 - run() loaded it

        if isinstance(event, probe.WatchProgress):
            self.progress.show(
                f"  watching {event.elapsed:4.1f}/{number(event.duration)} s "
                "(kernel keepalive only)"
            )
            return
        if isinstance(event, probe.HeartbeatProgress):
            last = "-" if event.rtt is None else f"{event.rtt * 1000:.2f} ms"
            self.progress.show(
                f"  {event.elapsed:5.1f}/{number(event.duration)} s  pings {event.pings_sent}  "
                f"pongs {event.pongs_received}  rtt {last}"
            )
            return
        self.progress.clear()
        if isinstance(event, probe.ConnectRetry):
            self.log(f"attempt {event.attempt} failed: {event.error}; retrying")
            return
        writer = self.writer
        if writer is None:
            return
        if isinstance(event, probe.Connecting):
            shown = event.host if event.host_problem is None else repr(event.host)
            writer.line(f"keepalive check {shown} port {event.port}", "bold")
        elif isinstance(event, probe.Connected):
            _render_settings(event.result, writer)
        elif isinstance(event, probe.HeartbeatStarted):
            _render_heartbeat_header(event.run, writer)
        elif isinstance(event, probe.WatchStarted):
            writer.heading(f"Watching for {seconds(event.duration)} (kernel keepalive only)")
        writer.flush()


def _value(setting: Setting, value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if setting == "count" else seconds(float(value))


def _render_settings(result: CheckResult, writer: Writer) -> None:
    assert result.local is not None
    took = f"{result.connect_seconds * 1000:.1f} ms" if result.connect_seconds is not None else "?"
    writer.heading("Connection")
    writer.table(
        [
            ["local", result.local],
            ["remote", f"{result.remote} ({'IPv6' if result.family == 'ipv6' else 'IPv4'})"],
            ["connected", f"in {took}, attempt {result.attempts} of {result.options.retries + 1}"],
        ]
    )
    writer.heading(f"Kernel keepalive ({result.platform})")
    rows: list[list[Cell]] = [["setting", "requested", "stored", "read back", "option", ""]]
    defaults_used = False
    for item in result.settings:
        label = SETTING_LABELS[item.setting]
        if item.requested is None:
            back = _value(item.setting, item.read_back) if item.read_back is not None else "none"
            rows.append([label, "-", "-", back, item.option or "-", ("system default", "dim")])
            continue
        requested = _value(item.setting, item.requested) + ("" if item.given else "*")
        defaults_used = defaults_used or not item.given
        rows.append(
            [
                label,
                requested,
                _value(item.setting, item.stored),
                _value(item.setting, item.read_back),
                item.option or "-",
                _verdict(item),
            ]
        )
    writer.table(rows, header=True)
    state = ("on", "green") if result.keepalive_enabled else ("OFF", "bold-red")
    writer.line("  SO_KEEPALIVE  " + writer.paint(state[0], state[1]))
    if defaults_used:
        writer.wrap("* not given: KeepaliveConfig's default", style="dim")
    for item in result.settings:
        if item.detail and item.status != "honoured":
            writer.wrap(item.detail, indent=4, first="  - ", style="dim")
    cfg = result.options.config
    bound = result.detection_bound
    if bound is not None:
        how = f"idle {number(cfg.idle)} + interval {number(cfg.interval)} x count {cfg.count}"
        target = current()
        if cfg.user_timeout is not None and target.user_timeout_replaces_count:
            how = f"user timeout {number(cfg.user_timeout)} s replaces the count on {target.name}"
        writer.wrap(
            f"Kernel keepalive gives up on a silent peer after {seconds_long(bound)} ({how}). "
            "It only proves that the nearest TCP endpoint is alive: a proxy or userspace NAT "
            "answers probes itself. --ping tests the real peer.",
        )


def _verdict(item: SettingCheck) -> Cell:
    if item.status == "honoured":
        return ("ok", "green")
    if item.status == "approximated":
        return ("rounded", "yellow")
    if item.status == "mismatch":
        return ("MISMATCH", "bold-red")
    return (item.status, "yellow")


def _render_heartbeat_header(run: HeartbeatRun, writer: Writer) -> None:
    config = run.config
    writer.heading(f"Heartbeat for {seconds(run.duration)}")
    writer.wrap(
        f"Ping '{encode_escapes(run.ping)}', pong '{encode_escapes(run.pong)}'. A ping goes "
        f"after {seconds(config.interval)} without inbound bytes and has "
        f"{seconds(config.timeout)} to be answered; {plural(config.misses, 'unanswered ping')} "
        f"in a row make the peer dead, at most {seconds(config.detection_bound)} after it "
        "fell silent.",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3f}"


def _render_outcome(result: CheckResult, status: int, writer: Writer) -> None:
    run = result.heartbeat
    if run is not None:
        sent = "? pings" if run.pings_sent is None else plural(run.pings_sent, "ping")
        answered = "? pongs" if run.pongs_received is None else plural(run.pongs_received, "pong")
        writer.wrap(
            f"After {run.elapsed:.1f} s: {sent} sent, {answered} received, "
            f"{plural(run.other_bytes, 'other byte')} received."
        )
        rtt = run.rtt.summary()
        if rtt is not None:
            values = "/".join(_ms(value) for value in (rtt.min, rtt.avg, rtt.max, rtt.mdev))
            writer.line(f"  rtt min/avg/max/mdev = {values} ms ({plural(rtt.samples, 'sample')})")
            if run.srtt is not None:
                writer.line(f"  smoothed rtt {_ms(run.srtt)} ms")
        elif run.outcome == "alive":
            writer.wrap(
                "No round trip measured: the run was shorter than the ping interval, or the "
                "peer kept talking (any inbound byte counts as life).",
                style="dim",
            )
    if result.watch is not None and result.watch.outcome == "alive":
        writer.wrap(f"The connection stayed up for {seconds(result.watch.elapsed)}.")
    writer.heading("Result")
    if status == EXIT_OK:
        writer.line("  healthy", "bold-green")
    else:
        style = "yellow" if status == EXIT_INTERRUPTED else "bold-red"
        writer.wrap(result.error or "failed", style=style)


# --- JSON ----------------------------------------------------------------------------------------


def _result_json(result: CheckResult, status: int) -> dict[str, object]:
    options = result.options
    connection: dict[str, object] | None = None
    if result.local is not None and result.remote is not None:
        connection = {
            "local": result.local,
            "remote": result.remote,
            "family": result.family,
            "attempts": result.attempts,
            "connect_seconds": result.connect_seconds,
        }
    return {
        "command": "check",
        "schema_version": JSON_SCHEMA_VERSION,
        "target": {"host": options.host, "port": options.port},
        "platform": result.platform,
        "connection": connection,
        "keepalive_enabled": result.keepalive_enabled,
        "settings": [_setting_json(item) for item in result.settings],
        "detection_bound_seconds": result.detection_bound,
        "watch": None if result.watch is None else _watch_json(result.watch),
        "heartbeat": None if result.heartbeat is None else _heartbeat_json(result.heartbeat),
        "healthy": status == EXIT_OK,
        "exit_status": status,
        "error": None
        if result.error is None
        else {"kind": result.error_kind, "message": result.error},
    }


def _setting_json(item: SettingCheck) -> dict[str, object]:
    return {
        "setting": item.setting,
        "requested": item.requested,
        "given": item.given,
        "stored": item.stored,
        "read_back": item.read_back,
        "read_back_source": item.read_back_source,
        "option": item.option,
        "status": item.status,
        "detail": item.detail or None,
        "matches": item.matches,
    }


def _watch_json(watch: WatchRun) -> dict[str, object]:
    return {
        "duration": watch.duration,
        "elapsed": watch.elapsed,
        "outcome": watch.outcome,
        "message": watch.message,
        "bytes_received": watch.bytes_received,
    }


def _heartbeat_json(run: HeartbeatRun) -> dict[str, object]:
    rtt = run.rtt.summary()
    summary: dict[str, object] = (
        {"samples": 0, "min": None, "avg": None, "max": None, "mdev": None}
        if rtt is None
        else {
            "samples": rtt.samples,
            "min": rtt.min,
            "avg": rtt.avg,
            "max": rtt.max,
            "mdev": rtt.mdev,
        }
    )
    return {
        "ping": encode_escapes(run.ping),
        "pong": encode_escapes(run.pong),
        "interval": run.config.interval,
        "timeout": run.config.timeout,
        "misses": run.config.misses,
        "detection_bound_seconds": run.config.detection_bound,
        "duration": run.duration,
        "elapsed": run.elapsed,
        "pings_sent": run.pings_sent,
        "pongs_received": run.pongs_received,
        "rtt": {**summary, "last": run.last_rtt, "smoothed": run.srtt},
        "other_bytes_received": run.other_bytes,
        "outcome": run.outcome,
        "message": run.message,
        "dead_after_seconds": run.dead_after,
    }
