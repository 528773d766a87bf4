"""The vocabulary shared by every platform module: option descriptions, plans, results.

A *platform* is pure data plus small functions: which per-socket options exist on one OS
family (and on the running Python), their units and ranges, and how to turn a
`KeepaliveConfig` into a *plan*, the exact list of socket operations to perform. Nothing
here touches a socket; `keepalive.sockets` carries plans out.
"""

from __future__ import annotations

import enum
import math

from keepalive._record import Record
from keepalive.errors import InvalidSetting, UnsupportedOption

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal, Protocol

    class KeepaliveValues(Protocol):
        """What a platform reads of a config (a ``keepalive.KeepaliveConfig``): platforms
        import nothing above them, so ``keepalive.config`` may use them freely."""

        @property
        def idle(self) -> float: ...
        @property
        def interval(self) -> float: ...
        @property
        def count(self) -> int: ...
        @property
        def user_timeout(self) -> float | None: ...


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
]

if TYPE_CHECKING:
    Setting = Literal["idle", "interval", "count", "user_timeout"]
else:
    Setting = str  # the Literal above, for type checkers
SETTINGS: tuple[Setting, ...] = ("idle", "interval", "count", "user_timeout")

_UNIT_NAMES = {1: "s", 1000: "ms"}

# The classes below are frozen dataclasses in behaviour, written on keepalive._record.Record
# so that `import dataclasses` (and the code it generates) stays off configure()'s first use.


class SettingStatus(str, enum.Enum):
    """How a requested setting fared on a platform."""

    HONOURED = "honoured"  # stored exactly as requested
    APPROXIMATED = "approximated"  # stored rounded up to the OS's unit, or a fixed OS value
    UNSUPPORTED = "unsupported"  # not settable per socket here; the system value applies

    def __str__(self) -> str:
        return self.value


class OptionSpec(Record):
    """One per-socket option: ``setsockopt(level, optname, native_value)``.

    ``scale`` is native units per second (1 for seconds, 1000 for milliseconds); counts use 1
    with ``is_count``. ``minimum``/``maximum`` are in native units, as the kernel checks them.
    """

    __slots__ = (
        "is_count",
        "level",
        "maximum",
        "minimum",
        "name",
        "optname",
        "readable",
        "scale",
        "setting",
        "since",
        "source",
    )
    __match_args__ = (
        "setting",
        "name",
        "level",
        "optname",
        "minimum",
        "maximum",
        "scale",
        "is_count",
        "readable",
        "since",
        "source",
    )

    setting: Setting
    name: str
    level: int
    optname: int
    minimum: int
    maximum: int
    scale: int
    is_count: bool
    readable: bool
    since: str
    source: str

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces
        self,
        setting: Setting,
        name: str,
        level: int,
        optname: int,
        minimum: int,
        maximum: int,
        scale: int = 1,
        is_count: bool = False,
        readable: bool = True,
        since: str = "",
        source: str = "",
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "setting", setting)
        setattr_(self, "name", name)
        setattr_(self, "level", level)
        setattr_(self, "optname", optname)
        setattr_(self, "minimum", minimum)
        setattr_(self, "maximum", maximum)
        setattr_(self, "scale", scale)
        setattr_(self, "is_count", is_count)
        setattr_(self, "readable", readable)
        setattr_(self, "since", since)
        setattr_(self, "source", source)

    @property
    def unit(self) -> str:
        return "probes" if self.is_count else _UNIT_NAMES.get(self.scale, f"1/{self.scale} s")

    def encode(self, value: float) -> int:
        """Native value for ``value`` seconds (or probes): rounded up, never down to 0."""
        if self.is_count:
            return int(value)
        # round() first so 0.1 s -> 100 ms, not 101 ms, through binary floating point.
        return max(1, math.ceil(round(value * self.scale, 6)))

    def decode(self, native: int) -> float | int:
        return native if self.is_count else native / self.scale

    def describe_range(self) -> str:
        low, high = self.decode(self.minimum), self.decode(self.maximum)
        unit = "probes" if self.is_count else "s"
        granularity = "" if self.is_count or self.scale == 1 else f" in steps of 1/{self.scale} s"
        if self.scale == 1 and not self.is_count:
            granularity = " (whole seconds; fractions are rounded up)"
        return f"{_fmt(low)}..{_fmt(high)} {unit}{granularity}"


class SetOption(Record):
    """``sock.setsockopt(level, optname, value)``."""

    __slots__ = ("level", "name", "optname", "value")
    __match_args__ = ("level", "optname", "value", "name")

    level: int
    optname: int
    value: int
    name: str

    def __init__(self, level: int, optname: int, value: int, name: str) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "level", level)
        setattr_(self, "optname", optname)
        setattr_(self, "value", value)
        setattr_(self, "name", name)


