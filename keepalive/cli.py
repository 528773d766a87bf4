"""Command line: ``keepalive [info|doctor|check|audit|demo]`` (also ``python -m keepalive``).

Each command is built on the library's public layers and only shapes their results for a
reader or a script:

* ``info`` (the default): this host's per-socket support and system-wide defaults.
* ``doctor``: host, support, defaults and where they live, what a fresh socket gets (measured),
  network-path hints and middlebox idle-timeout warnings (:mod:`keepalive.diagnostics`).
* ``check HOST PORT``: connect with a retry policy, apply settings, read them back; with
  ``--ping`` run the heartbeat (:mod:`keepalive.sync`) and report round-trip times.
* ``audit``: every TCP connection of some processes, with its keepalive state.
* ``demo``: the proxying-NAT story, live on loopback (:mod:`keepalive.demo`).

Text output fits 80 columns and is coloured only on a terminal, never when ``NO_COLOR`` is
set. ``--json`` output is stable and documented in docs/cli.md. Exit statuses: 0 success or
healthy, 1 the peer is dead or unreachable (or a process cannot be inspected), 2 bad
arguments, 130 interrupted. Expected failures print a message, never a traceback.

``import keepalive.cli`` stays light: diagnostics (psutil), the heartbeat driver and the
connect helpers are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform as host_platform
import re
import socket
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from keepalive import __version__
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, KeepaliveError
from keepalive.platforms import SETTINGS, DefaultSource, OptionSpec, Platform, Setting, current
from keepalive.sockets import KeepaliveState, inspect
from keepalive.system import SystemDefaults, system_defaults

if TYPE_CHECKING:
    from keepalive.diagnostics import AuditResult, ConnectionReport, Hint, HostFacts, IdleWarning
    from keepalive.heartbeat import HeartbeatConfig
    from keepalive.sockets import Applied

__all__ = [
    "EXIT_DEAD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_SCHEMA_VERSION",
    "decode_escapes",
    "encode_escapes",
    "main",
]

EXIT_OK, EXIT_DEAD, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Bumped only when a documented ``--json`` key changes meaning or disappears.
JSON_SCHEMA_VERSION = 1

# Lines are kept within 79 columns: an 80-column terminal wraps a line that fills it exactly
# on some emulators.
WIDTH = 79

_SETTING_LABELS: dict[Setting, str] = {
    "idle": "idle",
    "interval": "interval",
    "count": "count",
    "user_timeout": "user timeout",
}
_SETTING_OPTIONS: dict[str, str] = {
    "idle": "--idle",
    "interval": "--interval",
    "count": "--count",
    "user_timeout": "--user-timeout",
    "timeout": "--ping-timeout",
    "misses": "--misses",
    "pong": "--pong",
    "ping": "--ping",
}


class UsageError(Exception):
    """A command-line argument is wrong: exit status 2 with this message."""


class Failure(Exception):
    """An expected failure (unreachable host, missing process): exit status 1."""


# =============================================================================================
# Formatting: numbers, colour, wrapping, tables
# =============================================================================================


def _num(value: float) -> str:
    """``7200`` for 7200.0, ``0.25`` for 0.25: never exponent notation."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{_num(value)} s"


def _human(value: float) -> str:
    """A rough reading of a long duration: ``2 h``, ``2.2 h``, ``5 min``, ``5 d``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= size:
            amount = value / size
            text = str(round(amount)) if abs(amount - round(amount)) < 0.05 else f"{amount:.1f}"
            return f"{text} {unit}"
    return f"{_num(value)} s"


def _seconds_long(value: float | None) -> str:
    """``7200 s (2 h)``; the reading in brackets only where it helps."""
    if value is None:
        return "-"
    return f"{_num(value)} s" + (f" ({_human(value)})" if value >= 120 else "")


def _age(value: float) -> str:
    """Compact durations for table cells: ``12 s``, ``5 min``, ``3.5 h``."""
    if value < 60:
        return f"{round(value)} s"
    return _human(value)


def _wants_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, never with NO_COLOR (https://no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # closed or detached stream
        return False


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

Cell = str | tuple[str, str]
"""A table cell: plain text, or (text, style name)."""


class Writer:
    """Text output: sections, wrapped paragraphs, aligned tables; colour only on a terminal."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        self.colour = _wants_colour(stream) if colour is None else colour

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
        for number, item in enumerate(lines):
            body = item.replace(_GLUE, " ")
            if number == 0:
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
                widths[index] = max(widths[index], len(_text(cell)))
        lead = " " * indent
        for number, row in enumerate(rows):
            parts: list[str] = []
            used = indent
            for index, cell in enumerate(row[:-1]):
                text = _text(cell)
                padded = text.rjust(widths[index]) if index in right else text.ljust(widths[index])
                style = "bold" if header and number == 0 else _style(cell)
                parts.append(self.paint(padded, style))
                used += widths[index] + 2
            last = _text(row[-1]) if row else ""
            room = max(WIDTH - used, 20)
            pieces = [
                piece.replace(_GLUE, " ")
                for piece in textwrap.wrap(last, width=room, break_on_hyphens=False)
            ] or [""]
            style = "bold" if header and number == 0 else _style(row[-1]) if row else None
            head = "  ".join([*parts, self.paint(pieces[0], style)])
            self.line((lead + head).rstrip())
            for piece in pieces[1:]:
                self.line(" " * used + self.paint(piece, style))


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def _style(cell: Cell) -> str | None:
    return None if isinstance(cell, str) else cell[1]


def _emit_json(stream: TextIO, data: object) -> None:
    stream.write(json.dumps(data, indent=2) + "\n")  # ASCII: safe on any console encoding


# =============================================================================================
# Escapes for --ping / --pong
# =============================================================================================

_ESCAPES = {"\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.|$)", re.DOTALL)


def decode_escapes(text: str) -> bytes:
    """Bytes from a command-line token: ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\\\`` and
    ``\\xHH`` are escapes; every other character stands for its UTF-8 encoding.

    ``'PING\\n'`` (as typed in a shell, inside single quotes) gives ``b"PING\\n"``. Any other
    backslash sequence raises ValueError naming it, so a typo is never sent as is.
    """
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(text):
        out += text[position : match.start()].encode("utf-8")
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            out.append(int(code[1:], 16))
        elif code in _ESCAPES:
            out += _ESCAPES[code]
        elif code == "":
            raise ValueError("a lone backslash at the end (write \\\\ for a backslash)")
        else:
            raise ValueError(f"unknown escape \\{code} (use \\n, \\r, \\t, \\0, \\\\ or \\xHH)")
        position = match.end()
    out += text[position:].encode("utf-8")
    return bytes(out)


def encode_escapes(data: bytes) -> str:
    """The inverse of :func:`decode_escapes` for display: printable ASCII as is, the rest
    escaped (``b"PING\\n"`` -> ``PING\\n``)."""
    names = {b"\\"[0]: "\\\\", b"\n"[0]: "\\n", b"\r"[0]: "\\r", b"\t"[0]: "\\t", 0: "\\0"}
    return "".join(
        names.get(byte, chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}") for byte in data
    )


