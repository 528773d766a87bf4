"""``keepalive doctor``: everything this host decides about keepalive, from local evidence only
(nothing is sent): host, per-socket support, system-wide defaults and where they live, what a
fresh socket gets (measured), network-path hints, middlebox idle-timeout warnings with a
suggested config, and a summary of what to act on.

:func:`collect` gathers a :class:`DoctorReport`; :meth:`DoctorReport.to_json` and
:func:`render` show it.
"""

from __future__ import annotations

import argparse
import contextlib
import platform as host_platform
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from keepalive import __version__
from keepalive.cli._output import (
    EXIT_OK,
    GLUE,
    JSON_SCHEMA_VERSION,
    SETTING_LABELS,
    Cell,
    Writer,
    emit_json,
    number,
    rough_duration,
    seconds,
    seconds_long,
)
from keepalive.cli._support import render_support, setting_support, system_default_rows
from keepalive.platforms import SETTINGS, DefaultSource, Platform, current
from keepalive.sockets import inspect
from keepalive.system import SystemDefaults, system_defaults

if TYPE_CHECKING:
    from keepalive.diagnostics import (
        HostFacts,
        IdleWarning,
        KeepaliveSuggestion,
        MiddleboxTimeout,
        NetworkHint,
    )
    from keepalive.sockets import SocketKeepalive

__all__ = [
    "DESCRIPTION",
    "HELP",
    "NAME",
    "DoctorReport",
    "HostEnvironment",
    "add_arguments",
    "collect",
    "render",
    "run",
]

NAME = "doctor"
HELP = "diagnose this host: support, defaults, network path, idle-timeout risks"
DESCRIPTION = (
    "Host, OS and Python; per-socket support; system-wide defaults and where they "
    "live; what a fresh socket gets (measured); network-path hints; middlebox "
    "idle-timeout warnings with a suggested KeepaliveConfig. Sends nothing."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace, out: TextIO) -> int:
    report = collect()
    if args.json:
        emit_json(out, report.to_json())
    else:
        render(report, Writer(out))
    return EXIT_OK


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostEnvironment:
    """The machine, OS and Python this runs on, with the versions that matter here."""

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


@dataclass(frozen=True)
class DoctorReport:
    host: HostEnvironment
    platform: Platform
    defaults: SystemDefaults
    elsewhere: list[tuple[str, Platform]]
    fresh: SocketKeepalive | None
    fresh_error: str | None
    facts: HostFacts
    hints: list[NetworkHint]
    warnings: list[IdleWarning]
    middleboxes: Sequence[MiddleboxTimeout]
    suggestion: KeepaliveSuggestion | None
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
            suggestion = {
                **self.suggestion.to_json(),
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
            "support": [row.to_json() for row in setting_support(self.platform)],
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
                    "summary": describe_default_sources(described).replace(GLUE, " "),
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
                "middleboxes": [box.to_json() for box in self.middleboxes],
            },
            "summary": {"problems": self.problems},
        }


# --- collecting ----------------------------------------------------------------------------------


def collect() -> DoctorReport:
    from keepalive import diagnostics  # noqa: PLC0415 - psutil only for the commands needing it
    from keepalive.config import KeepaliveConfig  # noqa: PLC0415
    from keepalive.errors import KeepaliveError  # noqa: PLC0415

    defaults = system_defaults()
    fresh, fresh_error = _measure_fresh_socket()
    facts = diagnostics.collect_host_facts()
    warnings = diagnostics.idle_warnings(defaults.idle) if defaults.idle else []
    suggestion = None
    bound: float | None = None
    probe_timeouts = [w.middlebox.idle_timeout_seconds for w in warnings if w.remedy == "keepalive"]
    if probe_timeouts:
        suggestion = diagnostics.suggest_keepalive(min(probe_timeouts))
        with contextlib.suppress(KeepaliveError):
            bound = KeepaliveConfig(
                idle=suggestion.idle,
                interval=suggestion.interval,
                count=suggestion.count,
                user_timeout=suggestion.user_timeout,
            ).detection_bound
    return DoctorReport(
        host=collect_host_environment(),
        platform=current(),
        defaults=defaults,
        elsewhere=default_sources_elsewhere(),
        fresh=fresh,
        fresh_error=fresh_error,
        facts=facts,
        hints=diagnostics.network_hints(facts),
        warnings=warnings,
        middleboxes=diagnostics.MIDDLEBOX_IDLE_TIMEOUTS,
        suggestion=suggestion,
        suggestion_bound=bound,
    )


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


