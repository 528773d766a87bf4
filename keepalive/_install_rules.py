"""The rules of process-wide keepalive (:mod:`keepalive.installer`), as pure functions.

Which outbound connections get which settings (destination patterns, CIDRs, ports, loopback
excluded unless asked), what to keep of the values an application set itself, and the
``KEEPALIVE_INSTALL`` environment format (parser, validator and formatter). Nothing here reads
the clock, touches a socket or patches anything: :mod:`keepalive.installer` is the driver.

Destination patterns (``only=`` and ``exclude=``)::

    *                    every destination
    db.internal          a host name (as the application resolved it), case-insensitive
    *.internal           a host-name glob: * and ? (``*`` also matches dots)
    10.0.0.5             an address; 10.0.0.0/8, fd00::/8 a network
    [2001:db8::1]        an IPv6 address or network in brackets, needed before a port
    HOST:5432            any of the above, then a port ...
    HOST:8000-8999       ... or a range of ports
    *:5432               every destination on port 5432
"""

from __future__ import annotations

from keepalive._record import Record
from keepalive._validate import PORT_MAX
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType

TYPE_CHECKING = False  # typing stays unimported at interpreter start-up (mypy reads it as True)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

    Address = IPv4Address | IPv6Address
    Network = IPv4Network | IPv6Network

__all__ = [
    "ENV_VAR",
    "SETTING_KEYS",
    "InstallSpec",
    "Pattern",
    "Rule",
    "Selector",
    "fill",
    "format_env",
    "parse_env",
    "parse_ip",
    "parse_pattern",
]

#: The environment variable read at interpreter start-up (see :func:`parse_env`).
ENV_VAR = "KEEPALIVE_INSTALL"
"""The environment variable whose rules `keepalive run` and the site hook install at start-up."""

#: The settings a rule carries, in the order KeepaliveConfig takes them.
SETTING_KEYS = ("idle", "interval", "count", "user_timeout")

# Skip reasons, as counted by keepalive.installed().
LOOPBACK = "loopback destination"
EXCLUDED = "excluded destination"
NO_RULE = "no rule matched"
APP_SET = "set by the application"

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._*?")


# -- patterns ----------------------------------------------------------------------------------


class Pattern(Record):
    """One destination pattern, parsed (see the module docstring for the syntax)."""

    __slots__ = ("glob", "high", "low", "network", "text")
    __match_args__ = ("text", "glob", "network", "low", "high")

    text: str
    glob: str | None  # a lower-case host name or glob; None with a network or for "*"
    network: Network | None
    low: int  # ports low..high (1..65535 for any port)
    high: int

    def __init__(
        self, text: str, glob: str | None, network: Network | None, low: int, high: int
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "text", text)
        setattr_(self, "glob", glob)
        setattr_(self, "network", network)
        setattr_(self, "low", low)
        setattr_(self, "high", high)

    @property
    def uses_names(self) -> bool:
        """True when matching needs the host name the application resolved."""
        return self.glob is not None

    def matches(self, ip: Address | None, names: tuple[str, ...], port: int) -> bool:
        """Whether a connection to ``ip`` (None: only a name is known) and ``port``, resolved
        from ``names`` (lower case, no trailing dot), matches."""
        if not self.low <= port <= self.high:
            return False
        if self.network is not None:
            return ip is not None and _in_network(ip, self.network)
        if self.glob is None:
            return True
        if "*" not in self.glob and "?" not in self.glob:
            return self.glob in names
        from fnmatch import fnmatchcase  # noqa: PLC0415 - only for glob patterns

        return any(fnmatchcase(name, self.glob) for name in names)

    def __str__(self) -> str:
        return self.text


def _in_network(ip: Address, network: Network) -> bool:
    if ip.version == network.version:
        return ip in network
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    return mapped is not None and mapped in network


