"""Kernel keepalive on every socket httpx opens: direct, through an HTTP proxy (``CONNECT``
tunnels and plain-HTTP forwarding) and through SOCKS5, sync and async (asyncio and trio).

httpx takes ``socket_options`` on its transports, but httpcore (1.0.9) hands them to direct
connections only: ``HTTPProxy`` leaves them out of its connections to the proxy, and httpx
passes none to ``SOCKSProxy``. What every httpcore connection does use is its pool's *network
backend*, so the helpers here wrap that backend: each TCP socket it connects is configured with
:func:`keepalive.configure` before its first byte (request, ``CONNECT``, SOCKS greeting or TLS
handshake) goes out. Unix-domain connections (``uds=``) are left alone.

- :func:`httpx_client` / :func:`httpx_async_client` let httpx build the client from your
  arguments (``proxy=``, ``mounts=``, ``limits=``, ``timeout=``, ``verify=``, ``cert=``,
  ``http2=``, ``trust_env=`` with ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``),
  exactly as ``httpx.Client(...)`` would, then wrap the backend of each of its transports;
  ``client_class=`` builds a subclass instead (an SDK's ``DefaultHttpxClient``).
- :func:`httpx_transport` / :func:`httpx_async_transport` make one transport (for
  ``transport=`` or ``mounts=``), ``proxy=`` included.

``strict=True`` (the default): a setting this platform cannot honour raises
:class:`~keepalive.UnsupportedOption` when the client or transport is made, before any
connection; a transport whose sockets cannot be reached (another library's transport in
``mounts=``, a network stream without a socket) raises rather than carry no keepalive.
``strict=False`` applies what the platform can to each socket and leaves such transports as
they are.

The backend is reached through httpx's and httpcore's private attributes (``_transport``,
``_mounts``, ``_pool``, ``_network_backend``), checked when the client is made, including that
a proxy pool really hands the backend to the connections it creates: a layout this code does
not know raises :class:`ImportError` naming the installed versions, never a client without
keepalive. Tested with httpx 0.27.2, 0.28.1 and 0.29.0, with httpcore 1.0.9.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, InvalidSocket
from keepalive.integrations._common import _accepts, _checked, _missing, _too_old
from keepalive.platforms import current
from keepalive.sockets import configure, socket_options

if TYPE_CHECKING:
    import httpx

__all__ = ["httpx_async_client", "httpx_async_transport", "httpx_client", "httpx_transport"]

_TESTED_WITH = "httpx 0.27.2, 0.28.1 and 0.29.0 with httpcore 1.0.9"


# -- the network backends ---------------------------------------------------------------------


def _configure_stream(stream: Any, cfg: KeepaliveConfig, strict: bool) -> None:
    """Configure the socket under an httpcore network stream (sync, anyio or trio)."""
    sock = stream.get_extra_info("socket")
    if sock is None or not callable(getattr(sock, "fileno", None)):
        if strict:
            raise InvalidSocket(
                f"the httpcore network stream {type(stream).__name__} exposes no socket "
                "(get_extra_info('socket')), so keepalive cannot be set on it "
                "(strict=False leaves such connections as they are)"
            )
        return
    configure(sock, cfg, strict=strict)


class _KeepaliveBackend:
    """An httpcore ``NetworkBackend`` configuring every TCP socket its inner backend connects.

    Duck-typed (httpcore calls these three methods and checks no type), so this module need
    not import httpcore.
    """

    __slots__ = ("cfg", "inner", "strict")

    def __init__(self, inner: Any, cfg: KeepaliveConfig, strict: bool) -> None:
        self.inner = inner
        self.cfg = cfg
        self.strict = strict

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        stream = self.inner.connect_tcp(
            host,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )
        try:
            _configure_stream(stream, self.cfg, self.strict)
        except BaseException:
            stream.close()
            raise
        return stream

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        # No TCP under a Unix-domain socket: nothing to keep alive.
        return self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, {self.cfg!r}, strict={self.strict})"


class _AsyncKeepaliveBackend:
    """:class:`_KeepaliveBackend` for httpcore's ``AsyncNetworkBackend`` (asyncio and trio)."""

    __slots__ = ("cfg", "inner", "strict")

    def __init__(self, inner: Any, cfg: KeepaliveConfig, strict: bool) -> None:
        self.inner = inner
        self.cfg = cfg
        self.strict = strict

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        stream = await self.inner.connect_tcp(
            host,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )
        try:
            _configure_stream(stream, self.cfg, self.strict)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        return await self.inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r}, {self.cfg!r}, strict={self.strict})"


