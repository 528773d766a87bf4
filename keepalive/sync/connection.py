"""Heartbeats for blocking sockets: :func:`monitor` wraps a socket; one thread pings them all.

::

    from keepalive.heartbeat import HeartbeatConfig
    from keepalive.sync import monitor

    raw = socket.create_connection(address)
    sock = monitor(raw, heartbeat=HeartbeatConfig(interval=10, timeout=5))
    with sock:
        sock.sendall(b"GET\\n")
        reply = sock.recv(4096)   # raises keepalive.PeerUnresponsive if the peer stops answering

The returned :class:`MonitoredSocket` behaves like the socket (``recv``, ``recv_into``, ``send``,
``sendall``, ``makefile``, ``settimeout``, ``fileno``, ``close``, context manager). Every byte
read through it is a sign of life; pongs are removed from the stream before the application
sees them; pings are written only between application writes. When the peer is declared dead,
``on_dead(sock, error)`` is called once, then the socket is shut down (``SHUT_RDWR``; the
application still closes it) and threads blocked in ``recv``/``sendall`` wake up with
:class:`~keepalive.errors.PeerUnresponsive` (calls made after the verdict raise it at once).

How it works (decisions worth knowing):

* **One scheduler thread per process** (daemon, named ``keepalive-heartbeat``) keeps the
  heartbeat deadlines of every monitored socket; it starts with the first monitor and exits
  as soon as none is left, so an idle process has no extra thread. Deadlines are rounded up
  to a grid of about ``min(interval, timeout) / 64`` (a power of two, at most 1/4 s), and one
  wake-up serves every socket due in a cell: never early, late by less than a cell. While a
  ping is in flight its socket's timer is set an interval after the ping, where the pong's
  deadline will be, so reading a pong never has to reschedule. Monitors are held weakly:
  a monitor dropped without ``close()`` stops being pinged. A forked child starts with no
  scheduler; monitors inherited from the parent keep working as sockets there but are not
  heartbeated by the child (the parent still does).
* **The wrapped socket is switched to non-blocking mode** and the wrapper implements the
  timeout itself (``settimeout``: ``None`` blocks, ``0`` is non-blocking and raises
  ``BlockingIOError``, otherwise ``TimeoutError`` after that long, for the whole call like
  CPython's ``sendall``). Waiting happens in ``poll``/``select`` outside every lock, so the
  scheduler can wake a blocked thread by shutting the socket down. Use the wrapper, not the
  socket, from then on.
* **Reads count as life at once.** Bytes are taken from the kernel and handed to the
  heartbeat in one critical section, so a verdict can never slip between "a pong was read"
  and "the heartbeat heard of it".
* **A fast route while nothing can be filtered.** While the heartbeat is idle with no pong
  owed (no ping requested, written or counted), nothing is buffered or held by the matcher
  and the socket is plain, ``recv``/``recv_into`` make one ``recv`` in one critical section
  (``recv_into`` a ``bytearray`` straight into it; a line matcher is shown only the bytes
  from the last line end on) and ``sendall``/``send`` of up to 64 KiB try one ``send``
  under the state lock (a ping cannot come between; a partial write takes the send turn in
  the same critical section and goes on the general way). The scheduler switches the route
  off before it pings, so a pong always meets the filter. A blocking read that last got
  less than it asked for waits (``poll``) before reading: the read that would fail with
  EAGAIN costs as much as the wait.
* **State locks are shared**, a few monitors per lock (a lock object per monitor would cost
  88 bytes); critical sections are short and never block.
* **No false deaths from our own stalls.** Before a poll that could count a miss, the
  scheduler asks the kernel whether bytes wait unread (``FIONREAD``, else readability). Waiting
  bytes count as life, whether or not they grew since the last look: they mean the
  application is behind the peer, and with a full receive buffer the peer could not answer
  at all. Detection resumes, within ``detection_bound``, once the application reads again.
  A timer that fires later than ``timeout`` past its deadline (a blocked scheduler, a thread
  holding the GIL, a suspended VM) re-arms the ping's window instead of killing (see
  :meth:`keepalive.heartbeat.Heartbeat.poll`).
* **Pings never split an application write.** ``send``/``sendall`` hold the socket's send
  turn (a reentrant lock); the scheduler writes a ping only when the turn is free and
  otherwise retries soon (and right after the application's write ends). ``with
  sock.hold_pings():`` holds the turn across several writes that form one message.
  A ping the kernel only partly accepted is finished by the next writer before its own bytes.
* **Stuck writes count as unanswered pings.** If a ping is due but cannot be written because
  our bytes have stopped moving (the send buffer stayed full for ``timeout``, nothing
  arrived), the ping counts as sent when the writes stopped. That is how a writer blocked
  behind a frozen proxy is still released within ``detection_bound``. A write that is merely
  slow keeps the connection alive.
* **RTT** (``rtt``, ``srtt``) is measured from a ping's write to the read of its pong. Pongs
  the application reads late (it was not reading) give long samples. With ``pong=None`` the
  first bytes read after a ping count as its reply.

Logging goes to the ``keepalive.sync`` logger (under ``keepalive``): DEBUG for pings, pongs
and the scheduler thread, WARNING for deaths and for stalls that were forgiven, ERROR when
``on_dead`` or a ``ping`` callable raises. ``on_dead`` runs on the scheduler thread: keep it
short (hand longer work to another thread), it delays every other socket's heartbeat and the
wake-up of this socket's blocked calls.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import math
import os
import select
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Literal, TextIO, TypeAlias, cast, overload

from typing_extensions import Buffer, Self

from keepalive._unread import peer_may_be_blocked, unread_bytes
from keepalive._validate import positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType, InvalidSocket, PeerUnresponsive
from keepalive.framing import Framing, Lines, MessagePongs, PongSource, make_pong_matcher
from keepalive.heartbeat import (
    Heartbeat,
    HeartbeatConfig,
    HeartbeatState,
    MonitorStats,
    PeerDead,
    PingSource,
    TimerBuckets,
    Wait,
    check_ping,
    describe_stall,
    grid_time,
    next_ping,
    timer_grid,
)

if TYPE_CHECKING:
    import ssl as ssl_module

    from keepalive.config import KeepaliveConfig

__all__ = [
    "MonitorStats",
    "MonitoredSocket",
    "OnDead",
    "PingSource",
    "active_monitors",
    "monitor",
]

logger = logging.getLogger("keepalive.sync")
# A library adds no handler but NullHandler: records show once the application configures
# logging, and never through logging's "last resort" stderr handler.
logging.getLogger("keepalive").addHandler(logging.NullHandler())

_THREAD_NAME = "keepalive-heartbeat"
# Longest pause between attempts to write a ping that could not be written (send turn taken,
# send buffer full). Giving the send turn back also triggers an attempt at once.
_PING_RETRY_CAP = 0.05
# The scheduler sleeps at most this long at a time (far below threading.TIMEOUT_MAX everywhere),
# then looks again: no deadline, however far, can make its wait overflow.
_LONGEST_WAIT = 3600.0
_EAGAIN_MESSAGE = os.strerror(errno.EAGAIN)
_WOULD_BLOCK: tuple[type[OSError], ...] = (BlockingIOError, InterruptedError)
PlainSocket: TypeAlias = socket.socket  # (a name the class body's ``socket`` property hides)
# Plaintext handed to one TLS write (each is a call into OpenSSL under the monitor's lock,
# which readers wait for): a few records, not a whole 50 MB sendall.
_TLS_WRITE_CHUNK = 256 * 1024
_UNWRAP_READ = 64 * 1024
# Looking for unread pongs (see _take_unread_pongs_locked): bytes peeked at, and TLS
# application bytes kept for the application at most.
_UNREAD_PEEK = 4096
_UNREAD_KEEP = 64 * 1024
_HAVE_POLL = hasattr(select, "poll")
# Reads of up to this size go through one reused buffer per thread, then are copied out at
# their real size: ``sock.recv(n)`` allocates n bytes and shrinks them, and with hundreds of
# reading threads that fragments glibc's per-thread arenas (RSS grew ~6 MiB/min in the soak).
_SCRATCH_SIZE = 64 * 1024
_SCRATCH = threading.local()
# How a read may go (MonitoredSocket._read_route): the fast routes skip the general read path.
# They hold only while nothing can be filtered: a plain socket, no ping requested or owed a
# pong, nothing in the inbox or held by the matcher, no end of stream, verdict or close.
_SLOW_READS = 0  # the general path (_read_locked)
_DIRECT_READS = 1  # nothing filtered (pong=None, or no heartbeat): the socket's bytes as they are
_FED_READS = 2  # a MessagePongs must see every byte (boundaries); with nothing owed it passes all
_LINE_READS = 3  # ... on newline line ends: only the bytes from the last line end on matter
_ROUTE_KIND = 3  # (the bits above)
# Added to a fast route while bytes tend to be waiting when a read begins (the last read
# filled the caller's buffer, found bytes at once, or waited less than _QUICK_WAIT for them):
# then a read tries first. Without it a blocking read waits (poll) first: a read that fails
# with EAGAIN costs a system call and an exception, more than the wait itself.
_READ_FIRST = 4
_QUICK_WAIT = 20e-6  # (a wait that sleeps costs a wake-up: tens of microseconds at least)
# Writes of up to this size are tried at once under the state lock (a ping cannot come between,
# and a short non-blocking send holds the lock only briefly).
_FAST_WRITE_MAX = 64 * 1024
# recv_into on _LINE_READS: bytes looked at from the end for the last line end before the
# whole chunk is copied for the matcher instead.
_LINE_TAIL = 4096
_IDLE = HeartbeatState.IDLE
_NEWLINE = ord("\n")
_NO_LINE_ENDS = bytes(_SCRATCH_SIZE)  # shown to a matcher for bytes it needs only the length of
# State locks, shared: a lock object per monitor would cost 88 bytes. Critical sections are
# short and never block, so monitors sharing a stripe rarely wait for each other. Reentrant,
# because a collected makefile() object may release its monitor from inside another
# monitor's critical section on the same thread (garbage collection runs anywhere).
_LOCK_STRIPES = 256
_STATE_LOCKS = [threading.RLock() for _ in range(_LOCK_STRIPES)]
_LOCK_TURNS = itertools.count()

# The class of mode="selector": keepalive.sync.selector registers it when keepalive.sync is
# imported (before any monitor() call), so this module need not import that one.
_SELECTOR_MODE: list[type[MonitoredSocket]] = []


def monitor(
    sock: socket.socket,
    *,
    heartbeat: HeartbeatConfig,
    ping: PingSource = b"PING\n",
    pong: PongSource = b"PONG\n",
    framing: Framing | None = None,
    on_dead: OnDead | None = None,
    keepalive: KeepaliveConfig | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    handshake_timeout: float | None = None,
    mode: Literal["default", "selector"] = "default",
) -> MonitoredSocket:
    """Wrap a connected stream socket and keep a heartbeat on it; returns a socket-like object.

    ``heartbeat``: when to ping and when to give up (:class:`HeartbeatConfig`).
    ``ping``: the bytes to send, or a callable returning them (called on the scheduler thread
    for every ping; it must not use this socket). ``pong``: the reply, recognised only as a
    whole inbound message and removed (bytes equal to it, or a predicate on messages), at
    most one per ping still owed; ``framing`` says where messages end (default: lines, for a
    pong ending in a newline; see :mod:`keepalive.framing`). A
    :class:`~keepalive.framing.PongMatcher` of your own (one per socket, never shared), or
    ``None``: nothing is filtered, the application reads every reply itself and any inbound
    byte counts. A pong predicate or matcher runs under the monitor's state lock, which it
    shares with other monitors (a lock per monitor would cost 88 bytes each): it must be
    quick, never block, and never use a monitored socket. ``on_dead(sock, error)``: called
    once when the peer is declared dead.
    ``keepalive``: also configure kernel keepalive on the socket first
    (:func:`keepalive.configure`, strict).

    TLS: pass an ``ssl.SSLSocket`` (handshaken or not: a pending handshake is completed
    first, within the socket's timeout), or a plain socket with ``ssl=`` (an
    :class:`ssl.SSLContext`), ``server_hostname`` and ``handshake_timeout`` (seconds; default
    the socket's timeout): the handshake is done here, and a failure closes the socket. Pings
    and pongs travel inside TLS. Every call into the TLS connection is made under the
    monitor's lock, so the scheduler's pings and the application's reads and writes never
    use the OpenSSL object from two threads at once.

    The socket is taken over: it is switched to non-blocking mode and its timeout moves to
    the wrapper. Raises :class:`~keepalive.errors.InvalidSocket` for anything but an open,
    connected stream socket (TCP or Unix, plain or TLS) and
    :class:`~keepalive.errors.InvalidSetting` for bad arguments, before touching the socket.

    ``mode="selector"`` (plain sockets only, opt-in): one watcher thread reads every such
    socket and consumes the pongs itself, so pongs never wake the application's reader
    threads (see :mod:`keepalive.sync.selector`).
    """
    tls = ssl is not None or server_hostname is not None or handshake_timeout is not None
    kind: type[MonitoredSocket] = MonitoredSocket
    if mode != "default":
        if mode != "selector":
            raise InvalidSetting("mode", mode, "'default' or 'selector'")
        if tls:
            raise InvalidSetting("mode", mode, "'default' with TLS (selector mode is plain only)")
        kind = _SELECTOR_MODE[0]
    elif tls:
        sock = _start_tls(sock, ssl, server_hostname, handshake_timeout)
    return kind(
        sock,
        heartbeat=heartbeat,
        ping=ping,
        pong=pong,
        framing=framing,
        on_dead=on_dead,
        keepalive=keepalive,
    )


def _start_tls(
    sock: socket.socket,
    context: object,
    server_hostname: object,
    handshake_timeout: object,
) -> socket.socket:
    """``sock`` wrapped in TLS by ``context`` and handshaken (the socket is closed on failure)."""
    import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

    if not isinstance(context, ssl_module.SSLContext):
        raise InvalidSettingType("ssl", context, "an ssl.SSLContext")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise InvalidSettingType("server_hostname", server_hostname, "a host name or None")
    timeout = (
        sock.gettimeout()
        if handshake_timeout is None
        else positive_seconds("handshake_timeout", handshake_timeout)
    )
    _check_socket(sock)
    if isinstance(sock, ssl_module.SSLSocket):
        raise InvalidSocket("the socket already uses TLS: pass it without ssl=")
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        tls.settimeout(timeout)
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def active_monitors() -> int:
    """How many sockets the scheduler currently heartbeats in this process."""
    return _SCHEDULER.active()


# ---------------------------------------------------------------------------------------------
# Small helpers


def _ready(fd: int, *, write: bool, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable (or writable), at most ``timeout`` seconds (None: forever)."""
    if _HAVE_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(-1 if timeout is None else math.ceil(timeout * 1000)))
    readable, writable, _ = select.select([] if write else [fd], [fd] if write else [], [], timeout)
    return bool(readable or writable)


