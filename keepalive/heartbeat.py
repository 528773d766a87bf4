"""The application heartbeat as a pure (sans-I/O) state machine, and every timing rule.

Kernel keepalive only proves that the nearest TCP endpoint is alive; a proxying NAT answers it
itself. A heartbeat sends bytes the far peer must answer. This module decides *when* to ping
and *when* the peer is dead; it never reads the clock, sleeps, touches a socket or starts a
thread. A driver (this package's blocking-socket and asyncio drivers, or your own loop) does
the I/O and passes ``now`` (monotonic seconds, e.g. ``time.monotonic()``) into every call.

Semantics, like OpenSSH's ``ServerAliveInterval`` / ``ServerAliveCountMax``:

* after ``interval`` seconds without inbound bytes, send a ping;
* if nothing at all arrives within ``timeout`` after the ping, that is a *miss*;
  after a miss the next ping is sent at once;
* after ``misses`` consecutive misses the peer is dead;
* any *new* inbound byte is life: it clears the misses and restarts the idle timer, so a busy
  peer is never declared dead, and a pong is only needed when the peer has nothing else to
  say. Bytes waiting unread count once, when they first appear (:meth:`Heartbeat.unread`).

Which inbound bytes are pongs is :mod:`keepalive.framing`'s job (whole messages only).

Worst case from the last inbound byte to the verdict: ``HeartbeatConfig.detection_bound`` =
``interval + timeout * misses``. The verdict never comes earlier, whatever the timing of the
calls, and comes exactly then when the driver polls on time and writes pings when asked.

A driver's loop, with ``hb = Heartbeat(config, now)``::

    if hb.miss_possible(now):             # a verdict is final: look for unread bytes first
        count = fionread(sock)
        hb.unread(now, count, peer_blocked=peer_may_be_blocked(sock, count))
    action = hb.poll(now)                 # on start, at hb.deadline, and after events
    if isinstance(action, SendPing):
        write_ping()                      # between application messages, never inside one
        hb.ping_sent(now)                 # (or hb.ping_stuck(now, since) if it cannot be)
    elif isinstance(action, Wait):
        wake_me_at(action.deadline)       # absolute time; poll again then
    else:                                 # PeerDead: final
        close_connection(action.as_error())

    # whenever bytes arrive:
    app_bytes, pongs = matcher.feed(data, hb.outstanding)   # keepalive.framing
    hb.received(now, len(data), pongs)    # pongs=None without a matcher

Example with a fake clock:

>>> hb = Heartbeat(HeartbeatConfig(interval=10, timeout=5, misses=2), now=0.0)
>>> hb.poll(0.0)
Wait(deadline=10.0)
>>> hb.poll(10.0)
SendPing()
>>> hb.ping_sent(10.0)
>>> hb.poll(10.0)
Wait(deadline=15.0)
>>> hb.poll(15.0)                         # first miss: ping again at once
SendPing()
>>> hb.ping_sent(15.0)
>>> hb.poll(20.0)
PeerDead(reason='no reply to 2 heartbeat pings (timeout 5 s each)', silent_for=20.0)
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Generic, TypeAlias, TypeVar, cast

from keepalive._validate import positive_int, positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive

__all__ = [
    "TRANSITIONS",
    "Action",
    "Heartbeat",
    "HeartbeatConfig",
    "HeartbeatState",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "MonitorStats",
    "PingSource",
    "PeerDead",
    "SendPing",
    "TimerBuckets",
    "Wait",
    "check_ping",
    "describe_stall",
    "grid_time",
    "next_ping",
    "timer_grid",
]

MAX_SECONDS: Final = 365 * 24 * 3600.0
"""The longest ``interval`` or ``timeout`` a :class:`HeartbeatConfig` takes (a year)."""
MIN_SECONDS: Final = 1e-6
"""The shortest ``interval`` or ``timeout`` a :class:`HeartbeatConfig` takes (1 µs)."""

# RFC 6298 section 2: SRTT <- (1 - alpha) * SRTT + alpha * R', alpha = 1/8.
_SRTT_ALPHA = 0.125

# Send times kept for RTT measurement. The count of unanswered pings stays exact beyond this;
# only the RTT of pongs answering pings older than the newest this many is not measured.
_MAX_TRACKED_PINGS = 64


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """How often to ping and when to give up; seconds may be ``int`` or ``float``.

    ``interval``: seconds without inbound bytes before a ping is sent.
    ``timeout``: seconds to wait for any inbound byte after a ping before counting a miss.
    ``misses``: consecutive misses that make the peer dead (a whole number >= 1).

    Invalid values raise :class:`~keepalive.errors.InvalidSettingType` (wrong type, including
    ``bool``) or :class:`~keepalive.errors.InvalidSetting` (NaN, infinite, zero, negative),
    naming the field, the value and the allowed range.
    """

    interval: float
    timeout: float
    misses: int = 1

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ (ints become floats, so equal configs
        # hash equally however the seconds were spelt).
        for field in ("interval", "timeout"):
            seconds = positive_seconds(field, getattr(self, field))
            if not MIN_SECONDS <= seconds <= MAX_SECONDS:  # what every timer API can take
                raise InvalidSetting(
                    field, seconds, f"from {MIN_SECONDS:g} s (1 µs) to {MAX_SECONDS:g} s (a year)"
                )
            object.__setattr__(self, field, seconds)
        object.__setattr__(self, "misses", positive_int("misses", self.misses))

    @property
    def detection_bound(self) -> float:
        """Worst-case seconds from the last inbound byte to the :class:`PeerDead` verdict.

        ``interval + timeout * misses``: the first ping goes out ``interval`` after the last
        byte, and each of the ``misses`` pings gets ``timeout`` to be answered. It assumes the
        driver polls at the deadlines it is given and writes pings when asked. Lateness
        delays the verdict by as much; a poll late by more than ``timeout`` also re-arms the
        ping's window once (see :meth:`Heartbeat.poll`), adding at most ``timeout`` per ping.
        The verdict never comes sooner than this bound after the last inbound byte.
        """
        return self.interval + self.timeout * self.misses


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """A snapshot of one monitored connection's counters: the ``stats`` of every driver
    (:class:`keepalive.sync.MonitoredSocket`, :class:`keepalive.aio.HeartbeatProtocol`,
    :class:`keepalive.trio.MonitoredStream`).

    ``pings_sent``/``pongs_received``: as the heartbeat counted them. ``bytes_received`` counts
    every inbound byte (pongs included), ``bytes_sent`` the application's bytes (``None`` in
    asyncio, whose writes go straight to the transport). ``stalls``: late timers forgiven by
    re-arming. ``unread_life``: verdict checks that found new unread bytes (or unread pongs the
    driver took itself) and counted them as life. ``blocked_pings``: pings counted as sent
    because our writes had stopped moving. ``rtt``/``srtt``: seconds, or ``None``.
    """

    pings_sent: int
    pongs_received: int
    bytes_received: int
    bytes_sent: int | None
    stalls: int
    unread_life: int
    blocked_pings: int
    rtt: float | None
    srtt: float | None


@dataclass(frozen=True, slots=True)
class SendPing:
    """Write one ping now (between application messages), then call :meth:`Heartbeat.ping_sent`.

    :meth:`Heartbeat.poll` keeps answering ``SendPing`` until ``ping_sent`` is called or
    inbound bytes make the ping unnecessary.
    """


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until ``deadline`` (absolute, same clock as ``now``); poll again then.

    Always later than the ``now`` that :meth:`Heartbeat.poll` was given. Events can change the
    deadline: read :attr:`Heartbeat.deadline` after them (see there).
    """

    deadline: float