_Backend = type[_KeepaliveBackend] | type[_AsyncKeepaliveBackend]


# -- reaching httpx's transports --------------------------------------------------------------


def _unknown_layout(helper: str, what: str) -> ImportError:
    import httpcore  # noqa: PLC0415 - present: httpx requires it
    import httpx  # noqa: PLC0415

    return ImportError(
        f"keepalive.integrations.{helper}() cannot reach the sockets of httpx "
        f"{httpx.__version__} with httpcore {httpcore.__version__}: {what}. It was tested with "
        f"{_TESTED_WITH}: install those, or use keepalive.install() (every outbound connection "
        "of the process)",
        name="httpcore",
    )


def _backend_of(connection: Any) -> Any:
    """The network backend a fresh httpcore connection will dial with (a proxy connection
    keeps its connection to the proxy in ``_connection``)."""
    backend = getattr(connection, "_network_backend", None)
    if backend is None:
        backend = getattr(getattr(connection, "_connection", None), "_network_backend", None)
    return backend


def _wrap_transport(
    transport: Any, backend_class: _Backend, cfg: KeepaliveConfig, strict: bool, helper: str
) -> None:
    """Put ``backend_class`` around ``transport``'s network backend and prove that the
    connections its pool creates (direct, proxied, tunnelled) dial through it."""
    import httpcore  # noqa: PLC0415 - present: httpx requires it

    pool: Any = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if inner is None:
        raise _unknown_layout(helper, f"{type(transport).__name__} has no _pool._network_backend")
    if isinstance(inner, (_KeepaliveBackend, _AsyncKeepaliveBackend)):
        return  # made by httpx_transport(): it keeps the config it was made with
    backend = backend_class(inner, cfg, strict)
    pool._network_backend = backend
    try:
        # Making a connection object does no I/O; each one is dropped unused.
        for scheme, port in ((b"http", 80), (b"https", 443)):
            connection = pool.create_connection(httpcore.Origin(scheme, b"probe.invalid", port))
            if _backend_of(connection) is not backend:
                raise _unknown_layout(
                    helper,
                    f"{type(pool).__name__} does not dial its {scheme.decode()} connections "
                    "through its _network_backend",
                )
    except ImportError:
        pool._network_backend = inner
        raise
    except Exception as exc:  # an internal layout we do not know
        pool._network_backend = inner
        raise _unknown_layout(helper, f"{type(pool).__name__}.create_connection: {exc!r}") from exc


def _wrap_client(
    client: Any,
    transport_class: type,
    backend_class: _Backend,
    *,
    cfg: KeepaliveConfig,
    strict: bool,
    helper: str,
) -> None:
    """Wrap the backend of the client's transport and of every transport mounted on it (the
    ones httpx made for ``proxy=`` and the environment's proxies, and yours)."""
    base = getattr(client, "_transport", None)
    mounts = getattr(client, "_mounts", None)
    if base is None or not isinstance(mounts, dict):
        raise _unknown_layout(helper, f"{type(client).__name__} has no _transport and _mounts")
    transports = {"transport": base}
    for pattern, mounted in mounts.items():
        if mounted is not None:  # None: NO_PROXY, served by the client's own transport
            transports[f"mounts[{getattr(pattern, 'pattern', pattern)!r}]"] = mounted
    reachable = [item for item in transports.values() if isinstance(item, transport_class)]
    if strict:  # refused before any transport (yours included) is changed
        for where, transport in transports.items():
            if not isinstance(transport, transport_class):
                raise InvalidSetting(
                    where,
                    transport,
                    f"an httpx.{transport_class.__name__}: keepalive cannot reach the sockets "
                    "of another transport (strict=False leaves it as it is)",
                )
    for transport in reachable:
        _wrap_transport(transport, backend_class, cfg, strict, helper)