def collect_host_environment() -> HostEnvironment:
    from importlib import metadata  # noqa: PLC0415 - only doctor needs it

    try:
        psutil_version: str | None = metadata.version("psutil")
    except metadata.PackageNotFoundError:
        psutil_version = None
    uname = host_platform.uname()
    return HostEnvironment(
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


def _measure_fresh_socket() -> tuple[SocketKeepalive | None, str | None]:
    """Keepalive as the kernel reports it on a brand-new TCP socket (nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as fresh:
            return inspect(fresh), None
    except OSError as error:
        return None, str(error)


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


# --- where each OS keeps its defaults ------------------------------------------------------------

_NATIVE_UNITS = {1: "s", 1000: "ms", 2: "half-seconds"}
_SEPARATORS = "./\\"
_PREFIX_SPLIT = re.compile(r"(?<=[./\\])")
# A shared prefix shorter than this is repeated in full: full names are what people search for.
_FACTOR_PREFIX_FROM = 24


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
        return number(native)
    unit = _NATIVE_UNITS.get(item.scale, f"1/{item.scale} s")
    shown = f"{number(native)} {unit}"
    if item.scale != 1:
        shown += f" ({number(item.documented)} s)" if item.documented < 120 else ""
    if item.documented >= 120:
        shown += f" ({rough_duration(item.documented)})"
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
            f"{item.location.removeprefix(prefix)} = {_documented_value(item)}".replace(" ", GLUE)
            for item in items
        ]
        name = {"procfs": "", "sysctl": "sysctl ", "registry": "registry "}[kind]
        lead = name + prefix.rstrip(_SEPARATORS) + ": " if prefix else name
        groups.append(lead + ", ".join(parts))
    for item in target.defaults:
        if item.kind != "fixed" or not item.documented:
            continue
        value = number(item.documented) + ("" if item.setting == "count" else " s")
        where = (
            item.location
            if number(item.documented) in item.location
            else f"{value}, {item.location}"
        )
        groups.append(f"{SETTING_LABELS[item.setting]}: {where}")
    return "; ".join(groups) if groups else "not documented"


# --- rendering -----------------------------------------------------------------------------------


def render(report: DoctorReport, writer: Writer) -> None:
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
    render_support(writer, report.platform)
    for note in report.platform.notes:
        writer.wrap(note, indent=4, first="  - ", style="dim")

    writer.heading("System-wide defaults and where they come from")
    writer.table(system_default_rows(report.defaults, report.platform))
    bound = report.defaults.detection_bound
    if bound is not None:
        writer.wrap(
            "Once keepalive is on, these defaults notice a dead idle peer after "
            f"{seconds_long(bound)}."
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
            f"Values it reads back: idle {seconds(fresh.idle)}, interval "
            f"{seconds(fresh.interval)}, count {count}, user timeout "
            f"{seconds(fresh.user_timeout) if fresh.user_timeout else 'none'}.",
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
            f"The first keepalive probe comes after {seconds_long(idle)}, before every "
            "common middlebox forgets an idle flow.",
            style="green",
        )
        return
    writer.wrap(
        f"The first keepalive probe comes after {seconds_long(idle)}. These forget an idle "
        "flow sooner (their defaults; sources in docs/cli.md):",
    )
    rows: list[list[Cell]] = []
    for warning in report.warnings:
        box = warning.middlebox
        name = box.name
        if warning.remedy == "heartbeat":
            name += " (a proxy: probes end there, only a heartbeat helps)"
        rows.append([seconds(box.idle_timeout_seconds), (name, "yellow")])
    writer.table(rows, indent=4, right=frozenset({0}))
    suggestion = report.suggestion
    if suggestion is not None:
        writer.line("  Suggested: " + writer.paint(suggestion.code, "bold"))
        bound = report.suggestion_bound
        tail = f", a dead idle peer noticed within {seconds(bound)} here" if bound else ""
        writer.wrap(
            f"The first probe goes after {seconds(suggestion.idle)}{tail}; user_timeout bounds "
            "unacknowledged data alike.",
            indent=4,
        )
    proxies = [w for w in report.warnings if w.remedy == "heartbeat"]
    if proxies:
        shortest = min(w.middlebox.idle_timeout_seconds for w in proxies)
        writer.wrap(
            f"Behind an L7 proxy, send heartbeat bytes more often than every "
            f"{seconds(shortest)} (keepalive.sync.monitor or keepalive.aio).",
            indent=4,
        )