def _check_socket(sock: object) -> socket.socket:
    if isinstance(sock, MonitoredSocket):
        raise InvalidSocket("the socket is monitored already")
    if not isinstance(sock, socket.socket):
        raise InvalidSocket(f"expected a socket.socket, got {type(sock).__name__}")
    if sock.fileno() < 0:
        raise InvalidSocket("the socket is closed")
    if sock.type != socket.SOCK_STREAM:
        raise InvalidSocket(f"a stream socket is needed (TCP or Unix), got {sock.type!r}")
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise InvalidSocket("a listening socket cannot be monitored: monitor its connections")
    except OSError:  # no SO_ACCEPTCONN here: the peer check below still refuses listeners
        pass
    try:
        sock.getpeername()
    except OSError as exc:
        raise InvalidSocket("the socket is not connected") from exc
    return sock


def _tls_errors(sock: socket.socket) -> tuple[type[OSError], ...] | None:
    """For a TLS socket, its "would block" errors (``SSLWantRead``/``WriteError``); else None."""
    ssl_module = sys.modules.get("ssl")  # only loaded if the application uses TLS
    if ssl_module is None or not isinstance(sock, ssl_module.SSLSocket):
        return None
    return (ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError)


def _peer_label(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        peer = None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return f"fd {sock.fileno()}" if not peer else str(peer)


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "the monitored socket is closed")


# ---------------------------------------------------------------------------------------------
# The scheduler: one thread, timers in buckets on a grid


class _Scheduler:
    """Calls :meth:`MonitoredSocket._service` when each registered monitor's timer is due.

    Timers live in buckets, one per grid cell end (see
    :func:`keepalive.heartbeat.timer_grid`); a heap orders the buckets, so one wake-up serves
    every monitor due in a cell, and arming a timer is a list append. A monitor has one live
    timer, ``_timer_at`` (the earliest requested; servicing early is harmless, the heartbeat
    just answers with a later deadline); entries whose key no longer matches it are stale and
    skipped. Entries hold weak references. Lock order: a
    monitor's state lock may be held while calling in here, never the other way round.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._timers: TimerBuckets[weakref.ref[MonitoredSocket]] = TimerBuckets()
        # Weak references of the monitors heartbeated; a collected one removes itself.
        self._registered: set[weakref.ref[MonitoredSocket]] = set()
        # When the thread wakes up by itself (-inf while it runs: it looks at the heap then).
        self._sleep_until = -math.inf
        self._thread: threading.Thread | None = None

    def active(self) -> int:
        return len(self._registered)

    def register(self, monitor: MonitoredSocket, deadline: float) -> None:
        with self._lock:
            self._registered.add(monitor._weak_self)
            self._arm_locked(monitor, deadline)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
                self._thread = thread
                try:
                    thread.start()
                except BaseException:
                    self._thread = None
                    self._registered.discard(monitor._weak_self)
                    raise
                logger.debug("scheduler thread started")

    def wake_at(self, monitor: MonitoredSocket, deadline: float) -> None:
        """Make sure ``monitor`` is serviced no later than ``deadline`` (rounded up to its grid)."""
        with self._lock:
            if monitor._weak_self in self._registered:
                self._arm_locked(monitor, deadline)

    def unregister(self, monitor: MonitoredSocket) -> None:
        with self._lock:
            self._registered.discard(monitor._weak_self)
            monitor._timer_at = None
            if not self._registered:
                self._cond.notify()  # let the thread exit now

    def collected(self, ref: weakref.ref[MonitoredSocket]) -> None:
        """A registered monitor was garbage-collected (weakref callback: any thread, any time)."""
        registered = self._registered
        registered.discard(ref)  # atomic: no lock, the collecting thread may hold it
        if not registered and self._lock.acquire(blocking=False):
            try:
                self._cond.notify()  # let the thread exit now
            finally:
                self._lock.release()

    def after_fork_in_child(self) -> None:
        try:
            inherited = [ref() for ref in list(self._registered)]
        except Exception:  # pragma: no cover - a set caught mid-update by fork
            inherited = []
        self._reset()
        for monitor in inherited:
            if monitor is not None:
                monitor._after_fork_in_child()

    def _arm_locked(self, monitor: MonitoredSocket, deadline: float) -> None:
        key = grid_time(deadline, monitor._grid)
        current = monitor._timer_at
        if current is not None and current <= key:
            return
        monitor._timer_at = self._timers.add(key, monitor._weak_self)
        if key < self._sleep_until:
            self._cond.notify()

    # -- the thread (below: only _run and what it calls) ------------------------------------

    def _next_batch(self, me: threading.Thread) -> list[MonitoredSocket] | None:
        """Wait for the next due bucket's monitors (lock held); None when this thread must exit."""
        timers = self._timers
        while True:
            if self._thread is not me:
                return None
            if not self._registered:
                self._thread = None
                timers.clear()
                logger.debug("scheduler thread exiting: no monitored sockets left")
                return None
            now = time.monotonic()
            due = timers.pop_due(now)
            if due is not None:
                key, refs = due
                batch = []
                for ref in refs:
                    monitor = ref()
                    if monitor is not None and monitor._timer_at == key:
                        monitor._timer_at = None
                        batch.append(monitor)
                monitor = None  # no strong reference beyond the batch
                if batch:
                    self._sleep_until = -math.inf
                    return batch
                continue  # only stale entries
            # Registered monitors all being serviced: look again within a second.
            earliest = timers.earliest()
            until = now + 1.0 if earliest is None else earliest
            self._sleep_until = until
            self._cond.wait(min(until - now, _LONGEST_WAIT))

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                batch = self._next_batch(me)
            if batch is None:
                return
            for monitor in batch:
                try:
                    monitor._service()
                except Exception:  # never let one socket take the thread down for all
                    logger.exception("heartbeat of %s failed; monitoring stopped", monitor._label)
                    monitor._stop_quietly()
            del batch, monitor  # hold no strong reference while waiting


