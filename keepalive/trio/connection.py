"""Heartbeats for trio: monitored streams, one scheduler task per trio run for all of them.

Kernel keepalive cannot see past a userspace NAT or proxy: the proxy's kernel answers the
probes. This module drives :class:`~keepalive.heartbeat.Heartbeat` (the sans-I/O core) on
``trio.SocketStream`` and ``trio.SSLStream`` connections so that a peer that stops answering
is declared dead within ``HeartbeatConfig.detection_bound``::

    stream = await keepalive.trio.open_connection(
        host, port,
        keepalive=KeepaliveConfig(idle=60, interval=10, count=5),   # kernel layer (optional)
        heartbeat=HeartbeatConfig(interval=10, timeout=5),         # application layer
        ping=b"PING\\n", pong=b"PONG\\n",
    )
    data = await stream.receive_some()   # raises PeerUnresponsive once the peer is dead
    stream.srtt

:class:`MonitoredStream` is a ``trio.abc.Stream`` in front of the real one; the same names as
:class:`keepalive.aio.HeartbeatProtocol` and :class:`keepalive.sync.MonitoredSocket`
(``rtt``, ``srtt``, ``stats``, ``dead``, ``error``, ``hold_pings()``, ``send_ping()``,
``stop()``). Every rule (when to ping, when the peer is dead, stalls, stuck writes, unread
bytes, which inbound bytes are pongs) is the core's (:mod:`keepalive.heartbeat`,
:mod:`keepalive.framing`); this module only does trio's I/O.

Design (what a reader of the code needs to know):

* **One scheduler task per trio run** (a system task, ``keepalive-heartbeat``) wakes every
  monitor of the run at its deadline, rounded up to the monitor's grid
  (:func:`~keepalive.heartbeat.timer_grid`) in a :class:`~keepalive.heartbeat.TimerBuckets`,
  so connections due at nearly the same time share one wake-up. It sleeps in one cancel scope
  whose deadline is moved earlier when an earlier wake-up is armed; it starts with the
  run's first monitor and ends when the last one goes away (no task is left behind).
* **A ping never lands inside an application write.** Writes take the stream's send turn;
  the scheduler writes a ping only while the turn is free, and a ping that falls due during
  an application write is written as soon as that write ends. A plain TCP stream's ping is
  written at once from the scheduler with one non-blocking ``send`` (POSIX); a TLS ping, or
  the rest of a ping the kernel only partly took, is written by a short-lived system task
  holding the turn. ``with stream.hold_pings():`` defers pings across several writes that
  form one message.
* **Stuck writes** (ours, behind a frozen peer): while the turn is taken, a due ping is
  reported to the core with :meth:`~keepalive.heartbeat.Heartbeat.ping_stuck`, dated from
  when our writes last moved (application writes are sent in chunks of 64 KiB, each chunk's
  completion is progress), so a writer blocked behind a frozen peer is released within the
  bound and a merely slow one keeps the connection.
* **Reads count as life** when the application reads (each chunk goes through the pong
  matcher, whole messages only). Bytes the application has not read yet are looked at with
  ``FIONREAD`` before a poll that could count a miss (the core's ``unread`` rule), so a
  write-only application still gets its verdict and a slow reader gets no false one.
* **Death.** The verdict shuts the socket down (``SHUT_RDWR``; closing stays the
  application's job), which wakes tasks blocked in ``receive_some``/``send_all``; they, and
  every later call, raise :class:`~keepalive.errors.PeerUnresponsive`. ``on_dead(stream,
  error)`` is then called once (a plain callable, or a coroutine function run as a system
  task); its failures are logged.
* **Cancellation** follows trio's rules: cancelling an application's ``send_all`` leaves the
  stream in an unknown state (as trio's own streams do); the heartbeat never blocks a
  cancelled scope, and ``aclose()`` stops the heartbeat and a ping write under way at once.

Logging goes to the ``keepalive.trio`` logger (a child of ``keepalive``): DEBUG when a
heartbeat starts or stops, WARNING for a verdict and a late timer, ERROR for failing
callbacks. Everything here runs inside ``trio.run`` (one thread).
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, cast

import trio

from keepalive._async_monitors import (
    _ACTIVE,
    _DEAD,
    _DEFAULT_PING,
    _DEFAULT_PONG,
    _STOPPED,
    _STUCK_CHECK_FRACTION,
    HeartbeatReadouts,
    _call_on_dead,
    _SchedulerBuckets,
)
from keepalive._async_monitors import PingHold as _PingHold
from keepalive._unread import peer_may_be_blocked, unread_bytes
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.framing import Framing, PongSource, make_pong_matcher
from keepalive.heartbeat import (
    Action,
    Heartbeat,
    HeartbeatConfig,
    MonitorStats,
    PeerDead,
    PingSource,
    SendPing,
    Wait,
    check_ping,
    describe_stall,
    grid_time,
    next_ping,
    timer_grid,
)

if TYPE_CHECKING:
    import ssl

    from keepalive.reconnect import RetryPolicy
    from keepalive.sockets import ConfigureResult

__all__ = [
    "MonitoredStream",
    "OnDead",
    "PingHold",
    "SchedulerStats",
    "monitor",
    "open_connection",
    "scheduler_stats",
]

logger = logging.getLogger("keepalive.trio")
logging.getLogger("keepalive").addHandler(logging.NullHandler())

OnDead: TypeAlias = Callable[["MonitoredStream", PeerUnresponsive], object]
"""Called once with the error when the peer is declared dead; may return an awaitable."""

TrioStream: TypeAlias = "trio.SocketStream | trio.SSLStream[trio.SocketStream]"
"""What :func:`monitor` wraps: a TCP stream, or TLS over one."""

# Application writes are handed to the stream in chunks this big: each chunk's completion
# shows that our bytes are moving (see ping_stuck); big enough to cost nothing.
_SEND_CHUNK: Final = 64 * 1024
# Bytes asked of the inner stream per read: a TLS layer then rarely keeps decrypted bytes
# that neither we nor FIONREAD can see.
_RECEIVE_SIZE: Final = 256 * 1024
# Whether a plain socket's ping can be written at once with os.write (a socket is a file
# descriptor there); elsewhere a ping writer task writes it.
_WRITE_DIRECTLY: Final = os.name == "posix"


# ---------------------------------------------------------------------------------------------
# One scheduler per trio run


class _Scheduler(_SchedulerBuckets["MonitoredStream"]):
    """Wakes every monitor of one trio run at its deadline, from one system task.

    A monitor's ``_wake`` names the one bucket where it is live; other appearances are stale
    and skipped. The task sleeps in a cancel scope whose deadline is the earliest bucket
    (moved earlier by :meth:`schedule`), and exits when no monitor is left.
    """

    __slots__ = ("_running", "_sleep")

    def __init__(self) -> None:
        super().__init__()
        self._running = False
        self._sleep: trio.CancelScope | None = None

    def add(self, monitor: MonitoredStream, when: float) -> None:
        self._monitors += 1
        self.schedule(monitor, when)
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self._run, name="keepalive-heartbeat")

    def _disarm(self) -> None:
        if self._sleep is not None:
            self._sleep.cancel()  # the task ends now

    def schedule(self, monitor: MonitoredStream, when: float) -> None:
        """Wake ``monitor`` at ``when`` (rounded up to its grid), replacing its wake-up."""
        wake = grid_time(when, monitor._grid)
        current = monitor._wake
        if current is not None:
            if current == wake:
                return
            self._stale += 1
        monitor._wake = self._timers.add(wake, monitor)
        sleep = self._sleep
        if sleep is not None and wake < sleep.deadline:
            sleep.deadline = wake

    async def _run(self) -> None:
        timers = self._timers
        try:
            while self._monitors:
                earliest = timers.earliest()
                with trio.CancelScope(deadline=math.inf if earliest is None else earliest) as scope:
                    self._sleep = scope
                    await trio.sleep_forever()
                self._sleep = None
                now = trio.current_time()
                while (due := timers.pop_due(now)) is not None:
                    wake, monitors = due
                    for monitor in monitors:
                        if monitor._wake != wake:
                            self._stale -= 1
                            continue
                        monitor._wake = None
                        try:
                            monitor._service(now, wake)
                        except Exception:  # one broken connection must not starve the others
                            logger.exception("heartbeat of %r failed", monitor)
                            monitor._abandon()
        finally:
            self._sleep = None
            self._running = False

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            monitors=self._monitors, entries=self._timers.entries(), task_running=self._running
        )


_SCHEDULER: trio.lowlevel.RunVar[_Scheduler] = trio.lowlevel.RunVar("keepalive_heartbeat")


def _scheduler() -> _Scheduler:
    try:
        return _SCHEDULER.get()
    except LookupError:
        scheduler = _Scheduler()
        _SCHEDULER.set(scheduler)
        return scheduler


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """What the heartbeat scheduler of the current trio run holds (see
    :func:`scheduler_stats`): ``monitors`` whose heartbeat runs, timer ``entries`` (stale
    ones included) and whether its task runs."""

    monitors: int
    entries: int
    task_running: bool


def scheduler_stats() -> SchedulerStats:
    """The current trio run's heartbeat scheduler: all zero / False once every monitored
    stream is closed or dead (a quick leak check)."""
    try:
        return _SCHEDULER.get().stats()
    except LookupError:
        return SchedulerStats(monitors=0, entries=0, task_running=False)


# ---------------------------------------------------------------------------------------------
# The monitored stream


class PingHold(_PingHold):
    """Defers heartbeat pings while entered (``with`` or ``async with``); see
    :meth:`MonitoredStream.hold_pings`. Holds nest; the last one out sends a due ping."""

    __slots__ = ()

    def __init__(self, monitor: MonitoredStream) -> None:
        self._monitor = monitor


def _socket_of(stream: object) -> trio.socket.SocketType:
    """The TCP socket under a ``trio.SocketStream`` or a ``trio.SSLStream`` over one."""
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        return inner.socket
    raise InvalidSettingType(
        "stream", stream, "a trio.SocketStream or a trio.SSLStream over a trio.SocketStream"
    )


class MonitoredStream(HeartbeatReadouts, trio.abc.Stream):
    """A heartbeat on one trio stream: a ``trio.abc.Stream`` passing the application's bytes
    through unchanged, minus the pongs.

    Made by :func:`open_connection` or :func:`monitor`. ``receive_some`` returns the
    application's bytes (never ``b""`` for a chunk of pongs: only at end of stream);
    ``send_all`` writes them with no ping inside. After the verdict both raise
    :class:`~keepalive.errors.PeerUnresponsive`. ``heartbeat=None`` passes everything through
    (no heartbeat, nothing filtered).
    """

    def __init__(
        self,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        heartbeat: HeartbeatConfig | None,
        *,
        ping: PingSource = _DEFAULT_PING,
        pong: PongSource = _DEFAULT_PONG,
        framing: Framing | None = None,
        on_dead: OnDead | None = None,
    ) -> None:
        self._socket = _socket_of(stream)
        if heartbeat is not None and not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig or None")
        if on_dead is not None and not callable(on_dead):
            raise InvalidSettingType("on_dead", on_dead, "a callable taking (stream, error)")
        if heartbeat is None and on_dead is not None:
            raise InvalidSetting("on_dead", on_dead, "None when no heartbeat is configured")
        self._ping = check_ping(ping)
        self._matcher = None if heartbeat is None else make_pong_matcher(pong, framing)
        self._inner = stream
        self._plain = isinstance(stream, trio.SocketStream) and _WRITE_DIRECTLY
        self._config = heartbeat
        self._on_dead = on_dead
        self._grid = 0.0 if heartbeat is None else timer_grid(heartbeat)
        self._wake: float | None = None  # the scheduler bucket this monitor is live in
        self._error: PeerUnresponsive | None = None
        self._pending = b""  # application bytes read but not returned yet (max_bytes)
        self._receive_eof = False
        # The send turn: one writer at a time (the application's send_all, or a ping writer).
        self._send_busy = False
        self._app_sending = False
        self._turn = trio.lowlevel.ParkingLot()
        self._last_progress = 0.0  # when our writes last moved
        # Pings owed: counted by the core (ping_stuck) but not written yet; one asked for and
        # not written yet; the one a ping writer task is writing (not reported yet).
        self._owed_counted = 0
        self._owed_wanted = False
        self._writer_wanted = False
        self._writer_scope: trio.CancelScope | None = None
        self._holds = 0
        self._ping_deferred = False
        # Told once how the connection ended (None: end of stream); set by a supervisor.
        self._end_listener: Callable[[BaseException | None], object] | None = None
        self._bytes_received = 0
        self._bytes_sent = 0
        self._unread_life = 0
        self._blocked_pings = 0
        now = trio.current_time()
        self._heartbeat: Heartbeat | None = None
        self._state = _STOPPED
        self._scheduler: _Scheduler | None = None
        if heartbeat is not None:
            self._heartbeat = Heartbeat(heartbeat, now)
            self._state = _ACTIVE
            self._scheduler = _scheduler()
            deadline = self._heartbeat.deadline
            assert deadline is not None
            self._scheduler.add(self, deadline)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "heartbeat started with %s (interval %g s, timeout %g s, misses %d)",
                    self._peer(),
                    heartbeat.interval,
                    heartbeat.timeout,
                    heartbeat.misses,
                )

    # -- read-outs ---------------------------------------------------------------------------

    @property
    def stream(self) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
        """The monitored stream (use this wrapper for I/O, not it)."""
        return self._inner

    @property
    def socket(self) -> trio.socket.SocketType:
        """The TCP socket under the stream (for ``getsockopt``, ``getpeername``)."""
        return self._socket

    @property
    def config(self) -> HeartbeatConfig | None:
        """The heartbeat's configuration (``None``: no heartbeat)."""
        return self._config

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The core state machine (read it; do not feed it); ``None`` without a heartbeat."""
        return self._heartbeat

    @property
    def active(self) -> bool:
        """Whether the heartbeat is running."""
        return self._state == _ACTIVE

    @property
    def dead(self) -> bool:
        """Whether the peer was declared dead (the socket was shut down then)."""
        return self._state == _DEAD

    @property
    def error(self) -> PeerUnresponsive | None:
        """The :class:`~keepalive.errors.PeerUnresponsive` of the verdict, or ``None``."""
        return self._error

    @property
    def unread_life(self) -> int:
        """Verdict checks that found new inbound bytes waiting unread and counted them as life."""
        return self._unread_life

    @property
    def stats(self) -> MonitorStats:
        """A snapshot of the counters, as the other front-ends give them."""
        return self._stats(
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            unread_life=self._unread_life,
            blocked_pings=self._blocked_pings,
        )

    def __repr__(self) -> str:
        state = {_ACTIVE: "active", _STOPPED: "stopped", _DEAD: "dead"}[self._state]
        return (
            f"<MonitoredStream {state} {self._peer()} pings={self.pings_sent} "
            f"pongs={self.pongs_received} rtt={self.rtt!r}>"
        )

    # -- control -----------------------------------------------------------------------------

    def hold_pings(self) -> PingHold:
        """A context manager (``with`` or ``async with``) during which no ping is written.

        For a message written with several ``send_all`` calls: a ping that falls due inside
        the block is written as soon as the last hold ends. Keep holds short: the ping's
        timeout starts only when it is written, so a hold delays detection by as long.
        """
        return PingHold(self)

    def send_ping(self) -> bool:
        """Write an extra ping now (e.g. to measure the RTT); False if none could be written.

        An extra ping is counted and its pong removed and timed; it never makes a verdict
        come sooner. Nothing is written while the heartbeat is not running, while pings are
        held, or while another write is under way.
        """
        heartbeat = self._heartbeat
        if self._state != _ACTIVE or heartbeat is None or self._holds or self._send_busy:
            return False
        payload = self._ping_bytes(1)
        if payload is None:
            return False
        written = self._write_nowait(payload) if self._plain else 0
        if written < 0 or (written == 0 and self._plain):
            return False  # the socket failed, or its buffer is full
        if written < len(payload):
            self._start_writer(payload[written:], wanted=False, now=trio.current_time())
        heartbeat.ping_sent(trio.current_time())
        return True

    def stop(self) -> None:
        """Stop the heartbeat and leave the stream as it is. Idempotent.

        Pongs of pings already sent are still removed from the stream.
        """
        if self._state == _ACTIVE:
            self._stop("stopped by the application")

    # -- trio.abc.Stream ---------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``; no ping is written inside it."""
        if self._app_sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._raise_if_dead()
        self._app_sending = True
        try:
            await self._take_turn()
            try:
                self._last_progress = trio.current_time()
                with memoryview(data) as view:
                    if not view:
                        await self._inner.send_all(b"")
                    for start in range(0, len(view), _SEND_CHUNK):
                        chunk = view[start : start + _SEND_CHUNK]
                        await self._inner.send_all(chunk)
                        self._bytes_sent += len(chunk)
                        self._last_progress = trio.current_time()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._raise_if_dead(exc)
                self._report_end(exc)
                raise
            finally:
                self._release_turn()
        finally:
            self._app_sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._raise_if_dead()
        await self._take_turn()  # (trio refuses it during another task's send_all)
        try:
            await self._inner.wait_send_all_might_not_block()
        finally:
            self._release_turn()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The application's next bytes (pongs removed); ``b""`` only at end of stream."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise InvalidSetting("max_bytes", max_bytes, "a whole number >= 1, or None")
        self._raise_if_dead()
        if self._pending:
            await trio.lowlevel.checkpoint()
            return self._take_pending(max_bytes)
        while True:
            if self._receive_eof:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                data = await self._inner.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._raise_if_dead(exc)
                self._report_end(exc)
                raise
            self._raise_if_dead()  # the verdict came while waiting (the shutdown woke us)
            if not data:
                self._receive_eof = True
                self._report_end(None)
                if self._state == _ACTIVE:
                    self._stop("the peer closed its side")  # nothing can arrive any more
                self._pending = b"" if self._matcher is None else self._matcher.flush()
                if self._pending:
                    return self._take_pending(max_bytes)
                return b""
            self._pending = self._received(bytes(data))
            if self._pending:
                return self._take_pending(max_bytes)

    async def aclose(self) -> None:
        """Stop the heartbeat (and a ping write under way) and close the stream."""
        if self._state == _ACTIVE:
            self._stop("the stream was closed")
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        await self._inner.aclose()

    # -- reading -----------------------------------------------------------------------------

    def _received(self, data: bytes) -> bytes:
        """Tell the core about ``data``; the application's bytes among it."""
        heartbeat = self._heartbeat
        self._bytes_received += len(data)
        if heartbeat is None:
            return data
        now = trio.current_time()
        outstanding = heartbeat.outstanding
        matcher = self._matcher
        nbytes = len(data)
        if matcher is None:
            heartbeat.received(now, nbytes, None)
        else:
            data, pongs = matcher.feed(data, outstanding)
            heartbeat.received(now, nbytes, pongs)
        if self._state == _ACTIVE and (outstanding or self._wake is None):
            # Bytes during a ping's window can move the deadline earlier (see Heartbeat);
            # a monitor whose ping is held has no wake-up until bytes set a deadline.
            deadline = heartbeat.deadline
            wake = self._wake
            if deadline is not None and (wake is None or deadline < wake):
                assert self._scheduler is not None
                self._scheduler.schedule(self, deadline)
        return data

    def _take_pending(self, max_bytes: int | None) -> bytes:
        pending = self._pending
        if max_bytes is None or len(pending) <= max_bytes:
            self._pending = b""
            return pending
        self._pending = pending[max_bytes:]
        return pending[:max_bytes]

    def _raise_if_dead(self, cause: BaseException | None = None) -> None:
        error = self._error
        if error is not None:
            fresh = PeerUnresponsive(*error.args)  # one instance per raise: no shared traceback
            raise fresh from (cause or error)

    # -- the send turn -----------------------------------------------------------------------

    async def _take_turn(self) -> None:
        while self._send_busy:
            await self._turn.park()
            self._raise_if_dead()
        self._send_busy = True

    def _release_turn(self) -> None:
        self._send_busy = False
        if self._state == _ACTIVE and (self._owed_counted or self._owed_wanted):
            self._flush_pings(trio.current_time())
        if not self._send_busy:
            self._turn.unpark()

    # -- the heartbeat -----------------------------------------------------------------------

    def _service(self, now: float, when: float) -> None:
        """The scheduler's wake-up at ``when`` (polled as ``now``): obey the core."""
        heartbeat = self._heartbeat
        assert heartbeat is not None
        assert self._scheduler is not None
        stalls = heartbeat.stalls
        action = self._poll(heartbeat, now)
        if action.__class__ is SendPing:
            if not self._request_ping(heartbeat, now):
                return
            action = self._poll(heartbeat, now)  # a ping dated back may be overdue already
        if isinstance(action, Wait):
            if heartbeat.stalls != stalls:
                assert self._config is not None
                logger.warning("%s: %s", self._peer(), describe_stall(now - when, self._config))
            self._scheduler.schedule(self, action.deadline)
        elif isinstance(action, PeerDead):
            self._die(action)
        # (SendPing again: the ping could not be reported; its writer reschedules)

    def _poll(self, heartbeat: Heartbeat, now: float) -> Action:
        if heartbeat.miss_possible(now):
            # Bytes waiting unread in the kernel (the application is behind, or not reading).
            fd = self._socket.fileno()
            count = unread_bytes(fd)
            blocked = peer_may_be_blocked(cast(socket.socket, self._socket), count)
            if heartbeat.unread(now, count, peer_blocked=blocked):
                self._unread_life += 1
        return heartbeat.poll(now)

    def _request_ping(self, heartbeat: Heartbeat, now: float) -> bool:
        """Have the ping the core asked for written; True once the core was told (written or
        counted as sent), False when it will be later (the caller then does nothing)."""
        if self._holds:
            self._ping_deferred = True  # sent by the last hold's exit
            return False
        if not self._send_busy:
            self._owed_wanted = True
            return self._flush_pings(now)
        # Our own write is under way: the ping goes out when it ends. If our bytes stopped
        # moving for timeout, the core counts the ping as sent (a frozen peer).
        if not self._writer_wanted:
            self._owed_wanted = True
        counts_at = heartbeat.ping_stuck(now, self._last_progress)
        if counts_at is not None:
            assert self._config is not None
            assert self._scheduler is not None
            check = now + self._config.timeout * _STUCK_CHECK_FRACTION
            self._scheduler.schedule(self, min(check, counts_at))
            return False
        if self._writer_wanted:
            self._writer_wanted = False  # the ping being written is now a counted one
        else:
            self._owed_wanted = False
            self._owed_counted += 1
        self._blocked_pings += 1
        return True

    def _flush_pings(self, now: float) -> bool:
        """Write the owed pings (the send turn is free); True if the wanted one was written
        at once and reported to the core."""
        heartbeat = self._heartbeat
        assert heartbeat is not None
        wanted = self._owed_wanted and heartbeat.ping_due  # (inbound bytes may have made it moot)
        count = self._owed_counted + wanted
        self._owed_counted = 0
        self._owed_wanted = False
        if not count:
            return False
        payload = self._ping_bytes(count)
        if payload is None:
            return False
        written = self._write_nowait(payload) if self._plain else 0
        if written < 0:
            return False
        if written == len(payload):
            if wanted:
                heartbeat.ping_sent(now)
            return wanted
        # The rest is written by a task holding the turn; it reports the wanted ping.
        self._start_writer(payload[written:], wanted=wanted, now=now)
        assert self._config is not None
        assert self._scheduler is not None
        self._scheduler.schedule(self, now + self._config.timeout * _STUCK_CHECK_FRACTION)
        return False

    def _start_writer(self, payload: bytes, *, wanted: bool, now: float) -> None:
        """Take the send turn and have a task write ``payload`` (the turn must be free)."""
        self._send_busy = True
        self._writer_wanted = wanted
        self._last_progress = now
        trio.lowlevel.spawn_system_task(
            self._write_ping_task, payload, name="keepalive-ping-writer"
        )

    def _ping_bytes(self, count: int) -> bytes | None:
        try:
            return b"".join(next_ping(self._ping) for _ in range(count))
        except Exception:
            logger.exception("the ping callable failed; heartbeat stopped")
            self._stop("the ping callable failed")
            return None

    def _write_nowait(self, payload: bytes) -> int:
        """Bytes of ``payload`` the kernel took at once (never blocks); -1 if the socket failed
        (the heartbeat stops; the application hears of it from its own calls)."""
        try:
            return os.write(self._socket.fileno(), payload)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._stop(f"the ping could not be written ({exc})")
            self._report_end(exc)
            return -1

    async def _write_ping_task(self, payload: bytes) -> None:
        """Write the rest of a ping while holding the send turn (taken by the caller)."""
        try:
            with trio.CancelScope() as scope:
                self._writer_scope = scope
                await self._inner.send_all(payload)
                self._last_progress = trio.current_time()
                if self._writer_wanted:
                    self._writer_wanted = False
                    heartbeat = self._heartbeat
                    assert heartbeat is not None
                    heartbeat.ping_sent(trio.current_time())
                    if self._state == _ACTIVE:
                        self._service_now()
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.BusyResourceError,
            OSError,
        ) as exc:
            if self._state == _ACTIVE:
                self._stop(f"the ping could not be written ({exc!r})")
            if not isinstance(exc, trio.ClosedResourceError):  # (closed: by us)
                self._report_end(exc)
        except Exception:  # a system task must never raise
            logger.exception("writing a ping to %s failed", self._peer())
            if self._state == _ACTIVE:
                self._stop("internal error")
        finally:
            self._writer_scope = None
            self._writer_wanted = False
            self._release_turn()

    def _service_now(self) -> None:
        now = trio.current_time()
        scheduler = self._scheduler
        assert scheduler is not None
        if self._wake is not None:
            self._wake = None
            scheduler._stale += 1
        self._service(now, now)

    def _hold(self) -> None:
        self._holds += 1

    def _release_hold(self) -> None:
        self._holds -= 1
        if self._holds == 0 and self._ping_deferred:
            self._ping_deferred = False
            if self._state == _ACTIVE:
                self._service_now()

    def _die(self, verdict: PeerDead) -> None:
        error = verdict.as_error()
        self._error = error
        self._state = _DEAD
        self._owed_counted = 0
        self._owed_wanted = False
        assert self._scheduler is not None
        self._scheduler.discard(self)
        logger.warning("%s declared dead: %s", self._peer(), error)
        # Wakes every task blocked on the socket; the fd stays open until aclose(). (OSError:
        # not connected any more, nothing to wake.)
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._turn.unpark_all()
        self._report_end(error)
        callback, self._on_dead = self._on_dead, None
        result = _call_on_dead(callback, self, error, logger)
        if result is not None:
            trio.lowlevel.spawn_system_task(_await_callback, result, name="keepalive-on-dead")

    def _report_end(self, error: BaseException | None) -> None:
        listener, self._end_listener = self._end_listener, None
        if listener is not None:
            listener(error)

    def _stop(self, reason: str) -> None:
        self._state = _STOPPED
        self._ping_deferred = False
        self._owed_counted = 0
        self._owed_wanted = False
        assert self._scheduler is not None
        self._scheduler.discard(self)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("heartbeat with %s stopped: %s", self._peer(), reason)

    def _abandon(self) -> None:
        """After an unexpected error in :meth:`_service`: stop without touching anything else."""
        if self._state == _ACTIVE:
            self._stop("internal error")

    def _peer(self) -> str:
        try:
            peer = self._socket.getpeername()
        except OSError:
            return "the peer"
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"peer {peer[0]}:{peer[1]}"
        return f"peer {peer}"


