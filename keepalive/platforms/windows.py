"""Windows: per-socket options on Windows 10 1709+, the SIO_KEEPALIVE_VALS ioctl before that.

CPython's socketmodule.c deletes TCP_KEEPIDLE and TCP_KEEPINTVL at import on builds below 16299
(Windows 10 1709) and TCP_KEEPCNT below 15063 (1703), so the socket module itself says which
path the running Windows supports:

- ``TCP_KEEPIDLE`` and ``TCP_KEEPINTVL`` present: plain setsockopt in seconds, read back with
  getsockopt, like Linux.
- otherwise: one ``sock.ioctl(SIO_KEEPALIVE_VALS, (onoff, idle_ms, interval_ms))`` that carries
  idle and interval together (every field is always given; neither can be read back), plus
  TCP_KEEPCNT where it exists, set *after* the ioctl, which may reset the probe count (Go's
  tcpsockopt_windows.go and socket2 use the same order); without TCP_KEEPCNT the probe count
  is fixed at 10 (Vista and later).

TCP_MAXRT (seconds, Vista+) bounds unacknowledged data on both paths.
"""

from __future__ import annotations

import socket

from keepalive.platforms._base import (
    SETTINGS,
    DefaultSource,
    IoctlCall,
    Operation,
    OptionSpec,
    Platform,
    Setting,
    SettingOutcome,
    socket_level,
    socket_number,
)

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from keepalive.platforms._base import KeepaliveValues

# winsock2.h
SOL_SOCKET = 0xFFFF
SO_KEEPALIVE = 0x0008
# ws2def.h (IPPROTO enumeration)
IPPROTO_TCP = 6
# ws2ipdef.h
TCP_KEEPALIVE = 3  # also defined as TCP_KEEPIDLE
TCP_KEEPIDLE = TCP_KEEPALIVE
TCP_MAXRT = 5
TCP_KEEPCNT = 16
TCP_KEEPINTVL = 17
# mstcpip.h: SIO_KEEPALIVE_VALS = _WSAIOW(IOC_VENDOR, 4) = IOC_IN | IOC_VENDOR | 4
IOC_IN = 0x80000000
IOC_VENDOR = 0x18000000
SIO_KEEPALIVE_VALS = IOC_IN | IOC_VENDOR | 4

# IPPROTO_TCP socket options (learn.microsoft.com): "It is illegal to set TCP_KEEPCNT to a
# value greater than 255."
MAX_KEEPCNT = 255
# struct tcp_keepalive holds ULONG milliseconds; CPython parses the tuple with "(kkk)".
MAX_IOCTL_MS = 0xFFFFFFFF
# TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_MAXRT are DWORD seconds with no documented upper bound;
# the stack keeps these timers in 32-bit milliseconds, so we refuse what would not fit.
MAX_SECONDS = 0xFFFFFFFF // 1000
# SIO_KEEPALIVE_VALS: "On Windows Vista and later, the number of keep-alive probes (data
# retransmissions) is set to 10 and cannot be changed."
FIXED_PROBE_COUNT = 10

# Settings that stay plain setsockopt calls on the ioctl path, planned before the ioctl.
_SETSOCKOPT_SETTINGS: tuple[Setting, ...] = ("count", "user_timeout")
# ... and the one set again after it, because the ioctl may reset it.
_AFTER_IOCTL: tuple[Setting, ...] = ("count",)
# The per-socket options in seconds from 1709, with their ws2ipdef.h numbers.
_SECONDS_OPTIONS: tuple[tuple[Setting, str, int], ...] = (
    ("idle", "TCP_KEEPIDLE", TCP_KEEPIDLE),
    ("interval", "TCP_KEEPINTVL", TCP_KEEPINTVL),
)
_KEEPCNT_NOTE = (
    "TCP_KEEPCNT is set before the ioctl, so that a refusal leaves the socket as it was, and "
    "again after it, because the ioctl may reset the probe count (the order Go and socket2 "
    "use)."
)
_REGISTRY = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\"
_WS2IPDEF = "ws2ipdef.h"