def _monitor_collected(ref: weakref.ref[MonitoredSocket]) -> None:
    _SCHEDULER.collected(ref)


def _after_fork_in_child() -> None:
    _FORKS[0] += 1
    for lock in _STATE_LOCKS:  # a parent's thread may have held one: fresh in the child
        lock._at_fork_reinit()  # type: ignore[attr-defined]  # (as threading does for its own)
    _SCHEDULER.after_fork_in_child()


_SCHEDULER = _Scheduler()


def _track_line_ends(matcher: MessagePongs, buffer: bytearray | memoryview, count: int) -> None:
    """Show ``matcher`` (newline line ends, nothing owed or held) the first ``count`` bytes
    of ``buffer`` without copying them all: with nothing owed it only tracks where the last
    line ends, so the bytes from the last line end on tell it as much as the whole chunk."""
    if buffer[count - 1] == _NEWLINE:  # the usual end of a line protocol's chunk
        if not matcher.at_boundary:
            matcher.feed(b"\n", 0)
        return
    if buffer.__class__ is bytearray:  # searched in place, from the end
        found = buffer.rfind(b"\n", 0, count)
        if found >= 0:
            matcher.feed(bytes(memoryview(buffer)[found:count]), 0)
        elif count <= _SCRATCH_SIZE:  # as many bytes without a line end, none copied
            matcher.feed(_NO_LINE_ENDS if count == _SCRATCH_SIZE else _NO_LINE_ENDS[:count], 0)
        else:
            matcher.feed(bytes(count), 0)
        return
    start = max(0, count - _LINE_TAIL)
    tail = bytes(memoryview(buffer)[start:count])
    found = tail.rfind(b"\n")
    if found >= 0 or start == 0:
        matcher.feed(tail[found:] if found > 0 else tail, 0)
    else:  # no line end near the end: the matcher counts the whole chunk
        matcher.feed(bytes(memoryview(buffer)[:count]), 0)


def _recv_into_view(buffer: Buffer, nbytes: int) -> tuple[memoryview, int]:
    """``recv_into(buffer, nbytes)``'s arguments checked: ``buffer`` as a writable byte view,
    and how many bytes the call may fill (``nbytes``, or the whole buffer when 0)."""
    try:
        view = memoryview(buffer).cast("B")
    except TypeError as exc:
        raise InvalidSettingType("buffer", buffer, "a writable bytes-like object") from exc
    if view.readonly:
        raise InvalidSettingType("buffer", buffer, "a writable bytes-like object")
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise InvalidSettingType("nbytes", nbytes, "a whole number >= 0")
    if nbytes < 0:
        raise InvalidSetting("nbytes", nbytes, "a whole number >= 0")
    if nbytes > len(view):
        raise InvalidSetting("nbytes", nbytes, f"at most the buffer's size, {len(view)}")
    return view, nbytes or len(view)


def _recv_sized(sock: socket.socket, limit: int) -> bytes:
    """``sock.recv(limit)``, through the thread's scratch buffer when ``limit`` fits in it."""
    if limit > _SCRATCH_SIZE:
        return sock.recv(limit)
    scratch: bytearray | None = getattr(_SCRATCH, "buffer", None)
    if scratch is None:
        scratch = _SCRATCH.buffer = bytearray(_SCRATCH_SIZE)
    count = sock.recv_into(scratch, limit)
    return bytes(memoryview(scratch)[:count])


_FORKS = [0]  # forks this process descends from (bumped in each child)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------------------------
# The monitored socket


class _PendingPing:
    """A ping's bytes not yet fully written; ``reported``: ``ping_sent`` already told."""

    __slots__ = ("remaining", "reported")

    def __init__(self, payload: bytes, *, reported: bool) -> None:
        self.remaining = memoryview(payload)
        self.reported = reported


