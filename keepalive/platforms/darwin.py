"""macOS and iOS (xnu): TCP_KEEPALIVE is the idle time, TCP_KEEPINTVL and TCP_KEEPCNT exist
since OS X 10.8, TCP_RXT_CONNDROPTIME bounds unacknowledged data. All in whole seconds, all
read back with getsockopt.

Python exports ``TCP_KEEPALIVE`` only from 3.10 and never ``TCP_KEEPIDLE`` on Darwin, so the
numbers are hard-coded from xnu's headers when the socket module lacks them.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from keepalive.platforms._base import DefaultSource, OptionSpec, Platform, Setting

# xnu bsd/sys/socket.h
SOL_SOCKET = 0xFFFF
SO_KEEPALIVE = 0x8
# xnu bsd/netinet/in.h
IPPROTO_TCP = 6
# xnu bsd/netinet/tcp.h
TCP_KEEPALIVE = 0x10  # "idle time used when SO_KEEPALIVE is enabled"
TCP_RXT_CONNDROPTIME = 0x80  # "time after which tcp retransmissions will be stopped"
TCP_KEEPINTVL = 0x101  # OS X 10.8 (Darwin 12) and later
TCP_KEEPCNT = 0x102  # OS X 10.8 (Darwin 12) and later

# xnu bsd/netinet/tcp_usrreq.c tcp_ctloutput(): TCP_KEEPALIVE and TCP_KEEPINTVL refuse
# optval < 0 || optval > UINT32_MAX / TCP_RETRANSHZ (TCP_RETRANSHZ = 1000 ticks a second);
# TCP_KEEPCNT refuses optval < 0 || optval > INT32_MAX. 0 means "use the sysctl default", so
# a per-socket value starts at 1.
MAX_KEEP_SECONDS = 0xFFFFFFFF // 1000
MAX_KEEPCNT = 2**31 - 1
# TCP_RXT_CONNDROPTIME only refuses optval < 0, then stores optval * TCP_RETRANSHZ computed in
# an int: beyond INT32_MAX / 1000 the product overflows, so that is our limit.
MAX_CONNDROPTIME_SECONDS = (2**31 - 1) // 1000

# Darwin 12 is OS X 10.8, the first release with TCP_KEEPINTVL and TCP_KEEPCNT (libuv #3908).
FIRST_DARWIN_WITH_KEEPINTVL = 12

_SOCKET_HEADER = "xnu bsd/netinet/tcp.h"


def _darwin_major(release: str | None) -> int | None:
    """The Darwin kernel major version (``os.uname().release``, e.g. ``"23.4.0 ..."``)."""
    match = re.match(r"\s*(\d+)\.", release or "")
    return int(match.group(1)) if match else None


def _number(ns: Any, name: str, fallback: int) -> int:
    value = getattr(ns, name, None)
    return value if isinstance(value, int) else fallback


def detect(ns: Any = None, release: str | None = None) -> Platform:
    """The Darwin description for this Python (``ns``) and kernel (``release``).

    TCP_KEEPINTVL/TCP_KEEPCNT come from ``ns`` when the socket module has them; otherwise they
    are hard-coded unless ``release`` shows a kernel older than Darwin 12 (OS X 10.7), which
    lacks them. An unknown release counts as new enough: Python 3.10 needs macOS 10.9.
    """
    ns = socket if ns is None else ns
    major = _darwin_major(release)
    options: dict[Setting, OptionSpec] = {
        "idle": OptionSpec(
            "idle",
            "TCP_KEEPALIVE",
            IPPROTO_TCP,
            _number(ns, "TCP_KEEPALIVE", TCP_KEEPALIVE),
            1,
            MAX_KEEP_SECONDS,
            since="Mac OS X 10.0; Python 3.10 exports the name (0x10 is used before)",
            source=_SOCKET_HEADER,
        ),
        "user_timeout": OptionSpec(
            "user_timeout",
            "TCP_RXT_CONNDROPTIME",
            IPPROTO_TCP,
            TCP_RXT_CONNDROPTIME,
            1,
            MAX_CONNDROPTIME_SECONDS,
            since="Mac OS X 10.6 or earlier (unverified); not exported by Python",
            source=_SOCKET_HEADER,
        ),
    }
    unsupported: dict[Setting, str] = {}
    has_intvl = isinstance(getattr(ns, "TCP_KEEPINTVL", None), int)
    if has_intvl or major is None or major >= FIRST_DARWIN_WITH_KEEPINTVL:
        options["interval"] = OptionSpec(
            "interval",
            "TCP_KEEPINTVL",
            IPPROTO_TCP,
            _number(ns, "TCP_KEEPINTVL", TCP_KEEPINTVL),
            1,
            MAX_KEEP_SECONDS,
            since="OS X 10.8 (Darwin 12); Python exports it when built with the 10.8+ SDK",
            source=_SOCKET_HEADER,
        )
    else:
        unsupported["interval"] = f"Darwin {major} (before OS X 10.8) has no TCP_KEEPINTVL"
    if isinstance(getattr(ns, "TCP_KEEPCNT", None), int) or "interval" in options:
        options["count"] = OptionSpec(
            "count",
            "TCP_KEEPCNT",
            IPPROTO_TCP,
            _number(ns, "TCP_KEEPCNT", TCP_KEEPCNT),
            1,
            MAX_KEEPCNT,
            is_count=True,
            since="OS X 10.8 (Darwin 12); Python exports it when built with the 10.8+ SDK",
            source=_SOCKET_HEADER,
        )
    else:
        unsupported["count"] = f"Darwin {major} (before OS X 10.8) has no TCP_KEEPCNT"
    return Platform(
        name="macOS/iOS",
        family="darwin",
        sol_socket=_number(ns, "SOL_SOCKET", SOL_SOCKET),
        so_keepalive=_number(ns, "SO_KEEPALIVE", SO_KEEPALIVE),
        ipproto_tcp=_number(ns, "IPPROTO_TCP", IPPROTO_TCP),
        options=options,
        unsupported=unsupported,
        # xnu bsd/netinet/tcp_timer.c: keepidle/keepintvl go through sysctl_msec_to_ticks
        # (milliseconds); tcp_timer.h: TCPTV_KEEP_IDLE 2 h, TCPTV_KEEPINTVL 75 s, TCPTV_KEEPCNT 8.
        defaults=(
            DefaultSource("idle", "sysctl", "net.inet.tcp.keepidle", 7200, scale=1000),
            DefaultSource("interval", "sysctl", "net.inet.tcp.keepintvl", 75, scale=1000),
            DefaultSource("count", "sysctl", "net.inet.tcp.keepcnt", 8),
            # No system-wide drop time: unacknowledged data is retransmitted
            # TCP_MAXRXTSHIFT = 12 times (xnu bsd/netinet/tcp_timer.h).
            DefaultSource("user_timeout", "fixed", "TCP_MAXRXTSHIFT = 12 retransmissions", None),
        ),
        notes=(
            "TCP_KEEPALIVE is the idle time (Linux's TCP_KEEPIDLE); Python before 3.10 lacks "
            "the name, so its number (0x10) is used directly.",
            "A value of 0 for any of these options means 'use the sysctl default'.",
            "net.inet.tcp.always_keepalive (default 0) turns keepalive on for every socket.",
        ),
    )
