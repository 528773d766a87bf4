"""gRPC (grpcio) keepalive options from a :class:`~keepalive.HeartbeatConfig`.

grpcio's sockets live in its C core, out of Python's reach: kernel keepalive cannot be set on
them from here. Its HTTP/2 keepalive is a heartbeat (a PING frame the next HTTP/2 hop must
acknowledge), and it is what these helpers configure:

- :func:`channel_options`: client options; ``grpc.keepalive_time_ms`` is the heartbeat's
  ``interval`` (grpc restarts that timer on every inbound frame, as our heartbeat does on every
  inbound byte), ``grpc.keepalive_timeout_ms`` its ``timeout * misses``: grpc sends one ping
  and waits that long for its acknowledgement, where our heartbeat would send ``misses``
  pings; the detection bound, ``interval + timeout * misses``, is the same. ``interval``
  must be at least 1 s (:data:`MIN_INTERVAL`): grpc-core pings no more often.
- :func:`server_options`: the server's ping policy (how often it lets clients ping) and,
  optionally, its own keepalive pings towards clients.
- :func:`check_channel_options`: refuses, with :class:`~keepalive.InvalidSetting`, client
  options that a server's policy punishes with GOAWAY ``too_many_pings`` (grpc#25722,
  #28830). :func:`channel_options` runs it against ``server=`` (grpc-core's defaults unless
  told otherwise), so a refused combination never reaches a channel.

Nothing here imports grpc: the options are plain ``(name, int)`` pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from keepalive._validate import flag, positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType
from keepalive.heartbeat import HeartbeatConfig

__all__ = [
    "DEFAULT_POLICY",
    "IDLE_PING_INTERVAL",
    "MIN_INTERVAL",
    "ServerPolicy",
    "channel_options",
    "check_channel_options",
    "server_options",
]

GrpcOption = tuple[str, int]

# grpc-core's ping abuse policy (ping_abuse_policy.cc): on a transport with no call, a server
# that does not permit keepalive without calls allows one ping per 2 hours.
IDLE_PING_INTERVAL = 7200.0
"""grpc-core's default: seconds between pings a server admits on a connection without calls."""
_INT_MAX = 2**31 - 1  # channel arguments are C ints
# grpc-core's client sends keepalive pings at most once a second: with grpcio 1.85.3 a
# keepalive_time of 300 ms gave pings 1.0 s apart. Shorter intervals would break the bound.
MIN_INTERVAL = 1.0
"""The shortest heartbeat interval (seconds) grpc-core honours: it pings at most once a second."""


def _heartbeat(heartbeat: object) -> HeartbeatConfig:
    if not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a keepalive.HeartbeatConfig")
    return heartbeat


def _ms(field: str, seconds: float) -> int:
    """Whole milliseconds, rounded up (never 0), within a C int."""
    ms = max(1, math.ceil(round(seconds * 1000, 6)))
    if ms > _INT_MAX:
        raise InvalidSetting(field, seconds, f"at most {_INT_MAX / 1000:g} s (a C int of ms)")
    return ms


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    """How often a gRPC server lets its clients ping; defaults are grpc-core's.

    ``min_ping_interval_without_data``: seconds (``grpc.http2.min_ping_interval_without_data_ms``,
    default 300 s); a ping arriving sooner after the previous one, while the server sends no
    data, is a strike. ``permit_without_calls``: whether pings on a connection without calls
    are allowed at that rate (``grpc.keepalive_permit_without_calls``); if not, only one per
    :data:`IDLE_PING_INTERVAL` (2 h). ``max_ping_strikes``: strikes tolerated before GOAWAY
    ``too_many_pings`` (``grpc.http2.max_ping_strikes``, default 2; 0 means unlimited).
    """

    min_ping_interval_without_data: float = 300.0
    permit_without_calls: bool = False
    max_ping_strikes: int = 2

    def __post_init__(self) -> None:
        seconds = positive_seconds(
            "min_ping_interval_without_data", self.min_ping_interval_without_data
        )
        object.__setattr__(self, "min_ping_interval_without_data", seconds)
        _ms("min_ping_interval_without_data", seconds)
        object.__setattr__(
            self, "permit_without_calls", flag("permit_without_calls", self.permit_without_calls)
        )
        strikes = self.max_ping_strikes
        if isinstance(strikes, bool) or not isinstance(strikes, int):
            raise InvalidSettingType("max_ping_strikes", strikes, "an int >= 0")
        if not 0 <= strikes <= _INT_MAX:
            raise InvalidSetting("max_ping_strikes", strikes, "0 (unlimited) or more")

    @classmethod
    def admitting(
        cls, heartbeat: HeartbeatConfig, *, permit_without_calls: bool = True
    ) -> ServerPolicy:
        """The policy a server needs so that :func:`channel_options` with ``heartbeat`` is
        never struck: pings as often as ``heartbeat.interval``, with or without calls."""
        heartbeat = _heartbeat(heartbeat)
        return cls(
            min_ping_interval_without_data=_ms("interval", heartbeat.interval) / 1000,
            permit_without_calls=flag("permit_without_calls", permit_without_calls),
        )

    def required_interval(self, permit_without_calls: bool) -> float | None:
        """The shortest client ``keepalive_time`` (seconds) this policy never strikes, or
        ``None`` if it strikes nothing (``max_ping_strikes=0``)."""
        if self.max_ping_strikes == 0:
            return None
        if permit_without_calls and not self.permit_without_calls:
            return max(self.min_ping_interval_without_data, IDLE_PING_INTERVAL)
        return self.min_ping_interval_without_data


