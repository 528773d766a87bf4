"""pika (RabbitMQ, AMQP 0-9-1): kernel keepalive through ``tcp_options`` and the AMQP
heartbeat from a :class:`~keepalive.HeartbeatConfig`.

``pika.ConnectionParameters(host, port, **connection_parameters_kwargs(cfg, heartbeat=hb))``
(also ``URLParameters``' attributes of the same names).

- ``tcp_options``: pika 1.x (``pika/tcp_socket_opts.py``) takes string keys, ``TCP_KEEPIDLE``,
  ``TCP_KEEPINTVL``, ``TCP_KEEPCNT`` and ``TCP_USER_TIMEOUT``, and passes each value unchanged
  to ``setsockopt(SOL_TCP, ...)`` (so the user timeout is in milliseconds), turning
  SO_KEEPALIVE on when any ``TCP_KEEP*`` key is given. It knows the three ``TCP_KEEP*`` keys
  only where Python exports all three names: not on macOS, whose idle option is
  ``TCP_KEEPALIVE``, so there pika applies nothing but SO_KEEPALIVE and logs a warning per
  key. Settings pika cannot apply as :func:`keepalive.configure` would raise
  :class:`~keepalive.UnsupportedOption` under ``strict=True`` and are left out otherwise.
- ``heartbeat``: AMQP heartbeats carry no reply: each side sends a heartbeat frame when it
  has been quiet, and declares the other dead when nothing at all arrives for too long. pika
  sends one every ``T / 2`` seconds and checks every ``T + 5`` seconds whether any byte came
  in since the previous check (``pika/heartbeat.py``), so its verdict comes between ``T + 5``
  and ``2 * (T + 5)`` seconds after the last inbound byte (:func:`detection_bound`). The
  timeout ``T`` is a whole number of seconds, and pika sends its own value to the broker
  whatever the broker proposed. :func:`heartbeat_timeout` picks the largest ``T`` whose
  worst case stays within the :class:`~keepalive.HeartbeatConfig`'s ``detection_bound``;
  pika cannot detect sooner than 12 s (``T = 1``).

Nothing here imports pika. Tested with pika 1.4.4 against RabbitMQ 3.10.8 (Debian bookworm).
"""

from __future__ import annotations

import math
from typing import Final, TypedDict

from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, UnsupportedOption
from keepalive.heartbeat import HeartbeatConfig
from keepalive.integrations._common import _checked, _platform
from keepalive.platforms import SETTINGS, Platform, SetOption

__all__ = [
    "CHECK_SLACK",
    "MIN_DETECTION_BOUND",
    "PikaKwargs",
    "connection_parameters_kwargs",
    "detection_bound",
    "heartbeat_timeout",
    "tcp_options",
]

CHECK_SLACK: Final = 5
"""Seconds pika adds to the heartbeat timeout between two checks for inbound bytes."""

_KEEPALIVE_KEYS: Final = frozenset({"TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"})
_USER_TIMEOUT_KEY: Final = "TCP_USER_TIMEOUT"
_MAX_HEARTBEAT: Final = 65535  # Connection.Tune-Ok carries the heartbeat as a short (uint16)


