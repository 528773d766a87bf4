"""`KeepaliveConfig`: what kernel keepalive should do, as a validated, hashable value.

Pure: no sockets, no clock. Platform limits (units, ranges) are checked later, when a config is
turned into a plan for one platform (`keepalive.platforms`), still before any option is set.
"""

from __future__ import annotations

import math

from keepalive._record import Record
from keepalive._validate import positive_int, positive_seconds
from keepalive.errors import InvalidSetting

TYPE_CHECKING = False  # typing stays unimported on the first-use path (mypy reads it as True)
if TYPE_CHECKING:
    from keepalive.platforms import Platform

__all__ = ["DEFAULT_COUNT", "DEFAULT_IDLE", "DEFAULT_INTERVAL", "KeepaliveConfig"]

#: Defaults: detect a dead idle peer within 110 s, and send the first probe well before the
#: shortest common middlebox idle timeouts (Azure 240 s, AWS NLB/NAT gateway 350 s).
DEFAULT_IDLE = 60.0
DEFAULT_INTERVAL = 10.0
DEFAULT_COUNT = 5


class KeepaliveConfig(Record):
    """Kernel keepalive settings, in seconds (int or float) and a probe count.

    - ``idle``: silence before the first probe (Linux TCP_KEEPIDLE, macOS TCP_KEEPALIVE).
    - ``interval``: time between unanswered probes (TCP_KEEPINTVL).
    - ``count``: unanswered probes before the connection is dropped (TCP_KEEPCNT).
    - ``user_timeout``: how long sent data may stay unacknowledged before the connection is
      dropped (Linux TCP_USER_TIMEOUT, macOS TCP_RXT_CONNDROPTIME, Windows TCP_MAXRT); None
      leaves the system default (on Linux: the retransmission limit, about 15 minutes).
      Keepalive probes only run while nothing is in flight: this bounds the other case.
      Linux starts this clock at the first timed-out retransmission, so the connection drops
      about one retransmission timeout (at least 0.2 s, more on slow paths) after it.
    """

    # A frozen dataclass in behaviour (equality, hashing, repr, dataclasses.replace()),
    # written on keepalive._record.Record so that `import dataclasses` stays off the path.
    __slots__ = ("count", "idle", "interval", "user_timeout")
    __match_args__ = ("idle", "interval", "count", "user_timeout")

    idle: float
    interval: float
    count: int
    user_timeout: float | None

    def __init__(
        self,
        idle: float = DEFAULT_IDLE,
        interval: float = DEFAULT_INTERVAL,
        count: int = DEFAULT_COUNT,
        user_timeout: float | None = None,
    ) -> None:
        # Frozen: normalised so 60 and 60.0 compare and hash equal.
        setattr_ = object.__setattr__
        setattr_(self, "idle", positive_seconds("idle", idle))
        setattr_(self, "interval", positive_seconds("interval", interval))
        setattr_(self, "count", positive_int("count", count))
        setattr_(
            self,
            "user_timeout",
            None if user_timeout is None else positive_seconds("user_timeout", user_timeout),
        )

    # -- derived values -------------------------------------------------------------------

    @property
    def probing_time(self) -> float:
        """``idle + interval * count``: when keepalive alone drops a silent idle connection."""
        return self.idle + self.interval * self.count

    @property
    def recommended_user_timeout(self) -> float:
        """A user timeout that matches keepalive: ``idle + interval * count``.

        Cloudflare's "When TCP sockets refuse to die" recommends this value: unacknowledged data
        then gives up no later than an idle connection would.
        """
        return self.probing_time

    def with_user_timeout(self, user_timeout: float | None = None) -> KeepaliveConfig:
        """A copy with ``user_timeout`` set (by default to :attr:`recommended_user_timeout`)."""
        value = self.recommended_user_timeout if user_timeout is None else user_timeout
        return self.__replace__(user_timeout=value)

    @property
    def detection_bound(self) -> float:
        """Worst-case seconds to detect a dead idle peer on the running platform.

        Uses the values the platform actually stores (rounded up to its units; Windows' fixed
        probe count where it applies) and its rules: on Linux a set TCP_USER_TIMEOUT replaces
        ``count`` (the connection dies at the first probe tick at least ``user_timeout`` after
        the last inbound byte, which can be sooner or later than ``idle + interval * count``).
        """
        from keepalive.platforms import current  # noqa: PLC0415 - avoid an import cycle

        return self.detection_bound_on(current())

    def detection_bound_on(self, platform: Platform) -> float:
        """:attr:`detection_bound` for a given platform description."""
        return platform.detection_bound(self)

    # -- constructors from goals ----------------------------------------------------------

    @classmethod
    def before_idle_timeout(
        cls,
        idle_timeout: float,
        *,
        count: int = DEFAULT_COUNT,
        margin: float = 0.2,
        user_timeout: bool = True,
    ) -> KeepaliveConfig:
        """Settings whose probes keep a flow alive through a middlebox that forgets flows
        silent for ``idle_timeout`` seconds (e.g. 350 for AWS NAT gateway and NLB).

        The first probe fires at ``idle_timeout * (1 - margin)`` (whole seconds, at least 1),
        and so does every later one (``interval`` is never longer than that), so a probe
        always crosses the middlebox before it forgets the flow. With ``user_timeout`` the
        unacknowledged-data timeout is set to the same detection time.
        """
        timeout = positive_seconds("idle_timeout", idle_timeout)
        fraction = positive_seconds("margin", margin)
        if fraction >= 1:
            raise InvalidSetting("margin", margin, "a fraction in (0, 1)")
        idle = max(1.0, float(math.floor(timeout * (1 - fraction))))
        if idle >= timeout:  # whole seconds: nothing fits below a timeout of 1 s or less
            raise InvalidSetting(
                "idle_timeout", idle_timeout, "more than 1 s (probes are whole seconds)"
            )
        # Probes every tenth of the idle timeout (at least 1 s, at most 75 s, the Linux default),
        # so `count` missing probes are noticed quickly without flooding the path.
        interval = min(idle, max(1.0, min(75.0, float(math.floor(timeout / 10)))))
        cfg = cls(idle=idle, interval=interval, count=count)
        return cfg.with_user_timeout() if user_timeout else cfg
