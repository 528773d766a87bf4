"""The application heartbeat as a pure (sans-I/O) state machine, and a pong filter for streams.

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
* any inbound byte is life: it clears the misses and restarts the idle timer, so a busy peer
  is never declared dead, and a pong is only needed when the peer has nothing else to say.

Worst case from the last inbound byte to the verdict: ``HeartbeatConfig.detection_bound`` =
``interval + timeout * misses``. The verdict never comes earlier, whatever the timing of the
calls, and comes exactly then when the driver polls on time and writes pings when asked.

A driver's loop, with ``hb = Heartbeat(config, now)``::

    action = hb.poll(now)                 # on start, at hb.deadline, and after events
    if isinstance(action, SendPing):
        write_ping()                      # between application messages, never inside one
        hb.ping_sent(now)
    elif isinstance(action, Wait):
        wake_me_at(action.deadline)       # absolute time; poll again then
    else:                                 # PeerDead: final
        close_connection(action.as_error())

    # whenever bytes arrive:
    app_bytes, pongs = matcher.feed(data, hb.outstanding)   # if a pong matcher is used
    hb.bytes_received(now)
    for _ in range(pongs):
        hb.pong_received(now)

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

from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from keepalive._validate import positive_int, positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive

__all__ = [
    "Action",
    "Heartbeat",
    "HeartbeatConfig",
    "PeerDead",
    "PongFilter",
    "PongMatcher",
    "SendPing",
    "Wait",
    "make_pong_matcher",
]

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
        object.__setattr__(self, "interval", positive_seconds("interval", self.interval))
        object.__setattr__(self, "timeout", positive_seconds("timeout", self.timeout))
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


class Heartbeat:
    """The heartbeat of one connection: told what happened, answers what to do next.

    ``now`` is the connection's start, which counts as the last sign of life. Every method
    takes ``now`` in the same monotonic clock; nothing here reads a clock itself.

    Drivers:

    * call :meth:`poll` at start, whenever :attr:`deadline` is reached, and after events, and
      obey the :data:`Action` it returns;
    * before polling at a deadline, deliver inbound bytes that are already waiting (process
      readable sockets before due timers; asyncio does this by itself). A :class:`PeerDead`
      verdict is final, and bytes that sat unread in the socket while the driver was busy
      must not let a live peer be declared dead. :attr:`ping_in_flight` tells when a poll
      can produce a miss, so the check can be limited to those polls;
    * after :meth:`bytes_received` or :meth:`pong_received`, the deadline usually moves later
      (a lazy driver may keep its old wake-up and will just get a new :class:`Wait`), but it
      moves earlier when bytes arrive while a ping is in flight and ``interval`` is shorter
      than the rest of that ping's ``timeout``. Re-read :attr:`deadline` after events and
      wake earlier if needed; a driver that does not only sends that ping late.

    Calls after death are harmless: events are ignored and :meth:`poll` returns the same
    :class:`PeerDead` again.
    """

    __slots__ = (
        "_config",
        "_last_received",
        "_misses",
        "_outstanding",
        "_ping_due_at",
        "_pings_sent",
        "_pongs_received",
        "_rearmed",
        "_rtt",
        "_send_times",
        "_srtt",
        "_stalls",
        "_verdict",
        "_window_start",
    )

    def __init__(self, config: HeartbeatConfig, now: float) -> None:
        if not isinstance(config, HeartbeatConfig):
            raise InvalidSettingType("config", config, "a HeartbeatConfig")
        self._config = config
        self._last_received = now
        # Set while a SendPing is pending: the time the ping became due.
        self._ping_due_at: float | None = None
        # Set while a requested ping is in flight: when its timeout window began.
        self._window_start: float | None = None
        # Whether the in-flight ping's window was already re-armed after a stall.
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
        self._pings_sent = 0
        self._pongs_received = 0
        self._stalls = 0
        self._rtt: float | None = None
        self._srtt: float | None = None

    # ----------------------------------------------------------------- events

    def bytes_received(self, now: float) -> None:
        """Any inbound byte arrived (pongs included): the peer is alive.

        Clears the consecutive misses, cancels a pending or in-flight ping's timeout and
        restarts the idle timer at ``now``.
        """
        if self._verdict is not None:
            return
        self._last_received = max(self._last_received, now)
        self._ping_due_at = None
        self._window_start = None
        self._rearmed = False
        self._misses = 0

    def pong_received(self, now: float) -> None:
        """One pong arrived: life (as :meth:`bytes_received`), and an RTT sample.

        The pong answers the oldest unanswered ping (byte streams keep order), and
        :attr:`rtt` becomes ``now`` minus that ping's send time. A pong with no ping
        outstanding still counts as life.
        """
        if self._verdict is not None:
            return
        # bytes_received, inlined: this runs for every pong of every connection.
        self._last_received = max(self._last_received, now)
        self._ping_due_at = None
        self._window_start = None
        self._rearmed = False
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
            sample = max(0.0, now - send_times[0])
            self._rtt = sample
            srtt = self._srtt
            self._srtt = sample if srtt is None else srtt + _SRTT_ALPHA * (sample - srtt)

    def ping_sent(self, now: float) -> None:
        """The driver wrote a ping at ``now``.

        After :class:`SendPing` this starts the ping's ``timeout`` window. A ping the state
        machine did not ask for is counted (for :attr:`outstanding` and RTT) but starts no
        window, so extra pings can never make the verdict come sooner.
        """
        if self._verdict is not None:
            return
        self._pings_sent += 1
        self._outstanding += 1
        send_times = (*self._send_times, now)
        self._send_times = send_times[1:] if len(send_times) > _MAX_TRACKED_PINGS else send_times
        if self._ping_due_at is not None:
            self._ping_due_at = None
            self._window_start = now
            self._rearmed = False

    # ------------------------------------------------------------------ poll

    def poll(self, now: float) -> Action:
        """Decide what to do at ``now``: :class:`SendPing`, :class:`Wait` or :class:`PeerDead`.

        Calling early is harmless (it answers ``Wait`` for the current deadline).

        Stall protection: if a ping's window has expired and ``now`` is more than ``timeout``
        past that deadline, the driver's thread or event loop (or the whole VM) was blocked,
        and the silence may be its own fault: the peer got no fair chance to answer. Instead
        of counting a miss, the ping's window restarts at ``now`` (as if the ping were sent
        now) and ``Wait(now + timeout)`` is returned; :attr:`stalls` counts these. A poll
        late by at most ``timeout`` counts the miss as usual.

        The re-arm is granted once per ping: if the driver is late by more than ``timeout``
        again for the same ping, the miss counts. A driver that is always that late (an
        overloaded loop) would otherwise never reach a verdict; and a driver that delivers
        waiting inbound bytes before polling has already handed over any pong that arrived
        meanwhile, so the peer has had its fair chance.
        """
        if self._verdict is not None:
            return self._verdict
        if self._ping_due_at is not None:
            return _SEND_PING
        config = self._config
        window_start = self._window_start
        if window_start is None:
            due = self._last_received + config.interval
            if now < due:
                return Wait(due)
            self._ping_due_at = due
            return _SEND_PING
        expiry = window_start + config.timeout
        if now < expiry:
            return Wait(expiry)
        # Late by more than timeout (added, not subtracted: a poll at exactly expiry +
        # timeout, computed the same way, must not count as a stall by a rounding error).
        if now > expiry + config.timeout and not self._rearmed:
            self._stalls += 1
            self._rearmed = True
            self._window_start = now
            return Wait(now + config.timeout)
        self._window_start = None
        self._misses += 1
        if self._misses >= config.misses:
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
        self._ping_due_at = now
        return _SEND_PING

    # ------------------------------------------------------------- read-outs

    @property
    def config(self) -> HeartbeatConfig:
        """The configuration this heartbeat runs with."""
        return self._config

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` must be called next (absolute); ``None`` once dead.

        At or before ``now`` while a :class:`SendPing` is pending.
        """
        if self._verdict is not None:
            return None
        if self._ping_due_at is not None:
            return self._ping_due_at
        if self._window_start is not None:
            return self._window_start + self._config.timeout
        return self._last_received + self._config.interval

    @property
    def dead(self) -> bool:
        """Whether :meth:`poll` has declared the peer dead."""
        return self._verdict is not None

    @property
    def verdict(self) -> PeerDead | None:
        """The :class:`PeerDead` verdict, or ``None`` while the peer counts as alive."""
        return self._verdict

    @property
    def ping_in_flight(self) -> bool:
        """A requested ping was sent and nothing arrived since: a poll may count a miss."""
        return self._window_start is not None and self._verdict is None

    @property
    def outstanding(self) -> int:
        """Pings sent whose pong has not arrived yet; pass it to :meth:`PongMatcher.feed`."""
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
        state = (
            "dead"
            if self._verdict is not None
            else "ping due"
            if self._ping_due_at is not None
            else "awaiting reply"
            if self._window_start is not None
            else "idle"
        )
        return (
            f"<Heartbeat {state} deadline={self.deadline!r} misses={self._misses} "
            f"outstanding={self._outstanding} rtt={self._rtt!r}>"
        )