class IoctlCall(Record):
    """``sock.ioctl(control, value)`` (Windows only)."""

    __slots__ = ("control", "name", "value")
    __match_args__ = ("control", "value", "name")

    control: int
    value: tuple[int, int, int]
    name: str

    def __init__(self, control: int, value: tuple[int, int, int], name: str) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "control", control)
        setattr_(self, "value", value)
        setattr_(self, "name", name)


Operation = SetOption | IoctlCall


class SettingOutcome(Record):
    """What happened to one requested setting.

    ``requested`` is what the config asked for, ``stored`` what the OS keeps (in seconds, or
    probes), ``option`` the option that carries it, ``detail`` a human explanation of any
    approximation or lack of support.
    """

    __slots__ = ("detail", "option", "requested", "setting", "status", "stored")
    __match_args__ = ("setting", "requested", "stored", "status", "option", "detail")

    setting: Setting
    requested: float | int
    stored: float | int | None
    status: SettingStatus
    option: str | None
    detail: str

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces
        self,
        setting: Setting,
        requested: float | int,
        stored: float | int | None,
        status: SettingStatus,
        option: str | None = None,
        detail: str = "",
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "setting", setting)
        setattr_(self, "requested", requested)
        setattr_(self, "stored", stored)
        setattr_(self, "status", status)
        setattr_(self, "option", option)
        setattr_(self, "detail", detail)

    @property
    def honoured(self) -> bool:
        return self.status is SettingStatus.HONOURED


class Plan(Record):
    """The socket operations that apply a config on one platform, and the expected outcome."""

    __slots__ = ("operations", "platform", "results", "setsockopt_args")
    __match_args__ = ("platform", "operations", "results")
    _compare_ = False  # identity: plans are cached and looked up often

    platform: str
    operations: tuple[Operation, ...]
    results: tuple[SettingOutcome, ...]
    #: ``(level, optname, value)`` for each operation when all are setsockopt calls, else None.
    setsockopt_args: tuple[tuple[int, int, int], ...] | None

    def __init__(
        self,
        platform: str,
        operations: tuple[Operation, ...],
        results: tuple[SettingOutcome, ...],
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "platform", platform)
        setattr_(self, "operations", operations)
        setattr_(self, "results", results)
        args = tuple(
            (op.level, op.optname, op.value) for op in operations if isinstance(op, SetOption)
        )
        setattr_(self, "setsockopt_args", args if len(args) == len(operations) else None)

    def result(self, setting: Setting) -> SettingOutcome | None:
        for item in self.results:
            if item.setting == setting:
                return item
        return None


class DefaultSource(Record):
    """Where the OS keeps a system-wide default, and its documented value.

    ``kind`` is ``"procfs"`` (a file), ``"sysctl"`` (a sysctl name), ``"registry"`` (a value
    under HKLM), or ``"fixed"`` (not configurable); ``scale`` converts the stored number to
    seconds (1000 for milliseconds).
    """

    __slots__ = ("documented", "kind", "location", "scale", "setting")
    __match_args__ = ("setting", "kind", "location", "documented", "scale")

    setting: Setting
    kind: Literal["procfs", "sysctl", "registry", "fixed"]
    location: str
    documented: float | int | None
    scale: int

    def __init__(
        self,
        setting: Setting,
        kind: Literal["procfs", "sysctl", "registry", "fixed"],
        location: str,
        documented: float | int | None,
        scale: int = 1,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "setting", setting)
        setattr_(self, "kind", kind)
        setattr_(self, "location", location)
        setattr_(self, "documented", documented)
        setattr_(self, "scale", scale)


# -- building descriptions from the socket module's constants ---------------------------------


def socket_number(ns: Any, name: str, header_value: int) -> int:
    """``ns.<name>`` when the socket module defines it as an int, else ``header_value``: the
    number from the OS header, cited where the caller defines it."""
    value = getattr(ns, name, None)
    return value if isinstance(value, int) else header_value


def socket_level(
    ns: Any, sol_socket: int, so_keepalive: int, ipproto_tcp: int
) -> tuple[int, int, int]:
    """``(SOL_SOCKET, SO_KEEPALIVE, IPPROTO_TCP)`` from ``ns``, else the header values given."""
    return (
        socket_number(ns, "SOL_SOCKET", sol_socket),
        socket_number(ns, "SO_KEEPALIVE", so_keepalive),
        socket_number(ns, "IPPROTO_TCP", ipproto_tcp),
    )


