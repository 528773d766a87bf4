"""illumos and Oracle Solaris: the same option names with different numbers, or none at all.

- illumos (OpenIndiana, OmniOS, SmartOS...): TCP_KEEPIDLE 0x22, TCP_KEEPCNT 0x23,
  TCP_KEEPINTVL 0x24, in seconds, read back.
- Solaris 11.4: TCP_KEEPIDLE 0x1D, TCP_KEEPINTVL 0x1E, TCP_KEEPCNT 0x1F, in seconds.
- Solaris 10 and 11.0-11.3: only TCP_KEEPALIVE_THRESHOLD (the idle time) and
  TCP_KEEPALIVE_ABORT_THRESHOLD (how long probing may go unanswered), in milliseconds. Interval
  and count are emulated as ABORT_THRESHOLD = interval x count, as Go and libuv do.

All of them have TCP_ABORT_THRESHOLD (milliseconds) for unacknowledged data. The system-wide
defaults are ipadm/ndd tunables, not sysctls: they are reported as documented values.
"""

from __future__ import annotations

import re
import socket

from keepalive.errors import InvalidSetting
from keepalive.platforms._base import (
    DefaultSource,
    Operation,
    OptionSpec,
    Platform,
    SetOption,
    SettingOutcome,
    SettingStatus,
    keep_options,
    socket_level,
)

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from keepalive.platforms._base import KeepaliveValues, Setting

# usr/src/uts/common/sys/socket.h (illumos; Solaris the same)
SOL_SOCKET = 0xFFFF
SO_KEEPALIVE = 0x0008
# usr/src/uts/common/netinet/in.h
IPPROTO_TCP = 6
# usr/src/uts/common/netinet/tcp.h (illumos; the first five are shared with Solaris)
TCP_ABORT_THRESHOLD = 0x11
TCP_KEEPALIVE_THRESHOLD = 0x16
TCP_KEEPALIVE_ABORT_THRESHOLD = 0x17
ILLUMOS_TCP_KEEPIDLE = 0x22
ILLUMOS_TCP_KEEPCNT = 0x23
ILLUMOS_TCP_KEEPINTVL = 0x24
# Oracle Solaris 11.4 /usr/include/netinet/tcp.h (as mirrored by Rust's libc, solaris.rs)
SOLARIS_TCP_KEEPIDLE = 0x1D
SOLARIS_TCP_KEEPINTVL = 0x1E
SOLARIS_TCP_KEEPCNT = 0x1F

INT_MAX = 2**31 - 1
TEN_DAYS = 10 * 24 * 3600
# illumos usr/src/uts/common/inet/tcp/tcp_opt_data.c tcp_opt_set():
# - TCP_KEEPIDLE * 1000 must lie in the _keepalive_interval tunable's bounds, which are
#   1 s..10 days (tcp_tunables.c; 10 s before the 2016 fix for OS-4686).
# - TCP_KEEPINTVL * 1000 must lie within the connection's RTO bounds: 400 ms..60 s by default
#   (_rexmit_interval_min/_max).
# - TCP_KEEPCNT must not be 0, and interval x count (ms, an int product) must stay within the
#   _keepalive_abort_interval bounds: we keep it under INT_MAX ms so the product cannot wrap.
ILLUMOS_MIN_IDLE = 1
ILLUMOS_MAX_INTERVAL = 60
MAX_ABORT_MS = INT_MAX
# Oracle tcp(4P) for 11.4: TCP_KEEPIDLE and TCP_KEEPINTVL range from ten seconds to ten days.
SOLARIS_MIN_SECONDS = 10
# Oracle tunables reference, _keepalive_interval (TCP_KEEPALIVE_THRESHOLD): 10 s..10 days.
THRESHOLD_MIN_MS = 10 * 1000
THRESHOLD_MAX_MS = TEN_DAYS * 1000
# Oracle tcp(4P) before 11.4: TCP_KEEPALIVE_ABORT_THRESHOLD ranges from 0 to 8 minutes; the
# kernel refuses more at setsockopt time, so interval x count above 480 s cannot be stored.
ABORT_THRESHOLD_MAX_MS = 8 * 60 * 1000
# _keepalive_abort_interval's default (8 min): what applies when the threshold is not set.
DEFAULT_ABORT_SECONDS = 480

_TUNABLES = "ipadm show-prop tcp"


def _fmt_seconds(value: float) -> str:
    return f"{value:g} s"


def _solaris_minor(release: str | None) -> int | None:
    """Oracle Solaris 11's update (4 for ``"5.11 11.4.42.111.0"``), else None."""
    match = re.search(r"(?:^|\s)11\.(\d+)", release or "")
    return int(match.group(1)) if match else None


