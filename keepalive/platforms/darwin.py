"""macOS and iOS (xnu): TCP_KEEPALIVE is the idle time, TCP_KEEPINTVL and TCP_KEEPCNT exist
since OS X 10.9, TCP_RXT_CONNDROPTIME bounds unacknowledged data. All in whole seconds, all
read back with getsockopt.

Python exports ``TCP_KEEPALIVE`` only from 3.10 and never ``TCP_KEEPIDLE`` on Darwin, so the
numbers are hard-coded from xnu's headers when the socket module lacks them.
"""

from __future__ import annotations

import re
import socket

from keepalive.platforms._base import (
    DefaultSource,
    OptionSpec,
    Platform,
    Setting,
    socket_level,
    socket_number,
)

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Any

# xnu bsd/sys/socket.h
SOL_SOCKET = 0xFFFF
SO_KEEPALIVE = 0x8
# xnu bsd/netinet/in.h
IPPROTO_TCP = 6
# xnu bsd/netinet/tcp.h
TCP_KEEPALIVE = 0x10  # "idle time used when SO_KEEPALIVE is enabled"; xnu-517 (10.3) on
TCP_RXT_CONNDROPTIME = 0x80  # "time after which tcp retransmissions will be stopped"; xnu-1699
TCP_KEEPINTVL = 0x101  # xnu-2422: OS X 10.9 (Darwin 13) and later
TCP_KEEPCNT = 0x102  # xnu-2422: OS X 10.9 (Darwin 13) and later

# xnu bsd/netinet/tcp_usrreq.c tcp_ctloutput(): TCP_KEEPALIVE and TCP_KEEPINTVL refuse
# optval < 0 || optval > UINT32_MAX / TCP_RETRANSHZ (TCP_RETRANSHZ = 1000 ticks a second);
# TCP_KEEPCNT refuses optval < 0 || optval > INT32_MAX. 0 means "use the sysctl default", so
# a per-socket value starts at 1.
MAX_KEEP_SECONDS = 0xFFFFFFFF // 1000
MAX_KEEPCNT = 2**31 - 1
# TCP_RXT_CONNDROPTIME only refuses optval < 0, then stores optval * TCP_RETRANSHZ computed in
# an int: beyond INT32_MAX / 1000 the product overflows, so that is our limit.
MAX_CONNDROPTIME_SECONDS = (2**31 - 1) // 1000

# The first xnu releases with each option, from bsd/netinet/tcp.h and the cases of
# tcp_ctloutput() in bsd/netinet/tcp_usrreq.c:
# - TCP_KEEPALIVE: xnu-517, Mac OS X 10.3 (Darwin 7).
# - TCP_RXT_CONNDROPTIME: xnu-1699, Mac OS X 10.7 (Darwin 11).
# - TCP_KEEPINTVL, TCP_KEEPCNT: xnu-2422, OS X 10.9 (Darwin 13). xnu-2050 (10.8, Darwin 12)
#   has neither the names in tcp.h nor a case for them in tcp_ctloutput(), which refuses
#   unknown options with ENOPROTOOPT.
FIRST_DARWIN_WITH_KEEPALIVE = 7
FIRST_DARWIN_WITH_CONNDROPTIME = 11
FIRST_DARWIN_WITH_KEEPINTVL = 13

_SOCKET_HEADER = "xnu bsd/netinet/tcp.h"
# Each setting's option: the first Darwin that has it, and the release that introduced it.
_FIRST_RELEASES: tuple[tuple[Setting, int, str], ...] = (
    ("idle", FIRST_DARWIN_WITH_KEEPALIVE, "xnu-517 (Mac OS X 10.3)"),
    ("interval", FIRST_DARWIN_WITH_KEEPINTVL, "xnu-2422 (OS X 10.9, Darwin 13)"),
    ("count", FIRST_DARWIN_WITH_KEEPINTVL, "xnu-2422 (OS X 10.9, Darwin 13)"),
    ("user_timeout", FIRST_DARWIN_WITH_CONNDROPTIME, "xnu-1699 (Mac OS X 10.7)"),
)


