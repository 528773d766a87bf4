"""kombu and celery: kernel keepalive for the broker connection, and the AMQP heartbeat from a
:class:`~keepalive.HeartbeatConfig`.

- :func:`connection_kwargs`: ``kombu.Connection(url, **connection_kwargs(cfg, heartbeat=hb))``.
- :func:`celery_settings`: ``app.conf.update(celery_settings(cfg, heartbeat=hb))``
  (``broker_transport_options``, ``broker_heartbeat``, ``broker_heartbeat_checkrate``).

``transport="amqp"`` (kombu's ``amqp://`` / ``pyamqp://``, py-amqp underneath): py-amqp
applies ``transport_options["socket_settings"]``, a dict of TCP-level option numbers to
values, with ``setsockopt(SOL_TCP, ...)`` after its own defaults, and turns SO_KEEPALIVE on
itself (:func:`socket_settings`). Its defaults include ``TCP_USER_TIMEOUT`` = 1000 ms on
Linux: a connection whose data stays unacknowledged for 1 s is dropped, and an idle one is
given up at the first keepalive probe left unanswered, so the config's probe count would not
count. Without a ``user_timeout`` in the config, ``socket_settings``
therefore sets TCP_USER_TIMEOUT back to 0 (off), and the config means what it says.

The AMQP heartbeat carries no reply: each side sends a heartbeat frame when it has been
quiet, and a side that hears nothing at all for long enough declares the other dead. py-amqp
negotiates the lower non-zero of the client's and the broker's timeouts ``T`` (whole
seconds; RabbitMQ proposes 60) and checks only when ``heartbeat_check(rate)`` is called:
celery's worker calls it every ``T / broker_heartbeat_checkrate`` seconds; a kombu user must
call ``connection.heartbeat_check(rate)`` as often. It raises ``ConnectionForced`` ("Too many
heartbeats missed") at the first check more than ``2 * T`` after the check that last saw
inbound bytes, so the verdict comes at most ``2 * T + 2 * T / rate`` seconds after the last
inbound byte (:func:`detection_bound`). :func:`heartbeat_timeout` picks the largest ``T``
within the :class:`~keepalive.HeartbeatConfig`'s ``detection_bound``; a broker proposing less
only makes the verdict sooner.

``transport="redis"``: kombu's Redis transport forwards ``socket_keepalive`` and
``socket_keepalive_options`` from the transport options to redis-py, so they are
:func:`keepalive.integrations.redis_kwargs`. It has no AMQP heartbeat (its own liveness check
is ``health_check_interval``), so a ``heartbeat`` is refused there.

Nothing here imports kombu or celery. Tested with kombu 5.7.0, py-amqp 5.4.2 and celery 5.7.0
against RabbitMQ 3.10.8 and Redis 7.0.15.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

from keepalive._validate import positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, UnsupportedOption
from keepalive.heartbeat import HeartbeatConfig
from keepalive.integrations import redis_kwargs
from keepalive.integrations._common import _checked, _platform
from keepalive.platforms import Platform
from keepalive.sockets import socket_options

__all__ = [
    "DEFAULT_CHECK_RATE",
    "celery_settings",
    "connection_kwargs",
    "detection_bound",
    "heartbeat_timeout",
    "socket_settings",
]

_Family = Literal["amqp", "redis"]  # the transport families shaped here

DEFAULT_CHECK_RATE: Final = 2.0
"""Heartbeat checks per heartbeat timeout: ``kombu.Connection.heartbeat_check``'s default
rate; :func:`celery_settings` sets celery's ``broker_heartbeat_checkrate`` (default 3) to it."""

# The schemes kombu maps to each transport family this module shapes options for.
_TRANSPORTS: Final[dict[str, _Family]] = {
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "redis": "redis",
    "rediss": "redis",
}


def _transport(transport: object) -> _Family:
    if not isinstance(transport, str) or transport not in _TRANSPORTS:
        raise InvalidSetting(
            "transport", transport, "one of " + ", ".join(repr(name) for name in _TRANSPORTS)
        )
    return _TRANSPORTS[transport]


_MAX_HEARTBEAT: Final = 65535  # Connection.Tune-Ok carries the heartbeat as a short (uint16)


def _check_rate(check_rate: object) -> float:
    allowed = "a finite number of heartbeat checks per heartbeat timeout, > 0"
    try:
        return positive_seconds("check_rate", check_rate)
    except InvalidSettingType:
        raise InvalidSettingType("check_rate", check_rate, allowed) from None
    except InvalidSetting:
        raise InvalidSetting("check_rate", check_rate, allowed) from None