DEFAULT_POLICY = ServerPolicy()
"""grpc-core's default server ping policy (what a server without keepalive options enforces)."""


def channel_options(
    heartbeat: HeartbeatConfig,
    *,
    permit_without_calls: bool = True,
    server: ServerPolicy = DEFAULT_POLICY,
) -> list[GrpcOption]:
    """Client channel options for ``grpc.insecure_channel(target, options=...)`` and
    ``grpc.secure_channel`` / ``grpc.aio`` channels.

    ``grpc.keepalive_time_ms`` = ``interval``; ``grpc.keepalive_timeout_ms`` and
    ``grpc.http2.ping_timeout_ms`` = ``timeout * misses`` (grpcio 1.85 arms the keepalive
    timeout only through the ping timeout, 60 s by default: without it a frozen peer went
    unnoticed for 30 s with a 1 s keepalive timeout); ``grpc.http2.max_pings_without_data``
    = 0 (grpc-core otherwise stops pinging after 2 pings without data, and the heartbeat with
    it); ``grpc.keepalive_permit_without_calls``: ping idle channels too (the default here).

    Raises :class:`~keepalive.InvalidSetting` if ``server``'s policy would answer these pings
    with GOAWAY ``too_many_pings``; pass the server's real policy (``ServerPolicy(...)``),
    or ``ServerPolicy(max_ping_strikes=0)`` for a server that never strikes.
    """
    heartbeat = _heartbeat(heartbeat)
    if heartbeat.interval < MIN_INTERVAL:
        raise InvalidSetting(
            "interval",
            heartbeat.interval,
            f"at least {MIN_INTERVAL:g} s: grpc sends keepalive pings at most once a second",
        )
    permit = flag("permit_without_calls", permit_without_calls)
    timeout_ms = _ms("timeout", heartbeat.timeout * heartbeat.misses)
    options = [
        ("grpc.keepalive_time_ms", _ms("interval", heartbeat.interval)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(permit)),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    check_channel_options(options, server)
    return options


def check_channel_options(
    options: Iterable[tuple[str, object]], server: ServerPolicy = DEFAULT_POLICY
) -> None:
    """Raise :class:`~keepalive.InvalidSetting` if a client with these channel ``options``
    would be sent GOAWAY ``too_many_pings`` by a server with policy ``server``.

    Works on any options list (yours or :func:`channel_options`'); without
    ``grpc.keepalive_time_ms`` the client sends no keepalive pings and passes.
    """
    if not isinstance(server, ServerPolicy):
        raise InvalidSettingType("server", server, "a keepalive.integrations.grpc.ServerPolicy")
    given = dict(options)
    time_ms = given.get("grpc.keepalive_time_ms")
    if time_ms is None:
        return
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms < 1:
        raise InvalidSettingType("grpc.keepalive_time_ms", time_ms, "an int of ms >= 1")
    if time_ms >= _INT_MAX:  # grpc's "never"
        return
    permit = bool(given.get("grpc.keepalive_permit_without_calls", 0))
    required = server.required_interval(permit)
    if required is None or time_ms >= required * 1000:
        return
    if permit and not server.permit_without_calls and required == IDLE_PING_INTERVAL:
        why = (
            "the server does not permit keepalive without calls, so on an idle channel it "
            f"allows one ping per {IDLE_PING_INTERVAL:g} s"
        )
        hint = "drop permit_without_calls, or have the server set permit_without_calls"
    else:
        why = (
            "the server strikes pings sooner than its min_ping_interval_without_data "
            f"({server.min_ping_interval_without_data:g} s)"
        )
        hint = "lengthen the interval, or lower the server's min_ping_interval_without_data"
    raise InvalidSetting(
        "grpc.keepalive_time_ms",
        time_ms,
        f"at least {math.ceil(required * 1000)} ms: {why}, and after "
        f"{server.max_ping_strikes} strikes it closes the connection with GOAWAY "
        "too_many_pings",
        hint=f"{hint}; see keepalive.integrations.grpc.server_options",
    )


def server_options(
    policy: ServerPolicy = DEFAULT_POLICY, *, heartbeat: HeartbeatConfig | None = None
) -> list[GrpcOption]:
    """Server options for ``grpc.server(executor, options=...)``: the ping ``policy``
    (``grpc.http2.min_ping_interval_without_data_ms``, ``grpc.http2.max_ping_strikes``,
    ``grpc.keepalive_permit_without_calls``), and with ``heartbeat`` the server's own
    keepalive pings towards its clients (``grpc.keepalive_time_ms``, default 2 h, and
    ``grpc.keepalive_timeout_ms``, mapped as in :func:`channel_options`).

    ``server_options(ServerPolicy.admitting(hb))`` admits clients using
    ``channel_options(hb)``.
    """
    if not isinstance(policy, ServerPolicy):
        raise InvalidSettingType("policy", policy, "a keepalive.integrations.grpc.ServerPolicy")
    options = [
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _ms("min_ping_interval_without_data", policy.min_ping_interval_without_data),
        ),
        ("grpc.http2.max_ping_strikes", policy.max_ping_strikes),
        ("grpc.keepalive_permit_without_calls", int(policy.permit_without_calls)),
    ]
    if heartbeat is not None:
        heartbeat = _heartbeat(heartbeat)
        timeout_ms = _ms("timeout", heartbeat.timeout * heartbeat.misses)
        options += [
            ("grpc.keepalive_time_ms", _ms("interval", heartbeat.interval)),
            ("grpc.keepalive_timeout_ms", timeout_ms),
            ("grpc.http2.ping_timeout_ms", timeout_ms),
        ]
    return options
