"""Heartbeats for asyncio: streams and protocols, one timer per event loop for all of them.

Kernel keepalive cannot see past a userspace NAT or proxy: the proxy's kernel answers the
probes. This module drives :class:`~keepalive.heartbeat.Heartbeat` (the sans-I/O core) on
asyncio connections so that a peer that stops answering is declared dead within
``HeartbeatConfig.detection_bound``::

    reader, writer = await keepalive.aio.open_connection(
        host, port,
        keepalive=KeepaliveConfig(idle=60, interval=10, count=5),   # kernel layer (optional)
        heartbeat=HeartbeatConfig(interval=10, timeout=5),         # application layer
        ping=b"PING\\n", pong=b"PONG\\n",
        retry=Backoff(initial=0.5), connect_timeout=5,              # connect step (optional)
    )
    data = await reader.read(4096)    # raises PeerUnresponsive once the peer is declared dead
    keepalive.aio.monitor_of(writer).srtt

Three ways in, one piece of code (:class:`HeartbeatProtocol`) behind all of them:

* :func:`open_connection`: like :func:`asyncio.open_connection`, with a heartbeat (and
  keepalive before the SYN, every address tried, retries, per-attempt connect timeouts);
* :func:`monitor_streams`: start a heartbeat on streams that already exist;
* :class:`HeartbeatProtocol` / :func:`monitor`: for ``asyncio.Protocol`` users.

:class:`~keepalive.aio.Supervisor` (in :mod:`keepalive.aio.supervisor`) keeps one such
connection up and reconnects when it dies.

Design (what a reader of the code needs to know):

* **Interception.** A :class:`HeartbeatProtocol` sits between the transport and the
  application's protocol (for streams, the :class:`asyncio.StreamReaderProtocol`). Every chunk
  the transport delivers first tells the core that the peer is alive and goes through the pong
  matcher; only the application's bytes are passed on. :func:`open_connection` creates it
  as the transport's protocol; :func:`monitor_streams` and :func:`monitor` interpose it with
  ``transport.set_protocol()``. It is a :class:`asyncio.BufferedProtocol`: transports read
  into one buffer per event loop, shared by all its monitors (reads are synchronous, so it
  is never in use twice), and only the bytes read are copied out. That spares every read
  the allocation of asyncio's 256 KiB receive size, which on this project's machines costs
  more CPU than the heartbeat itself. Behind :func:`open_connection` (whose
  ``StreamReaderProtocol`` copies what it gets into its ``StreamReader`` at once) not even
  that: while no pong is owed, the application's protocol gets a view of the shared buffer,
  and the pong matcher is fed only the bytes from the chunk's last line end on, which
  leaves its line boundary exactly where the whole chunk would (lines with a one-byte
  delimiter; other framings, a pong owed, bytes held back: the matcher gets every byte).
* **One scheduler per event loop**, one ``loop.call_at`` handle, no task per connection.
  Wake-ups are rounded up to a grid of 1/64 of ``min(interval, timeout)`` (at most 0.25 s),
  so connections due at nearly the same time share one timer callback and one loop
  iteration (deadlines are never advanced, so no verdict comes early). The scheduler keeps a
  bucket (list) of monitors per wake-up time and a heap of the distinct times: scheduling is
  a list append, with no allocation per beat. After a ping the monitor wakes when the next
  ping falls due if the pong comes back in time (not at the end of the ping's window), so a
  pong back within the same grid cell moves nothing: one bucket entry per beat. Otherwise
  re-arming is lazy: other inbound bytes only update the core, the monitor wakes at its old
  time, polls, and is put in the bucket of its new deadline; a pong or bytes during a ping's
  window move it to its new deadline's cell. Stale appearances are skipped when their bucket
  fires, dropped when the loop's last monitor goes away, and compacted when they outnumber
  the live monitors.
* **No false deaths from our own stalls.** Before a poll that would count a miss, the driver
  asks the kernel whether inbound bytes are already waiting on the socket (``FIONREAD``;
  ``select`` with a zero timeout where ``ioctl`` is missing), and counts them as life
  (:attr:`HeartbeatProtocol.unread_life`). Deferring the verdict with ``call_soon`` would not
  do: asyncio runs every callback already in its ready queue, then polls for I/O and appends
  the read callbacks *after* the deferred one, so after a blocked loop the verdict would still
  come before the pending reads. A poll later than ``timeout`` past the ping's deadline
  re-arms the ping's window instead of counting a miss (the core's stall rule, logged as a
  warning).
* **A ping never lands inside an application message.** Pings are written from the timer
  callback, between other callbacks: one ``transport.write()`` (one ``writer.write()``) is
  never split. A message built from several writes with an ``await`` in between (``write,
  await drain(), write``) can be protected with ``async with monitor.hold_pings():``, which
  defers a due ping until the block ends (detection is delayed by as long).
* **A ping never waits behind our own upload.** ``writer.write()`` never blocks, so the
  transport may buffer megabytes; a ping queued behind them would reach a slow but live
  reader too late. While the transport has paused writing (its buffer is above the high-water
  mark), a due ping is held back as long as the buffer keeps draining, and written when
  writing resumes. If our bytes stop moving for ``timeout`` (a frozen peer), the ping is
  written anyway and dated from when they stopped, so the verdict still comes within the
  bound. The kernel's own send buffer is not looked into: ``timeout`` must cover the time a
  full socket buffer takes to reach the peer.
* **Death.** The verdict aborts the transport, hands the application's protocol
  ``connection_lost(PeerUnresponsive)`` (so ``await reader.read()`` and ``writer.drain()``
  raise it, and ``writer.wait_closed()`` does too), then calls ``on_dead(monitor, exc)`` once
  (the same shape as :func:`keepalive.sync.monitor`'s ``on_dead(sock, exc)``).
  ``on_dead`` may be a plain callable or a coroutine function (run as a task the scheduler
  keeps a reference to). A failure inside it is logged, never raised into the loop.
* **Half-closed and closing connections.** After the peer's EOF nothing more can arrive, so
  the heartbeat stops; a ping that falls due while the application is closing the transport
  (or after ``write_eof()``) stops it too. A verdict already in progress still aborts a
  closing transport whose buffer cannot drain to a dead peer.
* **Unread bytes.** Bytes waiting in the kernel count as life even when the application
  stopped reading (the transport paused reading): they mean the application is behind the
  peer, and a full receive buffer would keep any pong out. Detection resumes, within the
  bound, once the application reads again.
* **pong.** Bytes (or a predicate on messages): a whole inbound message equal to it, at a
  message boundary of ``framing`` (default: lines for a pong ending in a newline), is removed
  while a ping is owed, at most one per ping (:mod:`keepalive.framing`); nothing else is ever
  touched. A :class:`~keepalive.framing.PongMatcher`: yours (one per
  connection). ``None``: no filtering, the application reads the replies; any inbound byte is
  life, and the first chunk after a ping counts as its answer (an RTT sample that is exact
  for a peer that was otherwise silent, as it is whenever a ping is sent).
* **ping.** Bytes, or a callable returning the bytes of the next ping (for framed protocols
  or pings that carry a counter). If the callable fails, the error is logged and the heartbeat
  of that connection stops; the connection itself is left alone.
* **Event loops.** asyncio's own and uvloop's (tests run on both). uvloop's transports are
  not subclasses of asyncio's (they are recognised by their methods) and its transport
  socket is a stand-in without ``shutdown()`` that keepalive configures like a socket. Two
  differences show through: uvloop's clock counts whole milliseconds, so :attr:`rtt` on a
  fast network may read 0; and after a verdict ``writer.write()`` raises uvloop's
  ``RuntimeError`` (asyncio's transport drops the bytes), while ``drain()`` and ``read()``
  raise :class:`~keepalive.errors.PeerUnresponsive` on both.
* **Memory.** A monitor holds only what every connection needs; what monitors made alike
  share (heartbeat, grid, ping) is one object, and what few connections ever use (held
  pings, a full write buffer, unread-byte counts, the verdict's error) is allocated on first
  use.

Logging goes to the ``keepalive.aio`` logger (a child of ``keepalive``): DEBUG when a
heartbeat starts or stops, WARNING for a verdict and for a late timer (a blocked loop), ERROR
for failing callbacks. Everything here must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, cast

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
from keepalive._validate import check_address, positive_int, positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.framing import Framing, Lines, MessagePongs, PongSource, make_pong_matcher
from keepalive.heartbeat import (
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
from keepalive.reconnect import RetryPolicy

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows: readability is asked with select() instead
    fcntl = termios = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import socket

    from keepalive.sockets import ConfigureResult

__all__ = [
    "DEFAULT_STREAM_LIMIT",
    "HeartbeatProtocol",
    "OnDead",
    "PingHold",
    "PingSource",
    "PongSource",
    "SchedulerStats",
    "monitor_of",
    "monitor",
    "open_connection",
    "scheduler_stats",
    "monitor_streams",
]

logger = logging.getLogger("keepalive.aio")
# A library adds no handler but NullHandler: records show once the application configures
# logging, and never through logging's "last resort" stderr handler.
logging.getLogger("keepalive").addHandler(logging.NullHandler())


OnDead: TypeAlias = Callable[["HeartbeatProtocol", PeerUnresponsive], object]
"""Called once with the error when the peer is declared dead; may return an awaitable."""

DEFAULT_STREAM_LIMIT: Final = 2**16
"""The StreamReader buffer limit :func:`asyncio.open_connection` uses too (64 KiB)."""

# asyncio runs a timer when ``when < loop.time() + resolution``; entries that close count as due.
_CLOCK_RESOLUTION: Final = time.get_clock_info("monotonic").resolution
_NEVER: Final = float("inf")
# Size of the read buffer shared by every monitor of one loop: asyncio's own read size.
_RECEIVE_BUFFER_SIZE: Final = 256 * 1024
# Monitor states: this one, then _ACTIVE, _STOPPED and _DEAD (keepalive._async_monitors).
_NEW: Final = 0  # not attached to a transport yet


# ---------------------------------------------------------------------------------------------
# Readability: bytes already waiting in the kernel count as life


# ---------------------------------------------------------------------------------------------
# One scheduler per event loop


class _Scheduler(_SchedulerBuckets["HeartbeatProtocol"]):
    """Wakes every monitor of one event loop at its deadline, from one ``call_at`` handle.

    Wake-up times lie on each monitor's grid (see ``_GRANULARITY_FRACTION``), so many monitors
    share one: a bucket (list) of monitors per time, and a heap of the distinct times. A
    monitor's ``_wake`` names the one bucket where it is live; other appearances are stale
    and skipped. Only touched from the loop's thread. Holds the loop weakly so that the
    registry entry goes away with the loop.
    """

    __slots__ = (
        "__weakref__",
        "_armed_at",
        "_fire_callback",
        "_firing",
        "_handle",
        "_loop_ref",
        "_tasks",
        "receive_buffer",
        "receive_bytes",
    )

    def __init__(self, loop_ref: Callable[[], asyncio.AbstractEventLoop | None]) -> None:
        super().__init__()
        self._loop_ref = loop_ref
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = _NEVER
        self._firing = False
        self._tasks: set[asyncio.Future[object]] = set()
        self._fire_callback = self._fire  # one bound method for every call_at
        # The loop's shared read buffer (see HeartbeatProtocol.get_buffer).
        self.receive_bytes = bytearray(_RECEIVE_BUFFER_SIZE)
        self.receive_buffer = memoryview(self.receive_bytes)

    # -- monitors ----------------------------------------------------------------------------

    def add(self, monitor: HeartbeatProtocol, when: float) -> None:
        self._monitors += 1
        self.schedule(monitor, when)

    def schedule(self, monitor: HeartbeatProtocol, when: float) -> None:
        """Wake ``monitor`` at ``when`` (rounded up to its grid), replacing its wake-up."""
        wake = grid_time(when, monitor._settings.grid)
        current = monitor._wake
        if current is not None:
            if current == wake:
                return
            self._stale += 1
        monitor._wake = self._timers.add(wake, monitor)
        if wake < self._armed_at and not self._firing:
            self._arm(wake)

    def keep(self, task: asyncio.Future[object]) -> None:
        """Hold a reference to an ``on_dead`` task until it finishes, and report its failure."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    # -- the timer ---------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        loop = self._loop_ref()
        if loop is None or loop.is_closed():
            return
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._fire_callback)
        self._armed_at = when

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = _NEVER

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = _NEVER
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - a closed loop runs no timers
            return
        now = loop.time()
        horizon = now + _CLOCK_RESOLUTION
        timers = self._timers
        self._firing = True
        try:
            while (due := timers.pop_due(horizon)) is not None:
                wake, monitors = due
                poll_at = wake if wake > now else now
                for monitor in monitors:
                    if monitor._wake != wake:
                        self._stale -= 1
                        continue
                    monitor._wake = None
                    try:
                        monitor._service(poll_at, wake)
                    except Exception:  # one broken connection must not starve the others
                        logger.exception("heartbeat of %r failed", monitor)
                        monitor._abandon()
        finally:
            self._firing = False
        earliest = timers.earliest()
        if earliest is not None:
            self._arm(earliest)

    def _task_done(self, task: asyncio.Future[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("on_dead callback failed", exc_info=task.exception())

    # -- read-outs ---------------------------------------------------------------------------

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            monitors=self._monitors,
            entries=self._timers.entries(),
            timer_armed=self._handle is not None,
            callbacks_running=len(self._tasks),
        )


_SCHEDULERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Scheduler] = (
    weakref.WeakKeyDictionary()
)
# Loops that cannot be weakly referenced (none in the standard library): keyed by id, checked.
_PINNED_SCHEDULERS: dict[int, tuple[asyncio.AbstractEventLoop, _Scheduler]] = {}
_SCHEDULERS_LOCK = threading.Lock()


