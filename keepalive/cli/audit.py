"""``keepalive audit``: every TCP connection of some processes (default: every one this user
may see), with state, addresses, age where known and whether keepalive is armed; flags
long-lived established connections without keepalive.

The audit itself is :func:`keepalive.diagnostics.audit`; this module renders it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from keepalive.cli._arguments import pid_arg
from keepalive.cli._output import (
    EXIT_OK,
    JSON_SCHEMA_VERSION,
    WIDTH,
    Cell,
    CommandFailed,
    Writer,
    cell_style,
    cell_text,
    compact_duration,
    emit_json,
    plural,
)

if TYPE_CHECKING:
    from keepalive.diagnostics import AuditResult, ConnectionReport

__all__ = [
    "DESCRIPTION",
    "HELP",
    "NAME",
    "add_arguments",
    "render",
    "run",
]

NAME = "audit"
HELP = "list processes' TCP connections and whether keepalive is armed"
DESCRIPTION = (
    "Every TCP connection of the given processes (default: all this user may see), "
    "with state, addresses, age where known and whether keepalive is armed. Flags "
    "long-lived established connections without keepalive."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pid",
        type=pid_arg,
        action="extend",
        nargs="+",
        metavar="PID",
        help="process id (repeatable)",
    )
    parser.add_argument("--listening", action="store_true", help="include listening sockets")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from keepalive import diagnostics  # noqa: PLC0415 - psutil only for the commands needing it

    pids: list[int] | None = sorted(set(args.pid)) if args.pid else None
    try:
        result = diagnostics.audit(pids, include_listening=args.listening)
    except ProcessLookupError as error:
        raise CommandFailed(error.strerror or str(error)) from None
    except PermissionError as error:
        raise CommandFailed(
            f"{error.strerror or error}: run as the process's owner or as root"
        ) from None
    except OSError as error:
        raise CommandFailed(f"cannot list TCP connections: {error}") from None
    if args.json:
        emit_json(out, _document(result, pids))
    else:
        render(result, pids, Writer(out))
    return EXIT_OK


def _summary(result: AuditResult) -> dict[str, int]:
    connections = result.connections
    return {
        "connections": len(connections),
        "processes": len({report.pid for report in connections}),
        "keepalive_on": sum(1 for r in connections if r.keepalive == "on"),
        "keepalive_off": sum(1 for r in connections if r.keepalive == "off"),
        "keepalive_unknown": sum(1 for r in connections if r.keepalive == "unknown"),
        "flagged": sum(1 for r in connections if r.flags),
        "skipped_processes": len(result.skipped),
    }


def _document(result: AuditResult, pids: list[int] | None) -> dict[str, object]:
    return {
        "command": "audit",
        "schema_version": JSON_SCHEMA_VERSION,
        "pids": pids,
        "summary": _summary(result),
        **result.to_json(),
    }


def render(result: AuditResult, pids: list[int] | None, writer: Writer) -> None:
    summary = _summary(result)
    scope = "all visible processes" if pids is None else "pid " + ", ".join(map(str, pids))
    writer.line(f"keepalive audit: TCP connections of {scope} (read via {result.source})", "bold")
    by_pid: dict[int | None, list[ConnectionReport]] = {}
    for report in result.connections:
        by_pid.setdefault(report.pid, []).append(report)
    for pid, reports in by_pid.items():
        name = reports[0].process_name or "?"
        count = len(reports)
        suffix = "s" if count != 1 else ""
        writer.heading(
            f"pid {pid if pid is not None else '?'}  {name}  ({count} connection{suffix})"
        )
        _render_connections(reports, writer)
    writer.line()
    if not result.connections:
        writer.wrap("No TCP connections found.", indent=0)
    else:
        writer.wrap(
            f"{plural(summary['connections'], 'connection')} in {summary['processes']} "
            f"process{'es' if summary['processes'] != 1 else ''}: {summary['keepalive_on']} with "
            f"keepalive, {summary['keepalive_off']} without, {summary['keepalive_unknown']} "
            f"unknown; {summary['flagged']} flagged.",
            indent=0,
            style="bold-yellow" if summary["flagged"] else None,
        )
        writer.wrap(
            "keepalive 'on N' = armed, next probe in N; age '>=N' = at least that old (the "
            "kernel keeps no start time); '?' = not known from this source.",
            indent=0,
            style="dim",
        )
    if result.skipped:
        writer.wrap(
            f"{len(result.skipped)} processes could not be inspected "
            f"({result.skipped[0].reason}); run as their owner or as root to include them.",
            indent=0,
            style="dim",
        )
    for note in result.notes:
        writer.wrap(f"note: {note}", indent=0, style="dim")


def _keepalive_cell(report: ConnectionReport) -> Cell:
    if report.keepalive == "on":
        timer = report.keepalive_timer_seconds
        text = "on" if timer is None else f"on {compact_duration(timer)}"
        return (text, "green")
    if report.keepalive == "off":
        style = "bold-yellow" if report.flags else "yellow"
        return ("off", style)
    return ("?", "dim")


def _age_cell(report: ConnectionReport) -> str:
    if report.min_age_seconds is None:
        return "?"
    return f">={compact_duration(report.min_age_seconds)}"


def _render_connections(reports: Sequence[ConnectionReport], writer: Writer) -> None:
    header: list[Cell] = ["fd", "state", "local", "remote", "keepalive", "age"]
    rows = [
        [
            "-" if report.fd is None else str(report.fd),
            report.state,
            report.local,
            report.remote,
            _keepalive_cell(report),
            _age_cell(report),
        ]
        for report in reports
    ]
    widths = [max(len(cell_text(row[i])) for row in [header, *rows]) for i in range(len(header))]
    if 2 + sum(widths) + 2 * (len(widths) - 1) <= WIDTH:
        _aligned_rows(writer, header, rows, widths, reports)
        return
    # Long (IPv6) addresses: two lines per connection rather than lines over 80 columns.
    for report, row in zip(reports, rows, strict=True):
        keepalive = (f"keepalive {cell_text(row[4])}", cell_style(row[4]) or "")
        head: list[Cell] = [
            f"fd {cell_text(row[0])}",
            row[1],
            keepalive,
            f"age {cell_text(row[5])}",
        ]
        writer.line("  " + "  ".join(writer.paint(cell_text(c), cell_style(c)) for c in head))
        writer.wrap(report.local, indent=14, first="      local   ")
        writer.wrap(report.remote, indent=14, first="      remote  ")
        _render_flags(report, writer)


def _aligned_rows(
    writer: Writer,
    header: list[Cell],
    rows: list[list[Cell]],
    widths: list[int],
    reports: Sequence[ConnectionReport],
) -> None:
    def text_of(row: Sequence[Cell], bold: bool) -> str:
        cells: list[str] = []
        for index, cell in enumerate(row):
            text = cell_text(cell)
            padded = text.rjust(widths[index]) if index == 0 else text.ljust(widths[index])
            if index == len(row) - 1:
                padded = padded.rstrip()
            cells.append(writer.paint(padded, "bold" if bold else cell_style(cell)))
        return ("  " + "  ".join(cells)).rstrip()

    writer.line(text_of(header, True))
    for report, row in zip(reports, rows, strict=True):
        writer.line(text_of(row, False))
        _render_flags(report, writer)


def _render_flags(report: ConnectionReport, writer: Writer) -> None:
    for flag in report.flags:
        writer.wrap(flag.message, indent=6, first="    " + writer.paint("!", "bold-yellow") + " ")