# ---------------------------------------------------------------- pong filtering


@runtime_checkable
class PongMatcher(Protocol):
    """Finds and removes pongs in an inbound byte stream, for drivers that filter pongs.

    Implement it for protocols whose pongs a fixed token cannot describe (framed messages,
    say). Rules every implementation must keep: never lose, duplicate or reorder an
    application byte; remove at most ``outstanding`` pongs per call; bytes may be held back
    across calls only while ``outstanding > 0`` and must be returned by a later ``feed`` or by
    ``flush``.
    """

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        """Take inbound ``data``; return (bytes for the application, pongs removed).

        ``outstanding`` is :attr:`Heartbeat.outstanding`: pings whose pong is still due.
        """
        ...

    def flush(self) -> bytes:
        """Return every byte held back (at end of stream, or when giving up on pongs)."""
        ...


class PongFilter:
    """Removes a fixed pong ``token`` from an inbound byte stream: a :class:`PongMatcher`.

    The token is removed only while pings are outstanding, at most one per outstanding ping,
    searching left to right. A chunk ending in what may be the start of a token holds those
    bytes back, only while a ping is outstanding, until the next chunk tells whether they
    are a pong; if not they are passed on unchanged. :meth:`flush` releases anything held.

    Holding cannot stall a live peer: bytes are held only while a pong is owed, and the pong
    that resolves them is on its way. Choose a token the application's data cannot contain
    while a ping is outstanding (or write a :class:`PongMatcher` that understands your
    framing); with one the peer sends only between messages, the application sees exactly
    its own bytes, in order.
    """

    __slots__ = ("_held", "_token")

    def __init__(self, token: bytes | bytearray | memoryview) -> None:
        self._token = _pong_token("token", token)
        self._held = b""

    @property
    def token(self) -> bytes:
        """The pong token this filter removes."""
        return self._token

    @property
    def held(self) -> bytes:
        """Bytes held back because they may be the start of a pong."""
        return self._held

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        """Take inbound ``data``; return (bytes for the application, pongs removed).

        ``outstanding`` is :attr:`Heartbeat.outstanding` (pings whose pong is still due);
        a negative count raises :class:`~keepalive.errors.InvalidSetting`.
        """
        if outstanding <= 0:
            if outstanding < 0:
                raise InvalidSetting("outstanding", outstanding, "a whole number >= 0")
            if not self._held:
                return data, 0  # the common case: nothing owed, nothing held
            buffer = self._held + data
            self._held = b""
            return buffer, 0
        token = self._token
        if not self._held and data == token:
            return b"", 1  # the other common case: exactly the pong that is owed
        buffer = self._held + data if self._held else bytes(data)
        parts: list[bytes] = []
        position = 0
        removed = 0
        while removed < outstanding:
            found = buffer.find(token, position)
            if found < 0:
                break
            parts.append(buffer[position:found])
            position = found + len(token)
            removed += 1
        held_length = 0
        if removed < outstanding:
            held_length = _longest_suffix_prefix(buffer, position, token)
        end = len(buffer) - held_length
        parts.append(buffer[position:end])
        self._held = buffer[end:]
        return b"".join(parts), removed

    def flush(self) -> bytes:
        """Return and forget the bytes held back (call at end of stream)."""
        held, self._held = self._held, b""
        return held

    def __repr__(self) -> str:
        return f"PongFilter({self._token!r})"