@dataclass(frozen=True, slots=True)
class PeerDead:
    """The peer stopped answering: close the connection. The verdict is final.

    ``silent_for`` is how long nothing had been received when the verdict was reached (at
    least :attr:`HeartbeatConfig.detection_bound`); ``reason`` says why in words.
    """

    reason: str
    silent_for: float

    def as_error(self) -> PeerUnresponsive:
        """The exception a driver raises or reports for this verdict."""
        return PeerUnresponsive(f"{self.reason}; nothing received for {self.silent_for:.3f} s")


Action: TypeAlias = SendPing | Wait | PeerDead
"""What :meth:`Heartbeat.poll` asks the driver to do."""

_SEND_PING = SendPing()


class HeartbeatState(enum.Enum):
    """Where a :class:`Heartbeat` stands; :data:`TRANSITIONS` lists every legal move."""

    IDLE = "idle"
    """Nothing owed: the next ping falls due ``interval`` after the last inbound byte."""
    PING_DUE = "ping due"
    """A ping must be written now; :meth:`Heartbeat.poll` keeps answering :class:`SendPing`."""
    AWAITING_REPLY = "awaiting reply"
    """A requested ping was written; its ``timeout`` window runs."""
    DEAD = "dead"
    """The peer was declared dead (final)."""

    # Members are singletons compared by identity: hash them as such, in C. Enum's own hash
    # is a Python call, and every transition looks up a (state, event) pair.
    __hash__ = object.__hash__