def _looks_like_illumos(release: str | None) -> bool:
    # os.uname().version: "illumos-<hash>" (OpenIndiana), "omnios-r151046-..." (OmniOS),
    # "joyent_2024..." (SmartOS); Oracle Solaris gives "11.4.x" or "Generic_...".
    version = (release or "").lower()
    return any(marker in version for marker in ("illumos", "omnios", "joyent", "smartos"))


def _abort_threshold_spec(ipproto_tcp: int) -> OptionSpec:
    return OptionSpec(
        "user_timeout",
        "TCP_ABORT_THRESHOLD",
        ipproto_tcp,
        TCP_ABORT_THRESHOLD,
        1,
        INT_MAX,
        scale=1000,
        since="Solaris 2.x (unverified) and illumos; not exported by Python (0x11 is used)",
        source="netinet/tcp.h",
    )


def _keep_options(
    ns: Any,
    ipproto_tcp: int,
    header_values: tuple[int, int, int],
    *,
    idle_range: tuple[int, int],
    interval_range: tuple[int, int],
    since: str,
    source: str,
) -> dict[Setting, OptionSpec]:
    """illumos's and Solaris 11.4's options: TCP_KEEPIDLE/INTVL/CNT with their own numbers
    and ranges (the count kept under INT_MAX, see above), and TCP_ABORT_THRESHOLD."""
    return {
        **keep_options(
            ns,
            ipproto_tcp,
            header_values,
            idle_range=idle_range,
            interval_range=interval_range,
            count_maximum=INT_MAX,
            since=since,
            source=source,
        ),
        "user_timeout": _abort_threshold_spec(ipproto_tcp),
    }


# ipadm tunables (illumos tcp_tunables.c; Oracle tunables reference): _keepalive_interval 2 h,
# _keepalive_abort_interval 8 min, _ip_abort_interval 5 min. Without TCP_KEEPINTVL/TCP_KEEPCNT
# the stack retransmits probes with backoff until the abort interval: no fixed interval/count.
_DEFAULTS = (
    DefaultSource("idle", "fixed", f"{_TUNABLES} -p _keepalive_interval (2 h)", 7200),
    DefaultSource(
        "interval", "fixed", f"{_TUNABLES} -p _keepalive_abort_interval (480 s in all)", None
    ),
    DefaultSource("count", "fixed", f"{_TUNABLES} -p _keepalive_abort_interval", None),
    DefaultSource("user_timeout", "fixed", f"{_TUNABLES} -p _ip_abort_interval", 300),
)
_DEFAULTS_NOTE = (
    "System defaults are ipadm tunables (_keepalive_interval 2 h, _keepalive_abort_interval "
    "8 min, _ip_abort_interval 5 min), not sysctls: the documented values are reported, not "
    "read. By default probes back off until the abort interval, so there is no default "
    "interval or count."
)


class ProductCheckedPlatform(Platform):
    """illumos: the kernel also refuses interval x count beyond its abort-interval bound."""

    __slots__ = ("max_abort_ms",)
    __match_args__ = (*Platform.__match_args__, "max_abort_ms")

    max_abort_ms: int

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
        max_abort_ms: int = MAX_ABORT_MS,
    ) -> None:
        self._set_fields(locals())

    def _plan_options(
        self,
        cfg: KeepaliveValues,
        strict: bool,
        operations: list[Operation],
        results: list[SettingOutcome],
    ) -> None:
        interval = self.options.get("interval")
        if interval is not None and "count" in self.options:
            # check_range() first: it refuses values too large to encode at all.
            product_ms = self.check_range(interval, cfg.interval) * 1000 // interval.scale
            product_ms *= cfg.count
            if product_ms > self.max_abort_ms:
                raise InvalidSetting(
                    "count",
                    cfg.count,
                    f"interval x count <= {self.max_abort_ms // 1000} s "
                    f"(here interval = {cfg.interval:g} s)",
                    platform=self.name,
                    hint="the kernel's keepalive abort interval limit",
                )
        super()._plan_options(cfg, strict, operations, results)


