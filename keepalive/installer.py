"""Process-wide keepalive: every outbound TCP connection the process makes gets kernel keepalive,
set before the connection is established, without touching the code that opens it.

    keepalive.install(KeepaliveConfig(idle=60, interval=10, count=5), only=["10.0.0.0/8"])
    keepalive.installed()    # rules, counters, reasons; None when not installed
    keepalive.uninstall()    # every patched attribute back as it was

What is wrapped (each restored exactly by :func:`uninstall`):

- ``socket.socket.connect`` and ``connect_ex``: ``socket.create_connection``, http.client,
  urllib3, requests, redis-py, pika, paramiko, botocore, smtplib..., TLS sockets (an
  ``ssl.SSLSocket`` connects through them), and asyncio's selector event loops
  (``create_connection``, ``open_connection`` and ``sock_connect`` call ``sock.connect()``);
- ``asyncio.proactor_events.BaseProactorEventLoop.sock_connect`` (Windows' default loop
  connects in C), once that module is imported;
- ``uvloop.Loop.create_connection`` once uvloop is imported: uvloop connects in C, so the
  wrapper connects a Python socket itself (configured by the wrapped ``connect``) and hands it
  over with ``sock=``; uvloop's ``sock_connect`` calls ``sock.connect()`` already;
- ``socket.getaddrinfo``, only while a rule matches host names: it remembers which names
  resolved to which addresses, since ``connect()`` only sees the address.

Non-TCP, Unix-domain and listening sockets are never touched; blocking mode, timeouts and
non-blocking connect semantics are left as they are. A failure to configure is counted, logged
on the ``keepalive`` logger, and never fails the connect, unless ``strict=True``.

The rules (patterns, loopback, the application's own values) are pure functions in
:mod:`keepalive._install_rules`; this module is the driver that patches and counts.
``python -m keepalive.installer [options] -- COMMAND`` runs a program with it installed
(:func:`run_command`), through the ``KEEPALIVE_INSTALL`` environment variable and the
``sitecustomize`` in ``keepalive/_sitecustomize``.
"""

from __future__ import annotations

import _socket
import _thread
import errno
import itertools
import os
import socket
import sys

from keepalive._install_rules import (
    APP_SET,
    ENV_VAR,
    InstallSpec,
    Pattern,
    Rule,
    Selector,
    _patterns,
    fill,
    format_env,
    parse_env,
    parse_pattern,
)
from keepalive._record import Record
from keepalive._validate import flag
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, UnsupportedOption
from keepalive.platforms import current
from keepalive.sockets import configure, socket_options

TYPE_CHECKING = False  # typing stays unimported at interpreter start-up (mypy reads it as True)
if TYPE_CHECKING:
    import argparse
    import asyncio
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, TextIO

    from keepalive.platforms import OptionSpec, Setting

__all__ = [
    "ENV_VAR",
    "RUN_DESCRIPTION",
    "RUN_HELP",
    "SITE_DIR",
    "Installation",
    "Pattern",
    "Rule",
    "format_env",
    "install",
    "installed",
    "parse_env",
    "add_run_arguments",
    "install_from_env",
    "parse_pattern",
    "run_command",
    "run_environment",
    "run_from_args",
    "spec_from_args",
    "uninstall",
]

#: The directory ``python -m keepalive run`` puts first on PYTHONPATH: its sitecustomize
#: installs keepalive from ``KEEPALIVE_INSTALL`` in every Python process that inherits both.
SITE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sitecustomize")
"""The directory ``keepalive run`` puts first on a child's PYTHONPATH: its ``sitecustomize``
installs keepalive from the settings in :data:`ENV_VAR`, then runs the program's own."""

_RAW_FAMILY = _socket.socket.family.__get__  # plain ints, without socket.socket's enum wrapping
_RAW_TYPE = _socket.socket.type.__get__
_RAW_PROTO = _socket.socket.proto.__get__
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(getattr(socket, "AF_INET6", -1))
_IP_FAMILIES = frozenset({_AF_INET, _AF_INET6})
_SOCK_STREAM = int(socket.SOCK_STREAM)
_IPPROTO_TCP = int(socket.IPPROTO_TCP)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SO_KEEPALIVE = int(socket.SO_KEEPALIVE)

# A connect() on a socket whose connect is already under way or done: the first call was
# counted (non-blocking code may poll connect_ex until it says EISCONN).
_REPEATED = frozenset(
    getattr(errno, name)
    for name in ("EALREADY", "EISCONN", "WSAEALREADY", "WSAEISCONN")
    if hasattr(errno, name)
)

_CACHE_LIMIT = 4096  # decisions and resolved names kept; past it the cache starts again
_NAMES_PER_ADDRESS = 4
_REASONS_LIMIT = 64  # distinct reasons kept per table; the rest are counted under one
_OTHER_REASONS = "other reasons"


# -- the installation ---------------------------------------------------------------------------


