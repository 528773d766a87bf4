"""Kernel keepalive settings shaped for other libraries, from one :class:`KeepaliveConfig`.

Every helper derives its values from the running platform's plan (``keepalive.platforms``), so
the rounding, ranges and errors are those of :func:`keepalive.configure`: a bad setting raises
before any connection is made, and ``strict=True`` (the default) raises
:class:`~keepalive.UnsupportedOption` where a setting cannot be honoured.

==================  ==============================================================
library             helper
==================  ==============================================================
urllib3             :func:`urllib3_socket_options` (``socket_options=`` on a pool)
requests            :func:`keepalive_adapter` (mount on a ``Session``)
httpx / httpcore    :func:`httpx_client`, :func:`httpx_async_client` (proxies and SOCKS
                    too), :func:`httpx_transport`, :func:`httpx_async_transport`
aiohttp >= 3.12     :func:`aiohttp_socket_factory`, :func:`aiohttp_connector`
redis-py            :func:`redis_kwargs` (``redis.Redis(**redis_kwargs(cfg))``)
libpq / psycopg     :func:`libpq_params`, :func:`libpq_conninfo`
asyncpg             :mod:`keepalive.integrations.asyncpg` (``connection_class(cfg)``)
paramiko            :mod:`keepalive.integrations.paramiko` (``server_alive(client, hb)``:
                    OpenSSH's ServerAliveInterval/CountMax)
grpcio              :mod:`keepalive.integrations.grpc` (``channel_options``, ``server_options``)
websockets          :mod:`keepalive.integrations.websockets` (``ping_kwargs``,
                    ``connect_socket_async``)
elasticsearch-py    :mod:`keepalive.integrations.elasticsearch` (``node_class(cfg)``)
pika                :mod:`keepalive.integrations.pika` (``connection_parameters_kwargs``:
                    ``tcp_options`` and the AMQP heartbeat)
kombu / celery      :mod:`keepalive.integrations.kombu` (``connection_kwargs``,
                    ``celery_settings``)
kafka-python        :mod:`keepalive.integrations.kafka` (``socket_options(cfg)``)
SQLAlchemy, Django  :func:`libpq_params` (``connect_args=``, ``OPTIONS``)
==================  ==============================================================

Third-party modules are imported inside the helpers that need them, never at import time; a
missing or too old library raises :class:`ImportError` naming the package to install.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypedDict, cast

from keepalive._validate import flag
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSettingType, UnsupportedOption
from keepalive.integrations._common import _accepts, _checked, _missing, _platform, _too_old
from keepalive.integrations.httpx import (
    httpx_async_client,
    httpx_async_transport,
    httpx_client,
    httpx_transport,
)
from keepalive.platforms import SETTINGS, Platform, Setting, current
from keepalive.sockets import configure, socket_options

if TYPE_CHECKING:
    import aiohttp
    from requests.adapters import HTTPAdapter

__all__ = [
    "KeepaliveSocketFactory",
    "RedisKeepaliveKwargs",
    "aiohttp_connector",
    "aiohttp_socket_factory",
    "httpx_async_client",
    "httpx_async_transport",
    "httpx_client",
    "httpx_transport",
    "keepalive_adapter",
    "libpq_conninfo",
    "libpq_params",
    "redis_kwargs",
    "urllib3_socket_options",
]


# -- urllib3 / requests -----------------------------------------------------------------------


def urllib3_socket_options(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> list[tuple[int, int, int | bytes]]:
    """urllib3's ``HTTPConnection.default_socket_options`` (TCP_NODELAY) plus keepalive's.

    For ``urllib3.PoolManager(socket_options=...)``, ``HTTPConnectionPool(...)`` or
    ``HTTPConnection(...)``: passing ``socket_options`` replaces urllib3's defaults, so they are
    kept here. Where this platform needs an ioctl (Windows before 10 1709) this raises
    :class:`~keepalive.UnsupportedOption`: configure the socket with
    :func:`keepalive.configure` instead.
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    try:
        from urllib3.connection import HTTPConnection  # noqa: PLC0415
    except ImportError as exc:
        raise _missing("urllib3", "urllib3_socket_options") from exc
    ours = socket_options(config, strict=strict, platform=target)
    ours_keys = {(level, optname) for level, optname, _value in ours}
    defaults = [
        option
        for option in HTTPConnection.default_socket_options
        if (option[0], option[1]) not in ours_keys
    ]
    return [*defaults, *ours]


