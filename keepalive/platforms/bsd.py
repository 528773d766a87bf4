"""FreeBSD, DragonFly BSD, NetBSD and OpenBSD: same option names, different numbers and units.

- FreeBSD: TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT in seconds (9.1+, read back since 10.0);
  TCP_MAXUNACKTIME (14+) bounds unacknowledged data.
- DragonFly: FreeBSD's numbers, but milliseconds before 5.8 and seconds from 5.8.
- NetBSD: its own numbers; the kernel stores idle and interval as slow-timer ticks
  (PR_SLOWHZ = 2 a second), so the values are half-seconds; getsockopt does not return them.
- OpenBSD: no per-socket keepalive options at all, only system-wide sysctls.
"""

from __future__ import annotations

import re
import socket

from keepalive.platforms._base import (
    DefaultSource,
    OptionSpec,
    Platform,
    Setting,
    keep_options,
    socket_level,
    socket_number,
)

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Any

# sys/sys/socket.h (all four)
SOL_SOCKET = 0xFFFF
SO_KEEPALIVE = 0x0008
# sys/netinet/in.h (all four)
IPPROTO_TCP = 6
# FreeBSD and DragonFly sys/netinet/tcp.h
FREEBSD_TCP_KEEPIDLE = 256
FREEBSD_TCP_KEEPINTVL = 512
FREEBSD_TCP_KEEPCNT = 1024
FREEBSD_TCP_MAXUNACKTIME = 68  # "maximum time without making progress (sec)", FreeBSD 14
# NetBSD sys/netinet/tcp.h
NETBSD_TCP_KEEPIDLE = 3
NETBSD_TCP_KEEPINTVL = 5
NETBSD_TCP_KEEPCNT = 6

INT_MAX = 2**31 - 1
# FreeBSD sys/netinet/tcp_usrreq.c tcp_default_ctloutput(): TCP_KEEPIDLE/TCP_KEEPINTVL take a
# u_int of seconds and refuse ui > UINT_MAX / hz (kern.hz, 1000 by default); TCP_KEEPCNT takes
# any u_int (0 means the sysctl default). Python passes a C int, hence INT_MAX for the count.
FREEBSD_HZ = 1000
FREEBSD_MAX_SECONDS = 0xFFFFFFFF // FREEBSD_HZ
FIRST_FREEBSD_WITH_MAXUNACKTIME = 14
# DragonFly sys/netinet/tcp_usrreq.c tcp_ctloutput() before 5.8: the int value is milliseconds,
# converted to ticks as optval * hz / 1000, and must come to at least one tick (hz = 100 by
# default, so 10 ms); TCP_KEEPCNT must be > 0.
DRAGONFLY_HZ = 100
DRAGONFLY_MIN_MS = 1000 // DRAGONFLY_HZ
# __DragonFly_version 500702 (the 5.7 development branch, released as 5.8) made the options
# seconds (DragonFly commit "Change tcp keepalive options from ms to seconds", July 2019).
FIRST_DRAGONFLY_IN_SECONDS = (5, 8)
# 5.8+ multiplies seconds by hz into an int of ticks; we keep to what fits for any hz <= 1000.
DRAGONFLY_MAX_SECONDS = INT_MAX // 1000
# NetBSD sys/netinet/tcp_usrreq.c tcp_ctloutput(): the u_int must be > 0 and is stored
# unconverted in t_keepidle/t_keepintvl, which count PR_SLOWHZ (2 per second) ticks
# (sys/netinet/tcp_timer.h TCP_TIMER_ARM; sysctl(7) "tcp.slowhz"). Newer kernels also cap
# the ticks at TCP_TIMER_MAXTICKS = INT_MAX / (hz / PR_SLOWHZ); we keep under it for hz = 100.
NETBSD_SLOWHZ = 2
NETBSD_MAX_TICKS = INT_MAX // (100 // NETBSD_SLOWHZ)