def _scheduler_for(loop: asyncio.AbstractEventLoop, *, create: bool = True) -> _Scheduler | None:
    try:
        scheduler = _SCHEDULERS.get(loop)
    except TypeError:  # pragma: no cover - loop type without __weakref__
        pinned = _PINNED_SCHEDULERS.get(id(loop))
        scheduler = pinned[1] if pinned is not None and pinned[0] is loop else None
    if scheduler is not None or not create:
        return scheduler
    with _SCHEDULERS_LOCK:
        try:
            scheduler = _SCHEDULERS.get(loop)
            if scheduler is None:
                scheduler = _Scheduler(weakref.ref(loop))
                _SCHEDULERS[loop] = scheduler
        except TypeError:  # pragma: no cover - loop type without __weakref__
            scheduler = _Scheduler(lambda: loop)
            _PINNED_SCHEDULERS[id(loop)] = (loop, scheduler)
    return scheduler


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """What the heartbeat scheduler of one event loop holds (see :func:`scheduler_stats`).

    ``monitors``: connections whose heartbeat is running; ``entries``: wake-up entries, stale
    ones included; ``timer_armed``: whether its ``call_at`` handle is pending;
    ``callbacks_running``: ``on_dead`` coroutines not finished yet.
    """

    monitors: int
    entries: int
    timer_armed: bool
    callbacks_running: int