class Installation(Record):
    """What :func:`installed` reports: the settings in force and what they did so far.

    ``configured`` counts connections that got settings (``configured_by_rule`` per rule, in
    order; ``kept`` those among them, or among the skipped ones, where values the application
    had set itself were left alone), ``skipped`` and ``failed`` map a reason to a count.
    ``entry_points`` names what is wrapped now, ``source`` who installed it (``"install()"``
    or ``"KEEPALIVE_INSTALL"``). A connect() repeated on the same socket counts once.
    """

    __slots__ = (
        "configured_by_rule",
        "entry_points",
        "exclude",
        "failed",
        "kept",
        "loopback",
        "override",
        "rules",
        "skipped",
        "source",
        "strict",
    )
    __match_args__ = (
        "rules",
        "exclude",
        "loopback",
        "override",
        "strict",
        "source",
        "entry_points",
        "configured_by_rule",
        "kept",
        "skipped",
        "failed",
    )

    rules: tuple[Rule, ...]
    exclude: tuple[Pattern, ...]
    loopback: bool
    override: bool
    strict: bool
    source: str
    entry_points: tuple[str, ...]
    configured_by_rule: tuple[int, ...]
    kept: int
    skipped: Mapping[str, int]
    failed: Mapping[str, int]

    def __init__(  # noqa: PLR0917 - positional, as the dataclass it stands for
        self,
        rules: tuple[Rule, ...],
        exclude: tuple[Pattern, ...],
        loopback: bool,
        override: bool,
        strict: bool,
        source: str,
        entry_points: tuple[str, ...],
        configured_by_rule: tuple[int, ...],
        kept: int,
        skipped: Mapping[str, int],
        failed: Mapping[str, int],
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "rules", rules)
        setattr_(self, "exclude", exclude)
        setattr_(self, "loopback", loopback)
        setattr_(self, "override", override)
        setattr_(self, "strict", strict)
        setattr_(self, "source", source)
        setattr_(self, "entry_points", entry_points)
        setattr_(self, "configured_by_rule", configured_by_rule)
        setattr_(self, "kept", kept)
        setattr_(self, "skipped", skipped)
        setattr_(self, "failed", failed)

    @property
    def configured(self) -> int:
        return sum(self.configured_by_rule)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def __str__(self) -> str:
        lines = [f"keepalive installed by {self.source}:"]
        for rule, count in zip(self.rules, self.configured_by_rule, strict=True):
            lines.append(f"  rule {rule}: {count} configured")
        if self.exclude:
            lines.append("  exclude " + ", ".join(p.text for p in self.exclude))
        flags = [f"loopback {'included' if self.loopback else 'excluded'}"]
        flags.append("override" if self.override else "the application's own values kept")
        flags.append("strict" if self.strict else "failures never fail a connect")
        lines.append("  " + "; ".join(flags))
        lines.append(f"  kept the application's values on {self.kept}")
        for title, table in (("skipped", self.skipped), ("failed", self.failed)):
            for reason, count in sorted(table.items()):
                lines.append(f"  {title} {count}: {reason}")
        lines.append("  wraps " + ", ".join(self.entry_points))
        return "\n".join(lines)


if TYPE_CHECKING:
    # What a connection matched by one rule gets: (config, its setsockopt calls or None
    # where only configure() can apply it, the bump of the rule's tally, whether to look for
    # the application's own values, and for its user timeout even without keepalive, the bump
    # when some were kept, whether the platform cannot honour it all: strict=False).
    _Target = tuple[
        KeepaliveConfig,
        tuple[tuple[int, int, int], ...] | None,
        Callable[[], object],
        bool,
        bool,
        Callable[[], object],
        bool,
    ]
else:
    _Target = tuple


class _Tally:
    """A counter that threads may bump without a lock: itertools.count's next() is one C call
    (atomic under the GIL), cheaper than taking a lock on every connect."""

    __slots__ = ("_counter", "bump")

    def __init__(self) -> None:
        self._counter = itertools.count()
        self.bump: Callable[[], object] = self._counter.__next__

    @property
    def value(self) -> int:
        return int(repr(self._counter)[6:-1])  # "count(N)": N bumps so far