def keep_options(
    ns: Any,
    ipproto_tcp: int,
    header_values: tuple[int, int, int],
    *,
    idle_range: tuple[int, int],
    interval_range: tuple[int, int],
    count_maximum: int,
    scale: int = 1,
    readable: bool = True,
    since: str,
    source: str,
) -> dict[Setting, OptionSpec]:
    """TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT (``header_values`` in that order, used when
    the socket module lacks a name), sharing their unit, read-back, history and header; the
    count is at least one probe."""
    idle, interval, count = header_values
    rows: tuple[tuple[Setting, str, int, int, int], ...] = (
        ("idle", "TCP_KEEPIDLE", idle, *idle_range),
        ("interval", "TCP_KEEPINTVL", interval, *interval_range),
        ("count", "TCP_KEEPCNT", count, 1, count_maximum),
    )
    return {
        setting: OptionSpec(
            setting,
            name,
            ipproto_tcp,
            socket_number(ns, name, header_value),
            minimum,
            maximum,
            scale=1 if setting == "count" else scale,
            is_count=setting == "count",
            readable=readable,
            since=since,
            source=source,
        )
        for setting, name, header_value, minimum, maximum in rows
    }


# Platform.__init__ parameters whose None default stands for an empty mapping.
_EMPTY_WHEN_NONE = ("unsupported", "fixed")


