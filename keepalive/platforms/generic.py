"""Any other POSIX-like system (AIX, Haiku, ...): use whichever TCP_KEEP* constants the
running Python exposes, in seconds, with no range known beyond "positive"; only SO_KEEPALIVE
when there are none. Values are still read back after setting, so a wrong guess shows.
"""

from __future__ import annotations

import socket

from keepalive.platforms._base import OptionSpec, Platform, Setting

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Any

_CANDIDATES: tuple[tuple[Setting, str], ...] = (
    ("idle", "TCP_KEEPIDLE"),
    ("interval", "TCP_KEEPINTVL"),
    ("count", "TCP_KEEPCNT"),
)
_INT_MAX = 2**31 - 1


def detect(sys_platform: str, ns: Any = None, release: str | None = None) -> Platform:
    del release
    ns = socket if ns is None else ns
    ipproto_tcp = getattr(ns, "IPPROTO_TCP", 6)
    options: dict[Setting, OptionSpec] = {}
    for setting, name in _CANDIDATES:
        number = getattr(ns, name, None)
        if isinstance(number, int):
            options[setting] = OptionSpec(
                setting,
                name,
                ipproto_tcp,
                number,
                1,
                _INT_MAX,
                is_count=setting == "count",
                source="the running Python's socket module",
            )
    unsupported: dict[Setting, str] = {
        setting: f"{sys_platform}: the socket module has no {name}"
        for setting, name in _CANDIDATES
        if setting not in options
    }
    unsupported["user_timeout"] = f"{sys_platform}: no known unacknowledged-data timeout option"
    return Platform(
        name=f"{sys_platform} (generic)",
        family="generic",
        sol_socket=getattr(ns, "SOL_SOCKET", 0xFFFF),
        so_keepalive=getattr(ns, "SO_KEEPALIVE", 0x8),
        ipproto_tcp=ipproto_tcp,
        options=options,
        unsupported=unsupported,
    )
