"""``keepalive demo``: the proxying-NAT story, live on loopback (:mod:`keepalive.demo`).

Exit status 0 when the story played out: the heartbeat saw the server's loss, kernel
keepalive was fooled, and the supervised connection healed once the server came back.
``--record PATH`` also writes the timeline's events as JSON (the documentation's timeline
picture is drawn from such a recording by scripts/draw_pictures.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from keepalive.cli._output import EXIT_DEAD, EXIT_OK, UsageError

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
HELP = "watch a proxying NAT fool kernel keepalive while a heartbeat is not fooled"
DESCRIPTION = (
    "Reproduce the proxying-NAT story on loopback (about 15 s). Exit 0 when the "
    "heartbeat detected the loss, kernel keepalive was fooled and the supervised "
    "connection healed once the server was back, else 1."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record",
        metavar="PATH",
        type=Path,
        help="also write the timeline's events, the settings and the verdict to PATH as JSON",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    record: Path | None = args.record
    if record is not None and not record.parent.is_dir():
        # Refused before the 12 s story, not after it.
        raise UsageError(f"--record {record}: the directory {record.parent} does not exist")
    from keepalive import demo  # noqa: PLC0415 - servers, threads and the heartbeat: only here

    result = demo.run_demo(out)
    if record is not None:
        text = json.dumps(demo.recording(result), indent=1, ensure_ascii=False)
        record.write_text(text + "\n", encoding="utf-8")
        out.write(f"\nrecorded {len(result.events)} events to {record}\n")
    return EXIT_OK if result.played_out else EXIT_DEAD
