"""``keepalive`` / ``keepalive info``: this host's per-socket support and system-wide defaults
(the default command). Reads local state only; fast, for every bare ``keepalive``."""

from __future__ import annotations

import argparse
from typing import TextIO

from keepalive import __version__
from keepalive.cli._output import EXIT_OK, Writer, seconds_long
from keepalive.cli._support import render_support, system_default_rows
from keepalive.platforms import current
from keepalive.system import system_defaults

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]

NAME = "info"
HELP = "this host's keepalive support and defaults (the default command)"
DESCRIPTION = "This host's per-socket keepalive support and system-wide defaults."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, out: TextIO) -> int:
    del args
    writer = Writer(out)
    target = current()
    defaults = system_defaults()
    writer.line(
        f"keepalive {__version__}: TCP keepalive support on this host ({target.name})", "bold"
    )
    writer.heading("Per-socket settings")
    render_support(writer, target)
    writer.heading("System-wide defaults (used once SO_KEEPALIVE is on; off on a fresh socket)")
    writer.table(system_default_rows(defaults, target))
    bound = defaults.detection_bound
    if bound is not None:
        writer.wrap(f"With these defaults a dead idle peer is noticed after {seconds_long(bound)}.")
    writer.line()
    writer.wrap(
        "More: keepalive doctor (full diagnosis), keepalive check HOST PORT, keepalive audit, "
        "keepalive demo; keepalive --help.",
        indent=0,
        style="dim",
    )
    return EXIT_OK
