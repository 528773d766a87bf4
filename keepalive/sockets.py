"""Carry out platform plans on real sockets: `configure`, `inspect`, `socket_options`.

The only module that calls ``setsockopt``/``getsockopt``/``ioctl`` for kernel keepalive.
Everything is validated (the config, the platform's ranges, the socket's kind) before the
first option is set; if the OS refuses an option midway, the options already changed are put
back as they were and the error names the option that failed. In the steady state (a config
already applied, see `_steady`) the kernel checks the socket's kind: the plan's first call is
a TCP-level option, which a socket that is not TCP refuses before anything changed.
"""

from __future__ import annotations

import _socket
import os
import socket

from keepalive._record import Record
from keepalive._validate import INT_MAX, flag
from keepalive.config import KeepaliveConfig
from keepalive.errors import (
    InvalidSettingType,
    InvalidSocket,
    SocketOptionError,
    UnsupportedOption,
)
from keepalive.platforms import (
    SETTINGS,
    IoctlCall,
    Plan,
    Platform,
    SetOption,
    SettingOutcome,
    SettingStatus,
    current,
)

# `typing` stays unimported on configure()'s first use (mypy reads TYPE_CHECKING as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import enum
    from collections.abc import Iterator
    from typing import Any, Protocol, cast

    from keepalive.platforms import Setting

    class SocketLike(Protocol):
        """What `configure` needs from a socket object (socket.socket, ssl.SSLSocket,
        asyncio's TransportSocket all qualify)."""

        family: Any
        type: Any

        def fileno(self) -> int: ...
        def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...
        def getsockopt(self, level: int, optname: int, /) -> int: ...

else:

    def cast(kind, value):  # typing.cast
        return value


__all__ = ["ConfigureResult", "SocketKeepalive", "configure", "inspect", "socket_options"]


class ConfigureResult(Record):
    """What `configure` did: one :class:`SettingOutcome` per requested setting."""

    # A frozen dataclass in behaviour, written on keepalive._record.Record (no dataclasses
    # import on configure()'s first use).
    __slots__ = ("platform", "results")
    __match_args__ = ("platform", "results")

    platform: str
    results: tuple[SettingOutcome, ...]

    def __init__(self, platform: str, results: tuple[SettingOutcome, ...]) -> None:
        object.__setattr__(self, "platform", platform)
        object.__setattr__(self, "results", results)

    def __getitem__(self, setting: str) -> SettingOutcome:
        for item in self.results:
            if item.setting == setting:
                return item
        raise KeyError(setting)

    def __iter__(self) -> Iterator[SettingOutcome]:
        return iter(self.results)

    def get(self, setting: str) -> SettingOutcome | None:
        return next((item for item in self.results if item.setting == setting), None)

    @property
    def idle(self) -> SettingOutcome | None:
        return self.get("idle")

    @property
    def interval(self) -> SettingOutcome | None:
        return self.get("interval")

    @property
    def count(self) -> SettingOutcome | None:
        return self.get("count")

    @property
    def user_timeout(self) -> SettingOutcome | None:
        return self.get("user_timeout")

    @property
    def fully_honoured(self) -> bool:
        """True when every setting is stored exactly as requested."""
        return all(item.status is SettingStatus.HONOURED for item in self.results)

    @property
    def unsupported(self) -> tuple[SettingOutcome, ...]:
        return tuple(item for item in self.results if item.status is SettingStatus.UNSUPPORTED)

    @property
    def approximated(self) -> tuple[SettingOutcome, ...]:
        return tuple(item for item in self.results if item.status is SettingStatus.APPROXIMATED)

    def __str__(self) -> str:
        lines = [f"keepalive on {self.platform}:"]
        for item in self.results:
            stored = "-" if item.stored is None else f"{item.stored:g}"
            line = f"  {item.setting:<12} requested {item.requested:g}, stored {stored}"
            line += f" ({item.status}{', ' + item.option if item.option else ''})"
            if item.detail and item.status is not SettingStatus.HONOURED:
                line += f": {item.detail}"
            lines.append(line)
        return "\n".join(lines)


