"""System-wide keepalive defaults: what a socket gets when it sets nothing itself.

Reads them where the OS keeps them (Linux procfs, BSD/macOS sysctl, the Windows registry);
where a value cannot be read, the platform's documented default is reported and the source
says so. Note that keepalive itself is *off* on a fresh TCP socket on every OS: these values
only apply once SO_KEEPALIVE is on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from keepalive.errors import InvalidSettingType
from keepalive.platforms import DefaultSource, Platform, current

__all__ = ["SystemDefaults", "system_defaults"]


@dataclass(frozen=True, slots=True)
class SystemDefaults:
    """OS-wide defaults in seconds (``count`` in probes); ``source`` names where each came
    from, e.g. ``"/proc/sys/net/ipv4/tcp_keepalive_time"`` or ``"documented default"``."""

    platform: str
    idle: float | None
    interval: float | None
    count: int | None
    user_timeout: float | None
    source: dict[str, str]

    @property
    def detection_bound(self) -> float | None:
        if self.idle is None or self.interval is None or self.count is None:
            return None
        return self.idle + self.interval * self.count


def system_defaults(*, platform: Platform | None = None) -> SystemDefaults:
    """The running system's keepalive defaults (``platform`` only picks which sources to read)."""
    if platform is not None and not isinstance(platform, Platform):
        raise InvalidSettingType("platform", platform, "a keepalive.Platform or None")
    target = current() if platform is None else platform
    values: dict[str, float | None] = {}
    source: dict[str, str] = {}
    for item in target.defaults:
        values[item.setting], source[item.setting] = _read(item)
    count = values.get("count")
    return SystemDefaults(
        platform=target.name,
        idle=values.get("idle"),
        interval=values.get("interval"),
        count=None if count is None else int(count),
        user_timeout=values.get("user_timeout"),
        source=source,
    )


def _read(item: DefaultSource) -> tuple[float | None, str]:
    if item.setting == "user_timeout" and item.documented is None:
        # No OS keeps a user timeout as one number; report what governs unacknowledged data.
        return None, f"none (retransmission limit, see {item.location})"
    if item.kind == "fixed":
        return _documented(item, "not read: the OS keeps it where this library does not look")
    try:
        raw = _read_raw(item)
    except (OSError, ValueError) as exc:  # subprocess errors are OSError or ValueError here
        return _documented(item, f"could not read {item.location}: {exc}")
    if raw is None:
        return _documented(item, f"{item.location} not set")
    return raw / item.scale, item.location


def _documented(item: DefaultSource, why: str) -> tuple[float | None, str]:
    value = None if item.documented is None else float(item.documented)
    return value, f"documented default ({why})"


def _read_raw(item: DefaultSource) -> float | None:
    if item.kind == "procfs":
        with open(item.location, encoding="ascii") as handle:
            return float(handle.read().split()[0])
    if item.kind == "sysctl":
        return _read_sysctl(item.location)
    return _read_registry(item.location)


def _read_sysctl(name: str) -> float:
    import shutil  # noqa: PLC0415 - only BSD and macOS need these; keep `import keepalive` fast
    import subprocess  # noqa: PLC0415

    tool = shutil.which("sysctl") or "/sbin/sysctl"
    try:
        done = subprocess.run(
            [tool, "-n", name], capture_output=True, text=True, timeout=5, check=True
        )
    except subprocess.SubprocessError as exc:  # non-zero exit, timeout
        raise OSError(f"sysctl -n {name} failed: {exc}") from exc
    return float(done.stdout.split()[0])


def _read_registry(location: str) -> float | None:
    """``HKLM\\path\\to\\Key\\ValueName`` -> the DWORD, or None when the value is absent
    (Windows then uses its built-in default)."""
    if sys.platform != "win32":  # narrows the type checker's view of winreg too
        raise OSError(f"the Windows registry does not exist on {sys.platform}")
    import winreg  # noqa: PLC0415 - Windows only

    path, _, name = location.removeprefix("HKLM\\").rpartition("\\")
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path) as key:
            value, _kind = winreg.QueryValueEx(key, name)
    except FileNotFoundError:
        return None
    return float(value)