class WindowsIoctlPlatform(Platform):
    """Windows before 10 1709: idle and interval travel together in SIO_KEEPALIVE_VALS.

    The ioctl cannot be read back, so nothing that may fail is planned after it: every
    setsockopt goes first (if the ioctl then fails, they are read back, hence restored, as
    for any option). TCP_KEEPCNT must nevertheless *end up* after the ioctl, which may reset
    the probe count (Go and socket2 issue the ioctl first for that reason), so it is planned
    twice: before the ioctl, where a refusal still leaves the socket as it was, and again
    after it with the value the kernel has just accepted on this socket.
    """

    __slots__ = ("ioctl_control",)
    __match_args__ = (*Platform.__match_args__, "ioctl_control")

    ioctl_control: int

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces
        self,
        name: str,
        family: str,
        sol_socket: int,
        so_keepalive: int,
        ipproto_tcp: int,
        options: Mapping[Setting, OptionSpec],
        unsupported: Mapping[Setting, str] | None = None,
        defaults: tuple[DefaultSource, ...] = (),
        user_timeout_replaces_count: bool = False,
        fixed: Mapping[Setting, float | int] | None = None,
        notes: tuple[str, ...] = (),
        tcp_options_first: bool = False,
        ioctl_control: int = SIO_KEEPALIVE_VALS,
    ) -> None:
        self._set_fields(locals())

    def _plan_options(
        self,
        cfg: KeepaliveValues,
        strict: bool,
        operations: list[Operation],
        results: list[SettingOutcome],
    ) -> None:
        idle_spec, interval_spec = self.options["idle"], self.options["interval"]
        # Both fields are always sent: a config always has both, so interval alone never
        # leaves idle at the ioctl's zero (which Windows would take literally).
        idle_ms = self.check_range(idle_spec, cfg.idle)
        interval_ms = self.check_range(interval_spec, cfg.interval)
        outcome: dict[Setting, SettingOutcome] = {
            "idle": self.outcome(idle_spec, cfg.idle, idle_ms),
            "interval": self.outcome(interval_spec, cfg.interval, interval_ms),
        }
        again: list[Operation] = []  # set once more after the ioctl
        for setting in _SETSOCKOPT_SETTINGS:
            requested = getattr(cfg, setting)
            if requested is None:
                continue
            planned = len(operations)
            outcome[setting] = self._plan_setting(setting, requested, strict, operations)
            if setting in _AFTER_IOCTL:
                again.extend(operations[planned:])
        operations.append(
            IoctlCall(self.ioctl_control, (1, idle_ms, interval_ms), "SIO_KEEPALIVE_VALS")
        )
        operations.extend(again)
        results.extend(outcome[setting] for setting in SETTINGS if setting in outcome)


def _count_spec(ipproto_tcp: int, ns: Any) -> OptionSpec:
    return OptionSpec(
        "count",
        "TCP_KEEPCNT",
        ipproto_tcp,
        socket_number(ns, "TCP_KEEPCNT", TCP_KEEPCNT),
        1,
        MAX_KEEPCNT,
        is_count=True,
        since="Windows 10 1703 (build 15063); Python 3.6.5",
        source=_WS2IPDEF,
    )


def _maxrt_spec(ipproto_tcp: int) -> OptionSpec:
    return OptionSpec(
        "user_timeout",
        "TCP_MAXRT",
        ipproto_tcp,
        TCP_MAXRT,
        1,
        MAX_SECONDS,
        since="Windows Vista; not exported by Python (5 is used)",
        source=_WS2IPDEF,
    )


_DEFAULTS = (
    # Tcpip\Parameters: absent by default, then Windows uses 2 h and 1 s (milliseconds).
    DefaultSource("idle", "registry", _REGISTRY + "KeepAliveTime", 7200, scale=1000),
    DefaultSource("interval", "registry", _REGISTRY + "KeepAliveInterval", 1, scale=1000),
    DefaultSource("count", "fixed", "10 probes (Windows Vista and later)", FIXED_PROBE_COUNT),
    DefaultSource("user_timeout", "registry", _REGISTRY + "TcpMaxDataRetransmissions", None),
)