def _darwin_major(release: str | None) -> int | None:
    """The Darwin kernel major version (``os.uname().release``, e.g. ``"23.4.0 ..."``)."""
    match = re.match(r"\s*(\d+)\.", release or "")
    return int(match.group(1)) if match else None


def _macos_name(major: int) -> str:
    """``"OS X 10.8"`` for Darwin 12: Darwin 5..19 are 10.1..10.15, Darwin 20 is macOS 11."""
    if major >= 20:
        return f"macOS {major - 9}"
    return f"Mac OS X 10.{major - 4}" if major < 12 else f"OS X 10.{major - 4}"


def _too_old(major: int | None, first: int) -> bool:
    """True when the release is known and older than ``first`` (unknown counts as new)."""
    return major is not None and major < first


def detect(ns: Any = None, release: str | None = None) -> Platform:
    """The Darwin description for this Python (``ns``) and kernel (``release``).

    The numbers come from ``ns`` when the socket module has them, else from xnu's headers.
    Which options exist is the kernel's business: a ``release`` older than the first xnu with
    an option leaves that setting unsupported even when Python (built with a newer SDK) has
    the name, since the kernel refuses it with ENOPROTOOPT. An unknown release counts as new
    enough: Python 3.10 needs macOS 10.9.
    """
    ns = socket if ns is None else ns
    major = _darwin_major(release)
    too_old = f"Darwin {major} ({_macos_name(major)})" if major is not None else ""
    since_10_9 = "OS X 10.9 (xnu-2422, Darwin 13); Python exports it when built with the 10.9+ SDK"
    specs: dict[Setting, OptionSpec] = {
        "idle": OptionSpec(
            "idle",
            "TCP_KEEPALIVE",
            IPPROTO_TCP,
            socket_number(ns, "TCP_KEEPALIVE", TCP_KEEPALIVE),
            1,
            MAX_KEEP_SECONDS,
            since="Mac OS X 10.3 (xnu-517); Python 3.10 exports the name (0x10 is used before)",
            source=_SOCKET_HEADER,
        ),
        "interval": OptionSpec(
            "interval",
            "TCP_KEEPINTVL",
            IPPROTO_TCP,
            socket_number(ns, "TCP_KEEPINTVL", TCP_KEEPINTVL),
            1,
            MAX_KEEP_SECONDS,
            since=since_10_9,
            source=_SOCKET_HEADER,
        ),
        "count": OptionSpec(
            "count",
            "TCP_KEEPCNT",
            IPPROTO_TCP,
            socket_number(ns, "TCP_KEEPCNT", TCP_KEEPCNT),
            1,
            MAX_KEEPCNT,
            is_count=True,
            since=since_10_9,
            source=_SOCKET_HEADER,
        ),
        "user_timeout": OptionSpec(
            "user_timeout",
            "TCP_RXT_CONNDROPTIME",
            IPPROTO_TCP,
            TCP_RXT_CONNDROPTIME,
            1,
            MAX_CONNDROPTIME_SECONDS,
            since="Mac OS X 10.7 (xnu-1699); not exported by Python",
            source=_SOCKET_HEADER,
        ),
    }
    options: dict[Setting, OptionSpec] = {}
    unsupported: dict[Setting, str] = {}
    for setting, first_darwin, first_release in _FIRST_RELEASES:
        if _too_old(major, first_darwin):
            name = specs[setting].name
            unsupported[setting] = f"{too_old} has no {name}: it first appears in {first_release}"
        else:
            options[setting] = specs[setting]
    sol_socket, so_keepalive, ipproto_tcp = socket_level(ns, SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP)
    return Platform(
        name="macOS/iOS",
        family="darwin",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
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
        # xnu bsd/netinet/tcp_usrreq.c tcp_ctloutput(): TCP_KEEPALIVE/KEEPINTVL/KEEPCNT and
        # TCP_RXT_CONNDROPTIME store their value (TCP_KEEPALIVE also re-arms TCPT_KEEP, which
        # runs whether or not SO_KEEPALIVE is on); tcp_timer.c sends probes only while
        # SO_KEEPALIVE (or always_keepalive) is set, so setting it last loses nothing.
        tcp_options_first=True,
    )
