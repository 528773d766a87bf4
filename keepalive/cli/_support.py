"""This host's per-socket keepalive support and system-wide defaults, as tables and JSON:
shared by ``info`` and ``doctor``."""

from __future__ import annotations

from dataclasses import dataclass

from keepalive.cli._output import SETTING_LABELS, Cell, Writer, number, seconds_long
from keepalive.platforms import SETTINGS, OptionSpec, Platform, Setting
from keepalive.system import SystemDefaults


@dataclass(frozen=True)
class SettingSupport:
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


def setting_support(target: Platform) -> list[SettingSupport]:
    rows: list[SettingSupport] = []
    for setting in SETTINGS:
        spec = target.options.get(setting)
        reason = None if spec else target.unsupported.get(setting, "no per-socket option")
        rows.append(SettingSupport(setting, spec, reason, target.fixed.get(setting)))
    return rows


def _compact_range(spec: OptionSpec) -> str:
    low, high = spec.decode(spec.minimum), spec.decode(spec.maximum)
    unit = "" if spec.is_count else " s"
    return f"{number(low)}..{number(high)}{unit}"


def render_support(writer: Writer, target: Platform) -> None:
    rows: list[list[Cell]] = [["setting", "option", "unit", "range"]]
    footnotes: list[str] = []
    for row in setting_support(target):
        label = SETTING_LABELS[row.setting]
        if row.spec is not None:
            rows.append([label, row.spec.name, row.spec.unit, _compact_range(row.spec)])
            if row.spec.scale == 1 and not row.spec.is_count:
                footnotes.append(label)
        else:
            fixed = f" (fixed at {number(row.fixed)})" if row.fixed is not None else ""
            rows.append([label, ("not per socket", "yellow"), "-", f"{row.reason}{fixed}"])
    writer.table(rows, header=True)
    if footnotes:
        writer.wrap(
            f"Whole seconds for {', '.join(footnotes)}: fractions are rounded up, never down to 0.",
            style="dim",
        )


def system_default_rows(defaults: SystemDefaults, target: Platform) -> list[list[Cell]]:
    """One row per setting: its system-wide default here and where it comes from."""
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
            shown = seconds_long(value)
        usual = documented.get(setting)
        if value is not None and usual is not None and float(usual) != float(value):
            unit = "" if setting == "count" else " s"
            source += f" (changed here; the usual default is {number(usual)}{unit})"
        rows.append([SETTING_LABELS[setting], shown, source])
    return rows