def detect(ns: Any = None, release: str | None = None) -> Platform:
    """The Windows description for the running Python's socket module (``ns``).

    ``release`` is unused: which options exist shows in ``ns`` (CPython removes the ones the
    running Windows build lacks).
    """
    del release
    ns = socket if ns is None else ns
    sol_socket, so_keepalive, ipproto_tcp = socket_level(ns, SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP)
    has_keepcnt = isinstance(getattr(ns, "TCP_KEEPCNT", None), int)
    if all(isinstance(getattr(ns, name, None), int) for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL")):
        return Platform(
            name="Windows 10 1709+",
            family="windows",
            sol_socket=sol_socket,
            so_keepalive=so_keepalive,
            ipproto_tcp=ipproto_tcp,
            options={
                **{
                    setting: OptionSpec(
                        setting,
                        name,
                        ipproto_tcp,
                        socket_number(ns, name, header_value),
                        1,
                        MAX_SECONDS,
                        since="Windows 10 1709 (build 16299); Python 3.7",
                        source=_WS2IPDEF,
                    )
                    for setting, name, header_value in _SECONDS_OPTIONS
                },
                "count": _count_spec(ipproto_tcp, ns),
                "user_timeout": _maxrt_spec(ipproto_tcp),
            },
            defaults=_DEFAULTS,
            notes=(
                "The upper bound of TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_MAXRT is ours: Windows "
                "documents none, and larger values would not fit its 32-bit millisecond timers.",
                "TCP_MAXRT = -1 would mean 'retransmit forever'; this library only sets positive "
                "values.",
            ),
            # SO_KEEPALIVE stays first (tcp_options_first=False): no source says how Windows
            # treats TCP_KEEPIDLE set before it, and every peer (Go, socket2, libuv) sets it
            # first; configure() checks the socket's kind before the first call instead.
        )
    ioctl_control = socket_number(ns, "SIO_KEEPALIVE_VALS", SIO_KEEPALIVE_VALS)
    # Idle and interval both travel in the one ioctl: each is described by it.
    options: dict[Setting, OptionSpec] = {
        setting: OptionSpec(
            setting,
            "SIO_KEEPALIVE_VALS",
            0,  # not a socket option: the ioctl control code is in optname
            ioctl_control,
            1,
            MAX_IOCTL_MS,
            scale=1000,
            readable=False,
            since="Windows 2000; Python sock.ioctl() (any supported version)",
            source="mstcpip.h",
        )
        for setting in ("idle", "interval")
    }
    options["user_timeout"] = _maxrt_spec(ipproto_tcp)
    unsupported: dict[Setting, str] = {}
    fixed: dict[Setting, int] = {}
    if has_keepcnt:
        options["count"] = _count_spec(ipproto_tcp, ns)
        name = "Windows 10 1703-1708"
    else:
        unsupported["count"] = (
            "Windows before 10 1703 has no TCP_KEEPCNT: the probe count is fixed at "
            f"{FIXED_PROBE_COUNT} (Vista and later)"
        )
        fixed["count"] = FIXED_PROBE_COUNT
        name = "Windows (SIO_KEEPALIVE_VALS)"
    return WindowsIoctlPlatform(
        name=name,
        family="windows",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=options,
        unsupported=unsupported,
        fixed=fixed,
        defaults=_DEFAULTS,
        ioctl_control=ioctl_control,
        notes=(
            "Idle and interval are set together by one SIO_KEEPALIVE_VALS ioctl, in "
            "milliseconds, after every other option; they cannot be read back, so inspect() "
            "reports the registry defaults for them.",
            *((_KEEPCNT_NOTE,) if has_keepcnt else ()),
            "socket_options() cannot express the ioctl: call keepalive.configure() instead.",
        ),
    )