@cache
def _adapter_class() -> type[HTTPAdapter]:
    from requests.adapters import HTTPAdapter  # noqa: PLC0415

    class KeepaliveHTTPAdapter(HTTPAdapter):
        """An ``HTTPAdapter`` whose pool managers (direct and proxy) set ``socket_options``."""

        def __init__(self, socket_options: list[tuple[int, int, int | bytes]], **kwargs: Any):
            # Set before HTTPAdapter.__init__, which builds the pool manager.
            self.socket_options = socket_options
            super().__init__(**kwargs)

        def init_poolmanager(
            self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
        ) -> None:
            pool_kwargs.setdefault("socket_options", self.socket_options)
            super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            proxy_kwargs.setdefault("socket_options", self.socket_options)
            return super().proxy_manager_for(proxy, **proxy_kwargs)

        # A class made inside a function cannot be pickled by name: rebuild it by function.
        __attrs__: list[str] = [*HTTPAdapter.__attrs__, "socket_options"]  # noqa: RUF012

        def __reduce__(self) -> tuple[Any, ...]:
            return (_rebuild_adapter, (self.__getstate__(),))

    # A readable name in reprs; pickling goes through __reduce__, not this name.
    KeepaliveHTTPAdapter.__qualname__ = KeepaliveHTTPAdapter.__name__
    KeepaliveHTTPAdapter.__module__ = __name__
    return KeepaliveHTTPAdapter


def _rebuild_adapter(state: dict[str, Any]) -> HTTPAdapter:
    """Unpickle a :func:`keepalive_adapter` (``HTTPAdapter.__setstate__`` rebuilds the pools)."""
    cls = _adapter_class()
    adapter = cls.__new__(cls)
    adapter.__setstate__(state)
    return adapter


def keepalive_adapter(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True, **adapter_kwargs: Any
) -> HTTPAdapter:
    """A ``requests`` transport adapter whose connections carry keepalive (and TCP_NODELAY).

    ``adapter_kwargs`` go to ``requests.adapters.HTTPAdapter`` (``pool_connections``,
    ``pool_maxsize``, ``max_retries``, ``pool_block``). Mount it for both schemes::

        session = requests.Session()
        adapter = keepalive_adapter(cfg)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    Connections through a proxy (``proxies=``) get the same options. Raises like
    :func:`urllib3_socket_options`.
    """
    _checked(cfg, strict)
    try:
        # The class's own __init__ takes socket_options first; mypy sees HTTPAdapter's.
        make = cast("Callable[..., HTTPAdapter]", _adapter_class())
    except ImportError as exc:
        raise _missing("requests", "keepalive_adapter") from exc
    return make(urllib3_socket_options(cfg, strict=strict), **adapter_kwargs)


# -- aiohttp ----------------------------------------------------------------------------------


class KeepaliveSocketFactory:
    """Makes the sockets aiohttp (through aiohappyeyeballs) connects, with keepalive configured
    before the connect. Called with one ``getaddrinfo`` entry
    ``(family, type, proto, canonname, sockaddr)``; returns an unconnected socket."""

    __slots__ = ("cfg", "strict")

    def __init__(self, cfg: KeepaliveConfig, strict: bool) -> None:
        if not isinstance(cfg, KeepaliveConfig):
            raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig")
        self.cfg = cfg
        self.strict = flag("strict", strict)

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family, kind, proto)
        try:
            configure(sock, self.cfg, strict=self.strict)
        except BaseException:
            sock.close()
            raise
        return sock

    def __repr__(self) -> str:
        return f"KeepaliveSocketFactory({self.cfg!r}, strict={self.strict})"


