"""What each OS family supports, as data: constants, units, ranges, defaults.

`current()` describes the running OS and Python. `detect()` builds the description for any
platform from a namespace of socket constants, so other OSes' code paths can be tested here
with a fake namespace. Nothing outside this package branches on ``sys.platform``.
"""

from __future__ import annotations

import os
import socket
import sys

from keepalive.platforms._base import (
    SETTINGS,
    DefaultSource,
    IoctlCall,
    Operation,
    OptionSpec,
    Plan,
    Platform,
    SetOption,
    Setting,
    SettingOutcome,
    SettingStatus,
)

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SETTINGS",
    "DefaultSource",
    "IoctlCall",
    "Operation",
    "OptionSpec",
    "Plan",
    "Platform",
    "SetOption",
    "Setting",
    "SettingOutcome",
    "SettingStatus",
    "current",
    "detect",
]


def detect(sys_platform: str, ns: Any = None, release: str | None = None) -> Platform:
    """The platform description for ``sys_platform`` (a ``sys.platform`` value).

    ``ns`` is the namespace of socket constants the running Python exposes (the ``socket``
    module by default): on Windows and macOS the usable options depend on it. ``release`` is
    the OS release (``os.uname().release`` / ``.version``), used where units or numbering
    changed between releases (DragonFly 5.8, Solaris 11.4 versus illumos).
    """
    ns = socket if ns is None else ns
    if sys_platform.startswith(("linux", "android")):
        from keepalive.platforms import linux  # noqa: PLC0415

        return linux.detect(ns, release)
    if sys_platform.startswith(("darwin", "ios")):
        from keepalive.platforms import darwin  # noqa: PLC0415

        return darwin.detect(ns, release)
    if sys_platform.startswith(("win32", "cygwin")):
        from keepalive.platforms import windows  # noqa: PLC0415

        return windows.detect(ns, release)
    if sys_platform.startswith(("freebsd", "dragonfly", "netbsd", "openbsd")):
        from keepalive.platforms import bsd  # noqa: PLC0415

        return bsd.detect(sys_platform, ns, release)
    if sys_platform.startswith("sunos"):
        from keepalive.platforms import solaris  # noqa: PLC0415

        return solaris.detect(ns, release)
    from keepalive.platforms import generic  # noqa: PLC0415

    return generic.detect(sys_platform, ns, release)


def _running_release() -> str | None:
    try:
        uname = os.uname()
    except AttributeError:  # Windows
        return None
    return f"{uname.release} {uname.version}"


def current() -> Platform:
    """The running OS and Python, computed once."""
    global _current  # written once (two threads racing both compute the same description)
    if _current is None:
        _current = detect(sys.platform, socket, _running_release())
    return _current


# functools.cache would do, but functools is not loaded yet on every Python (3.10, 3.13).
_current: Platform | None = None
