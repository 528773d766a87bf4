"""``keepalive demo``: the proxying-NAT story, live on loopback (:mod:`keepalive.demo`).

Exit status 0 when the story played out: the heartbeat saw the server's loss, kernel
keepalive was fooled, and the supervised connection healed once the server came back.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from keepalive.cli._output import EXIT_DEAD, EXIT_OK

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
HELP = "watch a proxying NAT fool kernel keepalive while a heartbeat is not fooled"
DESCRIPTION = (
    "Reproduce the proxying-NAT story on loopback (about 12 s). Exit 0 when the "
    "heartbeat detected the loss and kernel keepalive was fooled, else 1."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace, out: TextIO) -> int:
    del args
    from keepalive import demo  # noqa: PLC0415 - servers, threads and the heartbeat: only here

    return EXIT_OK if demo.run_demo(out).played_out else EXIT_DEAD