class _Event(enum.Enum):
    INBOUND = "inbound bytes"
    INTERVAL_ELAPSED = "interval elapsed"
    PING_WRITTEN = "ping written"
    STALL = "late poll forgiven"
    MISS = "ping unanswered"
    LAST_MISS = "last ping unanswered"

    __hash__ = object.__hash__  # as HeartbeatState's


_IDLE = HeartbeatState.IDLE
_DUE = HeartbeatState.PING_DUE
_AWAITING = HeartbeatState.AWAITING_REPLY
_DEAD = HeartbeatState.DEAD

TRANSITIONS: Final[Mapping[tuple[HeartbeatState, str], HeartbeatState]] = MappingProxyType(
    {
        (_IDLE, _Event.INBOUND.value): _IDLE,
        (_IDLE, _Event.INTERVAL_ELAPSED.value): _DUE,
        (_DUE, _Event.INBOUND.value): _IDLE,
        (_DUE, _Event.PING_WRITTEN.value): _AWAITING,
        (_AWAITING, _Event.INBOUND.value): _IDLE,
        (_AWAITING, _Event.STALL.value): _AWAITING,
        (_AWAITING, _Event.MISS.value): _DUE,
        (_AWAITING, _Event.LAST_MISS.value): _DEAD,
    }
)
"""``(state, event) -> next state``: the heartbeat's whole state machine, in one place.

An event not listed for a state leaves it unchanged (inbound bytes after death, an extra
ping the heartbeat did not ask for)."""

_NEXT: Final = {(state, _Event(event)): target for (state, event), target in TRANSITIONS.items()}