def parse_pattern(text: object, *, field: str = "only") -> Pattern:
    """A :class:`Pattern` from its text; :class:`InvalidSetting` naming ``field`` if malformed."""
    if not isinstance(text, str):
        raise InvalidSettingType(field, text, "a destination pattern (str)")
    stripped = text.strip()
    allowed = "a destination pattern: *, a host name or glob, an address or network, :PORT"
    if not stripped:
        raise InvalidSetting(field, text, allowed, hint="empty pattern")
    host, ports = _split_port(stripped, field, allowed)
    low, high = (1, PORT_MAX) if ports is None else _parse_ports(ports, field, stripped)
    if host == "*":
        return Pattern(stripped, None, None, low, high)
    network = _parse_network(host, field, stripped)
    if network is not None:
        return Pattern(stripped, None, network, low, high)
    name = host.lower().rstrip(".")
    if not name or not set(name) <= _HOST_CHARS:
        raise InvalidSetting(field, text, allowed, hint=f"{host!r} is not a host name or glob")
    return Pattern(stripped, name, None, low, high)


def _split_port(text: str, field: str, allowed: str) -> tuple[str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidSetting(field, text, allowed, hint="']' missing")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidSetting(field, text, allowed, hint=f"unexpected {rest!r} after ']'")
        return text[1:end], (rest[1:] if rest else None)
    if text.count(":") >= 2:  # a bare IPv6 address or network: no port (use brackets)
        return text, None
    host, colon, ports = text.partition(":")
    return host, (ports if colon else None)


def _parse_ports(text: str, field: str, pattern: str) -> tuple[int, int]:
    allowed = f"a port or a range LOW-HIGH within 1..{PORT_MAX}"
    low_text, dash, high_text = text.partition("-")
    try:
        low = int(low_text, 10)
        high = int(high_text, 10) if dash else low
    except ValueError:
        raise InvalidSetting(field, pattern, allowed, hint=f"port {text!r}") from None
    if not 1 <= low <= high <= PORT_MAX:
        raise InvalidSetting(field, pattern, allowed, hint=f"port {text!r}")
    return low, high


def _parse_network(host: str, field: str, pattern: str) -> Network | None:
    """The network ``host`` names (an address is a /32 or /128), None for a host name."""
    import ipaddress  # noqa: PLC0415 - once per pattern, never on the connect path

    if "/" in host:
        try:
            return ipaddress.ip_network(host, strict=True)
        except ValueError as exc:
            raise InvalidSetting(
                field, pattern, "a network such as 10.0.0.0/8", hint=str(exc)
            ) from None
    try:
        return ipaddress.ip_network(host)
    except ValueError:
        if ":" in host:
            raise InvalidSetting(
                field, pattern, "an IPv6 address or network", hint=f"{host!r}"
            ) from None
        return None


def parse_ip(host: str) -> Address | None:
    """``host`` as an address, None when it is a name."""
    import ipaddress  # noqa: PLC0415 - once per destination: the driver caches decisions

    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(ip: Address | None, names: tuple[str, ...]) -> bool:
    """127.0.0.0/8, ::1, their IPv4-mapped forms, the unspecified addresses (a connect to
    0.0.0.0 or :: reaches this host), or, with no address known, the name localhost."""
    if ip is None:
        return any(name == "localhost" or name.endswith(".localhost") for name in names)
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return bool(ip.is_loopback or ip.is_unspecified)


def _patterns(value: object, field: str) -> tuple[Pattern, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Pattern)):
        value = (value,)
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidSettingType(field, value, "a pattern or an iterable of patterns") from None
    return tuple(
        item if isinstance(item, Pattern) else parse_pattern(item, field=field) for item in items
    )


# -- rules -------------------------------------------------------------------------------------


class Rule(Record):
    """Settings for the connections whose destination matches one of ``only`` (every
    destination when ``only`` is None or empty)."""

    __slots__ = ("cfg", "only")
    __match_args__ = ("cfg", "only")

    cfg: KeepaliveConfig
    only: tuple[Pattern, ...]

    def __init__(
        self,
        cfg: KeepaliveConfig | None = None,
        only: Iterable[str | Pattern] | str | None = None,
    ) -> None:
        if cfg is None:
            cfg = KeepaliveConfig()
        elif not isinstance(cfg, KeepaliveConfig):
            raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig or None")
        object.__setattr__(self, "cfg", cfg)
        object.__setattr__(self, "only", _patterns(only, "only"))

    def matches(self, ip: Address | None, names: tuple[str, ...], port: int) -> bool:
        return not self.only or any(p.matches(ip, names, port) for p in self.only)

    def __str__(self) -> str:
        where = ", ".join(p.text for p in self.only) if self.only else "*"
        return f"{where} -> {_format_settings(self.cfg)}"


