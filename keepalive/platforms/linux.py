"""Linux (and Android): TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT in seconds, and
TCP_USER_TIMEOUT in milliseconds. Every value reads back with getsockopt.
"""

from __future__ import annotations

from keepalive.platforms._base import DefaultSource, OptionSpec, Platform

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from typing import Any

# include/uapi/asm-generic/socket.h
SOL_SOCKET = 1
SO_KEEPALIVE = 9
# include/uapi/linux/in.h
IPPROTO_TCP = 6
# include/uapi/linux/tcp.h
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
TCP_USER_TIMEOUT = 18  # Linux 2.6.37
# include/net/tcp.h
MAX_TCP_KEEPIDLE = 32767
MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127
# net/ipv4/tcp.c do_tcp_setsockopt(): TCP_USER_TIMEOUT takes a non-negative int of ms.
MAX_USER_TIMEOUT_MS = 2**31 - 1


def detect(ns: Any = None, release: str | None = None) -> Platform:
    """Linux's options never depend on the Python build: the numbers are the kernel ABI."""
    del ns, release
    return Platform(
        name="Linux",
        family="linux",
        sol_socket=SOL_SOCKET,
        so_keepalive=SO_KEEPALIVE,
        ipproto_tcp=IPPROTO_TCP,
        options={
            "idle": OptionSpec(
                "idle",
                "TCP_KEEPIDLE",
                IPPROTO_TCP,
                TCP_KEEPIDLE,
                1,
                MAX_TCP_KEEPIDLE,
                since="Linux 2.4",
                source="include/uapi/linux/tcp.h",
            ),
            "interval": OptionSpec(
                "interval",
                "TCP_KEEPINTVL",
                IPPROTO_TCP,
                TCP_KEEPINTVL,
                1,
                MAX_TCP_KEEPINTVL,
                since="Linux 2.4",
                source="include/uapi/linux/tcp.h",
            ),
            "count": OptionSpec(
                "count",
                "TCP_KEEPCNT",
                IPPROTO_TCP,
                TCP_KEEPCNT,
                1,
                MAX_TCP_KEEPCNT,
                is_count=True,
                since="Linux 2.4",
                source="include/uapi/linux/tcp.h",
            ),
            "user_timeout": OptionSpec(
                "user_timeout",
                "TCP_USER_TIMEOUT",
                IPPROTO_TCP,
                TCP_USER_TIMEOUT,
                1,
                MAX_USER_TIMEOUT_MS,
                scale=1000,
                since="Linux 2.6.37; Python 3.6",
                source="include/uapi/linux/tcp.h",
            ),
        },
        defaults=(
            DefaultSource("idle", "procfs", "/proc/sys/net/ipv4/tcp_keepalive_time", 7200),
            DefaultSource("interval", "procfs", "/proc/sys/net/ipv4/tcp_keepalive_intvl", 75),
            DefaultSource("count", "procfs", "/proc/sys/net/ipv4/tcp_keepalive_probes", 9),
            # No system-wide user timeout: unacknowledged data is retried tcp_retries2 times
            # (15 by default, about 924 s with the minimum RTO).
            DefaultSource("user_timeout", "procfs", "/proc/sys/net/ipv4/tcp_retries2", None),
        ),
        user_timeout_replaces_count=True,
        # net/ipv4/tcp.c: TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT only store their value
        # while SO_KEEPALIVE is off (tcp_sock_set_keepidle_locked() moves the timer only under
        # SOCK_KEEPOPEN); net/ipv4/tcp_timer.c tcp_set_keepalive() then starts the timer with
        # the new idle when SO_KEEPALIVE is set last. UDP, raw and packet sockets refuse a
        # SOL_TCP option with ENOPROTOOPT, AF_UNIX with EOPNOTSUPP, changing nothing
        # (tests/test_configure_fast_path.py reads every kind back).
        tcp_options_first=True,
        notes=(
            "Accepted sockets inherit SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT "
            "and TCP_USER_TIMEOUT from the listening socket.",
            "Once TCP_USER_TIMEOUT is set, it replaces TCP_KEEPCNT: an idle connection dies at "
            "the first probe tick at least user_timeout after the last inbound segment.",
        ),
    )