# =============================================================================================
# Argument types
# =============================================================================================


def _float_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def _int_arg(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _port_arg(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return port


def _pid_arg(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        pid = 0
    if pid < 1:
        raise argparse.ArgumentTypeError(
            f"expected a process id (a whole number >= 1), got {text!r}"
        )
    return pid


def _bytes_arg(text: str) -> bytes:
    try:
        data = decode_escapes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if not data:
        raise argparse.ArgumentTypeError("expected at least one byte, got an empty string")
    return data


# =============================================================================================
# Shared views of this host's support and defaults
# =============================================================================================


@dataclass(frozen=True)
class SupportRow:
    """Whether one setting can be set per socket here, and how."""

    setting: Setting
    spec: OptionSpec | None
    reason: str | None
    fixed: float | int | None

    def to_json(self) -> dict[str, object]:
        spec = self.spec
        return {
            "setting": self.setting,
            "supported": spec is not None,
            "option": spec.name if spec else None,
            "unit": spec.unit if spec else None,
            "range": spec.describe_range() if spec else None,
            "minimum": spec.decode(spec.minimum) if spec else None,
            "maximum": spec.decode(spec.maximum) if spec else None,
            "readable": spec.readable if spec else None,
            "since": (spec.since or None) if spec else None,
            "source": (spec.source or None) if spec else None,
            "reason": self.reason,
            "fixed_value": self.fixed,
        }


def support_rows(target: Platform) -> list[SupportRow]:
    rows: list[SupportRow] = []
    for setting in SETTINGS:
        spec = target.options.get(setting)
        reason = None if spec else target.unsupported.get(setting, "no per-socket option")
        rows.append(SupportRow(setting, spec, reason, target.fixed.get(setting)))
    return rows


def _compact_range(spec: OptionSpec) -> str:
    low, high = spec.decode(spec.minimum), spec.decode(spec.maximum)
    unit = "" if spec.is_count else " s"
    return f"{_num(low)}..{_num(high)}{unit}"


def _render_support(writer: Writer, target: Platform) -> None:
    rows: list[list[Cell]] = [["setting", "option", "unit", "range"]]
    footnotes: list[str] = []
    for row in support_rows(target):
        label = _SETTING_LABELS[row.setting]
        if row.spec is not None:
            rows.append([label, row.spec.name, row.spec.unit, _compact_range(row.spec)])
            if row.spec.scale == 1 and not row.spec.is_count:
                footnotes.append(label)
        else:
            fixed = f" (fixed at {_num(row.fixed)})" if row.fixed is not None else ""
            rows.append([label, ("not per socket", "yellow"), "-", f"{row.reason}{fixed}"])
    writer.table(rows, header=True)
    if footnotes:
        writer.wrap(
            f"Whole seconds for {', '.join(footnotes)}: fractions are rounded up, never down to 0.",
            style="dim",
        )


def _default_rows(defaults: SystemDefaults, target: Platform) -> list[list[Cell]]:
    documented = {item.setting: item.documented for item in target.defaults}
    rows: list[list[Cell]] = []
    for setting in SETTINGS:
        value = getattr(defaults, setting)
        source = defaults.source.get(setting, "not known on this platform")
        if value is None:
            shown = "none"
            if source.startswith("none (") and source.endswith(")"):
                source = source[len("none (") : -1]  # "none" is in the value column already
        elif setting == "count":
            shown = f"{int(value)} probes"
        else:
            shown = _seconds_long(value)
        usual = documented.get(setting)
        if value is not None and usual is not None and float(usual) != float(value):
            unit = "" if setting == "count" else " s"
            source += f" (changed here; the usual default is {_num(usual)}{unit})"
        rows.append([_SETTING_LABELS[setting], shown, source])
    return rows


# =============================================================================================
# info
# =============================================================================================


def info(out: TextIO) -> int:
    """This host's per-socket keepalive support and system-wide defaults."""
    writer = Writer(out)
    target = current()
    defaults = system_defaults()
    writer.line(
        f"keepalive {__version__}: TCP keepalive support on this host ({target.name})", "bold"
    )
    writer.heading("Per-socket settings")
    _render_support(writer, target)
    writer.heading("System-wide defaults (used once SO_KEEPALIVE is on; off on a fresh socket)")
    writer.table(_default_rows(defaults, target))
    bound = defaults.detection_bound
    if bound is not None:
        writer.wrap(
            f"With these defaults a dead idle peer is noticed after {_seconds_long(bound)}."
        )
    writer.line()
    writer.wrap(
        "More: keepalive doctor (full diagnosis), keepalive check HOST PORT, keepalive audit, "
        "keepalive demo; keepalive --help.",
        indent=0,
        style="dim",
    )
    return EXIT_OK


# =============================================================================================
# doctor
# =============================================================================================


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    system: str
    release: str
    version: str
    machine: str
    distribution: str | None
    python_implementation: str
    python_version: str
    python_executable: str
    psutil_version: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "hostname": self.hostname,
            "os": self.system,
            "os_release": self.release,
            "os_version": self.version,
            "machine": self.machine,
            "distribution": self.distribution,
            "python": {
                "implementation": self.python_implementation,
                "version": self.python_version,
                "executable": self.python_executable,
            },
            "keepalive_version": __version__,
            "psutil_version": self.psutil_version,
        }


def _distribution() -> str | None:
    """A readable OS product name from local files only (os-release, macOS, Windows)."""
    reader = getattr(host_platform, "freedesktop_os_release", None)
    if callable(reader):
        with contextlib.suppress(OSError):
            release = reader()
            name = release.get("PRETTY_NAME") or release.get("NAME")
            if isinstance(name, str) and name:
                return name
    mac = host_platform.mac_ver()[0]
    if mac:
        return f"macOS {mac}"
    windows = host_platform.win32_ver()
    if windows[0]:
        return " ".join(part for part in ("Windows", windows[0], windows[1]) if part)
    return None


def collect_host_info() -> HostInfo:
    from importlib import metadata  # noqa: PLC0415 - only doctor needs it

    try:
        psutil_version: str | None = metadata.version("psutil")
    except metadata.PackageNotFoundError:
        psutil_version = None
    uname = host_platform.uname()
    return HostInfo(
        hostname=socket.gethostname(),
        system=uname.system,
        release=uname.release,
        version=uname.version,
        machine=uname.machine,
        distribution=_distribution(),
        python_implementation=host_platform.python_implementation(),
        python_version=host_platform.python_version(),
        python_executable=sys.executable,
        psutil_version=psutil_version,
    )


_NATIVE_UNITS = {1: "s", 1000: "ms", 2: "half-seconds"}


def _source_json(item: DefaultSource) -> dict[str, object]:
    native = None if item.documented is None else item.documented * item.scale
    unit = (
        "probes" if item.setting == "count" else _NATIVE_UNITS.get(item.scale, f"1/{item.scale} s")
    )
    return {
        "setting": item.setting,
        "kind": item.kind,
        "location": item.location,
        "documented_default": item.documented,
        "documented_native": native,
        "native_unit": None if item.kind == "fixed" or native is None else unit,
    }


def default_sources_elsewhere() -> list[tuple[str, Platform]]:
    """One description per OS family (the newest variant), to show where each keeps its
    defaults."""
    from keepalive.platforms import detect  # noqa: PLC0415
    from keepalive.platforms.catalog import VARIANTS  # noqa: PLC0415

    seen: dict[str, tuple[str, Platform]] = {}
    for variant in VARIANTS:
        described = detect(variant.sys_platform, variant.namespace, variant.release)
        if described.family not in seen:
            seen[described.family] = (variant.label.split(",")[0], described)
    return list(seen.values())


_SEPARATORS = "./\\"
_PREFIX_SPLIT = re.compile(r"(?<=[./\\])")
# A shared prefix shorter than this is repeated in full: full names are what people search for.
_FACTOR_PREFIX_FROM = 24
_GLUE = "\xa0"  # a space that wrapping never breaks; Writer turns it back into a space


def _common_prefix(locations: Sequence[str]) -> str:
    """The longest shared leading part ending at a ``.``, ``/`` or ``\\`` separator."""
    if len(locations) < 2:
        return ""
    split = [_PREFIX_SPLIT.split(location) for location in locations]
    prefix: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    shortest = min(len(parts) for parts in split)
    if len(prefix) >= shortest:  # keep at least the last part of each location
        prefix = prefix[: shortest - 1]
    return "".join(prefix)


def _documented_value(item: DefaultSource) -> str:
    """``7200000 ms (2 h)``: the value as stored (native unit), with a reading in seconds."""
    assert item.documented is not None
    native = item.documented * item.scale
    if item.setting == "count":
        return _num(native)
    unit = _NATIVE_UNITS.get(item.scale, f"1/{item.scale} s")
    shown = f"{_num(native)} {unit}"
    if item.scale != 1:
        shown += f" ({_num(item.documented)} s)" if item.documented < 120 else ""
    if item.documented >= 120:
        shown += f" ({_human(item.documented)})"
    return shown


def describe_default_sources(target: Platform) -> str:
    """Where ``target`` keeps each system-wide default, with its documented value, e.g.
    ``sysctl net.inet.tcp.keepidle = 7200000 ms (2 h), ...``."""
    groups: list[str] = []
    for kind in ("procfs", "sysctl", "registry"):
        items = [
            item for item in target.defaults if item.kind == kind and item.documented is not None
        ]
        if not items:
            continue
        prefix = _common_prefix([item.location for item in items])
        if len(prefix) < _FACTOR_PREFIX_FROM:
            prefix = ""
        parts = [
            f"{item.location.removeprefix(prefix)} = {_documented_value(item)}".replace(" ", _GLUE)
            for item in items
        ]
        name = {"procfs": "", "sysctl": "sysctl ", "registry": "registry "}[kind]
        lead = name + prefix.rstrip(_SEPARATORS) + ": " if prefix else name
        groups.append(lead + ", ".join(parts))
    for item in target.defaults:
        if item.kind != "fixed" or not item.documented:
            continue
        value = _num(item.documented) + ("" if item.setting == "count" else " s")
        where = (
            item.location if _num(item.documented) in item.location else f"{value}, {item.location}"
        )
        groups.append(f"{_SETTING_LABELS[item.setting]}: {where}")
    return "; ".join(groups) if groups else "not documented"


@dataclass(frozen=True)
class DoctorReport:
    host: HostInfo
    platform: Platform
    defaults: SystemDefaults
    elsewhere: list[tuple[str, Platform]]
    fresh: KeepaliveState | None
    fresh_error: str | None
    facts: HostFacts
    hints: list[Hint]
    warnings: list[IdleWarning]
    suggestion: KeepaliveConfig | None
    suggestion_bound: float | None

    @property
    def problems(self) -> list[str]:
        """One line per finding that needs action, for the summary."""
        found: list[str] = []
        if self.fresh is not None and not self.fresh.enabled:
            found.append("keepalive is off on a fresh TCP socket: turn it on per connection")
        probe_boxes = [w for w in self.warnings if w.remedy == "keepalive"]
        proxy_boxes = [w for w in self.warnings if w.remedy == "heartbeat"]
        if probe_boxes:
            found.append(
                f"{len(probe_boxes)} common middleboxes forget an idle flow before the "
                "system's first keepalive probe"
            )
        if proxy_boxes:
            found.append(
                f"{len(proxy_boxes)} common proxies close idle connections sooner, and only "
                "a heartbeat's payload reaches them"
            )
        for hint in self.hints:
            if hint.severity == "warning":
                found.append(f"{hint.title}: use a heartbeat, kernel keepalive is answered early")
        return found

    def to_json(self) -> dict[str, object]:
        from keepalive.diagnostics import MIDDLEBOX_IDLE_TIMEOUTS  # noqa: PLC0415

        defaults = self.defaults
        documented = {item.setting: item for item in self.platform.defaults}
        measured = self.fresh
        fresh = {
            "keepalive_enabled": measured.enabled if measured else None,
            "idle": measured.idle if measured else None,
            "interval": measured.interval if measured else None,
            "count": measured.count if measured else None,
            "user_timeout": measured.user_timeout if measured else None,
            "source": dict(measured.source) if measured else None,
            "error": self.fresh_error,
        }
        suggestion: dict[str, object] | None = None
        if self.suggestion is not None:
            cfg = self.suggestion
            suggestion = {
                "idle": cfg.idle,
                "interval": cfg.interval,
                "count": cfg.count,
                "user_timeout": cfg.user_timeout,
                "code": _config_code(cfg),
                "detection_bound_seconds": self.suggestion_bound,
            }
        return {
            "command": "doctor",
            "schema_version": JSON_SCHEMA_VERSION,
            "host": self.host.to_json(),
            "platform": {
                "name": self.platform.name,
                "family": self.platform.family,
                "notes": list(self.platform.notes),
            },
            "support": [row.to_json() for row in support_rows(self.platform)],
            "system_defaults": {
                "settings": [
                    {
                        "setting": setting,
                        "value": getattr(defaults, setting),
                        "source": defaults.source.get(setting),
                        "documented_default": (
                            documented[setting].documented if setting in documented else None
                        ),
                    }
                    for setting in SETTINGS
                ],
                "detection_bound_seconds": defaults.detection_bound,
            },
            "default_sources": [
                {
                    "os": label,
                    "platform": described.name,
                    "family": described.family,
                    "summary": describe_default_sources(described).replace(_GLUE, " "),
                    "sources": [_source_json(item) for item in described.defaults],
                }
                for label, described in self.elsewhere
            ],
            "fresh_socket": fresh,
            "network": {
                "hints": [hint.to_json() for hint in self.hints],
                "host_facts": self.facts.to_json(),
            },
            "idle_timeouts": {
                "system_idle_seconds": defaults.idle,
                "warnings": [warning.to_json() for warning in self.warnings],
                "suggestion": suggestion,
                "middleboxes": [box.to_json() for box in MIDDLEBOX_IDLE_TIMEOUTS],
            },
            "summary": {"problems": self.problems},
        }


def _config_code(cfg: KeepaliveConfig) -> str:
    parts = [
        f"idle={_num(cfg.idle)}",
        f"interval={_num(cfg.interval)}",
        f"count={cfg.count}",
    ]
    if cfg.user_timeout is not None:
        parts.append(f"user_timeout={_num(cfg.user_timeout)}")
    return f"KeepaliveConfig({', '.join(parts)})"


def _measure_fresh_socket() -> tuple[KeepaliveState | None, str | None]:
    """Keepalive as the kernel reports it on a brand-new TCP socket (nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as fresh:
            return inspect(fresh), None
    except OSError as error:
        return None, str(error)


def collect_doctor() -> DoctorReport:
    from keepalive import diagnostics  # noqa: PLC0415 - psutil only for the commands needing it

    target = current()
    defaults = system_defaults()
    fresh, fresh_error = _measure_fresh_socket()
    facts = diagnostics.collect_host_facts()
    warnings = diagnostics.idle_warnings(defaults.idle) if defaults.idle else []
    suggestion: KeepaliveConfig | None = None
    bound: float | None = None
    probe_timeouts = [w.middlebox.idle_timeout_seconds for w in warnings if w.remedy == "keepalive"]
    if probe_timeouts:
        advice = diagnostics.suggest_keepalive(min(probe_timeouts))
        suggestion = KeepaliveConfig(
            idle=advice.idle,
            interval=advice.interval,
            count=advice.count,
            user_timeout=advice.user_timeout,
        )
        with contextlib.suppress(KeepaliveError):
            bound = suggestion.detection_bound
    elsewhere = default_sources_elsewhere()
    return DoctorReport(
        host=collect_host_info(),
        platform=target,
        defaults=defaults,
        elsewhere=elsewhere,
        fresh=fresh,
        fresh_error=fresh_error,
        facts=facts,
        hints=diagnostics.network_hints(facts),
        warnings=warnings,
        suggestion=suggestion,
        suggestion_bound=bound,
    )


def render_doctor(report: DoctorReport, writer: Writer) -> None:
    host = report.host
    writer.line(f"keepalive doctor ({__version__})", "bold")

    writer.heading("Host")
    os_text = f"{host.system} {host.release} {host.machine}".strip()
    rows: list[list[Cell]] = [
        ["host", host.hostname],
        ["OS", os_text + (f" ({host.distribution})" if host.distribution else "")],
        [
            "Python",
            f"{host.python_implementation} {host.python_version} ({host.python_executable})",
        ],
        ["keepalive", f"{__version__}, platform {report.platform.name}"],
    ]
    if host.psutil_version:
        rows.append(["psutil", host.psutil_version])
    writer.table(rows)

    writer.heading(f"Per-socket settings on this host ({report.platform.name})")
    _render_support(writer, report.platform)
    for note in report.platform.notes:
        writer.wrap(note, indent=4, first="  - ", style="dim")

    writer.heading("System-wide defaults and where they come from")
    writer.table(_default_rows(report.defaults, report.platform))
    bound = report.defaults.detection_bound
    if bound is not None:
        writer.wrap(
            "Once keepalive is on, these defaults notice a dead idle peer after "
            f"{_seconds_long(bound)}."
        )
    writer.line("  Where other systems keep them (documented defaults):")
    label_width = max((len(label) for label, _ in report.elsewhere), default=0)
    for label, described in report.elsewhere:
        if described.family == report.platform.family:
            continue
        text = describe_default_sources(described)
        writer.wrap(text, indent=6 + label_width, first=f"    {label.ljust(label_width)}  ")

    writer.heading("A fresh TCP socket (measured with keepalive.inspect)")
    fresh = report.fresh
    if fresh is None:
        writer.wrap(f"could not be measured: {report.fresh_error}", style="yellow")
    else:
        state = ("on", "green") if fresh.enabled else ("OFF", "bold-yellow")
        writer.line("  SO_KEEPALIVE  " + writer.paint(state[0], state[1]))
        if not fresh.enabled:
            writer.wrap(
                "Keepalive is off by default: the kernel never probes an idle connection, so "
                "a peer that vanished goes unnoticed until the next write, and forever on a "
                "connection that only reads. Turn it on per socket (keepalive.configure).",
            )
        count = "-" if fresh.count is None else str(fresh.count)
        writer.wrap(
            f"Values it reads back: idle {_seconds(fresh.idle)}, interval "
            f"{_seconds(fresh.interval)}, count {count}, user timeout "
            f"{_seconds(fresh.user_timeout) if fresh.user_timeout else 'none'}.",
        )

    writer.heading("Network path (local evidence only; nothing was sent)")
    if not report.hints:
        writer.wrap(
            "No virtual machine, container or userspace network stack recognised. A SOCKS or "
            "HTTP proxy, an SSH tunnel or an L7 load balancer cannot be seen from here: they "
            "answer keepalive probes themselves.",
        )
    for hint in report.hints:
        mark, style = ("!", "bold-yellow") if hint.severity == "warning" else ("-", "cyan")
        writer.wrap(hint.title, indent=4, first=f"  {writer.paint(mark, style)} ")
        writer.wrap(hint.meaning, indent=4)
        for evidence in hint.evidence:
            writer.wrap(evidence, indent=6, first="    evidence: ", style="dim")

    writer.heading("Middlebox idle timeouts")
    _render_idle_warnings(report, writer)

    writer.heading("Summary")
    problems = report.problems
    if not problems:
        writer.wrap("Nothing to act on.", style="green")
    for problem in problems:
        writer.wrap(problem, indent=4, first="  - ")


def _render_idle_warnings(report: DoctorReport, writer: Writer) -> None:
    idle = report.defaults.idle
    if idle is None:
        writer.wrap("The system's idle time before the first probe is not known here.")
        return
    if not report.warnings:
        writer.wrap(
            f"The first keepalive probe comes after {_seconds_long(idle)}, before every "
            "common middlebox forgets an idle flow.",
            style="green",
        )
        return
    writer.wrap(
        f"The first keepalive probe comes after {_seconds_long(idle)}. These forget an idle "
        "flow sooner (their defaults; sources in docs/cli.md):",
    )
    rows: list[list[Cell]] = []
    for warning in report.warnings:
        box = warning.middlebox
        name = box.name
        if warning.remedy == "heartbeat":
            name += " (a proxy: probes end there, only a heartbeat helps)"
        rows.append([_seconds(box.idle_timeout_seconds), (name, "yellow")])
    writer.table(rows, indent=4, right=frozenset({0}))
    if report.suggestion is not None:
        cfg = report.suggestion
        writer.line("  Suggested: " + writer.paint(_config_code(cfg), "bold"))
        bound = report.suggestion_bound
        tail = f", a dead idle peer noticed within {_seconds(bound)} here" if bound else ""
        writer.wrap(
            f"The first probe goes after {_seconds(cfg.idle)}{tail}; user_timeout bounds "
            "unacknowledged data alike.",
            indent=4,
        )
    proxies = [w for w in report.warnings if w.remedy == "heartbeat"]
    if proxies:
        shortest = min(w.middlebox.idle_timeout_seconds for w in proxies)
        writer.wrap(
            f"Behind an L7 proxy, send heartbeat bytes more often than every "
            f"{_seconds(shortest)} (keepalive.sync.monitor or keepalive.aio).",
            indent=4,
        )


def doctor(args: argparse.Namespace, out: TextIO) -> int:
    report = collect_doctor()
    if args.json:
        _emit_json(out, report.to_json())
    else:
        render_doctor(report, Writer(out))
    return EXIT_OK


# =============================================================================================
# check
# =============================================================================================

_HOST_NAME_CHARACTERS = re.compile(r"^[A-Za-z0-9._:%\-\[\]]+$")


@dataclass(frozen=True)
class CheckOptions:
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
    json: bool


def _setting_error(error: InvalidSetting) -> UsageError:
    option = _SETTING_OPTIONS.get(error.field, error.field)
    return UsageError(f"{option}: {error}")


def check_options(args: argparse.Namespace) -> CheckOptions:
    """Validate ``check``'s arguments into options; raise UsageError with a clear message."""
    from keepalive.heartbeat import HeartbeatConfig  # noqa: PLC0415

    given = frozenset(
        name
        for name in ("idle", "interval", "count", "user_timeout")
        if getattr(args, name) is not None
    )
    values = {name: getattr(args, name) for name in given}
    try:
        config = KeepaliveConfig(**values)
        current().plan(config, strict=False)  # the platform's ranges, before any connection
    except InvalidSetting as error:
        raise _setting_error(error) from None

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
            option = {"interval": "--ping-interval"}.get(error.field)
            raise UsageError(
                f"{option or _SETTING_OPTIONS.get(error.field, error.field)}: {error}"
            ) from None
    duration = args.duration
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration: expected a number of seconds > 0, got {_num(duration)}")
    if heartbeat is not None and duration is None:
        duration = 10.0
    if args.retries < 0:
        raise UsageError(f"--retries: expected a whole number >= 0, got {args.retries}")
    if args.connect_timeout <= 0:
        raise UsageError(
            f"--connect-timeout: expected a number of seconds > 0, got {_num(args.connect_timeout)}"
        )
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
        json=args.json,
    )


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

    def to_json(self) -> dict[str, object]:
        return {
            "setting": self.setting,
            "requested": self.requested,
            "given": self.given,
            "stored": self.stored,
            "read_back": self.read_back,
            "read_back_source": self.read_back_source,
            "option": self.option,
            "status": self.status,
            "detail": self.detail or None,
            "matches": self.matches,
        }


@dataclass
class RttStats:
    samples: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        values = self.samples
        if not values:
            return {"samples": 0, "min": None, "avg": None, "max": None, "mdev": None}
        return {
            "samples": len(values),
            "min": min(values),
            "avg": statistics.fmean(values),
            "max": max(values),
            "mdev": statistics.pstdev(values),
        }


@dataclass
class HeartbeatRun:
    """What the heartbeat saw during ``check --ping``."""

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
    verdict: str | None = None  # "dead", "closed", "error", "interrupted" or None (healthy)
    message: str | None = None
    dead_after: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "ping": encode_escapes(self.ping),
            "pong": encode_escapes(self.pong),
            "interval": self.config.interval,
            "timeout": self.config.timeout,
            "misses": self.config.misses,
            "detection_bound_seconds": self.config.detection_bound,
            "duration": self.duration,
            "elapsed": self.elapsed,
            "pings_sent": self.pings_sent,
            "pongs_received": self.pongs_received,
            "rtt": {**self.rtt.to_json(), "last": self.last_rtt, "smoothed": self.srtt},
            "other_bytes_received": self.other_bytes,
            "outcome": self.verdict or "alive",
            "message": self.message,
            "dead_after_seconds": self.dead_after,
        }


