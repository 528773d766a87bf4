"""Command line: ``python -m keepalive [info|demo|doctor|check|audit]``.

Argument parsing and dispatch only; each command lives with the layer it shows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from keepalive.platforms import SETTINGS, current
from keepalive.system import system_defaults

__all__ = ["main"]

EXIT_OK, EXIT_DEAD, EXIT_USAGE = 0, 1, 2


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g} s"


def info(out: TextIO) -> int:
    """This host's per-socket keepalive support and system-wide defaults."""
    platform = current()
    defaults = system_defaults()
    out.write(f"keepalive support on this host: {platform.name}\n\n")
    out.write(f"  {'setting':<13}{'per-socket option':<24}{'unit':<8}range\n")
    for setting in SETTINGS:
        spec = platform.options.get(setting)
        if spec is None:
            reason = platform.unsupported.get(setting, "not settable per socket")
            out.write(f"  {setting:<13}{'-':<24}{'-':<8}{reason}\n")
        else:
            out.write(f"  {setting:<13}{spec.name:<24}{spec.unit:<8}{spec.describe_range()}\n")
    out.write("\nsystem defaults (used once SO_KEEPALIVE is on; it is off on a fresh socket):\n")
    for setting in SETTINGS:
        value = getattr(defaults, setting)
        shown = f"{value}" if setting == "count" and value is not None else _fmt_seconds(value)
        out.write(f"  {setting:<13}{shown:<10}from {defaults.source.get(setting, '?')}\n")
    bound = defaults.detection_bound
    if bound is not None:
        out.write(
            f"\nwith these defaults a dead idle peer is noticed after {bound:g} s "
            f"({bound / 3600:.1f} h).\n"
        )
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalive",
        description="Kernel TCP keepalive, heartbeats and diagnostics.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("info", help="this host's keepalive support and defaults (default)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = sys.stdout if out is None else out
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command in (None, "info"):
        return info(stream)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards
    return EXIT_USAGE