def _client_class(client_class: object, base: type) -> type:
    if client_class is None:
        return base
    if not (isinstance(client_class, type) and issubclass(client_class, base)):
        raise InvalidSettingType(
            "client_class", client_class, f"httpx.{base.__name__} or a subclass of it"
        )
    return client_class


def _httpx(helper: str) -> Any:
    try:
        import httpx  # noqa: PLC0415
    except ImportError as exc:
        raise _missing("httpx", helper) from exc
    return httpx


def _planned(cfg: object, strict: object) -> tuple[KeepaliveConfig, bool]:
    """The config and flag, checked against this platform now: a bad or unsupported setting
    raises here, not on the first request."""
    config, strict_flag = _checked(cfg, strict)
    current().plan(config, strict=strict_flag)
    return config, strict_flag


# -- clients ----------------------------------------------------------------------------------


def httpx_client(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    client_class: type[httpx.Client] | None = None,
    **client_kwargs: Any,
) -> httpx.Client:
    """``httpx.Client(**client_kwargs)`` with kernel keepalive on every socket it opens.

    httpx builds the client, so proxies (``proxy=``, or the environment's when ``trust_env``),
    ``mounts=``, ``limits=``, ``timeout=``, ``verify=``, ``cert=`` and ``http2=`` mean what they
    mean to httpx; then each ``httpx.HTTPTransport`` of the client gets a network backend that
    configures every TCP socket right after it connects: direct, through an HTTP proxy and
    through SOCKS5. ``client_class=`` builds that subclass of ``httpx.Client`` instead (e.g.
    ``openai.DefaultHttpxClient``, which adds the SDK's timeout and limits).

    A ``transport=`` or a mounted ``httpx.HTTPTransport`` of yours gets the backend too (one
    made by :func:`httpx_transport` keeps its own config); any other transport raises
    :class:`~keepalive.InvalidSetting` with ``strict=True`` and is left alone otherwise.
    """
    config, strict = _planned(cfg, strict)
    httpx = _httpx("httpx_client")
    make = _client_class(client_class, httpx.Client)
    client = make(**client_kwargs)
    _wrap_client(
        client,
        httpx.HTTPTransport,
        _KeepaliveBackend,
        cfg=config,
        strict=strict,
        helper="httpx_client",
    )
    return client  # type: ignore[no-any-return]