class _State:
    """One installation: its rules, caches and counters. The wrappers read the module's
    ``_active`` once per call; install() and uninstall() replace it whole."""

    def __init__(self, spec: InstallSpec, source: str) -> None:
        self.spec = spec
        self.source = source
        self.selector = Selector(spec.rules, spec.exclude, spec.loopback)
        strict = spec.strict
        relaxed = tuple(_check_config(rule.cfg, strict) for rule in spec.rules)
        # address (and the names it was resolved from) -> the rule's target, or the bump of
        # the skip reason's tally
        self.decisions: dict[object, _Target | Callable[[], object]] = {}
        self.names: dict[str, tuple[str, ...]] | None = {} if self.selector.uses_names else None
        self.lock = _thread.allocate_lock()  # for what is created or replaced, not for bumps
        self.configured = tuple(_Tally() for _ in spec.rules)
        self.kept = _Tally()
        self.skipped: dict[str, _Tally] = {}
        self.failed: dict[str, _Tally] = {}
        kept_skip = self._bump_both(self.reason(self.skipped, APP_SET))
        platform = current()
        sol_socket, so_keepalive = platform.sol_socket, platform.so_keepalive
        # Options read back to tell the application's own values (those a fresh socket can
        # read back; elsewhere nothing counts as set by the application).
        baseline = _fresh_socket_values(platform.options)
        timing = tuple(
            (name, option, baseline[name])
            for name, option in platform.options.items()
            if name != "user_timeout" and name in baseline
        )
        timeout = platform.options.get("user_timeout")
        timeout_read = None
        if timeout is not None and "user_timeout" in baseline:
            timeout_read = (timeout, baseline["user_timeout"])
        self.targets: tuple[_Target, ...] = tuple(
            (
                rule.cfg,
                None if loose else _setsockopt_calls(rule.cfg),
                tally.bump,
                not spec.override,
                not spec.override and rule.cfg.user_timeout is not None and bool(timeout_read),
                self._bump_both(tally),
                loose,
            )
            for rule, tally, loose in zip(spec.rules, self.configured, relaxed, strict=True)
        )

        def explicit(sock: socket.socket, cfg: KeepaliveConfig) -> dict[str, float]:
            """The settings the application set itself: with SO_KEEPALIVE on, each timing
            option whose value differs from a fresh socket's; a non-default user timeout when
            ``cfg`` sets one. (Timing options without SO_KEEPALIVE have no effect.)"""
            found: dict[str, float] = {}
            if sock.getsockopt(sol_socket, so_keepalive):
                for name, option, default in timing:
                    native = sock.getsockopt(option.level, option.optname)
                    if native != default:
                        found[name] = option.decode(native)
            if cfg.user_timeout is not None and timeout_read is not None:
                option, default = timeout_read
                native = sock.getsockopt(option.level, option.optname)
                if native != default:
                    found["user_timeout"] = option.decode(native)
            return found

        def keep(sock: socket.socket, target: _Target) -> Callable[[], object] | None:
            """Apply ``target`` around the application's own values (None: it set none)."""
            cfg, _calls, _bump, _check, _timeout, kept_bump, loose = target
            found = explicit(sock, cfg)
            if not found:
                return None
            merged, _kept = fill(cfg, found)
            if merged is None:
                return kept_skip
            configure(sock, merged, strict=not loose)
            return kept_bump

        def failure(address: Any, exc: Exception) -> Callable[[], object]:
            reason = f"{type(exc).__name__}: {exc}"
            _log_failure(address, reason)
            return self.reason(self.failed, reason).bump

        decisions, names, decide = self.decisions, self.names, self._decide
        raw_family, raw_type, raw_proto = _RAW_FAMILY, _RAW_TYPE, _RAW_PROTO
        ip_families, stream, tcp = _IP_FAMILIES, _SOCK_STREAM, _IPPROTO_TCP

        # On every connect: a closure over the installation, so that the path to the first
        # setsockopt reads locals rather than attributes (it runs once per connection).
        def prepare(sock: socket.socket, address: Any) -> Callable[[], object] | None:
            """Configure ``sock`` before it connects to ``address``. Returns what counts the
            outcome, to call once the connect has said that it was a first attempt; None for
            what is not ours (not TCP over IP, or an address that connect() refuses itself)."""
            if raw_family(sock) not in ip_families or raw_type(sock) != stream:
                return None
            proto = raw_proto(sock)
            if proto and proto != tcp:
                return None
            try:
                key = address if names is None else (address, names.get(address[0], ()))
                target = decisions.get(key)
            except (TypeError, IndexError, KeyError):  # connect() will say what is wrong
                return None
            if target is None:
                target = decide(key, address)
            if type(target) is not tuple:
                return target  # type: ignore[return-value]  # a skip reason's bump, or None
            cfg, calls, bump, check, check_timeout, _kept_bump, loose = target
            try:
                if check and (sock.getsockopt(sol_socket, so_keepalive) or check_timeout):
                    counted = keep(sock, target)
                    if counted is not None:
                        return counted
                if calls is None:
                    configure(sock, cfg, strict=not loose)
                else:
                    # The kernel layer's plan for this config (keepalive.socket_options), the
                    # calls configure() would make, less its checks: made above already.
                    setsockopt = sock.setsockopt
                    try:
                        if len(calls) == 4:  # unrolled, as configure() does: no user timeout
                            first, second, third, fourth = calls
                            setsockopt(*first)
                            setsockopt(*second)
                            setsockopt(*third)
                            setsockopt(*fourth)
                        else:
                            for call in calls:
                                setsockopt(*call)
                    except OSError:
                        configure(sock, cfg)  # raises, naming the option (or now it works)
            except Exception as exc:  # never the application's problem, unless strict
                failed = failure(address, exc)
                if strict:
                    failed()
                    raise
                return failed
            return bump

        self.prepare = prepare

    def _bump_both(self, tally: _Tally) -> Callable[[], object]:
        kept, other = self.kept.bump, tally.bump

        def bump() -> None:
            kept()
            other()

        return bump

    def reason(self, table: dict[str, _Tally], reason: str) -> _Tally:
        tally = table.get(reason)
        if tally is None:
            with self.lock:
                if reason not in table and len(table) >= _REASONS_LIMIT:
                    reason = _OTHER_REASONS
                tally = table.setdefault(reason, _Tally())
        return tally

    def _decide(self, key: object, address: Any) -> _Target | Callable[[], object] | None:
        if type(address) is not tuple or len(address) < 2:
            return None  # not cached: connect() refuses it
        host, port = address[0], address[1]
        if type(host) is not str or type(port) is not int:
            return None  # not cached: connect() refuses it, or resolves a bytes name itself
        known = () if self.names is None else key[1]  # type: ignore[index]
        chosen = self.selector.select(host, port, known)
        if isinstance(chosen, int):
            decision: _Target | Callable[[], object] = self.targets[chosen]
        else:
            decision = self.reason(self.skipped, chosen).bump
        if len(self.decisions) >= _CACHE_LIMIT:
            self.decisions.clear()
        self.decisions[key] = decision
        return decision

    def remember_names(self, host: object, infos: Iterable[Any]) -> None:
        """Note that ``host`` resolved to the addresses in ``infos`` (getaddrinfo's shape)."""
        names = self.names
        if names is None:
            return
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str) or not host:
            return
        name = host.lower().rstrip(".")
        with self.lock:
            for info in infos:
                try:
                    address = info[4][0]
                except (TypeError, IndexError):
                    continue
                if not isinstance(address, str) or address == host:
                    continue
                known = names.get(address, ())
                if known[:1] == (name,):
                    continue
                if address not in names and len(names) >= _CACHE_LIMIT:
                    names.pop(next(iter(names)))  # the oldest address
                fresh = (name, *(n for n in known if n != name))
                names[address] = fresh[:_NAMES_PER_ADDRESS]

    def snapshot(self) -> Installation:
        with self.lock:
            skipped = {reason: tally.value for reason, tally in self.skipped.items()}
            failed = {reason: tally.value for reason, tally in self.failed.items()}
        spec = self.spec
        return Installation(
            spec.rules,
            spec.exclude,
            spec.loopback,
            spec.override,
            spec.strict,
            self.source,
            tuple(patch.label for patch in _patches),
            tuple(tally.value for tally in self.configured),
            self.kept.value,
            {reason: count for reason, count in skipped.items() if count},
            failed,
        )

    def after_fork(self) -> None:
        self.lock = _thread.allocate_lock()