async def _await_callback(result: Awaitable[object]) -> None:
    try:
        await result
    except Exception:
        logger.exception("on_dead callback failed")


# ---------------------------------------------------------------------------------------------
# Entry points


def monitor(
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    *,
    heartbeat: HeartbeatConfig,
    ping: PingSource = _DEFAULT_PING,
    pong: PongSource = _DEFAULT_PONG,
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    keepalive: KeepaliveConfig | None = None,
) -> MonitoredStream:
    """Start a heartbeat on a connected ``stream`` (a ``trio.SocketStream``, or a
    ``trio.SSLStream`` over one); use the returned :class:`MonitoredStream` from then on.

    ``ping``, ``pong``, ``framing``, ``on_dead``: as for :func:`open_connection`. With
    ``keepalive`` the socket's kernel keepalive is configured too (its errors propagate,
    before the heartbeat starts). Call it inside ``trio.run``; the heartbeat's clock starts now.
    """
    if not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig")
    sock = _socket_of(stream)
    if keepalive is not None:
        _configure_kernel(sock, keepalive)
    return MonitoredStream(
        stream, heartbeat, ping=ping, pong=pong, framing=framing, on_dead=on_dead
    )


async def open_connection(
    host: str,
    port: int,
    *,
    keepalive: KeepaliveConfig | None = None,
    heartbeat: HeartbeatConfig | None = None,
    ping: PingSource = _DEFAULT_PING,
    pong: PongSource = _DEFAULT_PONG,
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    retry: RetryPolicy | None = None,
    connect_timeout: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> MonitoredStream:
    """``trio.open_tcp_stream`` (and ``trio.open_ssl_over_tcp_stream``) with kernel
    keepalive, retries and an application heartbeat; the names and rules of
    :func:`keepalive.aio.open_connection`.

    ``keepalive``: a :class:`~keepalive.KeepaliveConfig`, configured before the SYN (``None``:
    the socket is left as it is). ``heartbeat``: a
    :class:`~keepalive.heartbeat.HeartbeatConfig` (``None``: no heartbeat; the stream passes
    everything through). ``ping``: bytes or a callable returning the next ping's bytes.
    ``pong``, ``framing``: the reply, removed only as a whole inbound message (see
    :func:`keepalive.framing.make_pong_matcher`), or ``None`` (nothing removed; any byte is
    life). ``on_dead(stream, error)``: called once on the verdict (plain or coroutine
    function). ``retry``, ``connect_timeout``: the dial of :func:`keepalive.connect` (every
    address tried per attempt, each within ``connect_timeout``, default the policy's else
    20 s; retryable failures retried per ``retry``, then
    :class:`~keepalive.errors.ConnectFailed`). ``ssl_context``: TLS over the connection
    (``server_hostname`` defaults to ``host``), handshake done before returning, within
    ``connect_timeout``. Every argument is checked before connecting; cancelling stops it at
    once (the socket is closed).
    """
    from keepalive.dial import _dialer  # noqa: PLC0415 - imports keepalive.sockets

    dialer = _dialer(
        (host, port), keepalive=keepalive, retry=retry, connect_timeout=connect_timeout
    )
    if heartbeat is not None and not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig or None")
    if heartbeat is None and on_dead is not None:
        raise InvalidSetting("on_dead", on_dead, "None when no heartbeat is configured")
    if on_dead is not None and not callable(on_dead):
        raise InvalidSettingType("on_dead", on_dead, "a callable taking (stream, error)")
    if heartbeat is not None:
        check_ping(ping)
        make_pong_matcher(pong, framing)  # refuses bad values now, not after connecting
    context = _check_tls(ssl_context, server_hostname)
    from keepalive.trio._dial import TRIO_IO  # noqa: PLC0415

    stream = await dialer.dial_with(TRIO_IO, retry)
    try:
        tls_stream = None
        if context is not None:
            tls_stream = trio.SSLStream(
                stream, context, server_hostname=server_hostname or dialer.host
            )
            with trio.fail_after(dialer.timeout):
                await tls_stream.do_handshake()
        return MonitoredStream(
            stream if tls_stream is None else tls_stream,
            heartbeat,
            ping=ping,
            pong=pong,
            framing=framing,
            on_dead=on_dead,
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def _check_tls(ssl_context: object, server_hostname: object) -> ssl.SSLContext | None:
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise InvalidSettingType("server_hostname", server_hostname, "a string or None")
    if ssl_context is None:
        if server_hostname is not None:
            raise InvalidSetting("server_hostname", server_hostname, "None without ssl_context")
        return None
    import ssl  # noqa: PLC0415 - only for TLS users

    if not isinstance(ssl_context, ssl.SSLContext):
        raise InvalidSettingType("ssl_context", ssl_context, "an ssl.SSLContext or None")
    return ssl_context


def _configure_kernel(sock: trio.socket.SocketType, config: KeepaliveConfig) -> ConfigureResult:
    from keepalive.sockets import configure  # noqa: PLC0415 - only when kernel keepalive is asked

    if not isinstance(config, KeepaliveConfig):
        raise InvalidSettingType("keepalive", config, "a KeepaliveConfig or None")
    return configure(sock, config)