def httpx_async_client(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    client_class: type[httpx.AsyncClient] | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """:func:`httpx_client` for ``httpx.AsyncClient`` (asyncio and trio)."""
    config, strict = _planned(cfg, strict)
    httpx = _httpx("httpx_async_client")
    make = _client_class(client_class, httpx.AsyncClient)
    client = make(**client_kwargs)
    _wrap_client(
        client,
        httpx.AsyncHTTPTransport,
        _AsyncKeepaliveBackend,
        cfg=config,
        strict=strict,
        helper="httpx_async_client",
    )
    return client  # type: ignore[no-any-return]


# -- transports -------------------------------------------------------------------------------


def _merge_extra(
    ours: list[tuple[int, int, int]], extra: Iterable[Any] | None
) -> list[tuple[int, int, Any]]:
    """``extra`` socket options first, then keepalive's; an extra one that sets the same option
    as the config would silently override it (or be overridden), so that is refused."""
    if extra is None:
        return list(ours)
    extra_list = _extra_options(extra)
    ours_keys = {(level, optname) for level, optname, _value in ours}
    clashes = [option for option in extra_list if (option[0], option[1]) in ours_keys]
    if clashes:
        raise InvalidSetting(
            "socket_options",
            clashes,
            "options other than the keepalive ones, which come from the KeepaliveConfig",
        )
    return [*extra_list, *ours]


def _extra_options(extra: object) -> list[tuple[Any, ...]]:
    """``socket_options`` as httpcore takes them: ``(level, option, int | bytes)`` or
    ``(level, option, None, length)``, in a list, tuple or other iterable (not a string)."""
    allowed = (
        "an iterable of (level: int, option: int, value: int | bytes) or "
        "(level, option, None, length: int) tuples"
    )
    if isinstance(extra, (str, bytes, bytearray, dict)) or not isinstance(extra, Iterable):
        raise InvalidSettingType("socket_options", extra, allowed)
    options: list[tuple[Any, ...]] = []
    for item in extra:
        if not isinstance(item, (tuple, list)):
            raise InvalidSettingType("socket_options", item, allowed)
        option = tuple(item)
        ints = [part for part in option[:2] if isinstance(part, int) and not isinstance(part, bool)]
        if len(option) == 3:
            value_ok = isinstance(option[2], (int, bytes, bytearray))
        elif len(option) == 4:
            value_ok = option[2] is None and isinstance(option[3], int)
            value_ok = value_ok and not isinstance(option[3], bool)
        else:
            value_ok = False
        if len(ints) != 2 or not value_ok:
            raise InvalidSettingType("socket_options", item, allowed)
        options.append(option)
    return options


def _transport_kwargs(
    httpx: Any, cfg: object, strict: object, helper: str, kwargs: dict[str, Any]
) -> tuple[KeepaliveConfig, bool]:
    """Check everything, then put keepalive's options into ``kwargs["socket_options"]`` (so a
    direct connection has them before its SYN)."""
    config, strict_flag = _checked(cfg, strict)
    if not _accepts(httpx.HTTPTransport, "socket_options"):
        raise _too_old("httpx", httpx.__version__, helper, "httpx>=0.25", "socket_options")
    kwargs["socket_options"] = _merge_extra(
        socket_options(config, strict=strict_flag), kwargs.get("socket_options")
    )
    return config, strict_flag


def httpx_transport(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True, **transport_kwargs: Any
) -> httpx.HTTPTransport:
    """``httpx.HTTPTransport(**transport_kwargs)`` with keepalive on every connection, for
    ``httpx.Client(transport=...)`` or ``mounts=``.

    ``transport_kwargs`` go to the transport (``proxy=``, ``verify=``, ``http2=``,
    ``limits=``, ``retries=``, ...). Direct connections get the options before they connect
    (``socket_options``); every TCP socket, through a proxy too, is configured right after it
    connects. A ``socket_options`` list of yours is kept, ahead of keepalive's (httpcore applies
    it to direct connections only), unless it sets a keepalive option itself
    (:class:`~keepalive.InvalidSetting`). httpcore adds TCP_NODELAY itself.

    A client given ``transport=`` ignores the proxy environment variables (httpx's rule):
    :func:`httpx_client` keeps them.
    """
    httpx = _httpx("httpx_transport")
    config, strict = _transport_kwargs(httpx, cfg, strict, "httpx_transport", transport_kwargs)
    transport = httpx.HTTPTransport(**transport_kwargs)
    _wrap_transport(transport, _KeepaliveBackend, config, strict, "httpx_transport")
    return transport  # type: ignore[no-any-return]


def httpx_async_transport(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True, **transport_kwargs: Any
) -> httpx.AsyncHTTPTransport:
    """:func:`httpx_transport` for ``httpx.AsyncClient``: an ``httpx.AsyncHTTPTransport``."""
    httpx = _httpx("httpx_async_transport")
    config, strict = _transport_kwargs(
        httpx, cfg, strict, "httpx_async_transport", transport_kwargs
    )
    transport = httpx.AsyncHTTPTransport(**transport_kwargs)
    _wrap_transport(transport, _AsyncKeepaliveBackend, config, strict, "httpx_async_transport")
    return transport  # type: ignore[no-any-return]