def _setsockopt_calls(cfg: KeepaliveConfig) -> tuple[tuple[int, int, int], ...] | None:
    try:
        return tuple(socket_options(cfg))
    except UnsupportedOption:  # an ioctl (Windows before 1709): configure() does it
        return None


def _check_config(cfg: KeepaliveConfig, strict: bool) -> bool:
    """Whether ``cfg`` must be applied with ``strict=False`` here. Refuses, now, a config this
    platform cannot take at all (out of its range), or cannot honour in full under strict."""
    try:
        current().plan(cfg, strict=True)
    except UnsupportedOption:
        if strict:
            raise
        current().plan(cfg, strict=False)  # still refuses out-of-range values
        return True
    return False


def _fresh_socket_values(options: Mapping[Setting, OptionSpec]) -> dict[str, int]:
    """What a socket nobody configured reads back, per readable setting: a value differing
    from it was set by the application (on Linux, the netns's sysctl; 0 for the user timeout)."""
    values: dict[str, int] = {}
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return values  # then nothing counts as set by the application
    with probe:
        for name, spec in options.items():
            if not spec.readable:
                continue
            try:
                values[name] = probe.getsockopt(spec.level, spec.optname)
            except OSError:
                continue
    return values


def _log_failure(address: Any, reason: str) -> None:
    import logging  # noqa: PLC0415 - only once something failed

    logging.getLogger("keepalive").warning(
        "keepalive.installer: could not configure the connection to %s:%s: %s",
        address[0],
        address[1],
        reason,
    )


# -- the wrappers -------------------------------------------------------------------------------

_active: _State | None = None
_LOCK = _thread.RLock()


def _original(name: str) -> Callable[..., Any]:
    raise RuntimeError(f"keepalive.installer: {name} called before it was wrapped")


# What each wrapper calls: the attribute as it was resolved when it was wrapped.
_original_connect: Callable[..., Any] = _socket.socket.connect
_original_connect_ex: Callable[..., Any] = _socket.socket.connect_ex
_original_getaddrinfo: Callable[..., Any] = socket.getaddrinfo
_original_uvloop_create_connection: Callable[..., Any] = _original
_original_proactor_sock_connect: Callable[..., Any] = _original


def _connect(self: socket.socket, address: Any, /) -> None:
    state = _active
    if state is None:
        return _original_connect(self, address)  # type: ignore[no-any-return]
    count = state.prepare(self, address)
    if count is None:
        return _original_connect(self, address)  # type: ignore[no-any-return]
    try:
        _original_connect(self, address)
    except OSError as exc:
        if exc.errno not in _REPEATED:
            count()
        raise
    count()
    return None