def socket_settings(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> dict[int, int]:
    """py-amqp's ``socket_settings``: ``{TCP option number: value}`` for the config, rounded
    as :func:`keepalive.configure` rounds them here, plus ``TCP_USER_TIMEOUT: 0`` on Linux when
    the config has no user timeout (undoing py-amqp's 1 s default).

    Raises like :func:`keepalive.socket_options` (``UnsupportedOption`` where a setting cannot
    be honoured under ``strict``, or needs Windows' ioctl).
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    settings: dict[int, int] = {}
    for level, optname, value in socket_options(config, strict=strict, platform=target):
        if (level, optname) == (target.sol_socket, target.so_keepalive):
            continue  # py-amqp turns SO_KEEPALIVE on itself
        if level != target.ipproto_tcp:  # no platform plans one today
            raise UnsupportedOption(
                "keepalive",
                target.name,
                f"option {optname} is at socket level {level}, but py-amqp applies "
                "socket_settings at SOL_TCP only",
            )
        settings[optname] = value
    user_timeout = target.options.get("user_timeout")
    if config.user_timeout is None and target.family == "linux" and user_timeout is not None:
        settings[user_timeout.optname] = 0  # 0: no user timeout, the kernel's default
    return settings


def detection_bound(timeout: int, *, check_rate: float = DEFAULT_CHECK_RATE) -> float:
    """Worst-case seconds from the last inbound byte to py-amqp's verdict for a negotiated
    heartbeat ``timeout``, checked ``check_rate`` times per timeout:
    ``2 * timeout + 2 * timeout / check_rate`` (3 s for 1 s at the default rate 2).

    The check that first sees the last bytes comes up to one period after them, and the
    verdict at the first check more than ``2 * timeout`` after that one.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise InvalidSettingType("timeout", timeout, "an int of seconds >= 1")
    if timeout < 1:
        raise InvalidSetting("timeout", timeout, "1 s or more (0 turns the heartbeat off)")
    return 2.0 * timeout + 2.0 * timeout / _check_rate(check_rate)


def heartbeat_timeout(heartbeat: HeartbeatConfig, *, check_rate: float = DEFAULT_CHECK_RATE) -> int:
    """The AMQP heartbeat timeout (whole seconds) for kombu's ``heartbeat=`` and celery's
    ``broker_heartbeat``: the largest whose :func:`detection_bound` at ``check_rate`` is at
    most ``heartbeat.detection_bound``, and at most 65535 (AMQP carries it in 16 bits). Raises
    :class:`~keepalive.InvalidSetting` when even 1 s would take longer (below 3 s at the
    default rate).
    """
    if not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a keepalive.HeartbeatConfig")
    rate = _check_rate(check_rate)
    wanted = heartbeat.detection_bound
    timeout = min(math.floor(round(wanted / (2 + 2 / rate), 6)), _MAX_HEARTBEAT)
    if timeout < 1:
        raise InvalidSetting(
            "heartbeat",
            heartbeat,
            f"a detection_bound (interval + timeout * misses) of at least "
            f"{detection_bound(1, check_rate=rate):g} s: py-amqp declares the broker dead "
            f"2 heartbeat timeouts after the check that last saw bytes, checking "
            f"{rate:g} times per timeout of at least 1 s; this one is {wanted:g} s",
        )
    return timeout


def _transport_options(
    cfg: KeepaliveConfig | None, transport: _Family, strict: bool, platform: Platform | None
) -> dict[str, Any]:
    if transport == "redis":
        return dict(redis_kwargs(cfg, strict=strict, platform=platform))
    return {"socket_settings": socket_settings(cfg, strict=strict, platform=platform)}


def _amqp_heartbeat(
    heartbeat: HeartbeatConfig | None, transport: _Family, check_rate: float
) -> int | None:
    if heartbeat is None:
        return None
    if transport != "amqp":
        raise InvalidSetting(
            "heartbeat",
            heartbeat,
            "None with the redis transport: it has no AMQP heartbeat (its liveness check is "
            "the transport option health_check_interval)",
        )
    return heartbeat_timeout(heartbeat, check_rate=check_rate)


def connection_kwargs(
    cfg: KeepaliveConfig | None = None,
    *,
    heartbeat: HeartbeatConfig | None = None,
    transport: str = "amqp",
    strict: bool = True,
    platform: Platform | None = None,
    check_rate: float = DEFAULT_CHECK_RATE,
) -> dict[str, Any]:
    """Keyword arguments for ``kombu.Connection(url, **...)``: ``transport_options`` (for
    ``amqp``: ``{"socket_settings": socket_settings(cfg)}``; for ``redis``: ``redis_kwargs``)
    and, with ``heartbeat``, ``heartbeat=heartbeat_timeout(heartbeat)``.

    The heartbeat is only checked when ``connection.heartbeat_check(check_rate)`` is called:
    call it every ``heartbeat / check_rate`` seconds (celery's worker does this itself).
    Merge other transport options into ``transport_options`` rather than passing a second
    dict. Raises before any connection is made.
    """
    family = _transport(transport)
    config, strict = _checked(cfg, strict)
    timeout = _amqp_heartbeat(heartbeat, family, _check_rate(check_rate))
    kwargs: dict[str, Any] = {
        "transport_options": _transport_options(config, family, strict, platform)
    }
    if timeout is not None:
        kwargs["heartbeat"] = timeout
    return kwargs


def celery_settings(
    cfg: KeepaliveConfig | None = None,
    *,
    heartbeat: HeartbeatConfig | None = None,
    transport: str = "amqp",
    strict: bool = True,
    platform: Platform | None = None,
    check_rate: float = DEFAULT_CHECK_RATE,
) -> dict[str, Any]:
    """Celery configuration for ``app.conf.update(...)`` (or ``Celery(..., **...)``):
    ``broker_transport_options`` as in :func:`connection_kwargs` and, with ``heartbeat``,
    ``broker_heartbeat`` and ``broker_heartbeat_checkrate`` (``check_rate``, so the bound of
    :func:`detection_bound` holds; celery's own default rate is 3).

    Merge other broker transport options into ``broker_transport_options``: a later
    ``broker_transport_options`` setting replaces the whole dict.
    """
    kwargs = connection_kwargs(
        cfg,
        heartbeat=heartbeat,
        transport=transport,
        strict=strict,
        platform=platform,
        check_rate=check_rate,
    )
    settings: dict[str, Any] = {"broker_transport_options": kwargs["transport_options"]}
    if "heartbeat" in kwargs:
        settings["broker_heartbeat"] = kwargs["heartbeat"]
        settings["broker_heartbeat_checkrate"] = _check_rate(check_rate)
    return settings