@dataclass
class CheckResult:
    options: CheckOptions
    platform: str = ""
    attempts: int = 0
    connect_seconds: float | None = None
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    family: str | None = None
    keepalive_enabled: bool | None = None
    settings: list[SettingCheck] = field(default_factory=list)
    detection_bound: float | None = None
    watch: dict[str, object] | None = None
    heartbeat: HeartbeatRun | None = None
    error_kind: str | None = None
    error: str | None = None
    exit_status: int = EXIT_OK

    @property
    def healthy(self) -> bool:
        return self.exit_status == EXIT_OK

    def to_json(self) -> dict[str, object]:
        options = self.options
        connection: dict[str, object] | None = None
        if self.local is not None and self.remote is not None:
            connection = {
                "local": _endpoint(*self.local),
                "remote": _endpoint(*self.remote),
                "family": self.family,
                "attempts": self.attempts,
                "connect_seconds": self.connect_seconds,
            }
        return {
            "command": "check",
            "schema_version": JSON_SCHEMA_VERSION,
            "target": {"host": options.host, "port": options.port},
            "platform": self.platform,
            "connection": connection,
            "keepalive_enabled": self.keepalive_enabled,
            "settings": [item.to_json() for item in self.settings],
            "detection_bound_seconds": self.detection_bound,
            "watch": self.watch,
            "heartbeat": None if self.heartbeat is None else self.heartbeat.to_json(),
            "healthy": self.healthy,
            "exit_status": self.exit_status,
            "error": None
            if self.error is None
            else {"kind": self.error_kind, "message": self.error},
        }


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
    options: CheckOptions, result: CheckResult, log: Callable[[str], None]
) -> socket.socket:
    """Connect with keepalive configured and the retry policy; Failure when unreachable."""
    from keepalive.dial import connect  # noqa: PLC0415
    from keepalive.errors import ConnectFailed  # noqa: PLC0415
    from keepalive.reconnect import Backoff, is_retryable_default  # noqa: PLC0415

    problem = _host_problem(options.host)
    if problem is not None:
        result.error_kind = "resolve"
        raise Failure(f"cannot resolve {options.host!r}: {problem}")
    failures = [0]

    def retry_on(error: BaseException) -> bool:
        failures[0] += 1
        retryable = is_retryable_default(error)
        if retryable and failures[0] <= options.retries:
            log(f"attempt {failures[0]} failed: {_describe_os_error(error)}; retrying")
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
            result.error_kind = "resolve"
            raise Failure(f"cannot resolve {options.host!r}: {_describe_os_error(last)}") from None
        result.error_kind = "connect"
        raise Failure(
            f"cannot connect to {where}: {_describe_os_error(last)} "
            f"({result.attempts} attempt{'s' if result.attempts != 1 else ''})"
        ) from None
    except socket.gaierror as error:  # a name that does not exist is not retried
        result.attempts = failures[0]
        result.error_kind = "resolve"
        raise Failure(f"cannot resolve {options.host!r}: {_describe_os_error(error)}") from None
    except UnicodeError as error:  # IDNA refuses the name before any resolver is asked
        result.error_kind = "resolve"
        reason = error.__cause__ or error
        raise Failure(
            f"cannot resolve {options.host!r}: not a valid host name ({reason})"
        ) from None
    except InvalidSetting as error:
        raise _setting_error(error) from None
    except OSError as error:  # not retryable: permission, address not available, ...
        result.attempts = failures[0] + 1
        result.error_kind = "connect"
        raise Failure(f"cannot connect to {where}: {_describe_os_error(error)}") from None
    result.connect_seconds = time.monotonic() - started
    result.attempts = failures[0] + 1
    return sock