def _connect_ex(self: socket.socket, address: Any, /) -> int:
    state = _active
    if state is None:
        return _original_connect_ex(self, address)  # type: ignore[no-any-return]
    count = state.prepare(self, address)
    if count is None:
        return _original_connect_ex(self, address)  # type: ignore[no-any-return]
    try:
        result: int = _original_connect_ex(self, address)
    except OSError as exc:  # a name that does not resolve
        if exc.errno not in _REPEATED:
            count()
        raise
    if result not in _REPEATED:
        count()
    return result


def _getaddrinfo(  # noqa: PLR0917 - socket.getaddrinfo's own signature
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[Any]:
    result: list[Any] = _original_getaddrinfo(host, port, family, type, proto, flags)
    state = _active
    if state is not None and state.names is not None:
        state.remember_names(host, result)
    return result


async def _proactor_sock_connect(self: Any, sock: socket.socket, address: Any) -> None:
    state = _active
    count = None if state is None else state.prepare(sock, address)
    if count is None:
        return await _original_proactor_sock_connect(self, sock, address)  # type: ignore[no-any-return]
    try:
        await _original_proactor_sock_connect(self, sock, address)
    except OSError as exc:
        if exc.errno not in _REPEATED:
            count()
        raise
    count()
    return None


async def _uvloop_create_connection(
    self: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    host: Any = None,
    port: Any = None,
    *,
    ssl: Any = None,
    family: int = 0,
    proto: int = 0,
    flags: int = 0,
    sock: Any = None,
    local_addr: Any = None,
    server_hostname: Any = None,
    ssl_handshake_timeout: Any = None,
    ssl_shutdown_timeout: Any = None,
    **more: Any,
) -> Any:
    """uvloop's create_connection, connecting a Python socket first (through the wrapped
    ``connect``, so it is configured before the SYN) when it would connect in C."""
    original = _original_uvloop_create_connection
    ssl_only = (server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
    if (
        _active is None
        or sock is not None
        or more
        or (host is None and port is None)
        or (ssl and server_hostname is None and not host)
        or (not ssl and any(value is not None for value in ssl_only))
    ):  # nothing to do, or an error uvloop reports itself
        return await original(
            self,
            protocol_factory,
            host,
            port,
            ssl=ssl,
            family=family,
            proto=proto,
            flags=flags,
            sock=sock,
            local_addr=local_addr,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            **more,
        )
    connected = await _uvloop_connect(
        self, host, port, family=family, proto=proto, flags=flags, local_addr=local_addr
    )
    if ssl and server_hostname is None:
        server_hostname = host  # what uvloop takes when it connects itself
    try:
        return await original(
            self,
            protocol_factory,
            ssl=ssl,
            sock=connected,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
    except BaseException:
        if connected.fileno() != -1:  # uvloop detaches it once its transport owned the fd
            connected.close()
        raise


async def _uvloop_connect(
    loop: asyncio.AbstractEventLoop,
    host: Any,
    port: Any,
    *,
    family: int,
    proto: int,
    flags: int,
    local_addr: Any,
) -> socket.socket:
    """Connect a non-blocking socket as uvloop's create_connection would: every resolved
    address in turn, bound to ``local_addr`` if given; its errors as uvloop raises them."""
    infos = await loop.getaddrinfo(
        host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
    )
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    local_infos: list[Any] = []
    if local_addr is not None:
        if not isinstance(local_addr, (tuple, list)) or len(local_addr) != 2:
            raise ValueError("local_addr must be a tuple of host and port")
        local_infos = await loop.getaddrinfo(
            *local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
        )
        if not local_infos:
            raise OSError("getaddrinfo() returned empty list for local_addr")
    state = _active
    if state is not None:
        state.remember_names(host, infos)
    exceptions: list[OSError] = []
    for af, _kind, protocol, _name, address in infos:
        sock = socket.socket(af, socket.SOCK_STREAM, protocol)
        try:
            sock.setblocking(False)
            if local_infos and not _bind_any(sock, local_infos, exceptions):
                sock.close()
                continue
            await _connect_nonblocking(loop, sock, address)
        except OSError as exc:
            sock.close()
            exceptions.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not exceptions:
        raise OSError("could not connect to any address")
    model = str(exceptions[0])
    if all(str(exc) == model for exc in exceptions):
        raise exceptions[0]
    raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in exceptions)))


def _bind_any(sock: socket.socket, local_infos: list[Any], exceptions: list[OSError]) -> bool:
    for *_rest, local in local_infos:
        try:
            sock.bind(local)
        except OSError as exc:
            exceptions.append(exc)
            continue
        return True
    return False


async def _connect_nonblocking(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any
) -> None:
    try:
        sock.connect(address)  # the wrapped connect: configured first
    except (BlockingIOError, InterruptedError):
        pass
    else:
        return
    done = loop.create_future()
    fd = sock.fileno()

    def writable() -> None:
        if done.done():
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            done.set_exception(OSError(err, os.strerror(err)))
        else:
            done.set_result(None)

    loop.add_writer(fd, writable)
    try:
        await done
    finally:
        loop.remove_writer(fd)