def scheduler_stats(loop: asyncio.AbstractEventLoop | None = None) -> SchedulerStats:
    """The state of ``loop``'s heartbeat scheduler (default: the running loop).

    All zero once every monitored connection of the loop is closed or dead: a quick leak check.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    scheduler = _scheduler_for(loop, create=False)
    if scheduler is None:
        return SchedulerStats(monitors=0, entries=0, timer_armed=False, callbacks_running=0)
    return scheduler.stats()


# ---------------------------------------------------------------------------------------------
# The monitor: a protocol in front of the application's protocol


class _Settings:
    """What a monitor was made with and never changes: the heartbeat, its timer grid, the
    ping, whether the application's protocol is buffered, whether it may be handed views of
    the shared read buffer. Monitors made alike share one (issue 14: memory per asyncio
    monitor); a ping callable gets its own."""

    __slots__ = ("buffered", "config", "grid", "ping", "view_delimiter", "views")

    def __init__(
        self,
        config: HeartbeatConfig,
        ping: bytes | Callable[[], object],
        buffered: bool,
        views: bool = False,
        view_delimiter: bytes | None = None,
    ) -> None:
        self.config = config
        self.grid = timer_grid(config)
        self.ping = ping
        self.buffered = buffered
        # views: the application's protocol copies what data_received() gets before it
        # returns (asyncio's StreamReaderProtocol feeding its StreamReader, both made by
        # open_connection), so it can be handed a view of the shared read buffer instead of
        # a copy. view_delimiter: the one-byte line delimiter of the pong matcher (None: no
        # matcher), whose boundary the monitor tracks from the buffer itself.
        self.views = views
        self.view_delimiter = view_delimiter


_SHARED_SETTINGS: dict[tuple[HeartbeatConfig, bytes, bool, bool, bytes | None], _Settings] = {}
_SHARED_SETTINGS_MAX: Final = 256  # distinct combinations kept; more are made per monitor


def _settings_for(
    config: HeartbeatConfig,
    ping: bytes | Callable[[], object],
    buffered: bool,
    views: bool = False,
    view_delimiter: bytes | None = None,
) -> _Settings:
    if not isinstance(ping, bytes):
        return _Settings(config, ping, buffered, views, view_delimiter)
    key = (config, ping, buffered, views, view_delimiter)
    settings = _SHARED_SETTINGS.get(key)
    if settings is None:
        settings = _Settings(config, ping, buffered, views, view_delimiter)
        if len(_SHARED_SETTINGS) < _SHARED_SETTINGS_MAX:
            _SHARED_SETTINGS[key] = settings
    return settings


class _Seldom:
    """A monitor's state for what most connections never do (hold pings, fill their write
    buffer, stall the loop, die): allocated on first use, so that the many connections that
    never do keep the monitor small (issue 14: memory per asyncio monitor)."""

    __slots__ = (
        "blocked_pings",
        "error",
        "holds",
        "ping_deferred",
        "stuck_since",
        "stuck_size",
        "unread_life",
        "writing_paused",
    )

    def __init__(self) -> None:
        self.holds = 0
        self.ping_deferred = False
        self.writing_paused = False
        # While a due ping waits behind our own buffered bytes: when they last moved, and how
        # many were buffered then (None: not waiting).
        self.stuck_since: float | None = None
        self.stuck_size = 0
        self.unread_life = 0
        self.blocked_pings = 0
        self.error: PeerUnresponsive | None = None


class PingHold(_PingHold):
    """Defers heartbeat pings while entered (``with`` or ``async with``); see
    :meth:`HeartbeatProtocol.hold_pings`. Holds nest; the last one out sends a due ping."""

    __slots__ = ()

    def __init__(self, monitor: HeartbeatProtocol) -> None:
        self._monitor = monitor


class HeartbeatProtocol(HeartbeatReadouts, asyncio.BufferedProtocol):
    """Runs a heartbeat on one connection, in front of the application's ``protocol``.

    Use it as the protocol of a new connection::

        transport, monitor = await loop.create_connection(
            lambda: HeartbeatProtocol(MyProtocol(), HeartbeatConfig(interval=10, timeout=5)),
            host, port)

    or interpose it on an existing one with :func:`monitor`. It forwards every
    callback to ``protocol`` (an :class:`asyncio.Protocol`, a
    :class:`asyncio.BufferedProtocol`, or anything with ``data_received``), minus the pongs,
    and is the per-connection read-out: :attr:`rtt`, :attr:`srtt`, :attr:`dead`, ...

    ``ping`` is written whenever the core asks for one: bytes, or a callable returning bytes.
    ``pong`` is what the peer answers: bytes (removed from the stream), a
    :class:`~keepalive.framing.PongMatcher` (used for this connection only) or ``None`` (left
    in the stream for the application). ``on_dead(monitor, exc)`` is called once when the peer is
    declared dead, after the transport was aborted and ``protocol.connection_lost(exc)``
    delivered; it may be a coroutine function. An instance serves one connection.
    """

    __slots__ = (
        "__weakref__",
        "_bytes_received",
        "_heartbeat",
        "_inner",
        "_inner_lost",
        "_loop",
        "_matcher",
        "_on_dead",
        "_scheduler",
        "_seldom",
        "_settings",
        "_state",
        "_transport",
        "_wake",
    )

    def __init__(
        self,
        protocol: asyncio.BaseProtocol,
        heartbeat: HeartbeatConfig,
        *,
        ping: PingSource = _DEFAULT_PING,
        pong: PongSource = _DEFAULT_PONG,
        framing: Framing | None = None,
        on_dead: OnDead | None = None,
    ) -> None:
        if not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig")
        buffered = isinstance(protocol, asyncio.BufferedProtocol)
        if not buffered and not callable(getattr(protocol, "data_received", None)):
            raise InvalidSettingType(
                "protocol", protocol, "an asyncio.Protocol or asyncio.BufferedProtocol"
            )
        self._inner = protocol
        self._settings = _settings_for(heartbeat, check_ping(ping), buffered)
        self._matcher = make_pong_matcher(pong, framing)
        if on_dead is not None and not callable(on_dead):
            raise InvalidSettingType(
                "on_dead", on_dead, "a callable taking (monitor, error), or None"
            )
        self._on_dead = on_dead
        self._heartbeat: Heartbeat | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: _Scheduler | None = None
        self._wake: float | None = None  # the scheduler bucket this monitor is live in
        self._state = _NEW
        self._inner_lost = False
        self._bytes_received = 0
        self._seldom: _Seldom | None = None

    # -- read-outs ---------------------------------------------------------------------------

    @property
    def protocol(self) -> asyncio.BaseProtocol:
        """The application's protocol, which gets every callback minus the pongs."""
        return self._inner

    @property
    def transport(self) -> asyncio.Transport | None:
        """The monitored transport (``None`` before the connection is made)."""
        return self._transport

    @property
    def config(self) -> HeartbeatConfig:
        """The heartbeat's configuration."""
        return self._settings.config

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The core state machine (read it; do not feed it). ``None`` before the connection."""
        return self._heartbeat

    @property
    def active(self) -> bool:
        """Whether the heartbeat is running (not yet connected, stopped or dead: False)."""
        return self._state == _ACTIVE

    @property
    def dead(self) -> bool:
        """Whether the peer was declared dead (the transport was aborted then)."""
        return self._state == _DEAD

    @property
    def error(self) -> PeerUnresponsive | None:
        """The :class:`~keepalive.errors.PeerUnresponsive` of the verdict, or ``None``."""
        seldom = self._seldom
        return None if seldom is None else seldom.error

    @property
    def unread_life(self) -> int:
        """Verdict checks that found inbound bytes waiting unread and counted them as life."""
        seldom = self._seldom
        return 0 if seldom is None else seldom.unread_life

    @property
    def stats(self) -> MonitorStats:
        """A snapshot of the counters, as :attr:`keepalive.sync.MonitoredSocket.stats` gives."""
        seldom = self._seldom
        return self._stats(
            bytes_received=self._bytes_received,
            bytes_sent=None,
            unread_life=0 if seldom is None else seldom.unread_life,
            blocked_pings=0 if seldom is None else seldom.blocked_pings,
        )

    def __repr__(self) -> str:
        state = ("new", "active", "stopped", "dead")[self._state]
        return (
            f"<HeartbeatProtocol {state} pings={self.pings_sent} pongs={self.pongs_received}"
            f" rtt={self.rtt!r} protocol={self._inner!r}>"
        )

    # -- control -----------------------------------------------------------------------------

    def hold_pings(self) -> PingHold:
        """A context manager (``with`` or ``async with``) during which no ping is written.

        For application messages written in several steps with awaits in between: a ping
        that falls due inside the block is written as soon as the last hold ends. Keep holds
        short: the ping's timeout only starts when it is written, so a hold delays the
        detection of a dead peer by as long (it never causes a false verdict).
        """
        return PingHold(self)

    def send_ping(self) -> bool:
        """Write an extra ping now (e.g. to measure the RTT); False if none could be written.

        An extra ping is counted and its pong removed and timed, but it never makes a verdict
        come sooner. It goes behind whatever the transport has buffered, so its RTT includes
        that queue. Nothing is written while the heartbeat is not running, while pings are
        held, or while the transport is closing.
        """
        heartbeat = self._heartbeat
        transport = self._transport
        seldom = self._seldom
        if (
            self._state != _ACTIVE
            or (seldom is not None and seldom.holds)
            or heartbeat is None
            or transport is None
            or transport.is_closing()
        ):
            return False
        if not self._write_ping(transport):
            return False
        assert self._loop is not None
        heartbeat.ping_sent(self._loop.time())
        return True

    def stop(self) -> None:
        """Stop the heartbeat and leave the connection as it is. Idempotent.

        The protocol stays in front of the application's and still removes the pongs of
        pings already sent.
        """
        if self._state == _ACTIVE:
            self._stop("stopped by the application")

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._attach(cast(asyncio.Transport, transport))
        self._inner.connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The transport reads into one buffer shared by every monitor of the loop, and calls
        # buffer_updated() at once, before any other callback: no per-read allocation of
        # asyncio's 256 KiB receive size (malloc and page-fault churn that costs more than
        # the heartbeat itself). Only the bytes actually read are copied out.
        scheduler = self._scheduler
        if scheduler is None:  # pragma: no cover - transports read only after connection_made
            scheduler = self._scheduler = _scheduler_for(asyncio.get_running_loop())
            assert scheduler is not None
        return scheduler.receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        scheduler = self._scheduler
        assert scheduler is not None
        if self._settings.views and self._view_received(scheduler, nbytes):
            return
        self.data_received(bytes(scheduler.receive_buffer[:nbytes]))

    def _view_received(self, scheduler: _Scheduler, nbytes: int) -> bool:
        """Take ``nbytes`` read into the shared buffer without copying them (the data path of
        :func:`open_connection`): False, having done nothing, where only the matcher can
        decide (a pong owed, bytes held back, no line end in the chunk to track the boundary
        from).

        With no pong owed the matcher only tracks where the current line started; a line
        ends at each (one-byte) delimiter, so the line's end after the chunk depends only on
        the bytes from its last delimiter on, and feeding the matcher those few bytes leaves
        it exactly as feeding the whole chunk would.
        """
        heartbeat = self._heartbeat
        if heartbeat is None or self._state == _DEAD or heartbeat.outstanding:
            return False
        matcher = self._matcher
        delimiter = self._settings.view_delimiter
        if matcher is not None:
            assert delimiter is not None
            if cast(MessagePongs, matcher).held:  # (views only with a MessagePongs)
                return False
            last = scheduler.receive_bytes.rfind(delimiter, 0, nbytes)
            if last < 0:
                return False
            tail = delimiter if last == nbytes - 1 else bytes(scheduler.receive_buffer[last:nbytes])
            matcher.feed(tail, 0)
        assert self._loop is not None
        self._bytes_received += nbytes
        heartbeat.received(self._loop.time(), nbytes, None if matcher is None else 0)
        if self._state == _ACTIVE and self._wake is None:
            # A monitor whose ping is held has no wake-up until bytes set a deadline.
            deadline = heartbeat.deadline
            if deadline is not None:
                scheduler.schedule(self, deadline)
        if not self._inner_lost:
            # (StreamReader.feed_data copies it into the reader's buffer at once)
            stream = cast(asyncio.StreamReaderProtocol, self._inner)
            receive = cast("Callable[[memoryview], object]", stream.data_received)
            receive(scheduler.receive_buffer[:nbytes])
        return True

    def _hand_views(self) -> None:
        """For :func:`open_connection`, whose StreamReaderProtocol and StreamReader copy what
        they get at once: deliver views of the shared read buffer, not copies, where the pong
        matcher allows it (none, or whole lines ending with a one-byte delimiter)."""
        matcher = self._matcher
        delimiter = None
        if matcher is not None:
            if matcher.__class__ is not MessagePongs:
                return
            framing = matcher.framing
            if not isinstance(framing, Lines) or len(framing.delimiter) != 1:
                return
            delimiter = framing.delimiter
        settings = self._settings
        self._settings = _settings_for(
            settings.config, settings.ping, settings.buffered, True, delimiter
        )

    def data_received(self, data: bytes) -> None:
        """Take inbound bytes (transports call :meth:`buffer_updated`, which comes here)."""
        heartbeat = self._heartbeat
        if heartbeat is not None and self._state != _DEAD:
            assert self._loop is not None
            now = self._loop.time()
            outstanding = heartbeat.outstanding
            matcher = self._matcher
            nbytes = len(data)
            self._bytes_received += nbytes
            if matcher is None:
                heartbeat.received(now, nbytes, None)
            else:
                data, pongs = matcher.feed(data, outstanding)
                heartbeat.received(now, nbytes, pongs)
            if self._state == _ACTIVE and (outstanding or self._wake is None):
                # Bytes during a ping's window move the deadline (see Heartbeat; _service
                # woke the monitor for the next ping, which a late pong puts off); and a
                # monitor whose ping is held has no wake-up until bytes set a deadline.
                deadline = heartbeat.deadline
                wake = self._wake
                if deadline is not None and (
                    wake is None or not wake - self._settings.grid < deadline <= wake
                ):  # (a deadline in the wake-up's own grid cell rounds up to it: nothing to do)
                    assert self._scheduler is not None
                    self._scheduler.schedule(self, deadline)
        if data and not self._inner_lost:  # after a verdict the application hears nothing
            self._deliver(data)

    def eof_received(self) -> bool | None:
        if self._state == _ACTIVE:
            self._stop("the peer closed its side")  # nothing can arrive any more
        if self._inner_lost:
            return None
        self._release_held_bytes()
        return cast(asyncio.Protocol, self._inner).eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _ACTIVE:
            self._stop("the connection was lost")
        if not self._inner_lost:
            self._release_held_bytes()
        self._lose_inner(exc)

    def pause_writing(self) -> None:
        self._seldom_state().writing_paused = True
        if not self._inner_lost:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        seldom = self._seldom_state()
        seldom.writing_paused = False
        if seldom.stuck_since is not None:
            seldom.stuck_since = None
            if self._state == _ACTIVE:  # the ping held back behind our bytes goes out now
                assert self._loop is not None
                now = self._loop.time()
                self._service(now, now)
        if not self._inner_lost:
            self._inner.resume_writing()

    # -- the heartbeat -----------------------------------------------------------------------

    def _seldom_state(self) -> _Seldom:
        seldom = self._seldom
        if seldom is None:
            seldom = self._seldom = _Seldom()
        return seldom

    def _attach(self, transport: asyncio.Transport) -> None:
        if self._state != _NEW:
            raise RuntimeError("a HeartbeatProtocol serves one connection only")
        loop = asyncio.get_running_loop()
        self._transport = transport
        self._loop = loop
        heartbeat = self._heartbeat = Heartbeat(self._settings.config, loop.time())
        scheduler = self._scheduler = _scheduler_for(loop)
        assert scheduler is not None
        self._state = _ACTIVE
        deadline = heartbeat.deadline
        assert deadline is not None
        scheduler.add(self, deadline)
        if logger.isEnabledFor(logging.DEBUG):
            config = self._settings.config
            logger.debug(
                "heartbeat started with %s (interval %g s, timeout %g s, misses %d)",
                _peer(transport),
                config.interval,
                config.timeout,
                config.misses,
            )

    def _service(self, now: float, when: float) -> None:
        """The scheduler's wake-up at ``when`` (polled as ``now``): obey the core.

        The hot path of every beat (issue 14: CPU per beat against the bare-I/O floor): the
        common case, a ping written at once, makes one call into the core to decide, one to
        record the ping and one bucket append, and allocates nothing of its own.
        """
        heartbeat = self._heartbeat
        transport = self._transport
        assert heartbeat is not None
        assert transport is not None
        scheduler = self._scheduler
        assert scheduler is not None
        stalls = -1
        if heartbeat.miss_possible(now):
            # Only a poll that may count a miss can find a stall, or unread bytes to count.
            stalls = heartbeat.stalls
            self._check_unread(heartbeat, transport, now)
        action = heartbeat.poll(now)
        if action.__class__ is SendPing:
            ping = self._settings.ping
            if self._seldom is None and ping.__class__ is bytes and not transport.is_closing():
                # The common case (no holds, no paused writes, fixed ping), inlined.
                try:
                    transport.write(ping)
                except (RuntimeError, OSError) as exc:  # e.g. write() after write_eof()
                    self._stop(f"the ping could not be written ({exc})")
                    return
                heartbeat.ping_sent(now)
            elif not self._send_requested_ping(now):
                return
            deadline = heartbeat.deadline
            assert deadline is not None
            if deadline > now:  # the ping's window: nothing to poll before its end
                # Wake when the next ping falls due if the pong is back by then, not at the
                # window's end: a pong that comes back within the same grid cell (the usual
                # case on a quiet loop) then moves no wake-up, so the beat costs one bucket
                # entry instead of two. Without a pong that wake-up only polls: Wait.
                next_ping = now + self._settings.config.interval
                scheduler.schedule(self, next_ping if next_ping < deadline else deadline)
                return
            # A ping dated back (stuck writes) may be overdue already: poll again.
            if heartbeat.miss_possible(now):
                stalls = heartbeat.stalls
                self._check_unread(heartbeat, transport, now)
            action = heartbeat.poll(now)
        if action.__class__ is Wait:
            if stalls >= 0 and heartbeat.stalls != stalls:
                logger.warning(
                    "%s: %s", _peer(transport), describe_stall(now - when, self._settings.config)
                )
            scheduler.schedule(self, action.deadline)
        else:
            self._die(cast(PeerDead, action))

    def _check_unread(self, heartbeat: Heartbeat, transport: asyncio.Transport, now: float) -> None:
        """Before a poll that may count a miss: bytes that reached the kernel while the loop
        was blocked (or the application paused reading) are life, though the loop has not
        delivered them yet."""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            count = unread_bytes(sock.fileno())
            if heartbeat.unread(now, count, peer_blocked=peer_may_be_blocked(sock, count)):
                self._seldom_state().unread_life += 1

    def _send_requested_ping(self, now: float) -> bool:
        """Write the ping the core asked for; True once it is written or counted as sent."""
        seldom = self._seldom
        if seldom is not None and seldom.holds:
            seldom.ping_deferred = True  # sent by the last hold's exit
            return False
        transport = self._transport
        heartbeat = self._heartbeat
        assert transport is not None
        assert heartbeat is not None
        if transport.is_closing():
            self._stop("the transport is closing")
            return False
        if seldom is not None and seldom.writing_paused:
            # Our own bytes fill the transport's buffer. A ping queued behind them would wait
            # for all of them to reach the peer, and a slow but live reader would look dead.
            # Hold the ping back while they keep draining; once they stopped moving for
            # ``timeout`` the core counts it as sent from then (a frozen peer: the verdict
            # stays within the bound), and it is written anyway.
            size = transport.get_write_buffer_size()
            if seldom.stuck_since is None or size < seldom.stuck_size:
                seldom.stuck_since = now
            seldom.stuck_size = size
            counts_at = heartbeat.ping_stuck(now, seldom.stuck_since)
            if counts_at is not None:
                assert self._scheduler is not None
                check = now + self._settings.config.timeout * _STUCK_CHECK_FRACTION
                self._scheduler.schedule(self, min(check, counts_at))
                return False
            seldom.stuck_since = None
            seldom.blocked_pings += 1
            return self._write_ping(transport)
        if not self._write_ping(transport):
            return False
        heartbeat.ping_sent(now)
        return True

    def _write_ping(self, transport: asyncio.Transport) -> bool:
        ping = self._settings.ping
        if not isinstance(ping, bytes):
            try:
                ping = next_ping(ping)
            except Exception:
                logger.exception("the ping callable failed; heartbeat stopped")
                self._stop("the ping callable failed")
                return False
        try:
            transport.write(ping)
        except (RuntimeError, OSError) as exc:  # e.g. write() after write_eof()
            self._stop(f"the ping could not be written ({exc})")
            return False
        return True

    def _hold(self) -> None:
        self._seldom_state().holds += 1

    def _release_hold(self) -> None:
        seldom = self._seldom_state()
        seldom.holds -= 1
        if seldom.holds == 0 and seldom.ping_deferred:
            seldom.ping_deferred = False
            if self._state == _ACTIVE:
                assert self._loop is not None
                now = self._loop.time()
                self._service(now, now)

    def _die(self, verdict: PeerDead) -> None:
        error = verdict.as_error()
        self._seldom_state().error = error
        self._state = _DEAD
        transport = self._transport
        assert transport is not None
        assert self._scheduler is not None
        self._scheduler.discard(self)
        logger.warning("%s declared dead: %s", _peer(transport), error)
        try:
            transport.abort()
            self._release_held_bytes()
            self._lose_inner(error)
        finally:
            self._notify_dead(error)

    def _notify_dead(self, error: PeerUnresponsive) -> None:
        callback, self._on_dead = self._on_dead, None
        result = _call_on_dead(callback, self, error, logger)
        if result is not None:
            assert self._scheduler is not None
            self._scheduler.keep(asyncio.ensure_future(result))

    def _stop(self, reason: str) -> None:
        self._state = _STOPPED
        if self._seldom is not None:
            self._seldom.ping_deferred = False
        assert self._scheduler is not None
        self._scheduler.discard(self)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("heartbeat with %s stopped: %s", _peer(self._transport), reason)

    def _abandon(self) -> None:
        """After an unexpected error in :meth:`_service`: stop without touching anything else."""
        if self._state == _ACTIVE:
            self._stop("internal error")

    # -- towards the application's protocol --------------------------------------------------

    def _deliver(self, data: bytes) -> None:
        inner = self._inner
        if not self._settings.buffered:
            cast(asyncio.Protocol, inner).data_received(data)
            return
        buffered = cast(asyncio.BufferedProtocol, inner)
        view = memoryview(data)
        while view:
            buffer = memoryview(buffered.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            if not size:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buffer[:size] = view[:size]
            buffered.buffer_updated(size)
            view = view[size:]

    def _release_held_bytes(self) -> None:
        """Hand over bytes the matcher held back as a possible pong start (EOF, the end)."""
        matcher = self._matcher
        if matcher is not None and self._heartbeat is not None:
            held = matcher.flush()
            if held:
                self._deliver(held)

    def _lose_inner(self, exc: Exception | None) -> None:
        if not self._inner_lost:
            self._inner_lost = True
            self._inner.connection_lost(exc)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    """``peer HOST:PORT`` for log messages (``the peer`` where the address is unknown)."""
    peer = None if transport is None else transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"peer {peer[0]}:{peer[1]}"
    return f"peer {peer}" if peer else "the peer"


# ---------------------------------------------------------------------------------------------
# Entry points


def _is_transport(obj: object) -> bool:
    """An asyncio transport, or one of another event loop's (uvloop's transports are not
    subclasses of asyncio's): it has the transport methods a monitor uses."""
    if isinstance(obj, asyncio.BaseTransport):
        return True
    return all(
        callable(getattr(obj, name, None))
        for name in ("get_protocol", "set_protocol", "get_extra_info", "is_closing", "write")
    )


