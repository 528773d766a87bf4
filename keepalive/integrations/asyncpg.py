"""Kernel keepalive (and the user timeout) on asyncpg's connections.

asyncpg takes no keepalive settings (MagicStack/asyncpg#606) and opens its sockets itself,
but it builds every connection through ``connection_class``, handing the class the connected
transport. :func:`connection_class` returns an ``asyncpg.Connection`` subclass that configures
that transport's socket with :func:`keepalive.configure`, for ``asyncpg.connect(...,
connection_class=...)`` and ``asyncpg.create_pool(..., connection_class=...)``.
:func:`pool_init` is the same as a pool ``init=`` hook, for pools whose connection class is
someone else's.

Unix-domain socket connections (``host="/var/run/postgresql"``) are left alone: there is no
TCP to keep alive. Tested with asyncpg 0.32.0 against PostgreSQL 15.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any

from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSettingType
from keepalive.platforms import current
from keepalive.sockets import ConfigureResult, configure

__all__ = ["configure_connection", "connection_class", "pool_init"]


def _checked(cfg: object, strict: object) -> KeepaliveConfig:
    if cfg is None:
        cfg = KeepaliveConfig()
    if not isinstance(cfg, KeepaliveConfig):
        raise InvalidSettingType("cfg", cfg, "a keepalive.KeepaliveConfig or None (the defaults)")
    if not isinstance(strict, bool):
        raise InvalidSettingType("strict", strict, "True or False")
    current().plan(cfg, strict=strict)  # a bad or unsupported setting raises now, not per connect
    return cfg


def _asyncpg(helper: str) -> Any:
    # By name: asyncpg ships no type information.
    try:
        return importlib.import_module("asyncpg")
    except ImportError as exc:
        raise ImportError(
            f"keepalive.integrations.asyncpg.{helper}() needs asyncpg: pip install asyncpg",
            name="asyncpg",
        ) from exc


def _configure_transport(
    transport: Any, cfg: KeepaliveConfig, strict: bool
) -> ConfigureResult | None:
    sock = transport.get_extra_info("socket")  # TLS transports pass it through too
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return configure(sock, cfg, strict=strict)


def configure_connection(
    connection: Any, cfg: KeepaliveConfig | None = None, *, strict: bool = True
) -> ConfigureResult | None:
    """Configure an open ``asyncpg.Connection``'s socket; ``None`` for a Unix-domain socket.

    asyncpg keeps its transport private (``_transport``): this reads it there. Prefer
    :func:`connection_class`, which is handed the transport by asyncpg itself.
    """
    config = _checked(cfg, strict)
    transport = getattr(connection, "_transport", None)
    if transport is None or not callable(getattr(transport, "get_extra_info", None)):
        raise TypeError(f"{connection!r} is not an open asyncpg.Connection")
    return _configure_transport(transport, config, strict)


def connection_class(
    cfg: KeepaliveConfig | None = None, *, strict: bool = True, base: type | None = None
) -> type:
    """An ``asyncpg.Connection`` subclass (of ``base``, if given) that configures its socket.

    For ``asyncpg.connect(dsn, connection_class=...)`` and ``asyncpg.create_pool(dsn,
    connection_class=...)``. The config is checked against this platform now. asyncpg builds
    the connection once the server has accepted the login, so the options apply from then on
    (the connect itself is bounded by asyncpg's ``timeout``). The same arguments return the
    same class.
    """
    return _connection_class(_checked(cfg, strict), strict, base)


@cache
def _connection_class(cfg: KeepaliveConfig, strict: bool, base: type | None) -> type:
    asyncpg = _asyncpg("connection_class")
    if base is not None and not (isinstance(base, type) and issubclass(base, asyncpg.Connection)):
        raise InvalidSettingType("base", base, "a subclass of asyncpg.Connection, or None")
    parent: Any = asyncpg.Connection if base is None else base

    def __init__(self: Any, protocol: Any, transport: Any, *args: Any, **kwargs: Any) -> None:
        parent.__init__(self, protocol, transport, *args, **kwargs)
        _configure_transport(transport, cfg, strict)

    return type(
        f"Keepalive{parent.__name__}",
        (parent,),
        {"__init__": __init__, "__module__": __name__, "keepalive_config": cfg},
    )


def pool_init(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    then: Callable[[Any], Awaitable[object]] | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """An ``init=`` coroutine for ``asyncpg.create_pool``: configures each new connection's
    socket, then awaits ``then(connection)`` (your own init), if given."""
    config = _checked(cfg, strict)

    async def init(connection: Any) -> None:
        configure_connection(connection, config, strict=strict)
        if then is not None:
            await then(connection)

    return init