# -- patching -----------------------------------------------------------------------------------


class _Patch:
    """One attribute replaced by a wrapper, and what was there before (``_MISSING``: only
    inherited, so uninstall deletes ours)."""

    __slots__ = ("label", "name", "ours", "owner", "previous")

    def __init__(self, label: str, owner: Any, name: str, previous: object, ours: object) -> None:
        self.label, self.owner, self.name = label, owner, name
        self.previous, self.ours = previous, ours


_MISSING = object()
_patches: list[_Patch] = []
# (owner id, name) -> our patch, for wrappers left in place under someone else's later patch
# at uninstall: still called through that patch (passing every call straight through while
# nothing is installed), so never wrapped a second time; back in _patches once on top again.
_buried: dict[tuple[int, str], _Patch] = {}


def _wrap(label: str, owner: Any, name: str, ours: Any, original: str) -> None:
    here = owner.__dict__.get(name, _MISSING)
    key = (id(owner), name)
    if here is ours:
        buried = _buried.pop(key, None)
        if buried is not None:  # its other wrapper was taken off: ours is on top again
            _patches.append(buried)
        return
    if key in _buried:
        return
    globals()[original] = getattr(owner, name)  # what a call reaches now, through the MRO
    setattr(owner, name, ours)
    _patches.append(_Patch(label, owner, name, here, ours))


def _unwrap_all() -> None:
    while _patches:
        patch = _patches.pop()
        if patch.owner.__dict__.get(patch.name, _MISSING) is not patch.ours:
            _buried[(id(patch.owner), patch.name)] = patch
            continue
        if patch.previous is _MISSING:
            delattr(patch.owner, patch.name)
        else:
            setattr(patch.owner, patch.name, patch.previous)


def _wrap_module(name: str, module: Any) -> None:
    """Wrap what ``module`` (just imported, or found imported) offers."""
    if name == "uvloop":
        loop_class = getattr(module, "Loop", None)
        if isinstance(loop_class, type):
            _wrap(
                "uvloop.Loop.create_connection",
                loop_class,
                "create_connection",
                _uvloop_create_connection,
                "_original_uvloop_create_connection",
            )
    elif name == "asyncio.proactor_events":
        loop_class = getattr(module, "BaseProactorEventLoop", None)
        if isinstance(loop_class, type):
            _wrap(
                "asyncio BaseProactorEventLoop.sock_connect",
                loop_class,
                "sock_connect",
                _proactor_sock_connect,
                "_original_proactor_sock_connect",
            )


_WATCHED = ("uvloop", "asyncio.proactor_events")