def _require_aiohttp(helper: str) -> None:
    try:
        import aiohttp  # noqa: PLC0415
    except ImportError as exc:
        raise _missing("aiohttp", helper, "aiohttp>=3.12") from exc
    if not _accepts(aiohttp.TCPConnector, "socket_factory"):
        raise _too_old(
            "aiohttp", aiohttp.__version__, helper, "aiohttp>=3.12", "TCPConnector(socket_factory=)"
        )


def aiohttp_socket_factory(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True
) -> KeepaliveSocketFactory:
    """A ``socket_factory`` for ``aiohttp.TCPConnector`` (aiohttp >= 3.12).

    The config is checked against this platform now, so a bad setting raises here rather than
    inside the event loop on the first request. Each socket is configured with
    :func:`keepalive.configure` (Windows' ioctl included) before it connects.
    """
    config, strict = _checked(cfg, strict)
    _require_aiohttp("aiohttp_socket_factory")
    current().plan(config, strict=strict)  # raises InvalidSetting / UnsupportedOption now
    return KeepaliveSocketFactory(config, strict)


def aiohttp_connector(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True, **connector_kwargs: Any
) -> aiohttp.TCPConnector:
    """``aiohttp.TCPConnector(socket_factory=aiohttp_socket_factory(cfg), **connector_kwargs)``.

    Call it inside a running event loop (aiohttp's connectors need one), then
    ``aiohttp.ClientSession(connector=...)``.
    """
    factory = aiohttp_socket_factory(cfg, strict=strict)
    import aiohttp  # noqa: PLC0415 - present: checked by aiohttp_socket_factory

    return aiohttp.TCPConnector(socket_factory=factory, **connector_kwargs)


# -- redis-py ---------------------------------------------------------------------------------


class RedisKeepaliveKwargs(TypedDict):
    """Keyword arguments for ``redis.Redis``, ``redis.asyncio.Redis`` and their pools."""

    socket_keepalive: bool
    socket_keepalive_options: dict[int, int]