class MonitoredSocket:
    """A stream socket with a heartbeat. Create it with :func:`monitor`.

    Thread-safe like a socket: one thread may read while another writes; writes from several
    threads are serialised (each ``sendall`` is written whole). ``flags`` other than 0 are
    not supported. With a non-blocking socket (timeout 0), bytes may be buffered in the
    wrapper (a pong and data read together): check :meth:`pending` before waiting on
    :meth:`fileno` with ``select``.
    """

    # Slots, no per-instance dict: thousands of these may live in one process (saves ~1.5 KB each).
    __slots__ = (
        "__weakref__",
        "_blocked_pings",
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_closing",
        "_config",
        "_eof",
        "_fd_closed",
        "_generation",
        "_grid",
        "_heartbeat",
        "_inbox",
        "_io_refs",
        "_label_text",
        "_matcher",
        "_on_dead",
        "_open_record",
        "_ops",
        "_ping",
        "_ping_queue",
        "_pings_owed",
        "_read_route",
        "_readers",
        "_request_open",
        "_send_depth",
        "_send_owner",
        "_send_waiters",
        "_sock",
        "_state_lock",
        "_stopped",
        "_timeout",
        "_timer_at",
        "_tls_write_pending",
        "_unread_life",
        "_verdict",
        "_weak_self",
        "_would_block",
        "_write_blocked_since",
    )

    # A subclass may run without a heartbeat (heartbeat=None): then nothing is scheduled,
    # pinged or filtered, and reads and writes go straight through (SupervisedSocket does).
    _heartbeat_optional: ClassVar[bool] = False

    def __init__(
        self,
        sock: socket.socket,
        *,
        heartbeat: HeartbeatConfig,
        ping: PingSource = b"PING\n",
        pong: PongSource = b"PONG\n",
        framing: Framing | None = None,
        on_dead: OnDead | None = None,
        keepalive: KeepaliveConfig | None = None,
    ) -> None:
        plain = heartbeat is None and self._heartbeat_optional
        if not plain and not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig")
        self._ping = check_ping(ping)
        self._matcher = None if plain else make_pong_matcher(pong, framing)
        if on_dead is not None and not callable(on_dead):
            raise InvalidSettingType("on_dead", on_dead, "a callable (sock, error) or None")
        self._sock = _check_socket(sock)
        if keepalive is not None:
            from keepalive.sockets import configure  # noqa: PLC0415 - only when asked for

            configure(sock, keepalive)
        tls_errors = _tls_errors(sock)
        if tls_errors is not None and sock.version() is None:  # type: ignore[attr-defined]
            sock.do_handshake()  # type: ignore[attr-defined]  # within the socket's timeout
        self._on_dead = on_dead
        self._label_text: str | None = None  # the peer, for logs: looked up when first needed
        self._timeout: float | None = sock.gettimeout()
        sock.settimeout(0.0)
        # TLS: SSLWantRead/WriteError also mean "would block", and every call into the TLS
        # object is made under the state lock. After a TLS write that would block, OpenSSL
        # needs the same bytes again before any other write: no ping may go first.
        self._would_block = _WOULD_BLOCK if tls_errors is None else _WOULD_BLOCK + tls_errors
        self._tls_write_pending = False

        # The heartbeat, the inbox, flags; never held long. Shared with a few other monitors
        # (see _STATE_LOCKS).
        self._state_lock = _STATE_LOCKS[next(_LOCK_TURNS) % _LOCK_STRIPES]
        # The send turn, a reentrant lock made of state-lock fields (a lock object per socket
        # would cost 100 bytes): held for a whole application write or message() block; the
        # scheduler writes a ping only when nobody holds it. Owner: a thread ident, 0 if free.
        self._send_owner = 0
        self._send_depth = 0
        self._send_waiters: threading.Condition | None = None  # on the state lock, when needed
        self._inbox = b""  # filtered bytes read but not yet returned to the application
        self._eof = False
        self._verdict: PeerDead | None = None
        self._stopped = False  # no heartbeat any more (death, EOF, error, close)
        self._closed = False  # close() was called
        self._closing = False  # ... and no makefile() object holds it open: no new calls
        self._fd_closed = False
        self._ops = 0  # calls in progress (they keep the fd open until they leave)
        # Which process generation made it: a forked child's copy must never shut the shared
        # socket down (a small int, where a pid would cost an int object per monitor).
        self._generation = _FORKS[0]
        self._readers = 0  # read calls in progress
        self._io_refs = 0  # open makefile() objects

        # The ping the heartbeat asked for and that is not reported yet (see _service).
        self._request_open = False
        self._open_record: _PendingPing | None = None
        self._pings_owed = 0  # pings reported as sent while blocked, bytes still to write
        # Pings not fully written yet, oldest first (None when empty: it rarely is not).
        # Changed under the state lock by the holder of the send turn.
        self._ping_queue: list[_PendingPing] | None = None
        self._write_blocked_since: float | None = None
        self._read_route = _SLOW_READS  # set by _refresh_read_route_locked (under the lock)

        self._bytes_received = 0
        self._bytes_sent = 0
        self._unread_life = 0
        self._blocked_pings = 0
        # Scheduler bookkeeping, under its lock: the armed timer (a grid key) and the one weak
        # reference the scheduler holds (it unregisters the monitor when collected).
        # (Without a heartbeat it is never registered: no callback.)
        self._timer_at: float | None = None
        self._grid = 0.0 if heartbeat is None else timer_grid(heartbeat)
        self._weak_self = (
            weakref.ref(self) if heartbeat is None else weakref.ref(self, _monitor_collected)
        )

        self._config: HeartbeatConfig | None = heartbeat
        self._heartbeat: Heartbeat | None = None  # None: no heartbeat (see _heartbeat_optional)
        if heartbeat is None:
            self._stopped = True  # never monitored
            self._refresh_read_route_locked()
            return
        now = time.monotonic()
        self._heartbeat = Heartbeat(heartbeat, now)
        self._refresh_read_route_locked()
        _SCHEDULER.register(self, now + heartbeat.interval)

    # -- read-outs -------------------------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The wrapped socket, for options and addresses only: read and write through ``self``."""
        return self._sock

    @property
    def heartbeat(self) -> Heartbeat:
        """The heartbeat state machine: read its properties, never call its methods."""
        hb = self._heartbeat
        assert hb is not None  # (only a SupervisedSocket runs without one; it says so)
        return hb

    @property
    def config(self) -> HeartbeatConfig:
        """The heartbeat configuration."""
        config = self._config
        assert config is not None  # (as for heartbeat)
        return config

    @property
    def rtt(self) -> float | None:
        """Seconds from the last ping's write to the read of its pong, or ``None``."""
        hb = self._heartbeat
        return None if hb is None else hb.rtt

    @property
    def srtt(self) -> float | None:
        """Smoothed RTT (RFC 6298), or ``None``."""
        hb = self._heartbeat
        return None if hb is None else hb.srtt

    @property
    def dead(self) -> bool:
        """Whether the peer was declared dead."""
        return self._verdict is not None

    @property
    def verdict(self) -> PeerDead | None:
        """Why the peer was declared dead, or ``None``."""
        return self._verdict

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def monitoring(self) -> bool:
        """Whether the heartbeat still runs (it stops at death, EOF, errors, shutdown, close)."""
        return not self._stopped

    @property
    def stats(self) -> MonitorStats:
        """A snapshot of the counters."""
        with self._state_lock:
            hb = self._heartbeat
            if hb is None:  # no heartbeat: the byte counts only
                return MonitorStats(
                    pings_sent=0,
                    pongs_received=0,
                    bytes_received=self._bytes_received,
                    bytes_sent=self._bytes_sent,
                    stalls=0,
                    unread_life=0,
                    blocked_pings=0,
                    rtt=None,
                    srtt=None,
                )
            return MonitorStats(
                pings_sent=hb.pings_sent,
                pongs_received=hb.pongs_received,
                bytes_received=self._bytes_received,
                bytes_sent=self._bytes_sent,
                stalls=hb.stalls,
                unread_life=self._unread_life,
                blocked_pings=self._blocked_pings,
                rtt=hb.rtt,
                srtt=hb.srtt,
            )

    def pending(self) -> int:
        """Bytes already read from the kernel and waiting for ``recv``: in the wrapper and,
        over TLS, decrypted in the TLS object. ``select``/``poll`` on :meth:`fileno` cannot
        see them: check this first."""
        if self._would_block is _WOULD_BLOCK:
            return len(self._inbox)
        with self._state_lock:  # (no TLS call outside the lock)
            if self._fd_closed:
                return len(self._inbox)
            try:
                buffered: int = self._sock.pending()  # type: ignore[attr-defined]
            except (OSError, ValueError):
                buffered = 0
            return len(self._inbox) + buffered

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "dead"
            if self._verdict is not None
            else "monitoring"
            if not self._stopped
            else "not monitored"
        )
        rtt = "-" if self.rtt is None else f"{self.rtt * 1000:.1f}ms"
        return f"<MonitoredSocket {self._label} {state} rtt={rtt}>"

    @property
    def _label(self) -> str:
        """The peer's address (or the descriptor), for logs and repr; kept once known."""
        label = self._label_text
        if label is None:
            label = self._label_text = _peer_label(self._sock)
        return label

    # -- socket-like API -------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._fd_closed else self._sock.fileno()

    def gettimeout(self) -> float | None:
        """The timeout of blocking calls: None (block), 0.0 (non-blocking) or seconds."""
        return self._timeout

    def settimeout(self, value: float | None) -> None:
        """Like ``socket.settimeout``: None blocks, 0 is non-blocking, else seconds per call."""
        self._timeout = (
            None if value is None else positive_seconds("timeout", value, allow_zero=True)
        )

    def setblocking(self, flag: bool) -> None:
        """``setblocking(True)`` means ``settimeout(None)``, ``False`` means ``settimeout(0)``."""
        self._timeout = None if flag else 0.0

    def getpeername(self) -> object:
        """The peer's address."""
        return self._sock.getpeername()

    def getsockname(self) -> object:
        """The local address."""
        return self._sock.getsockname()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Read up to ``bufsize`` application bytes (pongs removed); ``b""`` at end of stream.

        Raises :class:`~keepalive.errors.PeerUnresponsive` once the peer is declared dead
        (also when the death happens while waiting), ``TimeoutError`` or
        ``BlockingIOError`` per :meth:`settimeout`, ``OSError(EBADF)`` if closed meanwhile.
        """
        if bufsize.__class__ is int and bufsize > 0 and flags == 0:
            # The fast route: one critical section, one recv (see _refresh_read_route_locked).
            with self._state_lock:
                route = self._read_route
                if route:
                    if route & _READ_FIRST or self._timeout == 0:
                        data = self._recv_fast_locked(bufsize, route)
                        if data is not None:
                            return data
                        self._read_route = route & _ROUTE_KIND  # nothing yet: wait first
                    self._ops += 1  # entered (as _enter): wait, then read on below
                    self._readers += 1
            if route:
                if self._timeout is None:  # (as _call_deadline)
                    return self._recv_entered(bufsize, None, False, wait_first=True)
                deadline, nonblocking = self._call_deadline()
                return self._recv_entered(bufsize, deadline, nonblocking, wait_first=True)
        limit = self._check_read(bufsize, flags)
        if limit == 0:
            return b""
        deadline, nonblocking = self._call_deadline()
        self._enter()
        return self._recv_entered(limit, deadline, nonblocking, wait_first=False)

    def _recv_entered(
        self, limit: int, deadline: float | None, nonblocking: bool, *, wait_first: bool
    ) -> bytes:
        """The loop of :meth:`recv` in an entered call (see :meth:`_enter`); leaves it."""
        left = False
        try:
            quick = wait_first and self._wait_for_bytes(deadline, nonblocking)
            while True:
                with self._state_lock:
                    route = self._read_route
                    if route:
                        data = self._recv_fast_locked(
                            limit, route | _READ_FIRST if quick else route
                        )
                        if data is not None:
                            # Left here, as _leave would (a fast route is never closing).
                            self._ops -= 1
                            self._readers -= 1
                            left = True
                            return data
                    else:
                        data = self._read_locked(limit, read_on=nonblocking)
                        self._refresh_read_route_locked()
                if data is not None:
                    return data
                self._wait(write=False, deadline=deadline, nonblocking=nonblocking)
        finally:
            if not left:
                self._leave()

    def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into ``buffer``; returns the count (0 at end of stream)."""
        if buffer.__class__ is bytearray and nbytes.__class__ is int and flags == 0:
            size = len(buffer)
            limit = nbytes or size
            if 0 < limit <= size and nbytes >= 0:
                # The fast route, as in recv: straight into the caller's buffer.
                with self._state_lock:
                    route = self._read_route
                    if route:
                        if route & _READ_FIRST or self._timeout == 0:
                            count = self._recv_into_fast_locked(buffer, limit, route)
                            if count is not None:
                                return count
                            self._read_route = route & _ROUTE_KIND  # nothing yet: wait first
                        self._ops += 1  # entered (as _enter): wait, then read on below
                        self._readers += 1
                if route:
                    deadline, nonblocking = self._call_deadline()
                    return self._recv_into_entered(
                        buffer, limit, deadline, nonblocking, wait_first=True
                    )
        view, wanted = _recv_into_view(buffer, nbytes)
        limit = self._check_read(wanted, flags)
        if limit == 0:
            return 0
        deadline, nonblocking = self._call_deadline()
        self._enter()
        return self._recv_into_entered(view, limit, deadline, nonblocking, wait_first=False)

    def _recv_into_entered(
        self,
        buffer: bytearray | memoryview,
        limit: int,
        deadline: float | None,
        nonblocking: bool,
        *,
        wait_first: bool,
    ) -> int:
        """The loop of :meth:`recv_into` in an entered call (see :meth:`_enter`); leaves it."""
        left = False
        try:
            quick = wait_first and self._wait_for_bytes(deadline, nonblocking)
            while True:
                with self._state_lock:
                    route = self._read_route
                    if route:
                        if quick:
                            route |= _READ_FIRST
                        count = self._recv_into_fast_locked(buffer, limit, route)
                        if count is not None:
                            # Left here, as _leave would (a fast route is never closing).
                            self._ops -= 1
                            self._readers -= 1
                            left = True
                            return count
                    else:
                        view = buffer if buffer.__class__ is memoryview else memoryview(buffer)
                        count = self._read_into_locked(view, limit, read_on=nonblocking)
                        self._refresh_read_route_locked()
                if count is not None:
                    return count
                self._wait(write=False, deadline=deadline, nonblocking=nonblocking)
        finally:
            if not left:
                self._leave()

    def sendall(self, data: Buffer, flags: int = 0) -> None:
        """Write all of ``data``; no ping is written in the middle of it.

        The timeout (:meth:`settimeout`) bounds the whole call. In non-blocking mode a
        ``BlockingIOError`` may come after part of the data was written, as with a socket.
        """
        cls = data.__class__
        if (cls is bytes or cls is bytearray) and flags == 0:
            sent = self._send_fast(data, whole=True)  # type: ignore[arg-type]  # (bytes-like)
            if sent < 0:
                return
            view = memoryview(data)[sent:]  # the rest (send turn and call taken)
            deadline, nonblocking = self._call_deadline()
        else:
            self._check_flags(flags)
            view = memoryview(data).cast("B")
            deadline, nonblocking = self._call_deadline()
            self._begin_write(deadline, nonblocking)
        try:
            self._drain_pings(deadline, nonblocking)
            while view:
                sent = self._send_some(view, deadline, nonblocking)
                view = view[sent:]
            self._write_blocked_since = None
        finally:
            self._end_write()

    def send(self, data: Buffer, flags: int = 0) -> int:
        """Write some of ``data`` and return how many bytes were written.

        A ping may be written between two ``send`` calls: write messages with
        :meth:`sendall`, or inside ``with sock.hold_pings():``.
        """
        cls = data.__class__
        if (cls is bytes or cls is bytearray) and flags == 0 and data:
            sent = self._send_fast(data, whole=False)  # type: ignore[arg-type]  # (bytes-like)
            if sent < 0:
                return len(data)  # type: ignore[arg-type]  # (bytes-like)
            if sent > 0:
                self._end_write()
                return sent
            view = memoryview(data)  # nothing written yet (send turn and call taken)
            deadline, nonblocking = self._call_deadline()
        else:
            self._check_flags(flags)
            view = memoryview(data).cast("B")
            if not view:
                return 0
            deadline, nonblocking = self._call_deadline()
            self._begin_write(deadline, nonblocking)
        try:
            self._drain_pings(deadline, nonblocking)
            return self._send_some(view, deadline, nonblocking)
        finally:
            self._end_write()

    @contextlib.contextmanager
    def hold_pings(self) -> Iterator[None]:
        """Hold pings back while the block runs, so several writes form one message.

        Keep the block short: a ping waits for it (and a ping that cannot be written while
        the block's writes are stuck counts as unanswered after ``timeout``).
        """
        with self._state_lock:
            self._take_send_turn_locked(None, nonblocking=False)
        try:
            yield
        finally:
            with self._state_lock:
                wake = self._give_send_turn_locked()
            if wake:
                self._wake_for_ping()

    @overload
    def makefile(
        self,
        mode: Literal["b", "rb", "br", "wb", "bw", "rwb", "rbw", "wrb", "wbr", "brw", "bwr"],
        buffering: int | None = None,
        *,
        encoding: None = None,
        errors: None = None,
        newline: None = None,
    ) -> BinaryIO: ...

    @overload
    def makefile(
        self,
        mode: Literal["r", "w", "rw", "wr", ""] = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> TextIO: ...

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> BinaryIO | TextIO:
        """A file object reading and writing through this monitored socket (like ``socket``'s).

        Reads count as life and pongs are filtered. Each flush of a buffered writer is one
        :meth:`sendall`; a message larger than the buffer may be written in two parts, so
        wrap ``write`` and ``flush`` in :meth:`message` when that matters. The socket stays
        open until the file is closed too.
        """
        if not set(mode) <= {"r", "w", "b"}:
            raise InvalidSetting("mode", mode, "a combination of 'r', 'w' and 'b'")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0 and not binary:
            raise InvalidSetting("buffering", buffering, "> 0 for a text file")
        with self._state_lock:
            if self._closing:
                raise _closed_error()
            self._io_refs += 1  # released by the raw file's close(), also when collected
        raw = _MonitoredIO(self, reading=reading, writing=writing)
        if buffering == 0:
            return cast(BinaryIO, raw)
        buffered: io.BufferedIOBase
        if reading and writing:
            buffered = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffered = io.BufferedReader(raw, buffering)
        else:
            buffered = io.BufferedWriter(raw, buffering)
        buffer = cast(BinaryIO, buffered)
        if binary:
            return buffer
        return io.TextIOWrapper(buffer, encoding, errors, newline)

    def setsockopt(self, level: int, optname: int, value: int | Buffer) -> None:
        """Set a socket option on the wrapped socket."""
        self._sock.setsockopt(level, optname, value)

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...
    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...
    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        """Read a socket option of the wrapped socket."""
        if buflen is None:
            return self._sock.getsockopt(level, optname)
        return self._sock.getsockopt(level, optname, buflen)

    def shutdown(self, how: int) -> None:
        """Shut the connection down (``socket.SHUT_RD``/``SHUT_WR``/``SHUT_RDWR``).

        The heartbeat stops: a half-closed connection cannot carry pings and pongs.
        """
        with self._state_lock:
            if self._closing:
                raise _closed_error()
            self._stop_locked()
            self._sock.shutdown(how)

    def close(self) -> None:
        """Stop the heartbeat and close the socket (once files from :meth:`makefile` are closed).

        Threads blocked in a call on this socket wake up with ``OSError(EBADF)``; the
        descriptor is released when the last of them leaves. Idempotent.
        """
        if self._generation != _FORKS[0]:
            self._after_fork_in_child()  # inherited, maybe unregistered: adopt it here first
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            if self._io_refs == 0:
                self._close_locked()

    def stop(self) -> None:
        """Stop the heartbeat and leave the connection as it is (as :mod:`keepalive.aio`'s
        ``stop()``). Idempotent. Pongs of pings already sent are still removed."""
        self._stop_quietly()

    def unwrap(self) -> PlainSocket:
        """TLS only: end TLS (``close_notify`` both ways) and return the plain socket.

        The heartbeat stops first and no ping is written afterwards; the exchange waits at most
        this wrapper's timeout. The returned socket is blocking with this wrapper's timeout;
        this wrapper is closed (its descriptor now belongs to the returned socket). Pongs
        still owed are read first (TLS forbids data after our ``close_notify``). Call it where
        your protocol has the peer send nothing more: application bytes buffered here
        (:meth:`pending`) or arriving before the peer's ``close_notify`` are not returned.
        """
        if self._would_block is _WOULD_BLOCK:
            raise InvalidSocket("unwrap() needs a TLS socket; this one is plain")
        deadline, nonblocking = self._call_deadline()
        self._begin_write(deadline, nonblocking)
        try:
            with self._state_lock:
                self._stop_locked()
            # Pongs still owed would arrive after our close_notify, which TLS forbids: take
            # them first (application bytes read meanwhile wait in pending()).
            hb = self._heartbeat
            while hb is not None and hb.outstanding and self._matcher is not None:
                with self._state_lock:
                    data = self._read_locked(_UNWRAP_READ, read_on=False)
                    if data:
                        self._inbox += data
                if data == b"":
                    break
                if data is None and hb.outstanding:
                    self._wait(write=False, deadline=deadline, nonblocking=nonblocking)
            while True:
                with self._state_lock:
                    self._check_usable()
                    try:
                        plain: socket.socket = self._sock.unwrap()  # type: ignore[attr-defined]
                        break
                    except self._would_block as exc:
                        write = type(exc).__name__ == "SSLWantWriteError"
                    except OSError as exc:
                        raise self._translate(exc) from exc
                self._wait(write=write, deadline=deadline, nonblocking=nonblocking)
            with self._state_lock:
                self._closed = self._closing = self._fd_closed = True
                # ssl's unwrap() returns the SSLSocket itself, TLS-less: hand over a plain one.
                plain = socket.socket(plain.family, plain.type, plain.proto, plain.detach())
        finally:
            self._end_write()
        plain.settimeout(self._timeout)
        return plain

    def __getattr__(self, name: str) -> object:
        # Only reached for names a MonitoredSocket does not have.
        if name in {"family", "type", "proto", "detach"}:
            raise AttributeError(
                f"'MonitoredSocket' object has no attribute {name!r}: read it from .socket; "
                "to use TLS, wrap the socket before monitoring it (monitor(ctx.wrap_socket(sock), "
                "...) or monitor(sock, ssl=ctx, server_hostname=...)), not after"
            )
        raise AttributeError(f"'MonitoredSocket' object has no attribute {name!r}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- calls: entering, leaving, waiting ---------------------------------------------------

    def _check_flags(self, flags: int) -> None:
        if flags != 0:
            raise InvalidSetting(
                "flags", flags, "0 (flags are not supported on a monitored socket)"
            )

    def _check_read(self, bufsize: int, flags: int) -> int:
        self._check_flags(flags)
        if isinstance(bufsize, bool) or not isinstance(bufsize, int):
            raise InvalidSettingType("bufsize", bufsize, "a whole number >= 0")
        if bufsize < 0:
            raise InvalidSetting("bufsize", bufsize, "a whole number >= 0")
        return bufsize

    def _call_deadline(self) -> tuple[float | None, bool]:
        timeout = self._timeout
        if timeout is None:
            return None, False
        if timeout == 0:
            return None, True
        return time.monotonic() + timeout, False

    def _enter(self) -> None:
        """Enter a read call (it keeps the fd open, and the scheduler leaves pongs to it)."""
        with self._state_lock:
            if self._closing:
                raise _closed_error()
            self._ops += 1
            self._readers += 1

    def _leave(self, *, reader: bool = True) -> None:
        with self._state_lock:
            self._ops -= 1
            if reader:
                self._readers -= 1
            if self._closing and self._ops == 0 and not self._fd_closed:
                self._fd_closed = True
                self._sock.close()

    def _check_usable(self) -> None:
        """Raise if closed or dead (read without the lock: flags only ever become true)."""
        if self._closing:
            raise _closed_error()
        verdict = self._verdict
        if verdict is not None:
            raise verdict.as_error()

    def _translate(self, exc: OSError) -> OSError:
        """The error to raise for ``exc`` from the socket: ours if we closed or killed it."""
        if self._closing:
            return _closed_error()
        verdict = self._verdict
        if verdict is not None:
            return verdict.as_error()
        return exc

    def _wait_for_bytes(self, deadline: float | None, nonblocking: bool) -> bool:
        """:meth:`_wait` for bytes to read; True if they came at once (see _READ_FIRST)."""
        if deadline is None and not nonblocking and _HAVE_POLL:  # the usual case, inlined
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN)
            started = time.monotonic()
            poller.poll()
            return time.monotonic() - started < _QUICK_WAIT
        self._wait(write=False, deadline=deadline, nonblocking=nonblocking)
        return False

    def _wait(self, *, write: bool, deadline: float | None, nonblocking: bool) -> None:
        if nonblocking:
            raise BlockingIOError(errno.EAGAIN, _EAGAIN_MESSAGE)
        if deadline is None:
            if _HAVE_POLL:  # the usual wait of a blocked reader, without a call more
                poller = select.poll()
                poller.register(self._sock.fileno(), select.POLLOUT if write else select.POLLIN)
                poller.poll()
            else:
                _ready(self._sock.fileno(), write=write, timeout=None)
            return
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError("timed out")
        _ready(self._sock.fileno(), write=write, timeout=timeout)

    # -- reading -----------------------------------------------------------------------------

    def _refresh_read_route_locked(self) -> None:
        """Choose how reads go now (state lock held; after anything that may change it).

        A fast route needs: a plain socket (TLS reads go the general way), nothing in the
        inbox, no end of stream, close or verdict, and no pong to filter: the heartbeat idle
        with no pong owed (no ping requested, written or counted as sent) and the matcher
        holding nothing. Whatever may break that (the scheduler servicing the monitor, a ping
        written or counted, a close) sets the slow route first; only the general read path
        and the scheduler's idle answer come back here.
        """
        route = _SLOW_READS
        hb, matcher = self._heartbeat, self._matcher
        if (
            self._would_block is _WOULD_BLOCK
            and not self._inbox
            and not (self._eof or self._closing or self._request_open)
            and self._verdict is None
            and (hb is None or (hb.state is _IDLE and not hb.outstanding))
        ):
            if matcher is None:
                route = _DIRECT_READS | _READ_FIRST
            elif matcher.__class__ is MessagePongs and not matcher.held:
                framing = matcher.framing
                lines = isinstance(framing, Lines) and framing.delimiter == b"\n"
                route = (_LINE_READS if lines else _FED_READS) | _READ_FIRST
        self._read_route = route

    def _recv_fast_locked(self, limit: int, route: int) -> bytes | None:
        """A read on a fast route: the socket's bytes, b"" at end of stream, None if none."""
        try:
            if limit > _SCRATCH_SIZE:
                chunk = self._sock.recv(limit)
            else:  # (as _recv_sized)
                scratch = getattr(_SCRATCH, "buffer", None)
                if scratch is None:
                    scratch = _SCRATCH.buffer = bytearray(_SCRATCH_SIZE)
                chunk = bytes(memoryview(scratch)[: self._sock.recv_into(scratch, limit)])
        except _WOULD_BLOCK:
            return None
        except OSError as exc:
            raise self._read_failed_locked(exc) from exc
        if not chunk:
            self._end_of_stream_locked()  # (a fast route holds nothing back)
            return chunk
        kind = route & _ROUTE_KIND
        if kind != _DIRECT_READS:  # boundaries only: nothing owed and nothing held
            matcher: MessagePongs = self._matcher  # type: ignore[assignment]  # (the route's)
            # A chunk ending a line, read at a message boundary, leaves the matcher as it is
            # (the usual reply of a line protocol): no need to show it.
            if not (kind == _LINE_READS and chunk[-1] == _NEWLINE and matcher.at_boundary):
                matcher.feed(chunk, 0)
        count = len(chunk)
        self._read_route = route | _READ_FIRST if count == limit else route
        self._bytes_received += count
        hb = self._heartbeat
        if hb is not None:  # life, in the same critical section (see _recv_into_fast_locked)
            hb.received(time.monotonic(), count, 0)
        return chunk

    def _recv_into_fast_locked(
        self, buffer: bytearray | memoryview, limit: int, route: int
    ) -> int | None:
        """:meth:`_recv_fast_locked` into ``buffer``: the count, None if nothing waits."""
        kind = route & _ROUTE_KIND
        if kind == _FED_READS:  # the matcher must see every byte anyway
            data = self._recv_fast_locked(limit, route)
            if data is None:
                return None
            count = len(data)
            buffer[:count] = data
            return count
        try:
            count = self._sock.recv_into(buffer, limit)
        except _WOULD_BLOCK:
            return None
        except OSError as exc:
            raise self._read_failed_locked(exc) from exc
        if not count:
            self._end_of_stream_locked()
            return 0
        if kind == _LINE_READS:
            _track_line_ends(self._matcher, buffer, count)  # type: ignore[arg-type]  # (the route's)
        self._read_route = route | _READ_FIRST if count == limit else route
        # Life, in the same critical section. The heartbeat is idle (the route says so), so
        # its deadline only moves later: the scheduler's timer stays, its early wake-up
        # just re-arms.
        self._bytes_received += count
        hb = self._heartbeat
        if hb is not None:
            hb.received(time.monotonic(), count, 0)
        return count

    def _read_locked(self, limit: int, *, read_on: bool = True) -> bytes | None:
        """Up to ``limit`` application bytes, b"" at end of stream, None if none is waiting.

        When a read brings only a pong and was shorter than ``limit`` (the kernel had no
        more), None comes at once unless ``read_on``: a caller about to wait in ``poll``
        saves the ``recv`` that would fail with EAGAIN (poll returns at once if more came).
        """
        if self._closing:
            raise _closed_error()
        if self._verdict is not None and self._matcher is not None:
            # Bytes received before the verdict still reach the application, then the error.
            self._inbox += self._matcher.flush()
        if self._inbox:
            data, self._inbox = self._inbox[:limit], self._inbox[limit:]
            return data
        self._check_usable()
        if self._eof:
            return b""
        while True:
            try:
                chunk = _recv_sized(self._sock, limit)
            except self._would_block:
                return None
            except OSError as exc:
                raise self._read_failed_locked(exc) from exc
            if not chunk:
                data = self._end_of_stream_locked()
            else:  # filter pongs out and tell the heartbeat, before the lock is released
                matcher = self._matcher
                if matcher is None:
                    data, pongs = chunk, 0
                else:
                    hb = self._heartbeat
                    assert hb is not None  # (a matcher comes with a heartbeat)
                    data, pongs = matcher.feed(chunk, hb.outstanding)
                self._note_inbound_locked(len(chunk), pongs, time.monotonic())
                if not data:  # only a pong (or part of one)
                    # (TLS may hold decrypted bytes that poll() cannot see: read on)
                    if read_on or len(chunk) == limit or self._would_block is not _WOULD_BLOCK:
                        continue
                    return None
            if len(data) > limit:
                data, self._inbox = data[:limit], data[limit:]
            return data

    def _read_into_locked(self, view: memoryview, limit: int, *, read_on: bool) -> int | None:
        matcher = self._matcher
        # Straight into the caller's buffer when nothing is filtered (a matcher must see every
        # byte to know where messages end).
        direct = matcher is None and not self._inbox and not self._eof
        if not direct:  # a pong may be in the way: go through the filter
            data = self._read_locked(limit, read_on=read_on)
            if data is None:
                return None
            view[: len(data)] = data
            return len(data)
        self._check_usable()
        try:
            count = self._sock.recv_into(view, limit)
        except self._would_block:
            return None
        except OSError as exc:
            raise self._read_failed_locked(exc) from exc
        if count == 0:
            self._end_of_stream_locked()  # nothing can be held back here
            return 0
        self._note_inbound_locked(count, 0, time.monotonic())
        return count

    def _note_inbound_locked(self, count: int, pongs: int, now: float) -> None:
        hb = self._heartbeat
        self._bytes_received += count
        if hb is None:  # no heartbeat: the bytes pass straight through
            return
        hb.received(now, count, None if self._matcher is None else pongs)
        if pongs and logger.isEnabledFor(logging.DEBUG):
            logger.debug("pong from %s, rtt %s", self._label, hb.rtt)
        # Inbound bytes satisfied the heartbeat: a ping it asked for is no longer needed
        # (one already queued is still written and reported, see _ping_written_locked).
        self._request_open = False
        self._open_record = None
        # Usually the timer is early enough already: while a ping is in flight it is armed
        # an interval after the ping (see _arm_locked), and this deadline is later. Timers
        # are grid cell ends: only a deadline in an earlier cell needs one.
        deadline = hb.deadline
        timer_at = self._timer_at
        if (
            deadline is not None
            and not self._stopped
            and (timer_at is None or deadline <= timer_at - self._grid)
        ):
            _SCHEDULER.wake_at(self, deadline)

    def _end_of_stream_locked(self) -> bytes:
        """The peer closed its side: stop the heartbeat, release bytes a matcher held."""
        self._eof = True
        self._read_route = _SLOW_READS
        self._stop_locked()
        logger.debug("%s sent end of stream; heartbeat stopped", self._label)
        return self._matcher.flush() if self._matcher is not None else b""

    def _read_failed_locked(self, exc: OSError) -> OSError:
        translated = self._translate(exc)
        if translated is exc:  # the connection broke (reset, ...): no pings can cross now
            self._stop_locked()
        return translated

    # -- writing -----------------------------------------------------------------------------

    def _send_fast(self, data: bytes | bytearray, *, whole: bool) -> int:
        """Try to write ``data`` in one go under the state lock (no ping can come between).

        Returns -1 if all of it was written (the call is over). Otherwise returns how many
        bytes were written (``whole``: any part; else 0, or the bytes of a partial ``send``)
        with the call entered and the send turn taken in the same critical section, as
        :meth:`_begin_write` would: the caller goes on (or returns) and calls
        :meth:`_end_write`. Only a plain socket with the send turn free and no ping
        waiting to be finished is tried; anything else just takes the turn.
        """
        wake = False
        with self._state_lock:
            if self._closing:
                raise _closed_error()
            sent = 0
            if (
                self._send_owner == 0
                and self._ping_queue is None
                and self._would_block is _WOULD_BLOCK
                and len(data) <= _FAST_WRITE_MAX
            ):
                verdict = self._verdict
                if verdict is not None:
                    raise verdict.as_error()
                try:
                    sent = self._sock.send(data)
                except _WOULD_BLOCK:
                    self._note_write_blocked()
                except OSError as exc:
                    raise self._translate(exc) from exc
                else:
                    self._write_blocked_since = None
                    self._bytes_sent += sent
                    if sent == len(data):
                        wake = self._request_open and not self._stopped
                        sent = -1
            if sent >= 0:
                deadline, nonblocking = self._call_deadline()
                self._take_send_turn_locked(deadline, nonblocking=nonblocking)
                self._ops += 1
        if wake:
            self._wake_for_ping()  # (as _end_write: a ping may have waited for the turn)
        return sent

    def _begin_write(self, deadline: float | None, nonblocking: bool) -> None:
        """Enter a write call (like :meth:`_enter`) and take the send turn."""
        with self._state_lock:
            if self._closing:
                raise _closed_error()
            self._take_send_turn_locked(deadline, nonblocking=nonblocking)
            self._ops += 1

    def _end_write(self) -> None:
        """Give the send turn back and leave the call (like :meth:`_leave`)."""
        with self._state_lock:
            wake = self._give_send_turn_locked()
            self._ops -= 1
            if self._closing and self._ops == 0 and not self._fd_closed:
                self._fd_closed = True
                self._sock.close()
        if wake:
            self._wake_for_ping()

    def _take_send_turn_locked(self, deadline: float | None, *, nonblocking: bool) -> None:
        """Take the send turn (state lock held; reentrant), waiting for it if needed."""
        me = threading.get_ident()
        if self._send_owner not in (0, me):
            if nonblocking:
                raise BlockingIOError(errno.EAGAIN, _EAGAIN_MESSAGE)
            waiters = self._send_waiters
            if waiters is None:
                waiters = self._send_waiters = threading.Condition(self._state_lock)
            while self._send_owner != 0:
                if deadline is None:
                    waiters.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                waiters.wait(remaining)
            if self._closing:  # closed while we waited
                raise _closed_error()
        self._send_owner = me
        self._send_depth += 1

    def _give_send_turn_locked(self) -> bool:
        """Give the send turn back (state lock held); True if a ping waits for it."""
        depth = self._send_depth - 1
        if depth > 0:
            self._send_depth = depth
            return False
        self._send_depth = 0  # (never below: after a fork, the turn starts free)
        self._send_owner = 0
        if self._send_waiters is not None:
            self._send_waiters.notify_all()  # rare; each waiter checks closing and its timeout
        return self._request_open and not self._stopped

    def _wake_for_ping(self) -> None:
        _SCHEDULER.wake_at(self, time.monotonic())  # the ping waited for us: write it now

    def _send_some(self, view: memoryview, deadline: float | None, nonblocking: bool) -> int:
        """One successful ``send`` of the start of ``view`` (send turn held)."""
        tls = self._would_block is not _WOULD_BLOCK
        if tls:
            view = view[:_TLS_WRITE_CHUNK]
        while True:
            self._check_usable()
            try:
                if tls:
                    with self._state_lock:
                        self._tls_write_pending = True  # until OpenSSL took these bytes
                        sent = self._sock.send(view)
                        self._tls_write_pending = False
                else:
                    sent = self._sock.send(view)
            except self._would_block:
                self._note_write_blocked()
                self._wait(write=True, deadline=deadline, nonblocking=nonblocking)
                continue
            except OSError as exc:
                raise self._translate(exc) from exc
            if sent:
                self._write_blocked_since = None
                self._bytes_sent += sent
                return sent

    def _note_write_blocked(self) -> None:
        if self._write_blocked_since is None:
            self._write_blocked_since = time.monotonic()

    def _drain_pings(self, deadline: float | None, nonblocking: bool) -> None:
        """Finish pings a previous writer left partly written (send turn held)."""
        if not self._ping_queue:
            return
        self._check_usable()
        try:
            done = self._write_pings(deadline, wait=not nonblocking)
        except OSError as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        if not done:
            raise BlockingIOError(errno.EAGAIN, _EAGAIN_MESSAGE)

    def _write_pings(self, deadline: float | None, *, wait: bool) -> bool:
        """Write queued pings (send turn held); True once the queue is empty.

        Each ``send`` runs under the state lock, and a ping is reported to the heartbeat in
        the same critical section that completes it: its pong cannot be read before the
        heartbeat counts the ping, so the filter always knows to expect it.
        """
        while True:
            with self._state_lock:
                queue = self._ping_queue
                if not queue:
                    return True
                record = queue[0]
                try:
                    sent = self._sock.send(record.remaining)
                except self._would_block:
                    sent = -1
                if sent > 0:
                    self._write_blocked_since = None
                    record.remaining = record.remaining[sent:]
                    if not record.remaining:
                        del queue[0]
                        if not queue:
                            self._ping_queue = None
                        if not record.reported:
                            self._ping_written_locked(record, time.monotonic())
                    continue
            self._note_write_blocked()
            if not wait:
                return False
            self._wait(write=True, deadline=deadline, nonblocking=False)

    def _queue_ping_locked(self, record: _PendingPing) -> None:
        if self._ping_queue is None:
            self._ping_queue = [record]
        else:
            self._ping_queue.append(record)

    def _ping_written_locked(self, record: _PendingPing, now: float) -> None:
        record.reported = True
        self._read_route = _SLOW_READS  # its pong is owed now
        hb = self._heartbeat
        assert hb is not None  # (pings come from a heartbeat)
        hb.ping_sent(now)
        if record is self._open_record:
            self._request_open = False
            self._open_record = None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("ping to %s", self._label)

    # -- the heartbeat (run by the scheduler thread) ------------------------------------------

    def _service(self) -> None:
        """Poll the heartbeat and act, then arm the next wake-up (scheduler thread)."""
        with self._state_lock:
            hb, config = self._heartbeat, self._config
            if self._stopped or hb is None or config is None:  # (never scheduled without)
                return
            self._read_route = _SLOW_READS  # until the heartbeat is idle again (below)
            now = time.monotonic()
            if hb.miss_possible(now):
                if self._readers == 0 and self._matcher is not None and hb.outstanding:
                    self._take_unread_pongs_locked(now)
                # New bytes the application has not read yet are life all the same.
                sock = self._sock
                count = unread_bytes(sock.fileno())
                if hb.unread(now, count, peer_blocked=peer_may_be_blocked(sock, count)):
                    self._unread_life += 1
                    logger.debug("unread bytes from %s count as life", self._label)
                stalls = hb.stalls
                deadline = hb.deadline
                action = hb.poll(now)
                if hb.stalls != stalls and deadline is not None:
                    logger.warning("%s: %s", self._label, describe_stall(now - deadline, config))
            else:  # a ping due, or an early wake-up: no miss, no stall possible
                action = hb.poll(now)
            if isinstance(action, PeerDead):
                self._verdict = action  # from now on every call raises it
                self._stop_locked()
            elif isinstance(action, Wait):
                # No ping is asked for (a queued one is written and reported all the same).
                self._request_open = False
                self._open_record = None
                if not (self._pings_owed or self._ping_queue):
                    self._arm_locked(action.deadline, now)
                    self._refresh_read_route_locked()
                    return
                self._ops += 1  # pings owed to the wire: write them now, not at the next request
            else:  # SendPing
                if not self._request_open:
                    self._open_record = None
                    if self._ping_now_locked(now):
                        return
                    self._request_open = True
                self._ops += 1  # keeps the fd open while the ping is written
        if isinstance(action, PeerDead):
            # on_dead first, then wake the blocked calls: when a blocked recv or sendall
            # raises PeerUnresponsive, on_dead has run.
            self._report_death(action)
            with self._state_lock:
                if not self._fd_closed:
                    with contextlib.suppress(OSError):  # wakes every blocked call
                        self._sock.shutdown(socket.SHUT_RDWR)
            return
        try:
            wake = self._send_ping()
        finally:
            self._leave(reader=False)
        if isinstance(action, Wait) and wake is not None:
            wake = min(wake, action.deadline)
        if wake is not None:
            with self._state_lock:
                if not self._stopped:
                    self._arm_locked(wake, time.monotonic())

    def _take_unread_pongs_locked(self, now: float) -> None:
        """Nobody reads: take the pongs waiting at the head of the stream ourselves.

        So pongs never pile up unread behind a write-only application, and each one is life
        (with its RTT). A plain socket is only peeked at (``MSG_PEEK``): whole pongs at the
        head are consumed, every application byte stays in the kernel for the application
        (and for its ``select``). TLS cannot be peeked into: what is waiting is read and the
        application's bytes are kept for it (:meth:`pending`), at most ``_UNREAD_KEEP``.
        """
        matcher, hb = self._matcher, self._heartbeat
        assert matcher is not None
        assert hb is not None
        outstanding = hb.outstanding
        try:
            if self._would_block is _WOULD_BLOCK:
                leading = getattr(matcher, "leading_pongs", None)
                if leading is None:
                    return
                head = self._sock.recv(_UNREAD_PEEK, socket.MSG_PEEK)
                size, pongs = leading(head, outstanding)
                if not pongs:
                    return
                chunk = self._sock.recv(size)
            else:
                if self._inbox or self._eof:
                    return
                data = self._read_locked(_UNREAD_KEEP, read_on=False)
                if data:
                    self._inbox = data
                return
        except OSError:  # (would block, or broken: the application's next call will say)
            return
        data, pongs = matcher.feed(chunk, outstanding)
        self._unread_life += 1
        self._note_inbound_locked(len(chunk), pongs, now)
        if data:  # (cannot happen: leading_pongs promised pongs only)
            self._inbox += data

    def _ping_now_locked(self, now: float) -> bool:
        """The common case of a due ping, in one go: fixed bytes, nothing queued or owed, the
        send turn free, the kernel takes it all. True if done (sent, or stopped on an error).

        The state lock is held, so the ping is reported before its pong can be read. A ping
        the kernel took only in part is queued, as the open request's record, for the slow
        path to finish.
        """
        payload = self._ping
        if type(payload) is not bytes or self._ping_queue or self._pings_owed:
            return False
        if self._send_owner or self._tls_write_pending:  # an application write is under way
            return False
        # Nobody can take the send turn meanwhile: that needs the state lock, held here.
        try:
            sent = self._sock.send(payload)
        except self._would_block:
            self._note_write_blocked()
            if self._would_block is not _WOULD_BLOCK:
                # OpenSSL holds this ping's record: the next write must repeat these bytes.
                record = _PendingPing(payload, reported=False)
                self._queue_ping_locked(record)
                self._open_record = record
            return False
        except OSError as exc:
            self._stop_locked()
            logger.debug("heartbeat of %s stopped: writing a ping failed: %s", self._label, exc)
            return True
        self._write_blocked_since = None
        if sent < len(payload):
            record = _PendingPing(payload, reported=False)
            record.remaining = record.remaining[sent:]
            self._queue_ping_locked(record)
            self._open_record = record
            return False
        sent_at = time.monotonic()
        hb, config = self._heartbeat, self._config
        assert hb is not None  # (scheduled with a heartbeat only)
        assert config is not None
        self._read_route = _SLOW_READS  # its pong is owed now
        hb.ping_sent(sent_at)  # starts the ping's timeout window at sent_at
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("ping to %s", self._label)
        # As _arm_locked would: the window's end, or an interval.
        _SCHEDULER.wake_at(self, sent_at + min(config.interval, config.timeout))
        return True

    def _arm_locked(self, deadline: float, now: float) -> None:
        """Arm the scheduler's timer for ``deadline`` (state lock held).

        While a ping is in flight the timer is armed no later than an interval from ``now``:
        its pong, or any byte, arrives after ``now`` and moves the deadline to an interval
        after that, so the reader never has to move the timer earlier (a call into the
        scheduler per pong); if nothing arrives, the early wake-up just re-arms.
        """
        hb, config = self._heartbeat, self._config
        assert hb is not None  # (scheduled with a heartbeat only)
        assert config is not None
        if hb.ping_in_flight:
            deadline = min(deadline, now + config.interval)
        _SCHEDULER.wake_at(self, deadline)

    def _send_ping(self) -> float | None:
        hb, config = self._heartbeat, self._config
        assert hb is not None  # (scheduled with a heartbeat only)
        assert config is not None
        with self._state_lock:
            busy = self._send_owner != 0 or self._tls_write_pending
            if not busy:
                self._take_send_turn_locked(None, nonblocking=True)
        if busy:
            return self._ping_blocked()
        try:
            if self._closing or self._stopped:
                return None
            try:
                self._queue_pings()
            except BaseException:  # user code; see _report_death
                logger.exception(
                    "ping() for %s failed; trying again in %g s", self._label, config.interval
                )
                return time.monotonic() + config.interval
            try:
                done = self._write_pings(None, wait=False)
            except OSError as exc:
                with self._state_lock:
                    self._stop_locked()
                logger.debug("heartbeat of %s stopped: writing a ping failed: %s", self._label, exc)
                return None
        finally:
            with self._state_lock:
                self._give_send_turn_locked()  # no wake-up: this is the scheduler
        if not done:
            return self._ping_blocked()
        with self._state_lock:
            return None if self._stopped else hb.deadline

    def _queue_pings(self) -> None:
        """Make the bytes of the pings to write (send turn held): owed ones, then the request."""
        with self._state_lock:
            owed = self._pings_owed
            requested = self._request_open and self._open_record is None
        payloads = [next_ping(self._ping) for _ in range(owed + requested)]  # user code: no lock
        with self._state_lock:
            self._pings_owed -= owed
            for payload in payloads[:owed]:
                self._queue_ping_locked(_PendingPing(payload, reported=True))
            if requested:
                record = _PendingPing(payloads[-1], reported=False)
                self._queue_ping_locked(record)
                if self._request_open and self._open_record is None:
                    self._open_record = record

    def _ping_blocked(self) -> float | None:
        """The ping could not be written (yet): count it as sent if our writes are stuck."""
        hb, config = self._heartbeat, self._config
        assert hb is not None  # (scheduled with a heartbeat only)
        assert config is not None
        with self._state_lock:
            if self._stopped:
                return None
            self._read_route = _SLOW_READS  # (a ping may be counted as sent below)
            now = time.monotonic()
            retry = now + min(_PING_RETRY_CAP, config.timeout / 4)
            if not self._request_open:  # only owed or unfinished pings: keep trying
                owed = self._pings_owed or self._ping_queue
                return retry if owed else hb.deadline
            blocked_since = self._write_blocked_since
            if blocked_since is None or not hb.ping_due:
                return retry
            counts_at = hb.ping_stuck(now, blocked_since)
            if counts_at is not None:
                return min(retry, counts_at)
            stuck_for = now - blocked_since
            self._blocked_pings += 1
            if self._open_record is not None:
                self._open_record.reported = True
            else:
                self._pings_owed += 1
            self._request_open = False
            self._open_record = None
        logger.info(
            "ping to %s could not be written for %.3f s (our writes are stuck); "
            "counting it as sent",
            self._label,
            stuck_for,
        )
        return now

    def _report_death(self, verdict: PeerDead) -> None:
        logger.warning("peer %s declared dead: %s", self._label, verdict.as_error())
        callback = self._on_dead
        if callback is None:
            return
        try:
            callback(self, verdict.as_error())
        except BaseException:  # even SystemExit: it would end the thread every socket shares
            logger.exception("on_dead callback for %s raised", self._label)

    # -- stopping ----------------------------------------------------------------------------

    def _stop_locked(self) -> None:
        if not self._stopped:
            self._stopped = True
            _SCHEDULER.unregister(self)

    def _stop_quietly(self) -> None:
        with self._state_lock:
            self._stop_locked()

    def _close_locked(self) -> None:
        _ = self._label  # while the socket can still tell its peer (for later logs and repr)
        self._closing = True
        self._read_route = _SLOW_READS
        self._stop_locked()
        if self._ops == 0 or self._generation != _FORKS[0]:  # (calls in flight: the parent's)
            self._fd_closed = True
            self._sock.close()
        else:  # wake the calls in progress; the last one to leave closes the fd
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _release_file(self) -> None:
        """A file from :meth:`makefile` was closed."""
        with self._state_lock:
            self._io_refs -= 1
            if self._closed and self._io_refs == 0 and not self._closing:
                self._close_locked()

    def _after_fork_in_child(self) -> None:
        """In a forked child: fresh locks (others' threads are gone), and no heartbeat here."""
        self._generation = _FORKS[0]  # (the state locks were reset at the fork)
        self._send_owner = 0
        self._send_depth = 0
        self._send_waiters = None
        self._stopped = True
        self._timer_at = None
        self._ops = 0
        if self._closing and not self._fd_closed:
            self._fd_closed = True
            self._sock.close()


OnDead: TypeAlias = Callable[[MonitoredSocket, PeerUnresponsive], object]
"""``on_dead(sock, error)``: called once, on the scheduler thread, when the peer is dead."""


class _MonitoredIO(io.RawIOBase):
    """Raw I/O through a :class:`MonitoredSocket` (what ``socket.SocketIO`` is to a socket)."""

    def __init__(self, owner: MonitoredSocket, *, reading: bool, writing: bool) -> None:
        super().__init__()
        self._owner = owner
        self._reading = reading
        self._writing = writing
        self._timed_out = False

    def readinto(self, buffer: Buffer, /) -> int | None:
        self._check(self._reading, "reading")
        if self._timed_out:
            raise OSError("cannot read from timed out object")
        try:
            return self._owner.recv_into(buffer)
        except TimeoutError:
            self._timed_out = True  # a buffered reader's state is unknown after a timeout
            raise
        except BlockingIOError:
            return None

    def write(self, data: Buffer, /) -> int | None:
        self._check(self._writing, "writing")
        try:
            if self._owner.gettimeout() == 0:
                return self._owner.send(data)
            self._owner.sendall(data)
        except BlockingIOError:
            return None
        return memoryview(data).nbytes

    def readable(self) -> bool:
        self._check(True, "reading")
        return self._reading

    def writable(self) -> bool:
        self._check(True, "writing")
        return self._writing

    def seekable(self) -> bool:
        self._check(True, "seeking")
        return False

    def fileno(self) -> int:
        self._check(True, "fileno")
        return self._owner.fileno()

    @property
    def name(self) -> int:
        return -1 if self.closed else self._owner.fileno()

    @property
    def mode(self) -> str:
        return ("r" if self._reading else "") + ("w" if self._writing else "") + "b"

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._owner._release_file()

    def _check(self, allowed: bool, what: str) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not allowed:
            raise io.UnsupportedOperation(f"File not open for {what}")