class _ImportWatcher:
    """A meta path finder that wraps uvloop and asyncio's proactor loop when they are
    imported after install(): their loaders run as usual, then the wrap is done."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _WatchingLoader(spec.loader, fullname)
        return spec


class _WatchingLoader:
    def __init__(self, loader: Any, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # Put the real loader back first: nothing of ours stays on the module.
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        with _LOCK:
            if _active is not None:
                _wrap_module(self.name, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


_watcher = _ImportWatcher()


# -- the public API -----------------------------------------------------------------------------


def install(
    cfg: KeepaliveConfig | None = None,
    *,
    only: Iterable[str | Pattern] | str | None = None,
    rules: Iterable[Rule] = (),
    exclude: Iterable[str | Pattern] | str | None = None,
    loopback: bool = False,
    override: bool = False,
    strict: bool = False,
) -> Installation:
    """Give every outbound TCP connection of this process kernel keepalive from now on.

    ``rules`` are tried in order, then ``Rule(cfg, only)``; the first whose patterns match
    the destination wins (``only=None``: every destination). Without ``cfg`` nor ``only``,
    that last rule is only added when there are no ``rules`` (then with the default
    :class:`KeepaliveConfig`). Destinations matching ``exclude``, and loopback ones unless
    ``loopback=True``, are left alone.

    Settings the application set itself are kept (with SO_KEEPALIVE on, a timing option that
    differs from a fresh socket's; a non-zero user timeout), the others filled in;
    ``override=True`` applies the rule's settings whatever was there. A failure to configure
    is counted and logged on the ``keepalive`` logger, and the connect goes ahead; with
    ``strict=True`` it raises from ``connect()`` instead, and a setting this platform cannot
    honour fails here. A config out of this platform's range always fails here.

    Idempotent: installing the same settings again changes nothing (counters included);
    other settings replace the current ones (counters start again), wrapping nothing twice.
    Thread-safe and fork-safe: a child process keeps the installation.
    """
    spec = _spec(
        cfg,
        only=only,
        rules=rules,
        exclude=exclude,
        loopback=loopback,
        override=override,
        strict=strict,
    )
    return _install(spec, "install()")


def _spec(
    cfg: object,
    *,
    only: object,
    rules: object,
    exclude: object,
    loopback: object,
    override: object,
    strict: object,
) -> InstallSpec:
    if cfg is not None and not isinstance(cfg, KeepaliveConfig):
        raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig or None")
    if isinstance(rules, (str, Rule)):
        raise InvalidSettingType("rules", rules, "an iterable of keepalive.installer.Rule")
    try:
        listed = list(rules)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidSettingType(
            "rules", rules, "an iterable of keepalive.installer.Rule"
        ) from None
    for rule in listed:
        if not isinstance(rule, Rule):
            raise InvalidSettingType("rules", rule, "a keepalive.installer.Rule")
    if cfg is not None or only is not None or not listed:
        listed.append(Rule(cfg, only))  # type: ignore[arg-type]
    return InstallSpec(
        tuple(listed),
        _patterns(exclude, "exclude"),
        flag("loopback", loopback),
        flag("override", override),
        flag("strict", strict),
    )


def _install(spec: InstallSpec, source: str) -> Installation:
    global _active  # replaced whole: a wrapper sees the old installation or the new one
    with _LOCK:
        state = _active
        if state is not None and state.spec == spec:
            return state.snapshot()
        state = _State(spec, source)  # validates every config against this platform first
        _wrap("socket.socket.connect", socket.socket, "connect", _connect, "_original_connect")
        _wrap(
            "socket.socket.connect_ex",
            socket.socket,
            "connect_ex",
            _connect_ex,
            "_original_connect_ex",
        )
        if state.names is not None:
            _wrap(
                "socket.getaddrinfo", socket, "getaddrinfo", _getaddrinfo, "_original_getaddrinfo"
            )
        for name in _WATCHED:
            module = sys.modules.get(name)
            if module is not None:
                _wrap_module(name, module)
        if _watcher not in sys.meta_path:
            sys.meta_path.insert(0, _watcher)
        _active = state
        return state.snapshot()


def uninstall() -> bool:
    """Stop configuring new connections and put back every wrapped attribute exactly as it
    was (connections already configured keep their settings). Returns whether keepalive was
    installed. Where another library wrapped one of ours since, its wrapper stays, and ours
    under it passes every call straight through."""
    global _active
    with _LOCK:
        was = _active is not None
        _active = None
        _unwrap_all()
        while _watcher in sys.meta_path:
            sys.meta_path.remove(_watcher)
        return was


def installed() -> Installation | None:
    """The installation in force (rules, counters, reasons), or None."""
    state = _active
    return None if state is None else state.snapshot()


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = _thread.RLock()  # another thread may have held it at the fork
    state = _active
    if state is not None:
        state.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- start-up from the environment ---------------------------------------------------------------


def install_from_env(value: str | None = None) -> Installation | None:
    """Install from ``KEEPALIVE_INSTALL`` (or ``value``); None when it is not set.
    A bad value raises :class:`~keepalive.InvalidSetting`."""
    if value is None:
        value = os.environ.get(ENV_VAR)
        if value is None:
            return None
    return _install(parse_env(value), ENV_VAR)


def _startup() -> None:
    """What the sitecustomize runs: install from the environment, or stop the interpreter with
    a clear message (status 2) before the program starts when the value is bad."""
    value = os.environ.get(ENV_VAR)
    if value is None:
        return
    try:
        install_from_env(value)
    except (ValueError, OSError) as exc:
        _die(f"keepalive: bad {ENV_VAR}={value!r}, the program was not started: {exc}")


def _die(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    finally:
        # SystemExit raised from sitecustomize is a fatal interpreter error (exit 1 and a
        # traceback), and any other exception is printed by site.py as the program goes on.
        os._exit(2)


# -- the runner -----------------------------------------------------------------------------------


RUN_HELP = "run a program with keepalive on every connection it (and its children) opens"
"""The one-line help of ``keepalive run`` (its entry in ``keepalive --help``)."""
RUN_DESCRIPTION = f"""\
Run COMMAND with keepalive installed in it and in every Python process it starts: they
inherit {ENV_VAR} (the settings) and PYTHONPATH (a sitecustomize that installs them, then runs
the program's own sitecustomize, if any). --idle, --interval, --count, --user-timeout and
--only make one rule (every destination without --only), tried after the --rule ones (each in
the {ENV_VAR} format, e.g. "idle=20,count=3,only=*.db.internal:5432"). Loopback
destinations are left alone unless --loopback. See docs/install.md."""
"""The description of ``keepalive run`` in its ``--help``."""

_USAGE = """\
{prog} [--idle S] [--interval S] [--count N] [--user-timeout S] [--only PATTERN ...]
       [--rule SPEC ...] [--exclude PATTERN ...] [--loopback] [--override] [--strict]
       (-- COMMAND [ARG ...] | --print-env)"""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options on ``parser``, and COMMAND (``args.command_line``, everything
    after them; a leading ``--`` is dropped by :func:`run_from_args`)."""
    import argparse  # noqa: PLC0415 - the runner only

    parser.usage = _USAGE.format(prog=parser.prog)
    parser.add_argument("--idle", type=float, metavar="S", help="seconds before the first probe")
    parser.add_argument("--interval", type=float, metavar="S", help="seconds between probes")
    parser.add_argument("--count", type=int, metavar="N", help="unanswered probes to give up")
    parser.add_argument(
        "--user-timeout", type=float, metavar="S", help="seconds sent data may stay unacknowledged"
    )
    parser.add_argument(
        "--only", action="append", metavar="PATTERN", help="destinations for the settings above"
    )
    parser.add_argument(
        "--rule", action="append", default=[], metavar="SPEC", help="a rule, tried first"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN", help="never these"
    )
    parser.add_argument("--loopback", action="store_true", help="configure loopback too")
    parser.add_argument(
        "--override", action="store_true", help="replace values the application set itself"
    )
    parser.add_argument(
        "--strict", action="store_true", help="a failure to configure fails the connect"
    )
    parser.add_argument(
        "--print-env",
        action="store_true",
        help="print the two variables to set (e.g. in a container) instead of running",
    )
    parser.add_argument(
        "command_line", nargs=argparse.REMAINDER, metavar="COMMAND", help="what to run"
    )


def spec_from_args(args: argparse.Namespace) -> InstallSpec:
    """The :class:`InstallSpec` the runner's options describe (validated)."""
    rules: list[Rule] = []
    for text in args.rule:
        try:
            rules.extend(parse_env(text, field="--rule").rules)
        except InvalidSetting as exc:
            if exc.field == "--rule":
                raise
            raise InvalidSetting(f"--rule {text!r}: {exc.field}", exc.value, exc.allowed) from None
    settings = {
        "idle": args.idle,
        "interval": args.interval,
        "count": args.count,
        "user_timeout": args.user_timeout,
    }
    given = {name: value for name, value in settings.items() if value is not None}
    cfg = KeepaliveConfig(**given) if given else None
    return _spec(
        cfg,
        only=args.only,
        rules=rules,
        exclude=args.exclude,
        loopback=args.loopback,
        override=args.override,
        strict=args.strict,
    )


def run_environment(spec: InstallSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) with ``KEEPALIVE_INSTALL`` set for ``spec`` and
    :data:`SITE_DIR` first on ``PYTHONPATH`` (once)."""
    env = dict(os.environ if environ is None else environ)
    env[ENV_VAR] = format_env(spec)
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    paths = [path for path in paths if os.path.abspath(path) != SITE_DIR]
    env["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *paths])
    return env


def run_command(
    argv: Sequence[str], *, prog: str = "python -m keepalive run", spawn: bool | None = None
) -> int:
    """``keepalive run [options] -- COMMAND ...``: run COMMAND with keepalive installed.

    Replaces this process with COMMAND where the OS can (POSIX ``exec``: same pid, signals
    go straight to it); elsewhere, or with ``spawn=True``, runs it as a child and returns
    its exit status. Returns 2 for bad options (message on stderr), 127 when COMMAND cannot
    be found, 126 when it cannot be run.
    """
    import argparse  # noqa: PLC0415 - the runner only

    parser = argparse.ArgumentParser(prog=prog, description=RUN_DESCRIPTION)
    add_run_arguments(parser)
    arguments = list(argv)
    # Options end at the first "--" whatever follows (argparse would read a COMMAND's own
    # options as ours when COMMAND comes without "--").
    split = arguments.index("--") if "--" in arguments else len(arguments)
    try:
        args = parser.parse_args(arguments[:split])
    except SystemExit as exc:  # argparse: 2 for bad options, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    if args.command_line:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{prog}: error: put '--' before the command\n")
        return 2
    args.command_line = arguments[split:]
    return run_from_args(args, prog=prog, spawn=spawn)


def run_from_args(
    args: argparse.Namespace,
    *,
    prog: str = "keepalive run",
    spawn: bool | None = None,
    out: TextIO | None = None,
) -> int:
    """:func:`run_command` for options parsed by a parser :func:`add_run_arguments` set up
    (``keepalive run`` in the command-line interface); ``--print-env`` writes to ``out``."""
    try:
        spec = spec_from_args(args)
        _State(spec, "check")  # what the child would refuse at start-up, refused here
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return 2
    env = run_environment(spec)
    stream = sys.stdout if out is None else out
    if args.print_env:
        import shlex  # noqa: PLC0415

        for name in (ENV_VAR, "PYTHONPATH"):
            stream.write(f"{name}={shlex.quote(env[name])}\n")
        stream.flush()
        return 0
    command = list(args.command_line)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        sys.stderr.write(f"{prog}: error: give the command after '--'\n")
        return 2
    if spawn is None:
        spawn = os.name != "posix"
    stream.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if not spawn:
            os.execvpe(command[0], command, env)
        import subprocess  # noqa: PLC0415

        return subprocess.call(command, env=env)
    except FileNotFoundError as exc:
        sys.stderr.write(f"{prog}: cannot run {command[0]!r}: {exc.strerror}\n")
        return 127
    except OSError as exc:
        sys.stderr.write(f"{prog}: cannot run {command[0]!r}: {exc.strerror or exc}\n")
        return 126


if __name__ == "__main__":
    raise SystemExit(run_command(sys.argv[1:], prog="python -m keepalive.installer"))