def _fmt(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(round(float(value), 6))


class Platform(Record):
    """Everything this library knows about per-socket keepalive on one OS family.

    Most platforms are "one option per setting"; Windows before 1709 (an ioctl carrying idle
    and interval together) and Solaris before 11.4 (thresholds) override :meth:`_plan_options`.
    Subclasses add their fields to ``__slots__``, ``__match_args__`` and ``__init__``.
    """

    __slots__ = (
        "__weakref__",
        "defaults",
        "family",
        "fixed",
        "ipproto_tcp",
        "name",
        "notes",
        "options",
        "so_keepalive",
        "sol_socket",
        "tcp_options_first",
        "unsupported",
        "user_timeout_replaces_count",
    )
    __match_args__ = (
        "name",
        "family",
        "sol_socket",
        "so_keepalive",
        "ipproto_tcp",
        "options",
        "unsupported",
        "defaults",
        "user_timeout_replaces_count",
        "fixed",
        "notes",
        "tcp_options_first",
    )
    _compare_ = False  # identity semantics: hashable, so plans can be cached

    name: str
    family: str
    sol_socket: int
    so_keepalive: int
    ipproto_tcp: int
    options: Mapping[Setting, OptionSpec]
    unsupported: Mapping[Setting, str]
    defaults: tuple[DefaultSource, ...]
    #: Linux: a set TCP_USER_TIMEOUT replaces TCP_KEEPCNT in deciding when keepalive gives up.
    user_timeout_replaces_count: bool
    #: Values that cannot be changed per socket but are fixed and known (Windows' probe count).
    fixed: Mapping[Setting, float | int]
    notes: tuple[str, ...]
    #: Plans set the TCP-level options first (the user-timeout option first of all) and
    #: SO_KEEPALIVE last: the OS file cites why that order is harmless or better there. A
    #: socket that is not TCP then refuses the plan's first call before anything changed, so
    #: configure()'s steady state needs no check of the socket's kind (see keepalive.sockets).
    tcp_options_first: bool

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
    ) -> None:
        self._set_fields(locals())

    def _set_fields(self, parameters: Mapping[str, Any]) -> None:
        """Store each field named in ``__match_args__`` from ``parameters``, an ``__init__``'s
        ``locals()``: every parameter is the field of the same name (Record's contract), so a
        subclass that adds a field stores all of them without forwarding each one."""
        for name in type(self).__match_args__:
            value = parameters[name]
            if value is None and name in _EMPTY_WHEN_NONE:
                value = {}
            object.__setattr__(self, name, value)

    # -- planning ---------------------------------------------------------------------------

    def plan(self, cfg: KeepaliveValues, *, strict: bool = True) -> Plan:
        """The operations that apply ``cfg`` here; raises before any I/O when it cannot.

        SO_KEEPALIVE comes first, or last where :attr:`tcp_options_first` says so.
        Out-of-range values raise :class:`InvalidSetting` whatever ``strict`` says (a value
        the kernel would refuse is a bad setting). Settings this platform cannot set per socket
        raise :class:`UnsupportedOption` when ``strict``, else are reported as unsupported.
        """
        operations: list[Operation] = []
        results: list[SettingOutcome] = []
        self._plan_options(cfg, strict, operations, results)
        keepalive_on = SetOption(self.sol_socket, self.so_keepalive, 1, "SO_KEEPALIVE")
        tcp = [
            operation
            for operation in operations
            if isinstance(operation, SetOption) and operation.level == self.ipproto_tcp
        ]
        if self.tcp_options_first and tcp and len(tcp) == len(operations):
            # The user-timeout option first: the newest and least widely implemented (Linux
            # MPTCP sockets take TCP_KEEPIDLE/INTVL/CNT since 6.10, not TCP_USER_TIMEOUT),
            # so a socket that would refuse any of them refuses the first one.
            spec = self.options.get("user_timeout")
            key = None if spec is None else (spec.level, spec.optname)
            operations = [
                *(operation for operation in tcp if (operation.level, operation.optname) == key),
                *(operation for operation in tcp if (operation.level, operation.optname) != key),
                keepalive_on,
            ]
        else:
            operations.insert(0, keepalive_on)
        return Plan(self.name, tuple(operations), tuple(results))

    def _plan_options(
        self,
        cfg: KeepaliveValues,
        strict: bool,
        operations: list[Operation],
        results: list[SettingOutcome],
    ) -> None:
        for setting in SETTINGS:
            requested = getattr(cfg, setting)
            if requested is not None:
                results.append(self._plan_setting(setting, requested, strict, operations))

    def _plan_setting(
        self,
        setting: Setting,
        requested: float | int,
        strict: bool,
        operations: list[Operation],
    ) -> SettingOutcome:
        """Plan one setting with its own option (appended to ``operations``), or report it
        missing (raising when ``strict``)."""
        spec = self.options.get(setting)
        if spec is None:
            return self.missing(setting, requested, strict)
        native = self.check_range(spec, requested)
        operations.append(SetOption(spec.level, spec.optname, native, spec.name))
        return self.outcome(spec, requested, native)

    @staticmethod
    def _encode_or_overflow(spec: OptionSpec, requested: float | int) -> int:
        """``spec.encode(requested)``, or a value above ``spec.maximum`` when ``requested``
        is too large (or not finite) to express in the OS's unit at all."""
        try:
            return spec.encode(requested)
        except (OverflowError, ValueError):
            return spec.maximum + 1

    def check_range(self, spec: OptionSpec, requested: float | int) -> int:
        native = self._encode_or_overflow(spec, requested)
        if not spec.minimum <= native <= spec.maximum:
            raise InvalidSetting(
                spec.setting,
                requested,
                spec.describe_range(),
                platform=self.name,
                hint=f"{spec.name} limit",
            )
        return native

    @staticmethod
    def outcome(spec: OptionSpec, requested: float | int, native: int) -> SettingOutcome:
        stored = spec.decode(native)
        if stored == requested:
            return SettingOutcome(
                spec.setting, requested, stored, SettingStatus.HONOURED, spec.name
            )
        return SettingOutcome(
            spec.setting,
            requested,
            stored,
            SettingStatus.APPROXIMATED,
            spec.name,
            f"{spec.name} is in {spec.unit}: {_fmt(requested)} s stored as {_fmt(stored)} s",
        )

    def missing(self, setting: Setting, requested: float | int, strict: bool) -> SettingOutcome:
        """The result for a setting without a per-socket option (or raise when strict)."""
        reason = self.unsupported.get(setting, "no per-socket option")
        fixed = self.fixed.get(setting)
        if fixed is not None and fixed == requested:
            return SettingOutcome(setting, requested, fixed, SettingStatus.HONOURED, None, reason)
        if strict:
            raise UnsupportedOption(setting, self.name, reason)
        if fixed is not None:
            return SettingOutcome(
                setting, requested, fixed, SettingStatus.APPROXIMATED, None, reason
            )
        return SettingOutcome(setting, requested, None, SettingStatus.UNSUPPORTED, None, reason)

    # -- what a config means here -----------------------------------------------------------

    def stored_value(self, cfg: KeepaliveValues, setting: Setting) -> float | int | None:
        """What this platform would store for ``setting`` (None: the system default applies)."""
        result = self.plan(cfg, strict=False).result(setting)
        return None if result is None else result.stored

    def detection_bound(self, cfg: KeepaliveValues) -> float:
        """Worst-case seconds from the last inbound byte to a dead idle connection.

        Settings that cannot be set here fall back to the platform's documented defaults.
        """
        idle = self._effective(cfg, "idle")
        interval = self._effective(cfg, "interval")
        count = self._effective(cfg, "count")
        user_timeout = self.stored_value(cfg, "user_timeout")
        if self.user_timeout_replaces_count and user_timeout:
            # Linux tcp_keepalive_timer(): at each probe tick after the first probe, the
            # connection dies once the time since the last inbound segment reaches the user
            # timeout; TCP_KEEPCNT is then ignored. Ticks are at idle + k * interval, k >= 1.
            ticks = max(1, math.ceil(round((user_timeout - idle) / interval, 6)))
            return idle + interval * ticks
        return idle + interval * count

    def _effective(self, cfg: KeepaliveValues, setting: Setting) -> float:
        stored = self.stored_value(cfg, setting)
        if stored is not None:
            return float(stored)
        for source in self.defaults:
            if source.setting == setting and source.documented is not None:
                return float(source.documented)
        return float(getattr(cfg, setting))

    def default_source(self, setting: Setting) -> DefaultSource | None:
        for source in self.defaults:
            if source.setting == setting:
                return source
        return None