def detection_bound(timeout: int) -> float:
    """Worst-case seconds from the last inbound byte to pika's verdict
    (``AMQPHeartbeatTimeout``) for a negotiated heartbeat ``timeout``: ``2 * (timeout + 5)``.

    pika checks every ``timeout + 5`` seconds whether a byte arrived since the last check; the
    last byte can arrive just after one check, and the next check still sees it.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise InvalidSettingType("timeout", timeout, "an int of seconds >= 1")
    if timeout < 1:
        raise InvalidSetting("timeout", timeout, "1 s or more (0 turns the heartbeat off)")
    return 2.0 * (timeout + CHECK_SLACK)


MIN_DETECTION_BOUND: Final = detection_bound(1)
"""The soonest pika can promise a verdict: 12 s, with a heartbeat timeout of 1 s."""


def heartbeat_timeout(heartbeat: HeartbeatConfig) -> int:
    """The AMQP heartbeat timeout (whole seconds) for ``ConnectionParameters(heartbeat=...)``:
    the largest whose :func:`detection_bound` is at most ``heartbeat.detection_bound``, and at
    most 65535 (AMQP carries it in 16 bits).

    Raises :class:`~keepalive.InvalidSetting` when that bound is below
    :data:`MIN_DETECTION_BOUND` (12 s): pika cannot keep it.
    """
    if not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a keepalive.HeartbeatConfig")
    wanted = heartbeat.detection_bound
    timeout = min(math.floor(round(wanted / 2 - CHECK_SLACK, 6)), _MAX_HEARTBEAT)
    if timeout < 1:
        raise InvalidSetting(
            "heartbeat",
            heartbeat,
            f"a detection_bound (interval + timeout * misses) of at least "
            f"{MIN_DETECTION_BOUND:g} s: pika checks for inbound bytes every heartbeat "
            f"timeout + {CHECK_SLACK} s, so its verdict can take 2 * (1 + {CHECK_SLACK}) s; "
            f"this one is {wanted:g} s",
        )
    return timeout


def tcp_options(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> dict[str, int]:
    """pika's ``tcp_options``: ``{"TCP_KEEPIDLE": s, "TCP_KEEPINTVL": s, "TCP_KEEPCNT": n}``
    plus ``"TCP_USER_TIMEOUT": ms`` when ``cfg.user_timeout`` is set, rounded as
    :func:`keepalive.configure` rounds them on this platform.

    A setting pika cannot apply here (on macOS: every one; elsewhere a user timeout carried by
    another option than TCP_USER_TIMEOUT, or an idle time and interval that need Windows'
    ioctl) raises :class:`~keepalive.UnsupportedOption` when ``strict``, else is left out
    (the system default applies).
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    plan = target.plan(config, strict=strict)  # ranges checked as configure() checks them
    set_by_name = {
        operation.name: operation
        for operation in plan.operations
        if isinstance(operation, SetOption) and operation.level == target.ipproto_tcp
    }
    # pika knows the TCP_KEEP* keys only if Python exports all three names here.
    exported = {spec.name for spec in target.options.values()}
    keepalive_keys_known = exported >= _KEEPALIVE_KEYS
    options: dict[str, int] = {}
    for setting in SETTINGS:
        result = plan.result(setting)
        if result is None or result.stored is None or result.option is None:
            continue  # not requested, unsupported (strict=False), or a fixed system value
        name = result.option
        operation = set_by_name.get(name)
        pika_knows = name == _USER_TIMEOUT_KEY or (name in _KEEPALIVE_KEYS and keepalive_keys_known)
        if pika_knows and operation is not None:
            options[name] = operation.value  # native units: pika passes it unchanged
            continue
        if strict:
            raise UnsupportedOption(setting, target.name, _reason(name, keepalive_keys_known))
    return options


def _reason(option: str, keepalive_keys_known: bool) -> str:
    if option in _KEEPALIVE_KEYS and not keepalive_keys_known:
        return (
            f"pika sets {option} only where Python exports TCP_KEEPIDLE, TCP_KEEPINTVL and "
            "TCP_KEEPCNT, which it does not here; pika would set SO_KEEPALIVE only"
        )
    return f"{option} carries it here, and pika's tcp_options know no such key"


class _TcpOptionsKwargs(TypedDict):
    tcp_options: dict[str, int]


class PikaKwargs(_TcpOptionsKwargs, total=False):
    """Keyword arguments for ``pika.ConnectionParameters``."""

    heartbeat: int


def connection_parameters_kwargs(
    cfg: KeepaliveConfig | None = None,
    *,
    heartbeat: HeartbeatConfig | None = None,
    strict: bool = True,
    platform: Platform | None = None,
) -> PikaKwargs:
    """``{"tcp_options": tcp_options(cfg), "heartbeat": heartbeat_timeout(heartbeat)}`` for
    ``pika.ConnectionParameters(**...)``; without ``heartbeat`` the key is left out (pika then
    takes the broker's proposal, RabbitMQ's default being 60 s). Raises like
    :func:`tcp_options` and :func:`heartbeat_timeout`, before any connection is made.
    """
    kwargs: PikaKwargs = {"tcp_options": tcp_options(cfg, strict=strict, platform=platform)}
    if heartbeat is not None:
        kwargs["heartbeat"] = heartbeat_timeout(heartbeat)
    return kwargs