class Heartbeat:
    """The heartbeat of one connection: told what happened, answers what to do next.

    ``now`` is the connection's start, which counts as the last sign of life. Every method
    takes ``now`` in the same monotonic clock; nothing here reads a clock itself. Its
    :attr:`state` is one of :class:`HeartbeatState`, moved only along :data:`TRANSITIONS`.

    Drivers:

    * call :meth:`poll` at start, whenever :attr:`deadline` is reached, and after events, and
      obey the :data:`Action` it returns;
    * report what they read with :meth:`received` (bytes and the pongs among them), and, before
      a poll that may count a miss (:meth:`miss_possible`), how many bytes wait unread in the
      kernel with :meth:`unread` (only growth counts: see there);
    * report a ping they cannot write because their own writes stopped moving with
      :meth:`ping_stuck`;
    * after an event the deadline usually moves later (a lazy driver may keep its old wake-up
      and will just get a new :class:`Wait`), but it moves earlier when bytes arrive while a
      ping is in flight and ``interval`` is shorter than the rest of that ping's ``timeout``.
      Re-read :attr:`deadline` after events and wake earlier if needed.

    Calls after death are harmless: events are ignored and :meth:`poll` returns the same
    :class:`PeerDead` again.
    """

    __slots__ = (
        "_config",
        "_due_at",
        "_last_received",
        "_misses",
        "_outstanding",
        "_pings_sent",
        "_pongs_received",
        "_rearmed",
        "_rtt",
        "_send_times",
        "_srtt",
        "_stalls",
        "_state",
        "_unread_seen",
        "_verdict",
        "_window_start",
    )

    def __init__(self, config: HeartbeatConfig, now: float) -> None:
        if not isinstance(config, HeartbeatConfig):
            raise InvalidSettingType("config", config, "a HeartbeatConfig")
        self._config = config
        self._state = _IDLE
        self._last_received = now
        # PING_DUE: when the ping became due. AWAITING_REPLY: when its timeout window began,
        # and whether that window was already re-armed after a stall.
        self._due_at = 0.0
        self._window_start = 0.0
        self._rearmed = False
        self._misses = 0
        self._verdict: PeerDead | None = None
        # Every ping sent whose pong has not arrived yet, in order (TCP keeps order); this is
        # not cleared by other inbound bytes, because those pongs are still on their way.
        self._outstanding = 0
        # Send times of the newest unanswered pings, oldest first. A tuple, replaced on each
        # change: usually empty (shared) or one entry, where a deque would cost 600 bytes
        # for each of thousands of heartbeats.
        self._send_times: tuple[float, ...] = ()
        # Unread inbound bytes already counted as life (see unread()).
        self._unread_seen = 0
        self._pings_sent = 0
        self._pongs_received = 0
        self._stalls = 0
        self._rtt: float | None = None
        self._srtt: float | None = None

    def _move(self, event: _Event) -> None:
        self._state = _NEXT.get((self._state, event), self._state)

    # ----------------------------------------------------------------- events

    def received(self, now: float, nbytes: int, pongs: int | None = 0) -> None:
        """The driver read ``nbytes`` inbound bytes (pongs included) at ``now``.

        ``pongs``: how many whole pongs its matcher removed from them, or ``None`` when the
        driver filters no pongs (``pong=None``): then the first bytes after a ping count as
        that ping's reply (an RTT sample that is exact for a peer that was otherwise silent,
        as it is whenever a ping is sent). Bytes read also leave the kernel's unread count
        (see :meth:`unread`).
        """
        seen = self._unread_seen
        if seen:
            self._unread_seen = seen - nbytes if seen > nbytes else 0
        if pongs is None:
            pongs = 1 if self._outstanding else 0
        if not pongs:
            # bytes_received, inlined: this runs for every read of every connection.
            if self._state is not _DEAD:
                self._last_received = max(self._last_received, now)
                self._state = _IDLE
                self._misses = 0
            return
        while pongs:
            self.pong_received(now)
            pongs -= 1

    def unread(self, now: float, count: int, *, peer_blocked: bool = False) -> bool:
        """``count`` inbound bytes wait unread in the kernel (``FIONREAD``); True if that is life.

        Only *new* bytes are life: bytes count once, when they first appear (the count grew
        since the last look, reads taken off as :meth:`received` reports them). Unread bytes
        that merely stay there prove nothing more: a write-only application that never reads
        still gets its verdict within the bound once the peer is gone.

        One exception, ``peer_blocked``: the unread bytes may keep the peer from sending at
        all (our receive window is closed because the application is behind), so the silence
        is ours, not the peer's: that counts as life until the application reads again. The
        driver decides it from the socket (``keepalive._unread.peer_may_be_blocked``).
        """
        if self._state is _DEAD:
            return False
        if count > self._unread_seen or (peer_blocked and count > 0):
            self._unread_seen = count
            self.bytes_received(now)
            return True
        self._unread_seen = count
        return False

    def bytes_received(self, now: float) -> None:
        """Any inbound byte arrived (pongs included): the peer is alive.

        Clears the consecutive misses, cancels a pending or in-flight ping's timeout and
        restarts the idle timer at ``now``.
        """
        if self._state is _DEAD:
            return
        self._last_received = max(self._last_received, now)
        self._state = _IDLE  # TRANSITIONS: every live state goes idle on inbound bytes
        self._misses = 0

    def pong_received(self, now: float) -> None:
        """One pong arrived: life (as :meth:`bytes_received`), and an RTT sample.

        The pong answers the oldest unanswered ping (byte streams keep order), and
        :attr:`rtt` becomes ``now`` minus that ping's send time. A pong with no ping
        outstanding still counts as life.
        """
        if self._state is _DEAD:
            return
        # bytes_received, inlined: this runs for every pong of every connection.
        self._last_received = max(self._last_received, now)
        self._state = _IDLE
        self._misses = 0
        self._pongs_received += 1
        outstanding = self._outstanding
        if outstanding == 0:
            return
        # The oldest send time belongs to this pong only if none was dropped from the list.
        send_times = self._send_times
        measurable = len(send_times) == outstanding
        self._outstanding = outstanding - 1
        if measurable:
            self._send_times = send_times[1:]
            sample = now - send_times[0]
            sample = max(sample, 0.0)
            self._rtt = sample
            srtt = self._srtt
            self._srtt = sample if srtt is None else srtt + _SRTT_ALPHA * (sample - srtt)

    def ping_sent(self, now: float) -> None:
        """The driver wrote a ping at ``now``.

        After :class:`SendPing` this starts the ping's ``timeout`` window. A ping the state
        machine did not ask for is counted (for :attr:`outstanding` and RTT) but starts no
        window, so extra pings can never make the verdict come sooner.
        """
        if self._state is _DEAD:
            return
        self._pings_sent += 1
        self._outstanding += 1
        send_times = (*self._send_times, now)
        self._send_times = send_times[1:] if len(send_times) > _MAX_TRACKED_PINGS else send_times
        if self._state is _DUE:
            self._move(_Event.PING_WRITTEN)
            self._window_start = now
            self._rearmed = False

    def ping_stuck(self, now: float, stuck_since: float) -> float | None:
        """The requested ping cannot be written: our own writes stopped moving at ``stuck_since``.

        A writer blocked behind a frozen peer must still get its verdict within the bound, and
        a merely slow one must not be punished. So once our writes have not moved for
        ``timeout`` (counted from when they stopped, or from when the ping fell due if that
        is later) the ping counts as sent at that moment, its window already over, and
        ``None`` is returned (poll now: a miss is due). Until then the answer is the time at
        which it will count; the driver keeps trying to write meanwhile. Only meaningful
        while :attr:`state` is ``PING_DUE``; otherwise ``None``.
        """
        if self._state is not _DUE:
            return None
        start = stuck_since if stuck_since > self._due_at else self._due_at
        counts_at = start + self._config.timeout
        if now < counts_at:
            return counts_at
        self.ping_sent(start)
        return None

    # ------------------------------------------------------------------ poll

    def miss_possible(self, now: float) -> bool:
        """Whether :meth:`poll` at ``now`` could count a miss: check :meth:`unread` first.

        A verdict is final, and bytes that reached the kernel while the driver was busy must
        not let a live peer be declared dead.
        """
        return self._state is _AWAITING and now >= self._window_start + self._config.timeout

    def poll(self, now: float) -> Action:
        """Decide what to do at ``now``: :class:`SendPing`, :class:`Wait` or :class:`PeerDead`.

        Calling early is harmless (it answers ``Wait`` for the current deadline).

        Stall protection: if a ping's window has expired and ``now`` is more than ``timeout``
        past that deadline, the driver's thread or event loop (or the whole VM) was blocked,
        and the silence may be its own fault: the peer got no fair chance to answer. Instead
        of counting a miss, the ping's window restarts at ``now`` (as if the ping were sent
        now) and ``Wait(now + timeout)`` is returned; :attr:`stalls` counts these (log them
        with :func:`describe_stall`). A poll late by at most ``timeout`` counts the miss.

        The re-arm is granted once per ping: if the driver is late by more than ``timeout``
        again for the same ping, the miss counts. A driver that is always that late (an
        overloaded loop) would otherwise never reach a verdict; and a driver that reports
        unread bytes before polling has already handed over any pong that arrived meanwhile,
        so the peer has had its fair chance.
        """
        state = self._state
        if state is _IDLE:
            due = self._last_received + self._config.interval
            if now < due:
                return Wait(due)
            self._move(_Event.INTERVAL_ELAPSED)
            self._due_at = due
            return _SEND_PING
        if state is _DUE:
            return _SEND_PING
        if state is _DEAD:
            assert self._verdict is not None
            return self._verdict
        config = self._config
        expiry = self._window_start + config.timeout
        if now < expiry:
            return Wait(expiry)
        # Late by more than timeout (added, not subtracted: a poll at exactly expiry +
        # timeout, computed the same way, must not count as a stall by a rounding error).
        if now > expiry + config.timeout and not self._rearmed:
            self._move(_Event.STALL)
            self._stalls += 1
            self._rearmed = True
            self._window_start = now
            return Wait(now + config.timeout)
        self._misses += 1
        if self._misses >= config.misses:
            self._move(_Event.LAST_MISS)
            count = self._misses
            plural = "s" if count > 1 else ""
            self._verdict = PeerDead(
                reason=(
                    f"no reply to {count} heartbeat ping{plural} "
                    f"(timeout {config.timeout:g} s each)"
                ),
                silent_for=now - self._last_received,
            )
            return self._verdict
        self._move(_Event.MISS)
        self._due_at = now
        return _SEND_PING

    # ------------------------------------------------------------- read-outs

    @property
    def state(self) -> HeartbeatState:
        """Where the heartbeat stands (see :class:`HeartbeatState`)."""
        return self._state

    @property
    def config(self) -> HeartbeatConfig:
        """The configuration this heartbeat runs with."""
        return self._config

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` must be called next (absolute); ``None`` once dead.

        At or before ``now`` while a :class:`SendPing` is pending.
        """
        state = self._state
        if state is _IDLE:
            return self._last_received + self._config.interval
        if state is _AWAITING:
            return self._window_start + self._config.timeout
        if state is _DUE:
            return self._due_at
        return None

    @property
    def dead(self) -> bool:
        """Whether :meth:`poll` has declared the peer dead."""
        return self._state is _DEAD

    @property
    def verdict(self) -> PeerDead | None:
        """The :class:`PeerDead` verdict, or ``None`` while the peer counts as alive."""
        return self._verdict

    @property
    def ping_due(self) -> bool:
        """A ping was asked for (:class:`SendPing`) and not written yet."""
        return self._state is _DUE

    @property
    def ping_in_flight(self) -> bool:
        """A requested ping was sent and nothing arrived since: a poll may count a miss."""
        return self._state is _AWAITING

    @property
    def outstanding(self) -> int:
        """Pings sent whose pong has not arrived yet; pass it to a pong matcher's ``feed``."""
        return self._outstanding

    @property
    def last_received(self) -> float:
        """When the last inbound byte arrived (the start time until then)."""
        return self._last_received

    @property
    def misses(self) -> int:
        """Consecutive unanswered pings so far (cleared by any inbound byte)."""
        return self._misses

    @property
    def pings_sent(self) -> int:
        """Pings written, as reported by :meth:`ping_sent`."""
        return self._pings_sent

    @property
    def pongs_received(self) -> int:
        """Pongs reported by :meth:`pong_received`."""
        return self._pongs_received

    @property
    def stalls(self) -> int:
        """Times :meth:`poll` was so late that it re-armed a ping's window instead of a miss."""
        return self._stalls

    @property
    def rtt(self) -> float | None:
        """The last measured ping-to-pong round-trip time in seconds, or ``None``."""
        return self._rtt

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT (RFC 6298, alpha 1/8; the first sample sets it), or ``None``."""
        return self._srtt

    def __repr__(self) -> str:
        return (
            f"<Heartbeat {self._state.value} deadline={self.deadline!r} misses={self._misses} "
            f"outstanding={self._outstanding} rtt={self._rtt!r}>"
        )


def describe_stall(late_by: float, config: HeartbeatConfig) -> str:
    """The words a driver logs when :meth:`Heartbeat.poll` forgave a late poll (a stall)."""
    return (
        f"the heartbeat ran {late_by:.3f} s late (a blocked thread, event loop or VM); "
        f"the peer gets {config.timeout:g} s more instead of a miss"
    )


# ---------------------------------------------------------------- driver helpers


def timer_grid(config: HeartbeatConfig) -> float:
    """The grid a driver rounds this heartbeat's wake-ups up to, so that connections due at
    nearly the same time share one wake-up: a power of two (grids of different
    configurations nest, keys are exact) at most ``min(interval, timeout) / 64``, between
    about 1 µs and 1/4 s. Rounding up never makes a verdict early; the delay it adds stays
    far below the ``timeout`` that the stall rule uses."""
    grid = _GRIDS.get(config)
    if grid is None:
        span = min(config.interval, config.timeout) / _GRID_DIVISOR
        grid = (
            _GRID_MIN if span <= _GRID_MIN else min(_GRID_MAX, 2.0 ** math.floor(math.log2(span)))
        )
        if len(_GRIDS) < 256:
            _GRIDS[config] = grid
    return grid


def grid_time(when: float, grid: float) -> float:
    """The end of the grid cell holding ``when``: the earliest grid point not before it."""
    return math.ceil(when / grid) * grid


_T = TypeVar("_T")


class TimerBuckets(Generic[_T]):
    """Wake-ups on a grid, for a driver's one timer: a list of items per time and a heap of
    the distinct times, so that arming is a list append and one wake-up serves a whole cell.

    An item may stand in several buckets (re-armed without being moved): the driver knows
    which one is live (say, the item records its wake-up time) and skips the others when their
    bucket comes due; :meth:`retain` drops them all at once when they pile up. Pure: the
    driver says what ``now`` is.
    """

    __slots__ = ("_buckets", "_times")

    def __init__(self) -> None:
        # time -> (that time's float object, shared by every item armed there; the items)
        self._buckets: dict[float, tuple[float, list[_T]]] = {}
        self._times: list[float] = []  # heap of the buckets' times

    def add(self, when: float, item: _T) -> float:
        """Put ``item`` in the bucket at ``when`` (a grid time); returns the bucket's time
        object (equal to ``when``; keep it rather than ``when``: one float for all)."""
        bucket = self._buckets.get(when)
        if bucket is not None:
            bucket[1].append(item)
            return bucket[0]
        self._buckets[when] = (when, [item])
        heapq.heappush(self._times, when)
        return when

    def earliest(self) -> float | None:
        """The earliest bucket's time, or ``None`` when empty."""
        times = self._times
        return times[0] if times else None

    def pop_due(self, horizon: float) -> tuple[float, list[_T]] | None:
        """Take the earliest bucket if its time is at most ``horizon``: ``(time, items)``."""
        times = self._times
        if times and times[0] <= horizon:
            return self._buckets.pop(heapq.heappop(times))
        return None

    def retain(self, live: Callable[[float, _T], bool]) -> None:
        """Keep only the items for which ``live(time, item)`` holds, each once per bucket."""
        kept: dict[float, tuple[float, list[_T]]] = {}
        for when, (key, items) in self._buckets.items():
            alive = [item for item in dict.fromkeys(items) if live(key, item)]
            if alive:
                kept[when] = (key, alive)
        self._buckets.clear()
        self._buckets.update(kept)  # (in place: a caller may hold these containers)
        self._times[:] = sorted(kept)  # a sorted list is a valid heap

    def clear(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()
        self._times.clear()

    def entries(self) -> int:
        """Items in all buckets, stale ones included."""
        return sum(len(items) for _, items in self._buckets.values())


_GRID_DIVISOR: Final = 64
_GRID_MIN: Final = 2.0**-20
_GRID_MAX: Final = 0.25
_GRIDS: dict[HeartbeatConfig, float] = {}

PingSource: TypeAlias = bytes | bytearray | memoryview | Callable[[], bytes]
"""A ping: fixed bytes, or a callable returning the bytes of the next ping (framed protocols,
pings that carry a token the pong must echo)."""

_PING_ALLOWED: Final = "non-empty bytes, or a callable returning non-empty bytes"


def check_ping(ping: object) -> bytes | Callable[[], object]:
    """A driver's ``ping`` argument as immutable bytes, or the callable making each ping."""
    if isinstance(ping, (bytes, bytearray, memoryview)):
        payload = bytes(ping)
        if not payload:
            raise InvalidSetting("ping", ping, _PING_ALLOWED)
        return payload
    if isinstance(ping, str):
        raise InvalidSettingType(
            "ping", ping, _PING_ALLOWED, hint="encode text first, e.g. b'PING\\n'"
        )
    if not callable(ping):
        raise InvalidSettingType("ping", ping, _PING_ALLOWED)
    return cast("Callable[[], object]", ping)


def next_ping(ping: bytes | Callable[[], object]) -> bytes:
    """The bytes of the next ping (a callable's result is checked: non-empty bytes)."""
    if type(ping) is bytes:
        return ping
    value = cast("Callable[[], object]", ping)()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidSettingType("ping()", value, "non-empty bytes")
    payload = bytes(value)
    if not payload:
        raise InvalidSetting("ping()", value, "non-empty bytes")
    return payload