class ThresholdPlatform(Platform):
    """Solaris before 11.4: idle is TCP_KEEPALIVE_THRESHOLD; interval and count become one
    TCP_KEEPALIVE_ABORT_THRESHOLD = interval x count, planned right after the idle option."""

    __slots__ = ("abort_spec",)
    __match_args__ = (*Platform.__match_args__, "abort_spec")

    abort_spec: OptionSpec | None

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
        abort_spec: OptionSpec | None = None,
    ) -> None:
        self._set_fields(locals())

    def _plan_options(
        self,
        cfg: KeepaliveValues,
        strict: bool,
        operations: list[Operation],
        results: list[SettingOutcome],
    ) -> None:
        abort_spec = self.abort_spec
        if abort_spec is None:
            raise TypeError("ThresholdPlatform needs abort_spec (solaris.detect() provides it)")
        # Idle is checked before interval x count, and planned before the abort threshold.
        idle_operations: list[Operation] = []
        idle_result = self._plan_setting("idle", cfg.idle, strict, idle_operations)
        total = cfg.interval * cfg.count
        abort_native = self._encode_or_overflow(abort_spec, total)
        fits = abort_spec.minimum <= abort_native <= abort_spec.maximum
        allowed = f"interval x count within {abort_spec.describe_range()}"
        if not fits and strict:
            raise InvalidSetting(
                "interval",
                cfg.interval,
                f"{allowed} (here {cfg.count} x {_fmt_seconds(cfg.interval)} = "
                f"{_fmt_seconds(total)})",
                platform=self.name,
                hint=f"{abort_spec.name} limit: Oracle documents 0 to 8 minutes",
            )
        operations.extend(idle_operations)
        results.append(idle_result)
        if fits:
            operations.append(
                SetOption(abort_spec.level, abort_spec.optname, abort_native, abort_spec.name)
            )
            stored_total = abort_spec.decode(abort_native)
            detail = (
                f"no TCP_KEEPINTVL/TCP_KEEPCNT before Solaris 11.4: {abort_spec.name} = interval "
                f"x count = {stored_total:g} s; the connection is dropped that long after the "
                "first unanswered probe, but probes are retransmitted with backoff, not every "
                "interval"
            )
            status = SettingStatus.APPROXIMATED
            stored_interval: float | None = cfg.interval
            stored_count: int | None = cfg.count
        else:
            # strict=False: leave the system's abort interval in force and say so.
            detail = (
                f"interval x count = {_fmt_seconds(total)} is more than {abort_spec.name} can "
                f"hold ({allowed}; Oracle documents 0 to 8 minutes): not set, the system's "
                f"_keepalive_abort_interval applies ({DEFAULT_ABORT_SECONDS} s by default)"
            )
            status, stored_interval, stored_count = SettingStatus.UNSUPPORTED, None, None
        results.append(
            SettingOutcome(
                "interval", cfg.interval, stored_interval, status, abort_spec.name, detail
            )
        )
        results.append(
            SettingOutcome("count", cfg.count, stored_count, status, abort_spec.name, detail)
        )
        if cfg.user_timeout is not None:
            results.append(self._plan_setting("user_timeout", cfg.user_timeout, strict, operations))

    def detection_bound(self, cfg: KeepaliveValues) -> float:
        """As for every platform, except when interval x count was too large to set: then the
        system's abort interval (its documented default) follows the first probe."""
        result = self.plan(cfg, strict=False).result("interval")
        if result is not None and result.status is SettingStatus.UNSUPPORTED:
            return self._effective(cfg, "idle") + DEFAULT_ABORT_SECONDS
        return super().detection_bound(cfg)


def detect(ns: Any = None, release: str | None = None) -> Platform:
    """illumos, Solaris 11.4 or older Solaris, decided from ``ns`` then ``release``.

    The socket module's TCP_KEEPIDLE value shows which headers Python was built with (0x22
    illumos, 0x1D Solaris 11.4). Without it, ``release`` decides: Solaris 11.4+ and illumos
    (``os.uname().version`` "illumos-...", "omnios-...", "joyent_...") have the options; an
    unknown or older Solaris uses the millisecond thresholds, which every release has.
    """
    ns = socket if ns is None else ns
    level = socket_level(ns, SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP)
    keepidle = getattr(ns, "TCP_KEEPIDLE", None)
    minor = _solaris_minor(release)
    if keepidle == ILLUMOS_TCP_KEEPIDLE or (keepidle is None and _looks_like_illumos(release)):
        return _illumos(ns, level)
    if keepidle == SOLARIS_TCP_KEEPIDLE or (keepidle is None and minor is not None and minor >= 4):
        return _solaris_11_4(ns, level)
    if isinstance(keepidle, int):
        # Unknown numbering: trust the socket module with illumos's rules.
        return _illumos(ns, level)
    return _solaris_thresholds(level)