class SocketKeepalive(Record):
    """Effective keepalive values of one socket, as the kernel reports them.

    ``source`` says per setting where the value comes from: ``"socket"`` (read back from the
    kernel; on Linux that is the system default until the socket sets its own value),
    ``"system default"`` (this OS cannot read it back per socket: the value shown is the
    system's, and one set on this socket, e.g. through Windows' SIO_KEEPALIVE_VALS, does not
    show) or ``"none"`` (no such limit is in force, e.g. no user timeout).
    """

    __slots__ = ("count", "enabled", "idle", "interval", "platform", "source", "user_timeout")
    __match_args__ = (
        "platform",
        "enabled",
        "idle",
        "interval",
        "count",
        "user_timeout",
        "source",
    )

    platform: str
    enabled: bool
    idle: float | None
    interval: float | None
    count: int | None
    user_timeout: float | None
    source: dict[str, str]

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it replaces
        self,
        platform: str,
        enabled: bool,
        idle: float | None,
        interval: float | None,
        count: int | None,
        user_timeout: float | None,
        source: dict[str, str],
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "platform", platform)
        setattr_(self, "enabled", enabled)
        setattr_(self, "idle", idle)
        setattr_(self, "interval", interval)
        setattr_(self, "count", count)
        setattr_(self, "user_timeout", user_timeout)
        setattr_(self, "source", source)

    @property
    def detection_bound(self) -> float | None:
        """``idle + interval * count`` when keepalive is on and all three are known."""
        if not self.enabled or self.idle is None or self.interval is None or self.count is None:
            return None
        return self.idle + self.interval * self.count


# -- socket checks ---------------------------------------------------------------------------


class _Borrowed:
    """A socket object built on a raw fd for the length of one call, detached afterwards so
    the caller's descriptor is never closed (nor left in another blocking mode)."""

    def __init__(self, fd: object) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int) or not 0 <= fd <= INT_MAX:
            raise InvalidSocket(f"{fd!r} is not an open file descriptor")
        try:
            blocking = os.get_blocking(fd)
        except OSError as exc:
            raise InvalidSocket(f"file descriptor {fd} is not open: {exc}") from exc
        try:
            self.sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise InvalidSocket(f"file descriptor {fd} is not a socket: {exc}") from exc
        finally:
            # socket.socket() makes the fd non-blocking when a default timeout is set.
            if os.get_blocking(fd) != blocking:
                os.set_blocking(fd, blocking)

    def release(self) -> None:
        self.sock.detach()


def _resolve(sock: object) -> tuple[SocketLike, _Borrowed | None]:
    """The object to call socket methods on, and a borrowed wrapper to release (or None)."""
    if isinstance(sock, bool):
        raise InvalidSocket(f"expected a socket or a file descriptor, got {sock!r}")
    if isinstance(sock, int):
        borrowed = _Borrowed(sock)
        return cast("SocketLike", borrowed.sock), borrowed
    fileno = getattr(sock, "fileno", None)
    if not callable(fileno):
        raise InvalidSocket(
            f"expected a socket (anything with fileno()) or a file descriptor, got "
            f"{type(sock).__name__}"
        )
    if isinstance(sock, _socket.socket) or all(
        hasattr(type(sock), name) for name in ("setsockopt", "getsockopt", "family", "type")
    ):
        return cast("SocketLike", sock), None  # checked by duck typing above
    try:
        fd = fileno()
    except (OSError, ValueError) as exc:  # e.g. a closed file object
        raise InvalidSocket(f"{type(sock).__name__} is closed: {exc}") from exc
    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
        raise InvalidSocket(f"{type(sock).__name__} is closed (fileno() = {fd!r})")
    borrowed = _Borrowed(fd)
    return cast("SocketLike", borrowed.sock), borrowed


_RAW_FAMILY = _socket.socket.family.__get__
_RAW_TYPE = _socket.socket.type.__get__
_RAW_PROTO = _socket.socket.proto.__get__


def _check_tcp(sock: SocketLike) -> tuple[int, int]:
    """Refuse anything but an open TCP socket; return (family, protocol) for caching."""
    try:
        fd = sock.fileno()
    except OSError as exc:  # e.g. asyncio's TransportSocket after close
        raise InvalidSocket(f"the socket is closed: {exc}") from exc
    if fd < 0:
        raise InvalidSocket("the socket is closed")
    if isinstance(sock, _socket.socket):  # plain ints, skipping socket.socket's enum wrapping
        family, kind = _RAW_FAMILY(sock), _RAW_TYPE(sock)
    else:
        family, kind = sock.family, sock.type
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise InvalidSocket(
            f"keepalive applies to TCP sockets, not {_name(family, socket.AddressFamily)} sockets"
        )
    if kind != socket.SOCK_STREAM:
        raise InvalidSocket(
            f"keepalive applies to TCP (SOCK_STREAM) sockets, not {_name(kind, socket.SocketKind)}"
        )
    proto = _RAW_PROTO(sock) if isinstance(sock, _socket.socket) else getattr(sock, "proto", 0)
    return int(family), int(proto or 0)


