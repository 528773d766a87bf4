"""Middlebox idle timeouts: which common NATs, firewalls and load balancers forget an idle TCP
flow before the system's first keepalive probe, and settings whose probes come sooner.

Pure data and rules: :data:`MIDDLEBOX_IDLE_TIMEOUTS` (each entry with its source),
:func:`idle_warnings` for a system idle time, :func:`suggest_keepalive` for a path's shortest
idle timeout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from keepalive._validate import positive_seconds
from keepalive.diagnostics._text import format_number

__all__ = [
    "DEFAULT_RISK_SECONDS",
    "MIDDLEBOX_IDLE_TIMEOUTS",
    "IdleWarning",
    "KeepaliveSuggestion",
    "MiddleboxTimeout",
    "Remedy",
    "idle_warnings",
    "suggest_keepalive",
]

Remedy = Literal["keepalive", "heartbeat"]


@dataclass(frozen=True)
class MiddleboxTimeout:
    """A middlebox that forgets TCP flows idle for ``idle_timeout_seconds`` (its default).

    ``probes_count`` says whether TCP keepalive probes keep the flow alive there (True for NATs,
    firewalls and L4 balancers, which see the probe packets; False for L7 proxies, where the
    probes end at the proxy and only payload bytes count). JSON keys: ``name``,
    ``idle_timeout_seconds``, ``adjustable``, ``probes_count``, ``source``.
    """

    name: str
    idle_timeout_seconds: float
    adjustable: str
    probes_count: bool
    source: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "idle_timeout_seconds": self.idle_timeout_seconds,
            "adjustable": self.adjustable,
            "probes_count": self.probes_count,
            "source": self.source,
        }


# From /work/shared/ECOSYSTEM-FACTS.md section 2; the AWS NLB/GWLB/Network Firewall, Azure LB
# and Cloud NAT rows were re-checked against the vendors' docs. Ordered by timeout.
MIDDLEBOX_IDLE_TIMEOUTS: tuple[MiddleboxTimeout, ...] = (
    MiddleboxTimeout(
        "AWS Application Load Balancer",
        60,
        "1-4000 s",
        False,
        "AWS ELB docs, ALB connection idle timeout (an L7 proxy: probes end there)",
    ),
    MiddleboxTimeout(
        "AWS Classic Load Balancer",
        60,
        "1-4000 s",
        False,
        "AWS ELB docs, CLB idle connection timeout (proxies: probes end there)",
    ),
    MiddleboxTimeout(
        "Azure Load Balancer / Azure NAT Gateway",
        240,
        "4-100 min (LB), 4-120 min (NAT)",
        True,
        "Azure docs, Load Balancer TCP reset and idle timeout",
    ),
    MiddleboxTimeout(
        "Home router / carrier-grade NAT (common low end)",
        300,
        "rarely",
        True,
        "RFC 5382 REQ-5 asks for at least 7440 s; many devices use 5-30 min or less",
    ),
    MiddleboxTimeout(
        "AWS Network Load Balancer (TCP listener)",
        350,
        "60-6000 s",
        True,
        "AWS ELB docs, update the TCP idle timeout for your Network Load Balancer listener",
    ),
    MiddleboxTimeout(
        "AWS Gateway Load Balancer",
        350,
        "60-6000 s",
        True,
        "AWS ELB docs, update the TCP idle timeout for your Gateway Load Balancer listener",
    ),
    MiddleboxTimeout(
        "AWS NAT Gateway",
        350,
        "no",
        True,
        "AWS NAT gateway docs; AWS knowledge center, lambda-vpc-timeout",
    ),
    MiddleboxTimeout(
        "AWS Network Firewall",
        350,
        "60-6000 s (TcpIdleTimeoutSeconds)",
        True,
        "AWS Network Firewall API reference, FlowTimeouts: keepalive packets reset the timer",
    ),
    MiddleboxTimeout(
        "AWS EC2 security-group connection tracking (Nitro v6 instance types)",
        350,
        "60-432000 s (tcpEstablishedTimeout)",
        True,
        "EC2 API, ConnectionTrackingSpecification",
    ),
    MiddleboxTimeout(
        "Google Cloud VPC firewall connection tracking",
        600,
        "no",
        True,
        "GCP VPC firewall rules docs",
    ),
    MiddleboxTimeout(
        "Google Cloud NAT (established TCP)",
        1200,
        "yes (tcpEstablishedIdleTimeoutSec)",
        True,
        "GCP Cloud NAT docs / compute API RouterNat: defaults to 1200 s",
    ),
    MiddleboxTimeout(
        "kube-proxy conntrack (established)",
        86400,
        "--conntrack-tcp-timeout-established",
        True,
        "Kubernetes kube-proxy reference",
    ),
    MiddleboxTimeout(
        "Linux conntrack (established)",
        432000,
        "nf_conntrack_tcp_timeout_established",
        True,
        "Linux kernel docs, nf_conntrack sysctls",
    ),
    MiddleboxTimeout(
        "AWS EC2 security-group connection tracking",
        432000,
        "60-432000 s (tcpEstablishedTimeout)",
        True,
        "EC2 API, ConnectionTrackingSpecification",
    ),
)

#: The shortest common idle timeout that keepalive probes can beat (Azure's 4 minutes): a
#: connection idle longer than this without keepalive is at risk behind such a middlebox.
DEFAULT_RISK_SECONDS: float = min(
    entry.idle_timeout_seconds for entry in MIDDLEBOX_IDLE_TIMEOUTS if entry.probes_count
)


@dataclass(frozen=True)
class KeepaliveSuggestion:
    """Settings (seconds; ``count`` probes) that send the first probe before a middlebox forgets
    the flow and bound detection; ``code`` is the matching ``KeepaliveConfig(...)`` call.

    JSON keys: ``idle``, ``interval``, ``count``, ``user_timeout``, ``code``.
    """

    idle: float
    interval: float
    count: int
    user_timeout: float

    @property
    def code(self) -> str:
        return (
            f"KeepaliveConfig(idle={format_number(self.idle)}, "
            f"interval={format_number(self.interval)}, count={self.count}, "
            f"user_timeout={format_number(self.user_timeout)})"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "idle": self.idle,
            "interval": self.interval,
            "count": self.count,
            "user_timeout": self.user_timeout,
            "code": self.code,
        }


def suggest_keepalive(middlebox_idle_seconds: float) -> KeepaliveSuggestion:
    """Settings for a path whose shortest idle timeout is ``middlebox_idle_seconds``.

    The first probe goes after at most half that time (whole seconds from 2 s up), capped at
    60 s, so idle=60, interval=10, count=5 for every common middlebox but the 60 s proxies;
    later probes every ``min(10, idle)`` s; ``user_timeout = idle + interval * count``, as
    Cloudflare's "When TCP sockets refuse to die" recommends, so that data stuck
    unacknowledged is bounded alike.
    """
    timeout = positive_seconds("middlebox_idle_seconds", middlebox_idle_seconds)
    # Whole seconds where possible (every OS takes them); below 2 s only a fraction fits.
    idle = float(min(60, math.floor(timeout / 2))) if timeout >= 2 else timeout / 2
    interval = min(10.0, idle)
    count = 5
    return KeepaliveSuggestion(idle, interval, count, idle + interval * count)


@dataclass(frozen=True)
class IdleWarning:
    """The system waits ``system_idle_seconds`` before the first probe, longer than
    ``middlebox`` keeps an idle flow.

    ``remedy`` is ``"keepalive"`` (earlier probes fix it) or ``"heartbeat"`` (probes end at an
    L7 proxy: payload bytes are needed). JSON keys: ``middlebox`` (object),
    ``system_idle_seconds``, ``remedy``, ``message``, ``suggestion`` (object).
    """

    middlebox: MiddleboxTimeout
    system_idle_seconds: float
    remedy: Remedy
    message: str
    suggestion: KeepaliveSuggestion

    def to_json(self) -> dict[str, object]:
        return {
            "middlebox": self.middlebox.to_json(),
            "system_idle_seconds": self.system_idle_seconds,
            "remedy": self.remedy,
            "message": self.message,
            "suggestion": self.suggestion.to_json(),
        }


def idle_warnings(
    system_idle_seconds: float,
    *,
    middleboxes: Iterable[MiddleboxTimeout] = MIDDLEBOX_IDLE_TIMEOUTS,
) -> list[IdleWarning]:
    """Warnings for each middlebox that forgets an idle flow before the first keepalive probe.

    ``system_idle_seconds`` is the idle time before the first probe (Linux
    ``net.ipv4.tcp_keepalive_time``, 7200 s by default everywhere). A middlebox warns when that
    is at least its idle timeout; the result is ordered by timeout, shortest first.
    """
    idle = positive_seconds("system_idle_seconds", system_idle_seconds)
    warnings: list[IdleWarning] = []
    for box in sorted(middleboxes, key=lambda entry: entry.idle_timeout_seconds):
        if idle < box.idle_timeout_seconds:
            continue
        suggestion = suggest_keepalive(box.idle_timeout_seconds)
        limit = format_number(box.idle_timeout_seconds)
        if box.probes_count:
            remedy: Remedy = "keepalive"
            message = (
                f"The first keepalive probe comes after {format_number(idle)} s but {box.name} "
                f"forgets flows idle for {limit} s: an idle connection through it dies "
                f"silently. Probe earlier, e.g. {suggestion.code}."
            )
        else:
            remedy = "heartbeat"
            message = (
                f"{box.name} closes connections idle for {limit} s and keepalive probes do not "
                "reach past it (it is a proxy): send application bytes more often than that "
                f"(keepalive.heartbeat with an interval under {limit} s). Kernel keepalive such "
                f"as {suggestion.code} only protects the hop to the proxy."
            )
        warnings.append(IdleWarning(box, idle, remedy, message, suggestion))
    return warnings