def monitor_of(
    obj: asyncio.StreamWriter | asyncio.BaseTransport | asyncio.BaseProtocol,
) -> HeartbeatProtocol | None:
    """The :class:`HeartbeatProtocol` monitoring a writer's or a transport's connection.

    ``None`` if the connection is not monitored. A transport forgets its protocol once the
    connection is lost: keep the returned object to read its figures afterwards.
    """
    if isinstance(obj, HeartbeatProtocol):
        return obj
    if isinstance(obj, asyncio.StreamWriter):
        obj = obj.transport
    if _is_transport(obj):  # asyncio's, or another loop's such as uvloop's
        protocol = cast(asyncio.BaseTransport, obj).get_protocol()
        return protocol if isinstance(protocol, HeartbeatProtocol) else None
    if isinstance(obj, asyncio.BaseProtocol):
        return None
    raise InvalidSettingType("obj", obj, "an asyncio StreamWriter, transport or protocol")


def monitor(
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol | None = None,
    *,
    heartbeat: HeartbeatConfig,
    ping: PingSource = _DEFAULT_PING,
    pong: PongSource = _DEFAULT_PONG,
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    keepalive: KeepaliveConfig | None = None,
) -> HeartbeatProtocol:
    """Start a heartbeat on a connected ``transport``; returns its :class:`HeartbeatProtocol`.

    The monitor is interposed with ``transport.set_protocol()`` in front of ``protocol``
    (default: the transport's current protocol), which keeps getting every callback except
    the pongs. With ``keepalive`` the socket's kernel keepalive is configured too
    (:func:`keepalive.configure`; its errors propagate). Call it from the loop's thread,
    while the loop runs. The heartbeat's clock starts now.
    """
    if not _is_transport(transport):
        raise InvalidSettingType("transport", transport, "an asyncio transport")
    asyncio.get_running_loop()  # the monitor lives on the running loop: fail early outside one
    current = transport.get_protocol()
    if isinstance(current, HeartbeatProtocol):
        raise InvalidSetting("transport", transport, "a transport that is not monitored yet")
    if transport.is_closing():
        raise InvalidSetting("transport", transport, "an open transport (this one is closing)")
    inner = current if protocol is None else protocol
    monitor = HeartbeatProtocol(
        inner, heartbeat, ping=ping, pong=pong, framing=framing, on_dead=on_dead
    )
    if keepalive is not None:
        _configure_kernel(transport, keepalive)
    transport.set_protocol(monitor)
    monitor._attach(cast(asyncio.Transport, transport))
    return monitor