def redis_kwargs(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> RedisKeepaliveKwargs:
    """``{"socket_keepalive": True, "socket_keepalive_options": {optname: value}}``.

    redis-py turns on SO_KEEPALIVE for ``socket_keepalive=True`` and applies each entry as
    ``sock.setsockopt(IPPROTO_TCP, optname, value)`` before connecting (the asyncio client:
    right after), so only TCP-level options can travel in the dict. These replace redis-py's
    own defaults (redis-py 8 turns keepalive on with idle 30 s, interval 5 s, 3 probes).
    Raises like :func:`urllib3_socket_options`.
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    options: dict[int, int] = {}
    for level, optname, value in socket_options(config, strict=strict, platform=target):
        if (level, optname) == (target.sol_socket, target.so_keepalive):
            continue  # socket_keepalive=True sets it
        if level != target.ipproto_tcp:  # no platform plans one today; redis-py could not set it
            raise UnsupportedOption(
                "keepalive",
                target.name,
                f"option {optname} is at socket level {level}, but redis-py sets "
                "socket_keepalive_options at IPPROTO_TCP only",
            )
        options[optname] = value
    return {"socket_keepalive": True, "socket_keepalive_options": options}


# -- libpq / psycopg --------------------------------------------------------------------------

# libpq's keyword for each setting; libpq takes whole seconds, and milliseconds for the user
# timeout (libpq.sgml, "Parameter Key Words").
_LIBPQ_KEYWORDS: dict[Setting, str] = {
    "idle": "keepalives_idle",
    "interval": "keepalives_interval",
    "count": "keepalives_count",
    "user_timeout": "tcp_user_timeout",
}
# The options libpq's fe-connect.c sets outside Windows, passing its number unchanged:
# PG_TCP_KEEPALIVE_IDLE is TCP_KEEPIDLE, else TCP_KEEPALIVE_THRESHOLD, else macOS' TCP_KEEPALIVE.
_LIBPQ_OPTIONS: dict[Setting, frozenset[str]] = {
    "idle": frozenset({"TCP_KEEPIDLE", "TCP_KEEPALIVE_THRESHOLD", "TCP_KEEPALIVE"}),
    "interval": frozenset({"TCP_KEEPINTVL"}),
    "count": frozenset({"TCP_KEEPCNT"}),
    "user_timeout": frozenset({"TCP_USER_TIMEOUT"}),
}
# On Windows libpq sets idle and interval with SIO_KEEPALIVE_VALS (seconds * 1000) and never
# sets the probe count or a user timeout (fe-connect.c, prepKeepalivesWin32).
_LIBPQ_WINDOWS: frozenset[Setting] = frozenset({"idle", "interval"})
_LIBPQ_NATIVE_SCALE: dict[Setting, int] = {
    "idle": 1,
    "interval": 1,
    "count": 1,
    "user_timeout": 1000,
}


def _libpq_reason(target: Platform, setting: Setting, option: str) -> str | None:
    """Why libpq cannot apply ``setting`` here as configure() would, or None if it can."""
    if target.family == "windows":
        if setting in _LIBPQ_WINDOWS:
            return None
        return f"libpq on Windows does not set {_LIBPQ_KEYWORDS[setting]}"
    spec = target.options.get(setting)
    if option not in _LIBPQ_OPTIONS[setting] or spec is None:
        return f"libpq does not set {option}, which carries {setting} here"
    if spec.scale != _LIBPQ_NATIVE_SCALE[setting]:
        # libpq hands its number to setsockopt unchanged; this option counts in other units.
        return f"{option} is in {spec.unit} here, and libpq would pass it whole seconds"
    return None


def libpq_params(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> dict[str, int]:
    """libpq connection keywords: ``keepalives=1``, ``keepalives_idle``, ``keepalives_interval``,
    ``keepalives_count`` (whole seconds, rounded up, never 0) and ``tcp_user_timeout``
    (milliseconds; only when ``cfg.user_timeout`` is set).

    For ``psycopg.connect(dsn, **libpq_params(cfg))``, psycopg2, or
    ``psycopg.conninfo.make_conninfo(dsn, **libpq_params(cfg))``. libpq applies them itself,
    and not everywhere as :func:`keepalive.configure` would (it sets no probe count or user
    timeout on Windows, TCP_USER_TIMEOUT only on Linux, and passes seconds unchanged to options
    that count in other units): with ``strict=True`` such a setting raises
    :class:`~keepalive.UnsupportedOption`, with ``strict=False`` its keyword is left out (the
    system default applies). Everywhere, ``keepalive.configure(conn.pgconn.socket, cfg)`` after
    connecting applies the config exactly.
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    plan = target.plan(config, strict=strict)  # ranges checked as configure() checks them
    params = {"keepalives": 1}
    for setting in SETTINGS:
        result = plan.result(setting)
        if result is None or result.stored is None or result.option is None:
            continue  # not requested, unsupported (strict=False), or a fixed system value
        reason = _libpq_reason(target, setting, result.option)
        if reason is not None:
            if strict:
                raise UnsupportedOption(
                    setting,
                    target.name,
                    f"{reason}; use keepalive.configure(conn.pgconn.socket, cfg) instead",
                )
            continue
        scale = _LIBPQ_NATIVE_SCALE[setting]
        # round() first so 0.1 s -> 100 ms, not 101 ms, through binary floating point.
        params[_LIBPQ_KEYWORDS[setting]] = max(1, math.ceil(round(result.stored * scale, 6)))
    return params


def libpq_conninfo(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> str:
    """:func:`libpq_params` as a conninfo string: ``"keepalives=1 keepalives_idle=60 ..."``.

    Append it to a ``key=value`` DSN (``f"{dsn} {libpq_conninfo(cfg)}"``); for a
    ``postgresql://`` URI use ``psycopg.conninfo.make_conninfo(uri, **libpq_params(cfg))``.
    """
    params = libpq_params(cfg, strict=strict, platform=platform)
    return " ".join(f"{key}={value}" for key, value in params.items())