def _read_back(
    options: CheckOptions, applied: Applied, state: KeepaliveState
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


def _family_name(sock: socket.socket) -> str:
    return "ipv6" if sock.family == socket.AF_INET6 else "ipv4"


def _address(raw: object) -> tuple[str, int]:
    host, port = raw[0], raw[1]  # type: ignore[index]
    return str(host), int(port)


class Progress:
    """A live status line on a terminal (rewritten in place), nothing elsewhere."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream if stream is not None and _is_terminal(stream) else None
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


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


def _watch_kernel(sock: socket.socket, duration: float, progress: Progress) -> dict[str, object]:
    """Hold the connection for ``duration`` seconds with kernel keepalive alone: did the
    kernel (or the peer) end it?"""
    import selectors  # noqa: PLC0415

    started = time.monotonic()
    deadline = started + duration
    received = 0
    outcome: str = "alive"
    message: str | None = None
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while (now := time.monotonic()) < deadline:
                progress.show(
                    f"  watching {now - started:4.1f}/{_num(duration)} s (kernel keepalive only)"
                )
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
    finally:
        progress.clear()
    elapsed = time.monotonic() - started
    return {
        "duration": duration,
        "elapsed": elapsed,
        "outcome": outcome,
        "message": message,
        "bytes_received": received,
    }


_SAMPLE_EVERY = 0.05  # seconds between looks at the heartbeat's counters


def _run_heartbeat(
    sock: socket.socket, options: CheckOptions, run: HeartbeatRun, progress: Progress
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
            last = "-" if stats.rtt is None else f"{stats.rtt * 1000:.2f} ms"
            progress.show(
                f"  {now - started:5.1f}/{_num(run.duration)} s  pings {stats.pings_sent}  "
                f"pongs {stats.pongs_received}  rtt {last}"
            )
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except PeerUnresponsive as error:
                verdict = conn.verdict
                run.verdict, run.message = "dead", f"peer declared dead: {error}"
                run.dead_after = verdict.silent_for if verdict is not None else None
                break
            except OSError as error:
                run.verdict = "error"
                run.message = f"the connection failed: {_describe_os_error(error)}"
                break
            if not data:
                run.verdict, run.message = "closed", "the peer closed the connection"
                break
            run.other_bytes += len(data)
    except KeyboardInterrupt:  # stop early, still report what was measured
        run.verdict, run.message = "interrupted", "interrupted before the end of --duration"
    finally:
        progress.clear()
        run.elapsed = time.monotonic() - started
        stats = conn.stats
        if stats.pongs_received > pongs_seen and stats.rtt is not None:
            run.rtt.samples.append(stats.rtt)
        run.pings_sent, run.pongs_received = stats.pings_sent, stats.pongs_received
        run.last_rtt, run.srtt = stats.rtt, stats.srtt
        conn.close()


def run_check(
    options: CheckOptions, writer: Writer | None, log: Callable[[str], None]
) -> CheckResult:
    """Connect, configure, read back; watch or run the heartbeat. ``writer`` (text mode)
    receives each section as soon as it is known."""
    from keepalive.sockets import configure  # noqa: PLC0415

    target = current()
    result = CheckResult(options, platform=target.name)
    if writer is not None:
        shown = options.host if _host_problem(options.host) is None else repr(options.host)
        writer.line(f"keepalive check {shown} port {options.port}", "bold")
        writer.flush()
    try:
        sock = _connect(options, result, log)
    except Failure as failure:
        result.error = str(failure)
        result.exit_status = EXIT_DEAD
        return result
    with sock:
        result.local = _address(sock.getsockname())
        result.remote = _address(sock.getpeername())
        result.family = _family_name(sock)
        try:
            applied = configure(sock, options.config, strict=False)
            state = inspect(sock)
        except OSError as error:
            result.error_kind = "socket"
            result.error = f"could not apply or read back keepalive: {error}"
            result.exit_status = EXIT_DEAD
            return result
        result.keepalive_enabled = state.enabled
        result.settings = _read_back(options, applied, state)
        result.detection_bound = options.config.detection_bound
        if writer is not None:
            _render_check_settings(result, writer)
            writer.flush()
        progress = Progress(sys.stderr)
        if options.heartbeat is not None and options.ping is not None and options.pong is not None:
            run = HeartbeatRun(
                options.heartbeat, options.ping, options.pong, options.duration or 10.0
            )
            result.heartbeat = run
            if writer is not None:
                _render_heartbeat_header(run, writer)
                writer.flush()
            _run_heartbeat(sock, options, run, progress)
            if run.verdict is not None:
                result.error_kind = f"heartbeat-{run.verdict}"
                result.error = run.message
                result.exit_status = EXIT_INTERRUPTED if run.verdict == "interrupted" else EXIT_DEAD
        elif options.duration is not None:
            if writer is not None:
                writer.heading(f"Watching for {_seconds(options.duration)} (kernel keepalive only)")
                writer.flush()
            result.watch = _watch_kernel(sock, options.duration, progress)
            outcome = result.watch["outcome"]
            if outcome != "alive":
                result.error_kind = f"watch-{outcome}"
                result.error = str(result.watch["message"])
                result.exit_status = EXIT_INTERRUPTED if outcome == "interrupted" else EXIT_DEAD
    return result


def _render_check_settings(result: CheckResult, writer: Writer) -> None:
    assert result.local is not None
    assert result.remote is not None
    attempts = result.attempts
    took = f"{result.connect_seconds * 1000:.1f} ms" if result.connect_seconds is not None else "?"
    writer.heading("Connection")
    writer.table(
        [
            ["local", _endpoint(*result.local)],
            [
                "remote",
                _endpoint(*result.remote) + f" ({'IPv6' if result.family == 'ipv6' else 'IPv4'})",
            ],
            ["connected", f"in {took}, attempt {attempts} of {result.options.retries + 1}"],
        ]
    )
    writer.heading(f"Kernel keepalive ({result.platform})")
    rows: list[list[Cell]] = [["setting", "requested", "stored", "read back", "option", ""]]
    defaults_used = False
    for item in result.settings:
        label = _SETTING_LABELS[item.setting]
        if item.requested is None:
            back = _value(item.setting, item.read_back) if item.read_back is not None else "none"
            rows.append([label, "-", "-", back, item.option or "-", ("system default", "dim")])
            continue
        requested = _value(item.setting, item.requested) + ("" if item.given else "*")
        defaults_used = defaults_used or not item.given
        verdict: Cell
        if item.status == "honoured":
            verdict = ("ok", "green")
        elif item.status == "approximated":
            verdict = ("rounded", "yellow")
        elif item.status == "mismatch":
            verdict = ("MISMATCH", "bold-red")
        else:
            verdict = (item.status, "yellow")
        rows.append(
            [
                label,
                requested,
                _value(item.setting, item.stored),
                _value(item.setting, item.read_back),
                item.option or "-",
                verdict,
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
        how = f"idle {_num(cfg.idle)} + interval {_num(cfg.interval)} x count {cfg.count}"
        target = current()
        if cfg.user_timeout is not None and target.user_timeout_replaces_count:
            how = f"user timeout {_num(cfg.user_timeout)} s replaces the count on {target.name}"
        writer.wrap(
            f"Kernel keepalive gives up on a silent peer after {_seconds_long(bound)} ({how}). "
            "It only proves that the nearest TCP endpoint is alive: a proxy or userspace NAT "
            "answers probes itself. --ping tests the real peer.",
        )


def _value(setting: Setting, value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if setting == "count" else _seconds(float(value))


def _render_heartbeat_header(run: HeartbeatRun, writer: Writer) -> None:
    config = run.config
    writer.heading(f"Heartbeat for {_seconds(run.duration)}")
    writer.wrap(
        f"Ping '{encode_escapes(run.ping)}', pong '{encode_escapes(run.pong)}'. A ping goes "
        f"after {_seconds(config.interval)} without inbound bytes and has "
        f"{_seconds(config.timeout)} to be answered; {_plural(config.misses, 'unanswered ping')} "
        f"in a row make the peer dead, at most {_seconds(config.detection_bound)} after it "
        "fell silent.",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.3f}"


def _render_check_outcome(result: CheckResult, writer: Writer) -> None:
    run = result.heartbeat
    if run is not None:
        sent = "? pings" if run.pings_sent is None else _plural(run.pings_sent, "ping")
        answered = "? pongs" if run.pongs_received is None else _plural(run.pongs_received, "pong")
        writer.wrap(
            f"After {run.elapsed:.1f} s: {sent} sent, {answered} received, "
            f"{_plural(run.other_bytes, 'other byte')} received."
        )
        stats = run.rtt.samples
        if stats:
            values = "/".join(
                _ms(value)
                for value in (
                    min(stats),
                    statistics.fmean(stats),
                    max(stats),
                    statistics.pstdev(stats),
                )
            )
            writer.line(f"  rtt min/avg/max/mdev = {values} ms ({_plural(len(stats), 'sample')})")
            if run.srtt is not None:
                writer.line(f"  smoothed rtt {_ms(run.srtt)} ms")
        elif run.verdict is None:
            writer.wrap(
                "No round trip measured: the run was shorter than the ping interval, or the "
                "peer kept talking (any inbound byte counts as life).",
                style="dim",
            )
    if result.watch is not None and result.watch["outcome"] == "alive":
        writer.wrap(
            f"The connection stayed up for {_seconds(float(str(result.watch['elapsed'])))}.",
        )
    writer.heading("Result")
    if result.healthy:
        writer.line("  healthy", "bold-green")
    else:
        style = "yellow" if result.exit_status == EXIT_INTERRUPTED else "bold-red"
        writer.wrap(result.error or "failed", style=style)


def check(args: argparse.Namespace, out: TextIO) -> int:
    options = check_options(args)
    writer = None if options.json else Writer(out)
    err = Writer(sys.stderr)

    def log(message: str) -> None:
        err.line(f"keepalive check: {message}", "dim")
        err.flush()

    try:
        result = run_check(options, writer, log)
    except KeyboardInterrupt:
        raise
    if options.json:
        _emit_json(out, result.to_json())
        if result.error:
            log(result.error)
    elif writer is not None:
        _render_check_outcome(result, writer)
    return result.exit_status


# =============================================================================================
# audit
# =============================================================================================


def _keepalive_cell(report: ConnectionReport) -> Cell:
    if report.keepalive == "on":
        timer = report.keepalive_timer_seconds
        text = "on" if timer is None else f"on {_age(timer)}"
        return (text, "green")
    if report.keepalive == "off":
        style = "bold-yellow" if report.flags else "yellow"
        return ("off", style)
    return ("?", "dim")


def _age_cell(report: ConnectionReport) -> str:
    if report.min_age_seconds is None:
        return "?"
    return f">={_age(report.min_age_seconds)}"


def audit_summary(result: AuditResult) -> dict[str, int]:
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


def audit_json(result: AuditResult, pids: list[int] | None) -> dict[str, object]:
    return {
        "command": "audit",
        "schema_version": JSON_SCHEMA_VERSION,
        "pids": pids,
        "summary": audit_summary(result),
        **result.to_json(),
    }


def render_audit(result: AuditResult, pids: list[int] | None, writer: Writer) -> None:
    summary = audit_summary(result)
    scope = "all visible processes" if pids is None else "pid " + ", ".join(map(str, pids))
    writer.line(f"keepalive audit: TCP connections of {scope} (read via {result.source})", "bold")
    by_pid: dict[int | None, list[ConnectionReport]] = {}
    for report in result.connections:
        by_pid.setdefault(report.pid, []).append(report)
    for pid, reports in by_pid.items():
        name = reports[0].process_name or "?"
        count = len(reports)
        plural = "s" if count != 1 else ""
        writer.heading(
            f"pid {pid if pid is not None else '?'}  {name}  ({count} connection{plural})"
        )
        _render_connections(reports, writer)
    writer.line()
    if not result.connections:
        writer.wrap("No TCP connections found.", indent=0)
    else:
        writer.wrap(
            f"{_plural(summary['connections'], 'connection')} in {summary['processes']} "
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
    widths = [max(len(_text(row[i])) for row in [header, *rows]) for i in range(len(header))]
    if 2 + sum(widths) + 2 * (len(widths) - 1) <= WIDTH:
        _aligned_rows(writer, header, rows, widths, reports)
        return
    # Long (IPv6) addresses: two lines per connection rather than lines over 80 columns.
    for report, row in zip(reports, rows, strict=True):
        keepalive = (f"keepalive {_text(row[4])}", _style(row[4]) or "")
        head: list[Cell] = [f"fd {_text(row[0])}", row[1], keepalive, f"age {_text(row[5])}"]
        writer.line("  " + "  ".join(writer.paint(_text(c), _style(c)) for c in head))
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
    def render(row: Sequence[Cell], bold: bool) -> str:
        cells: list[str] = []
        for index, cell in enumerate(row):
            text = _text(cell)
            padded = text.rjust(widths[index]) if index == 0 else text.ljust(widths[index])
            if index == len(row) - 1:
                padded = padded.rstrip()
            cells.append(writer.paint(padded, "bold" if bold else _style(cell)))
        return ("  " + "  ".join(cells)).rstrip()

    writer.line(render(header, True))
    for report, row in zip(reports, rows, strict=True):
        writer.line(render(row, False))
        _render_flags(report, writer)


def _render_flags(report: ConnectionReport, writer: Writer) -> None:
    for flag in report.flags:
        writer.wrap(flag.message, indent=6, first="    " + writer.paint("!", "bold-yellow") + " ")


def audit(args: argparse.Namespace, out: TextIO) -> int:
    from keepalive import diagnostics  # noqa: PLC0415

    pids: list[int] | None = sorted(set(args.pid)) if args.pid else None
    try:
        result = diagnostics.audit(pids, include_listening=args.listening)
    except ProcessLookupError as error:
        raise Failure(error.strerror or str(error)) from None
    except PermissionError as error:
        raise Failure(f"{error.strerror or error}: run as the process's owner or as root") from None
    except OSError as error:
        raise Failure(f"cannot list TCP connections: {error}") from None
    if args.json:
        _emit_json(out, audit_json(result, pids))
    else:
        render_audit(result, pids, Writer(out))
    return EXIT_OK


# =============================================================================================
# demo
# =============================================================================================


def demo(_args: argparse.Namespace, out: TextIO) -> int:
    """The NAT story; 0 when the heartbeat saw the loss, kernel keepalive was fooled, and
    the supervised connection healed once the server came back."""
    from keepalive.demo import run_demo  # noqa: PLC0415

    result = run_demo(out)
    detected = result.heartbeat_detected_after is not None
    fooled = (
        result.kernel_still_established_after is not None
        and result.kernel_still_established_after >= result.kernel_detection_bound
    )
    healed = result.healed_after is not None
    return EXIT_OK if detected and fooled and healed else EXIT_DEAD


# =============================================================================================
# Parser and entry point
# =============================================================================================

Handler = Callable[[argparse.Namespace, TextIO], int]

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
    parser.set_defaults(handler=_info_handler)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    sub = commands.add_parser(
        "info",
        help="this host's keepalive support and defaults (the default command)",
        description="This host's per-socket keepalive support and system-wide defaults.",
    )
    sub.set_defaults(handler=_info_handler, command_parser=sub)

    sub = commands.add_parser(
        "doctor",
        help="diagnose this host: support, defaults, network path, idle-timeout risks",
        description=(
            "Host, OS and Python; per-socket support; system-wide defaults and where they "
            "live; what a fresh socket gets (measured); network-path hints; middlebox "
            "idle-timeout warnings with a suggested KeepaliveConfig. Sends nothing."
        ),
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=doctor, command_parser=sub)

    sub = commands.add_parser(
        "check",
        help="connect to HOST PORT, apply keepalive, read it back; --ping runs a heartbeat",
        description=(
            "Connect (retrying per a small backoff policy) with kernel keepalive set before "
            "the connection is made, read the settings back from the kernel and print the "
            "detection bound. With --ping, run the application heartbeat for --duration "
            "seconds and report round-trip times; exit 1 if the peer is declared dead. "
            "--ping/--pong take escapes: \\n \\r \\t \\0 \\\\ \\xHH."
        ),
    )
    sub.add_argument("host", metavar="HOST", help="host name or address")
    sub.add_argument("port", metavar="PORT", type=_port_arg, help="TCP port, 1..65535")
    group = sub.add_argument_group("kernel keepalive (defaults: KeepaliveConfig's)")
    group.add_argument(
        "--idle", type=_float_arg, metavar="S", help="silence before the first probe"
    )
    group.add_argument("--interval", type=_float_arg, metavar="S", help="time between probes")
    group.add_argument("--count", type=_int_arg, metavar="N", help="unanswered probes tolerated")
    group.add_argument(
        "--user-timeout",
        dest="user_timeout",
        type=_float_arg,
        metavar="S",
        help="longest time sent data may stay unacknowledged",
    )
    group = sub.add_argument_group("heartbeat")
    group.add_argument(
        "--ping", type=_bytes_arg, metavar="BYTES", help="run the heartbeat, e.g. 'PING\\n'"
    )
    group.add_argument(
        "--pong",
        type=_bytes_arg,
        metavar="BYTES",
        help="the peer's answer (default: the ping, echoed); matched as a whole line, or, "
        "without a trailing newline, as records of its own size",
    )
    group.add_argument(
        "--duration",
        type=_float_arg,
        metavar="S",
        help="how long to run the heartbeat (default 10); without --ping, hold the "
        "connection this long with kernel keepalive alone",
    )
    group.add_argument(
        "--ping-interval", type=_float_arg, metavar="S", help="idle time before a ping (default 1)"
    )
    group.add_argument(
        "--ping-timeout", type=_float_arg, metavar="S", help="time for an answer (default 2)"
    )
    group.add_argument(
        "--misses", type=_int_arg, metavar="N", help="unanswered pings before dead (default 2)"
    )
    group = sub.add_argument_group("connection")
    group.add_argument(
        "--retries", type=_int_arg, default=2, metavar="N", help="connect retries (default 2)"
    )
    group.add_argument(
        "--connect-timeout",
        type=_float_arg,
        default=5.0,
        metavar="S",
        help="per attempt and address (default 5)",
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the heartbeat's events to stderr (-vv: every ping and pong)",
    )
    sub.set_defaults(handler=check, command_parser=sub)

    sub = commands.add_parser(
        "audit",
        help="list processes' TCP connections and whether keepalive is armed",
        description=(
            "Every TCP connection of the given processes (default: all this user may see), "
            "with state, addresses, age where known and whether keepalive is armed. Flags "
            "long-lived established connections without keepalive."
        ),
    )
    sub.add_argument(
        "--pid",
        type=_pid_arg,
        action="extend",
        nargs="+",
        metavar="PID",
        help="process id (repeatable)",
    )
    sub.add_argument("--listening", action="store_true", help="include listening sockets")
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.set_defaults(handler=audit, command_parser=sub)

    sub = commands.add_parser(
        "demo",
        help="watch a proxying NAT fool kernel keepalive while a heartbeat is not fooled",
        description=(
            "Reproduce the proxying-NAT story on loopback (about 12 s). Exit 0 when the "
            "heartbeat detected the loss and kernel keepalive was fooled, else 1."
        ),
    )
    sub.set_defaults(handler=demo, command_parser=sub)
    return parser


def _info_handler(_args: argparse.Namespace, out: TextIO) -> int:
    return info(out)


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
    handler: Handler = args.handler
    _configure_logging(getattr(args, "verbose", 0))
    try:
        try:
            status = handler(args, stream)
            stream.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return status
        except UsageError as error:
            command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
            command_parser.error(str(error))  # argparse's format: usage, message, exit 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except Failure as failure:
        command = args.command or "info"
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
