"""``keepalive run [options] -- COMMAND``: run a program with keepalive on every outbound TCP
connection it, and the Python programs it starts, open (:mod:`keepalive.installer`)."""

from __future__ import annotations

import argparse
from typing import TextIO

from keepalive.installer import RUN_DESCRIPTION as DESCRIPTION
from keepalive.installer import RUN_HELP as HELP
from keepalive.installer import add_run_arguments as add_arguments

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]

NAME = "run"


def run(args: argparse.Namespace, out: TextIO) -> int:
    from keepalive.installer import run_from_args  # noqa: PLC0415 - only for this command

    return run_from_args(args, prog="keepalive run", out=out)