def monitor_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    heartbeat: HeartbeatConfig,
    ping: PingSource = _DEFAULT_PING,
    pong: PongSource = _DEFAULT_PONG,
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    keepalive: KeepaliveConfig | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Start a heartbeat on existing streams; returns the same ``(reader, writer)``.

    Works for :func:`asyncio.open_connection` streams and for the streams a
    :func:`asyncio.start_server` callback gets. Bytes already in ``reader``'s buffer are the
    application's; pongs are removed from what arrives from now on. Once the peer is declared
    dead, ``await reader.read()`` raises :class:`~keepalive.errors.PeerUnresponsive`. Get the
    figures with :func:`monitor_of` ``(writer)``. Arguments as for :func:`open_connection`.
    """
    if not isinstance(reader, asyncio.StreamReader):
        raise InvalidSettingType("reader", reader, "an asyncio.StreamReader")
    if not isinstance(writer, asyncio.StreamWriter):
        raise InvalidSettingType("writer", writer, "an asyncio.StreamWriter")
    monitor(
        writer.transport,
        heartbeat=heartbeat,
        ping=ping,
        pong=pong,
        framing=framing,
        on_dead=on_dead,
        keepalive=keepalive,
    )
    return reader, writer


async def open_connection(
    host: str | None = None,
    port: int | str | None = None,
    *,
    keepalive: KeepaliveConfig | None = None,
    heartbeat: HeartbeatConfig | None = None,
    ping: PingSource = _DEFAULT_PING,
    pong: PongSource = _DEFAULT_PONG,
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    retry: RetryPolicy | None = None,
    connect_timeout: float | None = None,
    limit: int = DEFAULT_STREAM_LIMIT,
    **kwargs: object,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """:func:`asyncio.open_connection` with kernel keepalive, retries and an application
    heartbeat.

    ``keepalive``: a :class:`~keepalive.KeepaliveConfig` (``None``: the socket is left as it
    is). ``heartbeat``: a :class:`~keepalive.heartbeat.HeartbeatConfig` (``None``: no
    heartbeat; ``ping``, ``pong`` are then unused and ``on_dead`` must be ``None``). ``ping``:
    bytes or a callable returning the next ping's bytes. ``pong``, ``framing``: the reply,
    removed only as a whole inbound message (see :func:`keepalive.framing.make_pong_matcher`),
    or ``None`` (any reply counts; the application reads it). ``on_dead(monitor, exc)``:
    called once when the peer is declared dead (sync or coroutine function). ``limit`` and
    ``**kwargs`` (``ssl``, ``server_hostname``, ``sock``, ``local_addr``, ...) go to
    :class:`asyncio.StreamReader` and :meth:`loop.create_connection`.

    Connecting. With ``retry``, ``connect_timeout`` or ``keepalive`` (and no ``sock=``) the
    TCP connection is made by :func:`keepalive.connect_async`: keepalive is configured before
    the SYN, every address ``host`` resolves to is tried in each attempt, each with its own
    ``connect_timeout`` (default: the policy's, else 20 s), retryable failures are retried
    per ``retry`` (a :class:`~keepalive.reconnect.Backoff` or any
    :class:`~keepalive.reconnect.RetryPolicy`; ``None``: one attempt), and when the attempts
    run out :class:`~keepalive.errors.ConnectFailed` carries every attempt's cause (an error
    the policy does not retry propagates as it is). TLS (``ssl=``) is then started on that
    socket, with ``server_hostname`` defaulting to ``host``. ``local_addr`` becomes the source
    address; ``family``, ``proto``, ``flags``, ``happy_eyeballs_delay``, ``interleave`` and
    ``all_errors`` cannot be combined with ``retry`` or ``connect_timeout`` (with
    ``keepalive`` alone, asyncio connects and keepalive is configured right after). Without
    any of the three, or with ``sock=``, asyncio connects as usual.

    Once the peer is declared dead the connection is aborted and ``await reader.read()``
    raises :class:`~keepalive.errors.PeerUnresponsive`. Read the heartbeat's figures with
    :func:`monitor_of` ``(writer)``. Every argument is checked before connecting.
    """
    if keepalive is not None and not isinstance(keepalive, KeepaliveConfig):
        raise InvalidSettingType("keepalive", keepalive, "a KeepaliveConfig or None")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise InvalidSettingType("retry", retry, "a retry policy such as keepalive.Backoff()")
    if connect_timeout is not None:
        positive_seconds("connect_timeout", connect_timeout)
    if heartbeat is None and on_dead is not None:
        raise InvalidSetting("on_dead", on_dead, "None when no heartbeat is configured")
    limit = positive_int("limit", limit)
    if "sock" not in kwargs:
        # Refuse what asyncio would turn into a bare TypeError/OverflowError, or wrap.
        if isinstance(port, str) and not port.isdigit():
            check_address((host, 1))  # a service name: only the host is ours to check
        else:
            numeric = int(port) if isinstance(port, str) else port
            check_address((host, numeric))
    dial = _dial_plan(
        host, port, keepalive=keepalive, retry=retry, connect_timeout=connect_timeout, kwargs=kwargs
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    stream_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    protocol: asyncio.BaseProtocol = stream_protocol
    if heartbeat is not None:
        monitor = HeartbeatProtocol(
            stream_protocol, heartbeat, ping=ping, pong=pong, framing=framing, on_dead=on_dead
        )
        monitor._hand_views()
        protocol = monitor
    if dial is None:
        transport = await _connect_once(loop, protocol, host, port, kwargs)
        if keepalive is not None:
            try:
                _configure_kernel(transport, keepalive)
            except BaseException:
                transport.abort()
                raise
    else:
        from keepalive.dial import connect_async  # noqa: PLC0415 - imports keepalive.sockets

        address, source_address = dial
        sock = await connect_async(
            address,
            keepalive=keepalive,
            retry=retry,
            connect_timeout=connect_timeout,
            source_address=source_address,
        )
        options = {key: value for key, value in kwargs.items() if key != "local_addr"}
        transport = await _start_transport(loop, protocol, sock, address[0], options)
    writer = asyncio.StreamWriter(transport, stream_protocol, reader, loop)
    return reader, writer


# loop.create_connection() arguments that choose how the TCP connection is made; with
# retry= or connect_timeout=, keepalive.connect_async makes it and has no such choices.
_DIAL_CONFLICTS: Final = (
    "family",
    "proto",
    "flags",
    "happy_eyeballs_delay",
    "interleave",
    "all_errors",
)


def _dial_plan(
    host: str | None,
    port: int | str | None,
    *,
    keepalive: KeepaliveConfig | None,
    retry: RetryPolicy | None,
    connect_timeout: float | None,
    kwargs: dict[str, object],
) -> tuple[tuple[str, int], tuple[str, int] | None] | None:
    """``(address, source_address)`` when keepalive.connect_async makes the connection,
    ``None`` when asyncio does. Raises when retry/connect_timeout cannot be honoured."""
    asked: tuple[str, object] | None = None
    if retry is not None:
        asked = ("retry", retry)
    elif connect_timeout is not None:
        asked = ("connect_timeout", connect_timeout)
    if "sock" in kwargs:
        if asked is not None:
            raise InvalidSetting(*asked, "None when sock= is given (it is connected already)")
        return None
    if asked is None and keepalive is None:
        return None
    problem: InvalidSetting | None = None
    conflicts = [key for key in _DIAL_CONFLICTS if kwargs.get(key) not in (None, 0, False)]
    local_addr = kwargs.get("local_addr")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if conflicts:
        key = conflicts[0]
        problem = InvalidSetting(
            key, kwargs[key], "left out when retry= or connect_timeout= is given"
        )
    elif not isinstance(host, str):
        problem = InvalidSettingType("host", host, "a host name or address")
    elif isinstance(port, bool) or not isinstance(port, int):
        problem = InvalidSettingType("port", port, "a port number")
    elif local_addr is not None and not (
        isinstance(local_addr, tuple)
        and len(local_addr) == 2
        and isinstance(local_addr[0], str)
        and isinstance(local_addr[1], int)
    ):
        problem = InvalidSettingType("local_addr", local_addr, "a (host, port) tuple or None")
    if problem is not None:
        if asked is not None:
            raise problem
        return None  # keepalive alone: asyncio connects, keepalive is configured right after
    assert isinstance(host, str)
    assert isinstance(port, int)
    source = cast("tuple[str, int] | None", local_addr)
    return (host, port), source


async def _start_transport(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    sock: socket.socket,
    host: str,
    options: dict[str, object],
) -> asyncio.Transport:
    """A transport for the connected ``sock`` (TLS with ``ssl=``); closes ``sock`` on failure."""
    if options.get("ssl") and "server_hostname" not in options:
        options = {**options, "server_hostname": host}
    create = cast(
        "Callable[..., Awaitable[tuple[asyncio.Transport, asyncio.BaseProtocol]]]",
        loop.create_connection,
    )
    try:
        transport, _ = await create(lambda: protocol, sock=sock, **options)
    except BaseException:
        sock.close()  # asyncio closes it only once a transport exists
        raise
    return transport


async def _connect_once(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    host: str | None,
    port: int | str | None,
    kwargs: dict[str, object],
) -> asyncio.Transport:
    # typeshed's overloads cannot see that kwargs holds a valid combination (sock=, ssl=, ...).
    create = cast(
        "Callable[..., Awaitable[tuple[asyncio.Transport, asyncio.BaseProtocol]]]",
        loop.create_connection,
    )
    try:
        transport, _ = await create(lambda: protocol, host, port, **kwargs)
    except UnicodeError as exc:  # a name the IDNA codec refuses: as the blocking dial does
        from keepalive.dial import _resolve_error  # noqa: PLC0415 - only on this failure

        raise _resolve_error(exc) from exc
    return transport


def _configure_kernel(transport: asyncio.BaseTransport, config: KeepaliveConfig) -> ConfigureResult:
    from keepalive.sockets import configure  # noqa: PLC0415 - only when kernel keepalive is asked

    if not isinstance(config, KeepaliveConfig):
        raise InvalidSettingType("keepalive", config, "a KeepaliveConfig or None")
    return configure(transport.get_extra_info("socket"), config)