class Selector(Record):
    """Which rule, if any, a destination gets: excluded and loopback destinations none (unless
    ``loopback``), then the first rule that matches."""

    __slots__ = ("exclude", "loopback", "rules", "uses_names")
    __match_args__ = ("rules", "exclude", "loopback")

    rules: tuple[Rule, ...]
    exclude: tuple[Pattern, ...]
    loopback: bool
    uses_names: bool  # some pattern matches host names: the driver must record resolutions

    def __init__(
        self, rules: tuple[Rule, ...], exclude: tuple[Pattern, ...], loopback: bool
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "rules", rules)
        setattr_(self, "exclude", exclude)
        setattr_(self, "loopback", loopback)
        everything = [*exclude, *(p for rule in rules for p in rule.only)]
        setattr_(self, "uses_names", any(p.uses_names for p in everything))

    def select(self, host: str, port: int, names: tuple[str, ...] = ()) -> int | str:
        """The index of the rule for a connection to ``(host, port)``, or why none applies.

        ``host`` is what the application passed to connect() (an address, or a name that the
        socket resolves itself); ``names`` the host names that resolved to it, lower case.
        """
        ip = parse_ip(host.split("%", 1)[0]) if host else None
        if ip is None and host:
            names = (host.lower().rstrip("."), *names)
        if not self.loopback and is_loopback(ip, names):
            return LOOPBACK
        if any(p.matches(ip, names, port) for p in self.exclude):
            return EXCLUDED
        for index, rule in enumerate(self.rules):
            if rule.matches(ip, names, port):
                return index
        return NO_RULE


# -- the application's own values --------------------------------------------------------------


def fill(
    cfg: KeepaliveConfig, explicit: Mapping[str, float]
) -> tuple[KeepaliveConfig | None, tuple[str, ...]]:
    """What to apply when the application already set the settings in ``explicit``.

    Returns the config to apply (``cfg`` with the application's values in their place, so
    that configuring writes them back unchanged) and the names of the settings kept; the
    config is None when the application set every setting ``cfg`` would: nothing to do.
    A user timeout the application set is kept only if ``cfg`` sets one too (otherwise it
    is never touched).
    """
    wanted = SETTING_KEYS if cfg.user_timeout is not None else SETTING_KEYS[:3]
    kept = tuple(name for name in wanted if name in explicit)
    if not kept:
        return cfg, ()
    if len(kept) == len(wanted):
        return None, kept
    values: dict[str, float] = {name: explicit[name] for name in kept}
    if "count" in values:
        values["count"] = int(values["count"])
    return cfg.__replace__(**values), kept


# -- the environment format --------------------------------------------------------------------


class InstallSpec(Record):
    """Everything ``keepalive.install()`` takes, as parsed from ``KEEPALIVE_INSTALL`` or the
    ``run`` command line."""

    __slots__ = ("exclude", "loopback", "override", "rules", "strict")
    __match_args__ = ("rules", "exclude", "loopback", "override", "strict")

    rules: tuple[Rule, ...]
    exclude: tuple[Pattern, ...]
    loopback: bool
    override: bool
    strict: bool

    def __init__(
        self,
        rules: tuple[Rule, ...],
        exclude: tuple[Pattern, ...] = (),
        loopback: bool = False,
        override: bool = False,
        strict: bool = False,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "rules", rules)
        setattr_(self, "exclude", exclude)
        setattr_(self, "loopback", loopback)
        setattr_(self, "override", override)
        setattr_(self, "strict", strict)


_GLOBAL_FLAGS = ("loopback", "override", "strict")
_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})
_ENV_ALLOWED = "key=value items separated by ',', rules by ';' (see docs/install.md)"
_ENV_KEYS = "idle, interval, count, user_timeout, only, exclude, loopback, override, strict"