def _release_version(release: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` from ``os.uname().release`` (``"14.1-RELEASE ..."``, ``"7.5 ..."``)."""
    match = re.match(r"\s*(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _socket_level(ns: Any) -> tuple[int, int, int]:
    return socket_level(ns, SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP)


def _bsd_keepalive_defaults(
    idle_scale: int, interval_scale: int, with_count: bool = True
) -> tuple[DefaultSource, ...]:
    defaults = [
        DefaultSource("idle", "sysctl", "net.inet.tcp.keepidle", 7200, scale=idle_scale),
        DefaultSource("interval", "sysctl", "net.inet.tcp.keepintvl", 75, scale=interval_scale),
    ]
    if with_count:
        defaults.append(DefaultSource("count", "sysctl", "net.inet.tcp.keepcnt", 8))
    return tuple(defaults)


def detect(sys_platform: str, ns: Any = None, release: str | None = None) -> Platform:
    """The description of the BSD named by ``sys_platform`` (``freebsd14``, ``netbsd10``...)."""
    ns = socket if ns is None else ns
    if sys_platform.startswith("freebsd"):
        return _freebsd(ns, release)
    if sys_platform.startswith("dragonfly"):
        return _dragonfly(ns, release)
    if sys_platform.startswith("netbsd"):
        return _netbsd(ns)
    if sys_platform.startswith("openbsd"):
        return _openbsd(ns, release)
    raise ValueError(f"not a BSD this module knows: {sys_platform!r}")


def _keep_options(
    ns: Any,
    ipproto_tcp: int,
    header_values: tuple[int, int, int],
    *,
    scale: int,
    minimum: int,
    maximum: int,
    readable: bool,
    since: str,
) -> dict[Setting, OptionSpec]:
    """The three options of a BSD: idle and interval share one range, the count takes any
    positive C int (see the limits above)."""
    return keep_options(
        ns,
        ipproto_tcp,
        header_values,
        idle_range=(minimum, maximum),
        interval_range=(minimum, maximum),
        count_maximum=INT_MAX,
        scale=scale,
        readable=readable,
        since=since,
        source="sys/netinet/tcp.h",
    )


def _freebsd(ns: Any, release: str | None) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = _socket_level(ns)
    version = _release_version(release)
    options = _keep_options(
        ns,
        ipproto_tcp,
        (FREEBSD_TCP_KEEPIDLE, FREEBSD_TCP_KEEPINTVL, FREEBSD_TCP_KEEPCNT),
        scale=1,
        minimum=1,
        maximum=FREEBSD_MAX_SECONDS,
        readable=True,
        since="FreeBSD 9.1 (read back since 10.0); Python: any",
    )
    unsupported: dict[Setting, str] = {}
    if version is not None and version[0] >= FIRST_FREEBSD_WITH_MAXUNACKTIME:
        options["user_timeout"] = OptionSpec(
            "user_timeout",
            "TCP_MAXUNACKTIME",
            ipproto_tcp,
            socket_number(ns, "TCP_MAXUNACKTIME", FREEBSD_TCP_MAXUNACKTIME),
            1,
            FREEBSD_MAX_SECONDS,
            # Enforced by the default stack (tcp_timer.c tcp_maxunacktime_check()); whether
            # getsockopt returns it there is unverified, so inspect() does not ask.
            readable=False,
            since="FreeBSD 14.0; not exported by Python (68 is used)",
            source="sys/netinet/tcp.h",
        )
    else:
        known = "before 14" if version is not None else "of unknown release"
        unsupported["user_timeout"] = (
            f"FreeBSD {known}: TCP_MAXUNACKTIME (the unacknowledged-data timeout) needs FreeBSD 14"
        )
    return Platform(
        name="FreeBSD",
        family="freebsd",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=options,
        unsupported=unsupported,
        # sys/netinet/tcp_timer.c: keepidle/keepintvl use sysctl_msec_to_ticks (milliseconds);
        # tcp_timer.h: TCPTV_KEEP_IDLE 2 h, TCPTV_KEEPINTVL 75 s, TCPTV_KEEPCNT 8.
        defaults=(
            *_bsd_keepalive_defaults(1000, 1000),
            # tcp_timer.c: net.inet.tcp.maxunacktime, milliseconds, 0 (off) by default.
            DefaultSource("user_timeout", "sysctl", "net.inet.tcp.maxunacktime", None, 1000),
        ),
        notes=(
            f"The range assumes kern.hz = {FREEBSD_HZ} (the default): the kernel refuses "
            "seconds above UINT_MAX / hz.",
            "net.inet.tcp.always_keepalive defaults to 1: FreeBSD probes idle connections "
            "even without SO_KEEPALIVE, using the system-wide values.",
            "TCP_MAXUNACKTIME is only used from FreeBSD 14 (decided from os.uname().release); "
            "its value is not read back by inspect().",
        ),
        # sys/netinet/tcp_usrreq.c tcp_default_ctloutput(): TCP_KEEPIDLE stores t_keepidle and
        # re-arms TT_KEEP, which runs on every connection; tcp_timer.c tcp_timer_keep() probes
        # only while SO_KEEPALIVE (or always_keepalive) is set: the order does not matter.
        tcp_options_first=True,
    )


def _dragonfly(ns: Any, release: str | None) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = _socket_level(ns)
    version = _release_version(release)
    # An unknown release counts as 5.8 or later: 5.8 shipped in 2020 and every supported
    # DragonFly release since uses seconds.
    in_seconds = version is None or version >= FIRST_DRAGONFLY_IN_SECONDS
    if in_seconds:
        name, scale, minimum, maximum = "DragonFly BSD", 1, 1, DRAGONFLY_MAX_SECONDS
        since = "DragonFly 5.8 in seconds (milliseconds before); Python: any"
    else:
        name, scale, minimum, maximum = (
            "DragonFly BSD (before 5.8)",
            1000,
            DRAGONFLY_MIN_MS,
            INT_MAX,
        )
        since = "DragonFly before 5.8: milliseconds; Python: any"
    options = _keep_options(
        ns,
        ipproto_tcp,
        (FREEBSD_TCP_KEEPIDLE, FREEBSD_TCP_KEEPINTVL, FREEBSD_TCP_KEEPCNT),
        scale=scale,
        minimum=minimum,
        maximum=maximum,
        readable=True,
        since=since,
    )
    return Platform(
        name=name,
        family="dragonfly",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=options,
        unsupported={"user_timeout": "DragonFly has no per-socket unacknowledged-data timeout"},
        # sys/netinet/tcp_timer.c: sysctl_msec_to_ticks (milliseconds), always_keepalive = 1.
        defaults=_bsd_keepalive_defaults(1000, 1000),
        notes=(
            "Units changed in 5.8 (milliseconds before, seconds since): decided from "
            "os.uname().release; an unknown release counts as 5.8 or later.",
            f"Before 5.8 the minimum is one clock tick ({DRAGONFLY_MIN_MS} ms at the default "
            f"kern.hz = {DRAGONFLY_HZ}).",
            "net.inet.tcp.always_keepalive defaults to 1: idle connections are probed even "
            "without SO_KEEPALIVE, using the system-wide values.",
        ),
        # sys/netinet/tcp_usrreq.c tcp_ctloutput(): TCP_KEEPIDLE stores t_keepidle and calls
        # tcp_timer_keep_activity(); tcp_timer.c tcp_timer_keep_handler() checks SO_KEEPALIVE
        # only when the timer fires: the order does not matter.
        tcp_options_first=True,
    )


def _netbsd(ns: Any) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = _socket_level(ns)
    return Platform(
        name="NetBSD",
        family="netbsd",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=_keep_options(
            ns,
            ipproto_tcp,
            (NETBSD_TCP_KEEPIDLE, NETBSD_TCP_KEEPINTVL, NETBSD_TCP_KEEPCNT),
            scale=NETBSD_SLOWHZ,
            minimum=1,
            maximum=NETBSD_MAX_TICKS,
            readable=False,  # tcp_ctloutput() PRCO_GETOPT has no case for them: ENOPROTOOPT
            since="NetBSD 5 or earlier (unverified); Python: any",
        ),
        unsupported={"user_timeout": "NetBSD has no per-socket unacknowledged-data timeout"},
        # sysctl(7): "tcp.slowhz: the units for tcp.keepidle and tcp.keepintvl"; 14400 = 2 h.
        defaults=_bsd_keepalive_defaults(NETBSD_SLOWHZ, NETBSD_SLOWHZ),
        notes=(
            "NetBSD stores TCP_KEEPIDLE and TCP_KEEPINTVL unconverted as slow-timer ticks "
            "(PR_SLOWHZ = 2 a second), so the option values are half-seconds (from the "
            "kernel source; not checked on a NetBSD machine).",
            "getsockopt() does not return these options, so inspect() reports the sysctl "
            "defaults and a failed configure() cannot restore them.",
        ),
        # sys/netinet/tcp_usrreq.c change_keepalive(), called by each of the three options,
        # re-arms TCPT_KEEP with t_keepintvl once SO_KEEPALIVE is on, with t_keepidle before:
        # with SO_KEEPALIVE set last the first probe comes after idle, as asked, not interval.
        tcp_options_first=True,
    )


def _openbsd(ns: Any, release: str | None) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = _socket_level(ns)
    version = _release_version(release)
    # sysctl(2) up to 6.x: keepidle/keepintvl count tcp.slowhz (2 a second) ticks (14400 =
    # 2 h); current sources (tcp_timer.h: tcp_keepidle_sec "in seconds for sysctl") use
    # seconds. Which 7.x release switched is unverified: 7.0 and later count as seconds.
    ticks_per_second = 2 if version is not None and version[0] < 7 else 1
    reason = (
        "OpenBSD has no per-socket keepalive options, only the system-wide sysctls "
        "net.inet.tcp.keepidle and net.inet.tcp.keepintvl (seconds in current releases, "
        "half-second ticks before 7.x); the probe count is fixed at 8"
    )
    return Platform(
        name="OpenBSD",
        family="openbsd",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options={},
        unsupported={
            "idle": reason,
            "interval": reason,
            "count": reason,
            "user_timeout": "OpenBSD has no per-socket unacknowledged-data timeout",
        },
        # sys/netinet/tcp_timer.h: TCPTV_KEEPCNT 8, not tunable.
        fixed={"count": 8},
        defaults=(
            *_bsd_keepalive_defaults(ticks_per_second, ticks_per_second, with_count=False),
            DefaultSource("count", "fixed", "TCPTV_KEEPCNT (sys/netinet/tcp_timer.h)", 8),
        ),
        notes=(
            "Only SO_KEEPALIVE can be set per socket: strict configure() raises "
            "UnsupportedOption, strict=False turns keepalive on with the system values.",
            "The sysctl unit is decided from os.uname().release: half-second ticks before "
            "7.0, seconds from 7.0 (the exact release that switched is unverified).",
        ),
    )