def _name(value: object, kind: type[enum.IntEnum]) -> str:
    try:
        return kind(value).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return str(value)


# -- configure --------------------------------------------------------------------------------

_NO_ARGUMENT: Any = object()  # see _steady


def _make_config(cfg: object, overrides: dict[str, float | int | None]) -> KeepaliveConfig:
    if cfg is None:
        return KeepaliveConfig(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    if not isinstance(cfg, KeepaliveConfig):
        raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig (or keywords)")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return cfg.__replace__(**changes) if changes else cfg


def configure(
    sock: object,
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
    platform: Platform | None = None,
) -> ConfigureResult:
    """Turn on kernel keepalive on ``sock`` and tune it; return what was applied.

    ``sock`` is anything with ``fileno()`` (a socket, an ``ssl.SSLSocket``, an asyncio
    transport's ``get_extra_info("socket")``) or a raw file descriptor. Give a
    :class:`KeepaliveConfig`, keywords (the others take the config's defaults), or both
    (keywords override the config's fields).

    With ``strict=True`` (default) a setting this platform cannot honour raises
    :class:`~keepalive.UnsupportedOption` before anything is changed; with ``strict=False``
    the rest is applied and the result reports it. Values the OS stores in coarser units are
    rounded up (never to 0) and reported as approximated. ``platform`` overrides the running
    platform's description (for tests).
    """
    if type(cfg) is KeepaliveConfig and idle is interval is count is user_timeout is None:
        config = cfg
    else:
        config = _make_config(
            cfg,
            {"idle": idle, "interval": interval, "count": count, "user_timeout": user_timeout},
        )
    plan, applied = _plan(_platform(platform), config, flag("strict", strict))
    view, borrowed = _resolve(sock)
    try:
        family, proto = _check_tcp(view)
        _apply(view, plan, (family, proto))
    finally:
        if borrowed is not None:
            borrowed.release()
    if (
        config is cfg
        and strict is True
        and platform is None
        and isinstance(sock, _socket.socket)  # proven by the kernel, not by a fake
        and plan.setsockopt_args is not None
    ):
        _remember(config, plan, applied, family, proto)
    return applied


# keepalive.configure as called: `configure` above, with a fast path in front. The steady
# state, one config object reused for every connection and no keywords, costs little more than
# the bare setsockopt calls: the entry holds the (level, optname, value) tuples of the config's
# plan, already accepted by the kernel on a TCP socket, and its result. Nothing checks the
# socket's kind first: the plan's first call is a TCP-level option (Platform.tcp_options_first;
# SO_KEEPALIVE comes last), which a socket that is not TCP, or anything without setsockopt,
# refuses before anything changed; the checked path then says why.
#
# The keywords are plain parameters with defaults, tested one by one: CPython specialises calls
# to such a function (3.11+), not to one with keyword-only parameters or **kwargs, which costs
# more than the tests (2-3 % of the four calls here). `_more` catches a third positional
# argument, which configure() refuses. Plans of four and five calls have an entry each,
# unrolled (a loop, or a test for a fifth call, costs 1-2 % more).
def _steady(  # noqa: PLR0917 - configure()'s parameters, see above
    sock: object,
    cfg: KeepaliveConfig | None = None,
    _more: object = _NO_ARGUMENT,
    strict: bool = True,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
    platform: Platform | None = None,
) -> ConfigureResult:
    if (
        idle is not None
        or interval is not None
        or count is not None
        or user_timeout is not None
        or platform is not None
        or strict is not True
        or _more is not _NO_ARGUMENT
    ):
        return _with_keywords(
            sock, cfg, _more, strict, idle, interval, count, user_timeout, platform
        )
    config, first, second, third, fourth, applied = _fast4
    if cfg is config:
        try:
            setsockopt = sock.setsockopt  # type: ignore[attr-defined]
            setsockopt(*first)
        except (AttributeError, TypeError, OSError):
            return _configure(sock, cfg)  # nothing changed: the checked path says why
        try:
            setsockopt(*second)
            setsockopt(*third)
            setsockopt(*fourth)
        except OSError:
            _fast_failed(sock, cfg, changed=True)
        return applied
    config, first, second, third, fourth, fifth, applied = _fast5
    if cfg is config:
        try:
            setsockopt = sock.setsockopt  # type: ignore[attr-defined]
            setsockopt(*first)
        except (AttributeError, TypeError, OSError):
            return _configure(sock, cfg)
        try:
            setsockopt(*second)
            setsockopt(*third)
            setsockopt(*fourth)
            setsockopt(*fifth)
        except OSError:
            _fast_failed(sock, cfg, changed=True)
        return applied
    if cfg is _checked[0]:
        return _steady_checked(sock, cfg)
    return _configure(sock, cfg)


def _with_keywords(  # noqa: PLR0917 - configure()'s parameters
    sock: object,
    cfg: KeepaliveConfig | None,
    more: object,
    strict: bool,
    idle: float | None,
    interval: float | None,
    count: int | None,
    user_timeout: float | None,
    platform: Platform | None,
) -> ConfigureResult:
    """configure() with its keywords, or the TypeError it raises for a third positional
    argument (the keywords that differ from their defaults are passed on with it)."""
    keywords = {
        "strict": strict,
        "idle": idle,
        "interval": interval,
        "count": count,
        "user_timeout": user_timeout,
        "platform": platform,
    }
    if more is not _NO_ARGUMENT:
        given = {name: value for name, value in keywords.items() if value is not _DEFAULTS[name]}
        refuse: Any = _configure
        refuse(sock, cfg, more, **given)  # raises: configure() takes 1 to 2 positional arguments
    return _configure(sock, cfg, **keywords)  # type: ignore[arg-type]


_DEFAULTS: dict[str, object] = {
    "strict": True,
    "idle": None,
    "interval": None,
    "count": None,
    "user_timeout": None,
    "platform": None,
}


def _steady_checked(sock: object, cfg: KeepaliveConfig | None) -> ConfigureResult:
    """The steady state of a plan that starts with SO_KEEPALIVE (Windows, Solaris, ...): the
    socket's kind is checked first, as the plan was proven on a TCP socket of that family and
    protocol."""
    config, proto, family, calls, applied = _checked
    if (
        cfg is config
        and type(sock) is _SOCKET
        and sock.proto == proto
        and _RAW_FAMILY(sock) == family
        and _RAW_TYPE(sock) == _SOCK_STREAM
    ):
        setsockopt = sock.setsockopt
        try:
            for call in calls:
                setsockopt(*call)
        except OSError:
            _fast_failed(sock, cfg, changed=False)
        return applied
    return _configure(sock, cfg)


_configure = configure
if not TYPE_CHECKING:  # type checkers keep configure()'s own signature
    # keepalive.configure is _steady; help(), inspect.signature() and typing.get_type_hints()
    # show configure()'s signature and documentation, and argument errors name configure()
    # (functools.update_wrapper, without importing functools).
    for _name_ in ("__module__", "__name__", "__qualname__", "__doc__", "__annotations__"):
        setattr(_steady, _name_, getattr(_configure, _name_))
    del _name_
    _steady.__wrapped__ = _configure
    configure = _steady


if TYPE_CHECKING:
    _Call = tuple[int, int, int]
    _Fast4 = tuple[object, _Call, _Call, _Call, _Call, ConfigureResult]
    _Fast5 = tuple[object, _Call, _Call, _Call, _Call, _Call, ConfigureResult]
    _Checked = tuple[object, int, int, tuple[_Call, ...], ConfigureResult]

# The steady-state entries: the config, its plan's setsockopt arguments and its result, of the
# last configure() call that could take the fast path (a socket.socket, a config object, no
# keywords), one entry per kind of plan. Each is one tuple, replaced whole, so that a thread
# never sees the arguments of one call with the result of another.
_NO_CALL = (0, 0, 0)
_fast4: _Fast4 = (object(), _NO_CALL, _NO_CALL, _NO_CALL, _NO_CALL, ConfigureResult("", ()))
_fast5: _Fast5 = (
    object(),
    _NO_CALL,
    _NO_CALL,
    _NO_CALL,
    _NO_CALL,
    _NO_CALL,
    ConfigureResult("", ()),
)
#: Plans whose first call is not a TCP-level option, or of another length: (config, proto,
#: family, arguments, result), for sockets of the family and protocol the plan was proven on.
_checked: _Checked = (object(), -1, -1, (), ConfigureResult("", ()))
_SOCKET = socket.socket
_SOCK_STREAM = int(socket.SOCK_STREAM)


def _remember(
    cfg: KeepaliveConfig, plan: Plan, applied: ConfigureResult, family: int, proto: int
) -> None:
    """Keep ``cfg``'s plan, just accepted by the kernel on a TCP socket, for the steady state."""
    global _fast4, _fast5, _checked  # each replaced whole: readers see the old or the new one
    calls = plan.setsockopt_args
    if calls is None:
        return
    if calls[0][0] == current().ipproto_tcp:  # the kernel checks the socket's kind
        if len(calls) == 4:
            first, second, third, fourth = calls
            _fast4 = (cfg, first, second, third, fourth, applied)
            return
        if len(calls) == 5:
            first, second, third, fourth, fifth = calls
            _fast5 = (cfg, first, second, third, fourth, fifth, applied)
            return
    _checked = (cfg, proto, family, calls, applied)


def _fast_failed(sock: object, cfg: KeepaliveConfig | None, *, changed: bool) -> None:
    """A steady-state call failed on this socket: say why, as the checked path would.

    ``changed``: an earlier call of the plan was accepted. The calls are made without reading
    the options first, so those are not restored, and the error says so. A socket closed
    meanwhile is reported as closed.
    """
    view = cast("SocketLike", sock)
    try:
        closed = view.fileno() < 0
    except OSError:  # e.g. asyncio's TransportSocket after close
        closed = True
    if closed:
        raise InvalidSocket("the socket is closed")
    plan, _applied = _plan(current(), cast("KeepaliveConfig", cfg), True)
    # Raises SocketOptionError naming the option (unless it now passes).
    _apply_fast(view, plan, changed=changed)


def _platform(platform: object) -> Platform:
    if platform is None:
        return current()
    if not isinstance(platform, Platform):
        raise InvalidSettingType("platform", platform, "a keepalive.Platform or None")
    return platform


def _plan(target: Platform, config: KeepaliveConfig, strict: bool) -> tuple[Plan, ConfigureResult]:
    key = (target, config, strict)
    found = _PLANS.get(key)
    if found is None:
        plan = target.plan(config, strict=strict)
        found = plan, ConfigureResult(plan.platform, plan.results)
        if len(_PLANS) >= _PLANS_LIMIT:
            _PLANS.clear()
        _PLANS[key] = found
    return found


# Plans by (platform, config, strict); functools.lru_cache would do, but functools is not
# loaded yet on every Python (3.10, 3.13) and costs more to import than this dictionary.
_PLANS: dict[tuple[Platform, KeepaliveConfig, bool], tuple[Plan, ConfigureResult]] = {}
_PLANS_LIMIT = 256


# Plans whose every operation the kernel has already accepted on a socket of the same kind.
# The kernel checks these options against the option and value only (not the connection's
# state), so a plan that worked once works again; it is then applied without first reading
# each option back for a possible rollback, which would double the system calls.
_PROVEN: set[tuple[Plan, int, int]] = set()
_PROVEN_LIMIT = 1024


def _apply(sock: SocketLike, plan: Plan, kind: tuple[int, int]) -> None:
    if (plan, *kind) in _PROVEN:
        _apply_fast(sock, plan)
        return
    previous: list[tuple[SetOption, int | None]] = []
    ioctl_done = False  # an ioctl can be neither read back nor undone
    for operation in plan.operations:
        try:
            if isinstance(operation, SetOption):
                before = _read_quietly(sock, operation)
                sock.setsockopt(operation.level, operation.optname, operation.value)
                previous.append((operation, before))
            else:
                _ioctl(sock, operation)
                ioctl_done = True
        except OSError as exc:
            restored = _restore(sock, previous) and not ioctl_done
            raise SocketOptionError(operation.name, exc, restored=restored) from exc
    if len(_PROVEN) >= _PROVEN_LIMIT:
        _PROVEN.clear()
    _PROVEN.add((plan, *kind))


def _apply_fast(sock: SocketLike, plan: Plan, *, changed: bool = False) -> None:
    """Apply a proven plan without reading the options first; ``changed``: the socket was
    already changed by an earlier attempt (nothing can be restored then)."""
    index = 0
    try:
        if plan.setsockopt_args is not None:
            setsockopt = sock.setsockopt
            for index, args in enumerate(plan.setsockopt_args):  # noqa: B007 - used on failure
                setsockopt(*args)
            return
        for index, operation in enumerate(plan.operations):  # noqa: B007
            if isinstance(operation, SetOption):
                sock.setsockopt(operation.level, operation.optname, operation.value)
            else:
                _ioctl(sock, operation)
    except OSError as exc:
        # Only a socket-specific failure gets here (it was closed meanwhile, or a protocol
        # variant refuses a proven option); the earlier values were not read, so say so.
        failed = plan.operations[index]
        raise SocketOptionError(failed.name, exc, restored=index == 0 and not changed) from exc


def _ioctl(sock: SocketLike, call: IoctlCall) -> None:
    ioctl = getattr(sock, "ioctl", None)
    if ioctl is None:
        raise OSError(0, f"{call.name} needs sock.ioctl(), which this socket object lacks")
    ioctl(call.control, call.value)


def _read_quietly(sock: SocketLike, option: SetOption) -> int | None:
    try:
        return sock.getsockopt(option.level, option.optname)
    except OSError:
        return None  # write-only option: cannot be restored, nothing to compare either


def _restore(sock: SocketLike, applied: list[tuple[SetOption, int | None]]) -> bool:
    ok = True
    for operation, before in reversed(applied):
        if before is None:
            ok = False
            continue
        try:
            sock.setsockopt(operation.level, operation.optname, before)
        except OSError:
            ok = False
    return ok


# -- inspect ----------------------------------------------------------------------------------


def inspect(sock: object, *, platform: Platform | None = None) -> SocketKeepalive:
    """The keepalive values in force on ``sock``, read back from the kernel.

    Where this OS cannot read a value back per socket (Windows before 1709, NetBSD), the
    system default is reported and ``source`` says so.
    """
    target = _platform(platform)
    view, borrowed = _resolve(sock)
    try:
        _check_tcp(view)
        return _read_state(view, target)
    finally:
        if borrowed is not None:
            borrowed.release()


def _read_state(sock: SocketLike, target: Platform) -> SocketKeepalive:
    try:
        enabled = bool(sock.getsockopt(target.sol_socket, target.so_keepalive))
    except OSError as exc:
        raise SocketOptionError("SO_KEEPALIVE", exc, action="read") from exc
    values: dict[str, float | int | None] = {}
    source: dict[str, str] = {}
    defaults = None
    from keepalive.system import system_defaults  # noqa: PLC0415 - keep configure()'s path lean

    for setting in SETTINGS:
        spec = target.options.get(setting)
        if spec is not None and spec.readable:
            try:
                native = sock.getsockopt(spec.level, spec.optname)
            except OSError as exc:
                raise SocketOptionError(spec.name, exc, action="read") from exc
            if setting == "user_timeout" and native == 0:
                values[setting], source[setting] = None, "none"
            else:
                values[setting], source[setting] = spec.decode(native), "socket"
            continue
        if defaults is None:
            defaults = system_defaults(platform=target)
        values[setting] = getattr(defaults, setting)
        # Not readable per socket here: a value set on this socket would not show.
        source[setting] = "system default" if values[setting] is not None else "none"
    return SocketKeepalive(
        platform=target.name,
        enabled=enabled,
        idle=_float(values["idle"]),
        interval=_float(values["interval"]),
        count=None if values["count"] is None else int(values["count"]),
        user_timeout=_float(values["user_timeout"]),
        source=source,
    )


def _float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


# -- socket_options ---------------------------------------------------------------------------


def socket_options(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    idle: float | None = None,
    interval: float | None = None,
    count: int | None = None,
    user_timeout: float | None = None,
    platform: Platform | None = None,
) -> list[tuple[int, int, int]]:
    """``[(level, optname, value), ...]`` that apply ``cfg`` with plain ``setsockopt`` calls.

    The shape urllib3's and httpcore's ``socket_options`` take, in the order configure()
    sets them: the TCP options first and SO_KEEPALIVE last where the platform allows it
    (:attr:`Platform.tcp_options_first`), SO_KEEPALIVE first elsewhere. Where this platform
    needs an ioctl (Windows before 1709), raises
    :class:`~keepalive.UnsupportedOption`: call :func:`configure` on the socket instead.
    """
    config = _make_config(
        cfg,
        {"idle": idle, "interval": interval, "count": count, "user_timeout": user_timeout},
    )
    target = _platform(platform)
    plan, _applied = _plan(target, config, flag("strict", strict))
    options: list[tuple[int, int, int]] = []
    for operation in plan.operations:
        if isinstance(operation, IoctlCall):
            settings: list[Setting] = ["idle", "interval"]
            raise UnsupportedOption(
                "/".join(settings),
                target.name,
                f"it needs the {operation.name} ioctl, which a (level, option, value) list "
                "cannot carry; call keepalive.configure() on the socket instead",
            )
        options.append((operation.level, operation.optname, operation.value))
    return options
