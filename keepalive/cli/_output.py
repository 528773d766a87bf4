"""What every command writes: exit statuses, the errors that end a command, the text writer
(sections, wrapped paragraphs, aligned tables, colour only on a terminal), the live progress
line, JSON, and how numbers and durations read."""

from __future__ import annotations

import contextlib
import json
import os
import re
import textwrap
from collections.abc import Sequence
from typing import TextIO

from keepalive.platforms import Setting

EXIT_OK, EXIT_DEAD, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Bumped only when a documented ``--json`` key changes meaning or disappears.
JSON_SCHEMA_VERSION = 1

# Lines are kept within 79 columns: an 80-column terminal wraps a line that fills it exactly
# on some emulators.
WIDTH = 79


class UsageError(Exception):
    """A command-line argument is wrong: exit status 2 with this message."""


class CommandFailed(Exception):
    """An expected failure (unreachable host, missing process): exit status 1."""


SETTING_LABELS: dict[Setting, str] = {
    "idle": "idle",
    "interval": "interval",
    "count": "count",
    "user_timeout": "user timeout",
}

# --- numbers and durations -----------------------------------------------------------------------


def number(value: float) -> str:
    """``7200`` for 7200.0, ``0.25`` for 0.25: never exponent notation."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{number(value)} s"


def rough_duration(value: float) -> str:
    """A rough reading of a long duration: ``2 h``, ``2.2 h``, ``5 min``, ``5 d``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= size:
            amount = value / size
            text = str(round(amount)) if abs(amount - round(amount)) < 0.05 else f"{amount:.1f}"
            return f"{text} {unit}"
    return f"{number(value)} s"


def seconds_long(value: float | None) -> str:
    """``7200 s (2 h)``; the reading in brackets only where it helps."""
    if value is None:
        return "-"
    return f"{number(value)} s" + (f" ({rough_duration(value)})" if value >= 120 else "")


def compact_duration(value: float) -> str:
    """Compact durations for table cells: ``12 s``, ``5 min``, ``3.5 h``."""
    if value < 60:
        return f"{round(value)} s"
    return rough_duration(value)


# --- the writer ----------------------------------------------------------------------------------


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # closed or detached stream
        return False


def wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, never with NO_COLOR (https://no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


_STYLES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "cyan": "36",
    "bold-red": "1;31",
    "bold-green": "1;32",
    "bold-yellow": "1;33",
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: A space that wrapping never breaks; the writer prints it as a space.
GLUE = "\xa0"

Cell = str | tuple[str, str]
"""A table cell: plain text, or (text, style name)."""


def cell_text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def cell_style(cell: Cell) -> str | None:
    return None if isinstance(cell, str) else cell[1]


class Writer:
    """Text output: sections, wrapped paragraphs, aligned tables; colour only on a terminal."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        self.colour = wants_colour(stream) if colour is None else colour

    def paint(self, text: str, style: str | None) -> str:
        if not style or not self.colour or not text:
            return text
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"

    def line(self, text: str = "", style: str | None = None) -> None:
        self.stream.write(self.paint(text, style) + "\n")

    def heading(self, text: str) -> None:
        self.stream.write("\n" + self.paint(text, "bold") + "\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def wrap(
        self,
        text: str,
        *,
        indent: int = 2,
        first: str | None = None,
        style: str | None = None,
    ) -> None:
        """``text`` wrapped to the width; ``first`` replaces the first line's indent."""
        lead = " " * indent
        opening = first if first is not None else lead
        visible = _ANSI.sub("", opening)  # wrap by what the reader sees, not colour codes
        lines = textwrap.wrap(
            text,
            width=WIDTH,
            initial_indent=visible,
            subsequent_indent=lead,
            break_on_hyphens=False,
        ) or [visible]
        for index, item in enumerate(lines):
            body = item.replace(GLUE, " ")
            if index == 0:
                self.stream.write(opening + self.paint(body[len(visible) :], style) + "\n")
            else:
                self.line(body, style)

    def table(
        self,
        rows: Sequence[Sequence[Cell]],
        *,
        indent: int = 2,
        right: frozenset[int] = frozenset(),
        header: bool = False,
    ) -> None:
        """Columns padded to their widest cell; the last column wraps at the width."""
        if not rows:
            return
        count = max(len(row) for row in rows)
        widths = [0] * count
        for row in rows:
            for index, cell in enumerate(row[:-1]):
                widths[index] = max(widths[index], len(cell_text(cell)))
        lead = " " * indent
        for row_index, row in enumerate(rows):
            parts: list[str] = []
            used = indent
            for index, cell in enumerate(row[:-1]):
                text = cell_text(cell)
                padded = text.rjust(widths[index]) if index in right else text.ljust(widths[index])
                style = "bold" if header and row_index == 0 else cell_style(cell)
                parts.append(self.paint(padded, style))
                used += widths[index] + 2
            last = cell_text(row[-1]) if row else ""
            room = max(WIDTH - used, 20)
            pieces = [
                piece.replace(GLUE, " ")
                for piece in textwrap.wrap(last, width=room, break_on_hyphens=False)
            ] or [""]
            style = "bold" if header and row_index == 0 else cell_style(row[-1]) if row else None
            head = "  ".join([*parts, self.paint(pieces[0], style)])
            self.line((lead + head).rstrip())
            for piece in pieces[1:]:
                self.line(" " * used + self.paint(piece, style))


class ProgressLine:
    """A live status line on a terminal (rewritten in place), nothing elsewhere."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None and is_terminal(stream) else None
        self.width = 0

    def show(self, text: str) -> None:
        if self.stream is None:
            return
        text = text[:WIDTH]
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.stream is None or not self.width:
            return
        self.stream.write("\r" + " " * self.width + "\r")
        self.stream.flush()
        self.width = 0


def emit_json(stream: TextIO, data: object) -> None:
    stream.write(json.dumps(data, indent=2) + "\n")  # ASCII: safe on any console encoding