def make_pong_matcher(
    pong: bytes | bytearray | memoryview | PongMatcher | None,
) -> PongMatcher | None:
    """Turn a driver's ``pong`` argument into a matcher.

    Bytes (or another bytes-like object) give a :class:`PongFilter` for that token, ``None``
    means no filtering (returned as ``None``: every inbound byte goes to the application),
    and any :class:`PongMatcher` is returned as it is. Anything else, a ``str`` included,
    raises :class:`~keepalive.errors.InvalidSettingType`; empty bytes raise
    :class:`~keepalive.errors.InvalidSetting`.
    """
    if pong is None:
        return None
    if isinstance(pong, (bytes, bytearray, memoryview)):
        return PongFilter(_pong_token("pong", pong))
    if isinstance(pong, PongMatcher):
        return pong
    raise InvalidSettingType("pong", pong, _PONG_ALLOWED)


_PONG_ALLOWED = "a non-empty bytes token, a PongMatcher (feed and flush methods) or None"


def _pong_token(field: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        hint = "encode text first, e.g. b'PONG\\n'" if isinstance(value, str) else None
        raise InvalidSettingType(field, value, "a non-empty bytes token", hint=hint)
    token = bytes(value)
    if not token:
        raise InvalidSetting(field, value, "a non-empty bytes token")
    return token


def _longest_suffix_prefix(buffer: bytes, start: int, token: bytes) -> int:
    """Length of the longest end of ``buffer[start:]`` that is a proper prefix of ``token``."""
    available = len(buffer) - start
    for length in range(min(len(token) - 1, available), 0, -1):
        if buffer.endswith(token[:length]):
            return length
    return 0
