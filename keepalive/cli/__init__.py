"""Command line: ``keepalive [info|doctor|check|audit|run|demo]`` (also ``python -m keepalive``).

Each command is built on the library's public layers and only shapes their results for a
reader or a script:

* ``info`` (the default): this host's per-socket support and system-wide defaults.
* ``doctor``: host, support, defaults and where they live, what a fresh socket gets (measured),
  network-path hints and middlebox idle-timeout warnings (:mod:`keepalive.diagnostics`).
* ``check HOST PORT``: connect with a retry policy, apply settings, read them back; with
  ``--ping`` run the heartbeat and report round-trip times (:mod:`keepalive.diagnostics.check`).
* ``audit``: every TCP connection of some processes, with its keepalive state.
* ``run [options] -- COMMAND``: run a program with kernel keepalive on every outbound TCP
  connection it opens (:mod:`keepalive.installer`), without touching its code.
* ``demo``: the proxying-NAT story, live on loopback (:mod:`keepalive.demo`).

Text output fits 80 columns and is coloured only on a terminal, never when ``NO_COLOR`` is
set. ``--json`` output is stable and documented in docs/cli.md. Exit statuses: 0 success or
healthy, 1 the peer is dead or unreachable (or a process cannot be inspected), 2 bad
arguments, 130 interrupted. Expected failures print a message, never a traceback.

Layout: this module holds the parser and :func:`main`; each command is one module of this
package; ``_output`` is the writer, colour, JSON and exit statuses; ``_arguments`` the shared
argument types; ``_support`` the support and defaults tables of ``info`` and ``doctor``.

Adding a command (``serve``, say): write ``keepalive/cli/serve.py`` with what :class:`Command`
lists (``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``, ``run(args, out) ->
int``), then import it below and add it to :data:`COMMANDS`, in the order ``keepalive --help``
lists them. ``run`` writes to ``out``, returns the exit status, and raises
``_output.UsageError`` (status 2) or ``_output.CommandFailed`` (status 1) for expected
failures; ``_arguments.add_keepalive_options`` and ``keepalive_config`` give it ``--idle``,
``--interval``, ``--count`` and ``--user-timeout`` as ``check`` has them. Keep its top-level
imports light: every command module is imported to build the parser, so heavy ones go inside
``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from keepalive import __version__
from keepalive.cli import audit, check, demo, doctor, info, run
from keepalive.cli._output import (
    EXIT_DEAD,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
    Writer,
)

__all__ = ["COMMANDS", "DEFAULT_COMMAND", "Command", "build_parser", "main"]


class Command(Protocol):
    """What a command module defines (a module satisfies this protocol)."""

    NAME: str  # the word on the command line
    HELP: str  # its line in ``keepalive --help``
    DESCRIPTION: str  # the paragraph of ``keepalive NAME --help``

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, out: TextIO) -> int: ...


#: Every command, in the order ``keepalive --help`` lists them. Register new ones here.
COMMANDS: tuple[Command, ...] = (info, doctor, check, audit, run, demo)
#: What runs when no command is given.
DEFAULT_COMMAND: Command = info

_EPILOG = """\
With no command, 'info' runs.
Exit status: 0 success (healthy), 1 the peer is dead or unreachable (or a
process cannot be inspected), 2 bad arguments, 130 interrupted.
The --json output is documented in docs/cli.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalive",
        description="TCP keepalive, heartbeats and diagnostics for this host.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"keepalive {__version__}")
    parser.set_defaults(handler=DEFAULT_COMMAND.run)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        sub = commands.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run, command_parser=sub)
    return parser


def _configure_logging(verbosity: int) -> None:
    """The CLI reports outcomes itself: the library's log records (e.g. the heartbeat's
    warning when a peer dies) are shown only with ``-v`` (INFO) or ``-vv`` (DEBUG)."""
    library = logging.getLogger("keepalive")
    if verbosity <= 0:
        if not library.handlers:
            library.addHandler(logging.NullHandler())  # no "last resort" output on stderr
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    library.addHandler(handler)
    library.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    stream = sys.stdout if out is None else out
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(stream):  # --help and --version go to ``out`` too
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(getattr(args, "verbose", 0))
    try:
        try:
            status: int = args.handler(args, stream)
            stream.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return status
        except UsageError as error:
            command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
            command_parser.error(str(error))  # argparse's format: usage, message, exit 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except CommandFailed as failure:
        command = args.command or DEFAULT_COMMAND.NAME
        Writer(sys.stderr).line(f"keepalive {command}: {failure}", "bold-red")
        return EXIT_DEAD
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``keepalive audit | head``): stop quietly. Point stdout at
        # devnull so the interpreter's final flush does not complain.
        if stream is sys.stdout:
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
        return EXIT_DEAD