def parse_env(value: str, *, field: str = ENV_VAR) -> InstallSpec:
    """Parse the ``KEEPALIVE_INSTALL`` format; :class:`InvalidSetting` naming ``field`` and the
    offending item for anything it cannot take whole (nothing is guessed or ignored).

    ``idle=20,interval=5,count=3,only=*.db.internal:5432; idle=60; exclude=10.9.0.0/16``
    configures connections to port 5432 of hosts under ``db.internal`` with 20/5/3, every
    other one (but 10.9.0.0/16 and loopback) with 60 s idle and the default interval and
    count. Without any rule, every destination gets the defaults (``loopback=yes`` alone is
    a valid value). A key given twice in a rule, or a flag given twice, is an error.
    """
    if not isinstance(value, str):
        raise InvalidSettingType(field, value, _ENV_ALLOWED)
    if not value.strip():
        raise InvalidSetting(field, value, _ENV_ALLOWED, hint="the value is empty")
    rules: list[Rule] = []
    exclude: list[Pattern] = []
    flags: dict[str, bool] = {}
    for segment in value.split(";"):
        items = [item.strip() for item in segment.split(",")]
        if items == [""]:
            continue  # "a; ; b" or a trailing ';'
        settings: dict[str, str] = {}
        only: list[Pattern] = []
        is_rule = False
        for item in items:
            key, equals, raw = (part.strip() for part in item.partition("="))
            key = key.lower()
            if not equals:
                if key == "defaults":
                    is_rule = True
                    continue
                raise InvalidSetting(field, item, _ENV_ALLOWED, hint="not key=value")
            if key in SETTING_KEYS:
                if key in settings:
                    raise InvalidSetting(field, item, _ENV_ALLOWED, hint=f"{key} given twice")
                settings[key] = raw
                is_rule = True
            elif key == "only":
                only.append(parse_pattern(raw, field="only"))
                is_rule = True
            elif key == "exclude":
                exclude.append(parse_pattern(raw, field="exclude"))
            elif key in _GLOBAL_FLAGS:
                if key in flags:
                    raise InvalidSetting(field, item, _ENV_ALLOWED, hint=f"{key} given twice")
                flags[key] = _parse_flag(raw, key)
            else:
                raise InvalidSetting(
                    field, item, _ENV_ALLOWED, hint=f"unknown key {key!r}; the keys: {_ENV_KEYS}"
                )
        if is_rule:
            rules.append(Rule(_make_config(settings), only))
    if not rules:
        rules.append(Rule(KeepaliveConfig()))
    return InstallSpec(
        tuple(rules),
        tuple(exclude),
        flags.get("loopback", False),
        flags.get("override", False),
        flags.get("strict", False),
    )


def _parse_flag(raw: str, field: str) -> bool:
    word = raw.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidSetting(field, raw, "yes or no (also 1/0, true/false, on/off)")


def _make_config(settings: dict[str, str]) -> KeepaliveConfig:
    values: dict[str, float | int] = {}
    for key, raw in settings.items():
        if key == "count":
            try:
                values[key] = int(raw, 10)
            except ValueError:
                raise InvalidSetting(key, raw, "a whole number of probes") from None
            continue
        try:
            values[key] = float(raw)
        except ValueError:
            raise InvalidSetting(key, raw, "a number of seconds") from None
    return KeepaliveConfig(**values)  # type: ignore[arg-type]


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _format_settings(cfg: KeepaliveConfig) -> str:
    parts = [f"idle={_number(cfg.idle)}", f"interval={_number(cfg.interval)}"]
    parts.append(f"count={cfg.count}")
    if cfg.user_timeout is not None:
        parts.append(f"user_timeout={_number(cfg.user_timeout)}")
    return ",".join(parts)


def format_env(spec: InstallSpec) -> str:
    """The ``KEEPALIVE_INSTALL`` value for ``spec``: ``parse_env(format_env(spec)) == spec``.

    Patterns cannot hold ``,`` or ``;``, so every pattern text goes through unquoted."""
    segments = []
    for rule in spec.rules:
        parts = [_format_settings(rule.cfg), *(f"only={p.text}" for p in rule.only)]
        segments.append(",".join(parts))
    flags = [f"exclude={p.text}" for p in spec.exclude]
    flags += [f"{name}=yes" for name in _GLOBAL_FLAGS if getattr(spec, name)]
    if flags:
        segments.append(",".join(flags))
    return "; ".join(segments)
