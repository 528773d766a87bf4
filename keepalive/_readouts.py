"""The read-outs of the core heartbeat that the asyncio and trio monitors give alike: one
mixin for both drivers. Each driver keeps the read-outs whose meaning differs between them
(``heartbeat``, ``active``, ``dead``, ``error``, ``config``, ``unread_life``, ``stats``)."""

from __future__ import annotations

from keepalive.heartbeat import Heartbeat, MonitorStats, PeerDead


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
