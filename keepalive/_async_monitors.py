"""What the asyncio and trio monitors share: the read-outs of the core heartbeat (one mixin for
both drivers), the ping hold, the bookkeeping of the scheduler's timer buckets, the call of
``on_dead``, and the constants whose meaning is the same in both. Each driver keeps the
read-outs whose meaning differs between them (``heartbeat``, ``active``, ``dead``, ``error``,
``config``, ``unread_life``, ``stats``)."""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from keepalive.heartbeat import Heartbeat, MonitorStats, PeerDead, TimerBuckets

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable
    from typing import Protocol

    from keepalive.errors import PeerUnresponsive

    class _HoldsPings(Protocol):
        """A monitor as its :class:`PingHold` sees it."""

        def _hold(self) -> None: ...

        def _release_hold(self) -> None: ...

    class _Scheduled(Protocol):
        """A monitor as its scheduler's timer buckets see it."""

        _wake: float | None


_DEFAULT_PING: Final = b"PING\n"
_DEFAULT_PONG: Final = b"PONG\n"
# How often (as a fraction of timeout) a due ping stuck behind our own writes looks again.
_STUCK_CHECK_FRACTION: Final = 1 / 8
# Stale timer entries tolerated before compaction (and at least as many as the live ones).
_COMPACT_AFTER: Final = 64

# Monitor states (asyncio adds one before these: not attached to a transport yet).
_ACTIVE: Final = 1  # heartbeat running
_STOPPED: Final = 2  # heartbeat over (EOF, closing, stop(), no heartbeat), connection left alone
_DEAD: Final = 3  # peer declared dead, connection torn down


_Monitor = TypeVar("_Monitor", bound="_Scheduled")
_Dying = TypeVar("_Dying")


def _live_at(wake: float, monitor: _Scheduled) -> bool:
    """Whether ``monitor``'s entry in the bucket of ``wake`` is its live one (for compaction)."""
    return monitor._wake == wake


class _SchedulerBuckets(Generic[_Monitor]):
    """The timer buckets of a driver's scheduler and their bookkeeping: how many monitors are
    live, how many bucket entries are stale. The driver arms its own timer and says how to stop
    it (:meth:`_disarm`)."""

    __slots__ = ("_monitors", "_stale", "_timers")

    def __init__(self) -> None:
        self._timers: TimerBuckets[_Monitor] = TimerBuckets()
        self._monitors = 0
        self._stale = 0

    def discard(self, monitor: _Monitor) -> None:
        """Forget ``monitor`` (its bucket entry becomes stale)."""
        if monitor._wake is not None:
            monitor._wake = None
            self._stale += 1
        self._monitors -= 1
        if self._monitors == 0:
            # Nothing left to wake: drop every stale entry and the timer now, not later.
            self._timers.clear()
            self._stale = 0
            self._disarm()
        elif self._stale > _COMPACT_AFTER and self._stale > self._monitors:
            self._compact()

    def _compact(self) -> None:
        """Drop stale entries (in place: the timer may be iterating over these containers)."""
        self._timers.retain(_live_at)
        self._stale = 0

    def _disarm(self) -> None:
        """Stop the driver's timer: no monitor is left to wake."""
        raise NotImplementedError


def _call_on_dead(
    on_dead: Callable[[_Dying, PeerUnresponsive], object] | None,
    monitor: _Dying,
    error: PeerUnresponsive,
    logger: logging.Logger,
) -> Awaitable[object] | None:
    """Calls ``on_dead`` (if any) with the verdict's error: the awaitable it returned, which
    the driver runs, or ``None``. A failing callback is logged to the driver's ``logger``."""
    if on_dead is None:
        return None
    try:
        result = on_dead(monitor, error)
    except Exception:
        logger.exception("on_dead callback failed")
        return None
    return result if inspect.isawaitable(result) else None


class PingHold:
    """Defers heartbeat pings while entered (``with`` or ``async with``); each driver subclasses
    it with its own ``__init__`` and docstring. Holds nest; the last one out sends a due ping."""

    __slots__ = ("_monitor",)

    _monitor: _HoldsPings

    def __enter__(self) -> PingHold:
        self._monitor._hold()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._monitor._release_hold()

    async def __aenter__(self) -> PingHold:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


class HeartbeatReadouts:
    """Read-only properties over ``_heartbeat``, the monitor's core state machine (``None``
    while it has none). No slots of its own, so a monitor costs no more memory."""

    __slots__ = ()

    _heartbeat: Heartbeat | None

    @property
    def verdict(self) -> PeerDead | None:
        """The core's :class:`~keepalive.heartbeat.PeerDead` verdict, or ``None``."""
        return None if self._heartbeat is None else self._heartbeat.verdict

    @property
    def rtt(self) -> float | None:
        """The last ping-to-pong round-trip time in seconds (to the read of the pong), or
        ``None``."""
        return None if self._heartbeat is None else self._heartbeat.rtt

    @property
    def srtt(self) -> float | None:
        """The smoothed round-trip time (RFC 6298), or ``None``."""
        return None if self._heartbeat is None else self._heartbeat.srtt

    @property
    def pings_sent(self) -> int:
        """Pings written (or counted as sent behind stuck writes) on this connection."""
        return 0 if self._heartbeat is None else self._heartbeat.pings_sent

    @property
    def pongs_received(self) -> int:
        """Pongs recognised (and, unless ``pong=None``, removed from the stream)."""
        return 0 if self._heartbeat is None else self._heartbeat.pongs_received

    @property
    def stalls(self) -> int:
        """Times the timer was so late (a blocked loop) that a ping got a second window."""
        return 0 if self._heartbeat is None else self._heartbeat.stalls

    @property
    def last_received(self) -> float | None:
        """The time of the last inbound byte on the event loop's clock (``loop.time()`` in
        asyncio, ``trio.current_time()`` in trio); the heartbeat's start until then."""
        return None if self._heartbeat is None else self._heartbeat.last_received

    def _stats(
        self, *, bytes_received: int, bytes_sent: int | None, unread_life: int, blocked_pings: int
    ) -> MonitorStats:
        """The counters: the heartbeat's own, and the driver's that are passed in."""
        heartbeat = self._heartbeat
        return MonitorStats(
            pings_sent=0 if heartbeat is None else heartbeat.pings_sent,
            pongs_received=0 if heartbeat is None else heartbeat.pongs_received,
            bytes_received=bytes_received,
            bytes_sent=bytes_sent,
            stalls=0 if heartbeat is None else heartbeat.stalls,
            unread_life=unread_life,
            blocked_pings=blocked_pings,
            rtt=None if heartbeat is None else heartbeat.rtt,
            srtt=None if heartbeat is None else heartbeat.srtt,
        )
