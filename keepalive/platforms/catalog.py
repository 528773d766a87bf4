"""What each OS's Python exposes, as data: one entry per platform variant we describe.

Each variant is the ``sys.platform`` value, a namespace holding the socket-module constants
that Python has on that OS (the numbers come from the OS headers named in the comments), and a
sample ``os.uname()`` release string (``"<release> <version>"``, as
``keepalive.platforms._running_release`` builds it). ``scripts/gen_platforms_doc.py`` feeds
them to :func:`keepalive.platforms.detect` to write ``docs/platforms.md``; the tests use the
same namespaces with a fake socket. Data only: nothing here touches a socket.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

__all__ = ["VARIANTS", "Variant", "variant"]


class Variant(NamedTuple):
    """One platform as Python sees it."""

    label: str
    sys_platform: str
    namespace: SimpleNamespace
    release: str | None


# -- Linux: include/uapi/asm-generic/socket.h, include/uapi/linux/in.h, include/uapi/linux/tcp.h
LINUX = SimpleNamespace(
    SOL_SOCKET=1,
    SO_KEEPALIVE=9,
    IPPROTO_TCP=6,
    TCP_KEEPIDLE=4,
    TCP_KEEPINTVL=5,
    TCP_KEEPCNT=6,
    TCP_USER_TIMEOUT=18,  # Python 3.6
)

# SOL_SOCKET 0xFFFF, SO_KEEPALIVE 0x8 and IPPROTO_TCP 6 are 4.2BSD's numbers, which every OS
# below keeps: each block names the headers that define them there.
_BSD_SOCKET_LEVEL = {"SOL_SOCKET": 0xFFFF, "SO_KEEPALIVE": 0x8, "IPPROTO_TCP": 6}

# -- macOS / iOS: xnu bsd/sys/socket.h, bsd/netinet/in.h, bsd/netinet/tcp.h
DARWIN_PY310 = SimpleNamespace(
    **_BSD_SOCKET_LEVEL,
    TCP_KEEPALIVE=0x10,  # the idle time; exported by Python 3.10+
    TCP_KEEPINTVL=0x101,  # OS X 10.9+ SDK headers (xnu-2422)
    TCP_KEEPCNT=0x102,  # OS X 10.9+ SDK headers (xnu-2422)
)
# Python 3.9 and older do not export TCP_KEEPALIVE (and never TCP_KEEPIDLE on Darwin).
DARWIN_PY39 = SimpleNamespace(
    **{name: value for name, value in vars(DARWIN_PY310).items() if name != "TCP_KEEPALIVE"}
)

# -- Windows: winsock2.h (SOL_SOCKET, SO_KEEPALIVE), ws2def.h (IPPROTO_TCP),
# ws2ipdef.h (TCP_KEEPALIVE = TCP_KEEPIDLE 3, TCP_KEEPCNT 16, TCP_KEEPINTVL 17),
# mstcpip.h (SIO_KEEPALIVE_VALS = _WSAIOW(IOC_VENDOR, 4)). CPython's socketmodule.c deletes
# TCP_KEEPIDLE/TCP_KEEPINTVL below build 16299 and TCP_KEEPCNT below 15063 at import. It
# exports TCP_KEEPALIVE only under __APPLE__, so no Windows build has socket.TCP_KEEPALIVE
# although ws2ipdef.h defines it.
SIO_KEEPALIVE_VALS = 0x98000004
WINDOWS_1709 = SimpleNamespace(
    **_BSD_SOCKET_LEVEL,
    TCP_KEEPIDLE=3,
    TCP_KEEPINTVL=17,
    TCP_KEEPCNT=16,
    SIO_KEEPALIVE_VALS=SIO_KEEPALIVE_VALS,
)
WINDOWS_1703 = SimpleNamespace(
    **_BSD_SOCKET_LEVEL, TCP_KEEPCNT=16, SIO_KEEPALIVE_VALS=SIO_KEEPALIVE_VALS
)
WINDOWS_OLD = SimpleNamespace(**_BSD_SOCKET_LEVEL, SIO_KEEPALIVE_VALS=SIO_KEEPALIVE_VALS)

# -- FreeBSD and DragonFly: sys/sys/socket.h, sys/netinet/in.h, sys/netinet/tcp.h
FREEBSD = SimpleNamespace(
    **_BSD_SOCKET_LEVEL, TCP_KEEPIDLE=256, TCP_KEEPINTVL=512, TCP_KEEPCNT=1024
)
DRAGONFLY = SimpleNamespace(**vars(FREEBSD))

# -- NetBSD: sys/sys/socket.h, sys/netinet/in.h, sys/netinet/tcp.h
NETBSD = SimpleNamespace(**_BSD_SOCKET_LEVEL, TCP_KEEPIDLE=3, TCP_KEEPINTVL=5, TCP_KEEPCNT=6)

# -- OpenBSD: sys/sys/socket.h, sys/netinet/in.h; netinet/tcp.h has no TCP_KEEP* options.
OPENBSD = SimpleNamespace(**_BSD_SOCKET_LEVEL)

# -- illumos: usr/src/uts/common/sys/socket.h, netinet/in.h, netinet/tcp.h
ILLUMOS = SimpleNamespace(
    **_BSD_SOCKET_LEVEL, TCP_KEEPIDLE=0x22, TCP_KEEPCNT=0x23, TCP_KEEPINTVL=0x24
)
# -- Oracle Solaris 11.4 /usr/include/netinet/tcp.h: same names, other numbers than illumos.
SOLARIS_11_4 = SimpleNamespace(
    **_BSD_SOCKET_LEVEL, TCP_KEEPIDLE=0x1D, TCP_KEEPINTVL=0x1E, TCP_KEEPCNT=0x1F
)
# -- Solaris 10 and 11.0-11.3: only the millisecond thresholds (not exported by Python).
SOLARIS_OLD = SimpleNamespace(**_BSD_SOCKET_LEVEL)

VARIANTS: tuple[Variant, ...] = (
    Variant("Linux", "linux", LINUX, "6.8.0-45-generic #45-Ubuntu SMP"),
    Variant(
        "macOS, Python 3.10+",
        "darwin",
        DARWIN_PY310,
        "23.4.0 Darwin Kernel Version 23.4.0",
    ),
    Variant(
        "macOS, Python before 3.10",
        "darwin",
        DARWIN_PY39,
        "21.6.0 Darwin Kernel Version 21.6.0",
    ),
    Variant("Windows 10 1709+", "win32", WINDOWS_1709, None),
    Variant("Windows 10 1703-1708", "win32", WINDOWS_1703, None),
    Variant("Windows before 10 1703", "win32", WINDOWS_OLD, None),
    Variant("FreeBSD 14+", "freebsd14", FREEBSD, "14.1-RELEASE FreeBSD 14.1-RELEASE GENERIC"),
    Variant("FreeBSD 10-13", "freebsd13", FREEBSD, "13.3-RELEASE FreeBSD 13.3-RELEASE GENERIC"),
    Variant("DragonFly 5.8+", "dragonfly6", DRAGONFLY, "6.4-RELEASE DragonFly v6.4.0-RELEASE #0"),
    Variant(
        "DragonFly before 5.8",
        "dragonfly5",
        DRAGONFLY,
        "5.6-RELEASE DragonFly v5.6.3-RELEASE #0",
    ),
    Variant("NetBSD", "netbsd10", NETBSD, "10.0 NetBSD 10.0 (GENERIC) #0"),
    Variant("OpenBSD", "openbsd7", OPENBSD, "7.5 GENERIC.MP#82"),
    Variant("illumos", "sunos5", ILLUMOS, "5.11 illumos-8a8b3c4d"),
    Variant("Solaris 11.4", "sunos5", SOLARIS_11_4, "5.11 11.4.42.111.0"),
    Variant("Solaris before 11.4", "sunos5", SOLARIS_OLD, "5.11 11.3"),
)


def variant(label: str) -> Variant:
    """The variant called ``label`` (KeyError if there is none)."""
    for item in VARIANTS:
        if item.label == label:
            return item
    raise KeyError(label)