def _illumos(ns: Any, level: tuple[int, int, int]) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = level
    header = "usr/src/uts/common/netinet/tcp.h"
    since = "illumos (added by Nexenta, 2011); Python: any"
    return ProductCheckedPlatform(
        name="illumos",
        family="illumos",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=_keep_options(
            ns,
            ipproto_tcp,
            (ILLUMOS_TCP_KEEPIDLE, ILLUMOS_TCP_KEEPINTVL, ILLUMOS_TCP_KEEPCNT),
            idle_range=(ILLUMOS_MIN_IDLE, TEN_DAYS),
            interval_range=(1, ILLUMOS_MAX_INTERVAL),
            since=since,
            source=header,
        ),
        defaults=_DEFAULTS,
        notes=(
            "TCP_KEEPIDLE's minimum was 10 s on illumos builds before 2016 (OS-4686).",
            "TCP_KEEPINTVL must lie within the connection's retransmission timeout bounds "
            "(60 s at most by default, tunable _rexmit_interval_max).",
            "TCP_KEEPCNT and TCP_KEEPINTVL together set the abort threshold (interval x count).",
            _DEFAULTS_NOTE,
        ),
        # usr/src/uts/common/inet/tcp/tcp_opt_data.c tcp_opt_set(): TCP_KEEPIDLE stores
        # tcp_ka_interval and restarts the keepalive timer only if one runs; SO_KEEPALIVE
        # starts it with tcp_ka_interval, so set last it starts with the new idle at once.
        # (Interval before count, as planned: TCP_KEEPCNT derives the abort threshold from it.)
        tcp_options_first=True,
    )


def _solaris_11_4(ns: Any, level: tuple[int, int, int]) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = level
    header = "Solaris 11.4 /usr/include/netinet/tcp.h"
    since = "Solaris 11.4; Python: any (built on 11.4)"
    return Platform(
        name="Solaris 11.4",
        family="solaris",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options=_keep_options(
            ns,
            ipproto_tcp,
            (SOLARIS_TCP_KEEPIDLE, SOLARIS_TCP_KEEPINTVL, SOLARIS_TCP_KEEPCNT),
            idle_range=(SOLARIS_MIN_SECONDS, TEN_DAYS),
            interval_range=(SOLARIS_MIN_SECONDS, TEN_DAYS),
            since=since,
            source=header,
        ),
        defaults=_DEFAULTS,
        notes=(
            "The numbers differ from illumos's (0x22/0x24/0x23) although the names match.",
            "Oracle documents 10 s..10 days for TCP_KEEPIDLE and TCP_KEEPINTVL; the "
            "TCP_KEEPCNT bound and read-back are not documented (assumed as on illumos).",
            _DEFAULTS_NOTE,
        ),
        # SO_KEEPALIVE stays first here and before 11.4 (tcp_options_first=False): Oracle's
        # sources are closed, so the order's effect is unverified; configure() checks the
        # socket's kind before the first call instead.
    )


def _solaris_thresholds(level: tuple[int, int, int]) -> Platform:
    sol_socket, so_keepalive, ipproto_tcp = level
    header = "netinet/tcp.h"
    return ThresholdPlatform(
        name="Solaris (before 11.4)",
        family="solaris",
        sol_socket=sol_socket,
        so_keepalive=so_keepalive,
        ipproto_tcp=ipproto_tcp,
        options={
            "idle": OptionSpec(
                "idle",
                "TCP_KEEPALIVE_THRESHOLD",
                ipproto_tcp,
                TCP_KEEPALIVE_THRESHOLD,
                THRESHOLD_MIN_MS,
                THRESHOLD_MAX_MS,
                scale=1000,
                since="Solaris 2.6 (unverified); not exported by Python (0x16 is used)",
                source=header,
            ),
            "user_timeout": _abort_threshold_spec(ipproto_tcp),
        },
        abort_spec=OptionSpec(
            "interval",
            "TCP_KEEPALIVE_ABORT_THRESHOLD",
            ipproto_tcp,
            TCP_KEEPALIVE_ABORT_THRESHOLD,
            1,
            ABORT_THRESHOLD_MAX_MS,
            scale=1000,
            readable=False,  # it reads back interval x count, not either setting
            since="Solaris 2.6 (unverified); not exported by Python (0x17 is used)",
            source=header,
        ),
        unsupported={
            "interval": "emulated: TCP_KEEPALIVE_ABORT_THRESHOLD (ms) = interval x count",
            "count": "emulated: TCP_KEEPALIVE_ABORT_THRESHOLD (ms) = interval x count",
        },
        defaults=_DEFAULTS,
        notes=(
            "Interval and count are approximated: TCP_KEEPALIVE_ABORT_THRESHOLD = interval x "
            "count, and unanswered probes are retransmitted with backoff rather than every "
            "interval, so only idle + interval x count (the detection bound) is honoured.",
            "Oracle documents TCP_KEEPALIVE_ABORT_THRESHOLD as 0 to 8 minutes: interval x "
            "count above 480 s raises InvalidSetting with strict=True; with strict=False the "
            "threshold is not set, interval and count are reported as not honoured, and the "
            "system's _keepalive_abort_interval (8 min by default) applies.",
            "Chosen when the socket module has no TCP_KEEPIDLE and os.uname() does not show "
            "Solaris 11.4+ or illumos.",
            _DEFAULTS_NOTE,
        ),
    )
