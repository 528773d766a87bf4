"""A supervised blocking connection that heals itself: :class:`Supervisor` (``keepalive.sync``).

::

    from keepalive import Backoff, HeartbeatConfig
    from keepalive.sync import Supervisor

    with Supervisor(("db.internal", 7000), heartbeat=HeartbeatConfig(interval=10, timeout=5),
                    retry=Backoff(initial=0.5, max_delay=30),
                    on_connect=lambda conn: conn.sendall(b"SUBSCRIBE news\\n")) as sup:
        while True:
            conn = sup.wait_connected()    # the live connection (waits while there is none)
            try:
                data = conn.recv(4096)     # b"" or an error: it ended, a new one is coming
            except OSError:
                continue
            if data:
                handle(data)

One background thread per supervisor runs the loop of :mod:`keepalive.supervision`::

    connect (per the retry policy) -> kernel keepalive (set before the SYN) -> heartbeat
    -> on_connect(conn) -> publish the connection -> ... it ends -> close it
    -> on_disconnect(reason, error) -> on_backoff(delay, error) -> wait -> connect again

and a :class:`~keepalive.supervision.SupervisorCore` keeps the state, the counters
(:attr:`Supervisor.stats`) and the failure log, decides the delays, the give-up and which
hook fires when, and writes the log; this module does the I/O: the thread, the dial (that of
:mod:`keepalive.dial`, made cancellable), TLS, ``on_connect``, the read-ahead and the waits.
Decisions worth knowing:

* **The supervisor thread reads the connection.** While a connection is published, the
  supervisor thread reads it continuously through the heartbeat wrapper and keeps what it
  reads, pongs removed, in a buffer (at most :data:`READ_BUFFER_LIMIT` bytes; when full it
  stops reading, the kernel's buffers fill and the peer is slowed down, no byte is dropped).
  The application's ``recv``/``recv_into``/``makefile`` read from that buffer. So pongs are
  consumed, and an end of stream, a reset or a kernel timeout is seen, even while the
  application reads nothing (a request/response client between requests): without a reader,
  unread pongs would count as life forever and a dead peer behind a NAT would go unnoticed.
  (While the buffer is full, bytes wait in the kernel and count as life, as on any monitored
  socket: the application is behind, not the peer.)
  Do not ``select`` on ``conn.fileno()`` for readability; use ``recv`` with a timeout
  (``settimeout``) and :meth:`~SupervisedSocket.pending`. Writes go straight to the socket
  (``send``/``sendall``, with the heartbeat's guarantee that no ping lands inside them).
* **When a connection is over.** The first of these ends it, and gives the reason passed to
  ``on_disconnect``: the reader reads end of stream (``PEER_CLOSED``) or an error (``RESET``,
  ``KERNEL_TIMEOUT``, ``ERROR``, classified by :func:`~keepalive.supervision.classify_disconnect`);
  the heartbeat declares the peer dead (``HEARTBEAT_TIMEOUT``); an application write fails
  with a connection error (classified the same way; timeouts of the application's own
  ``settimeout`` are not failures); the application closes the connection, the handler
  returns, or :meth:`Supervisor.close` is called (``CLOSED``: ended on this side); the handler
  raises (its exception, classified, mostly ``ERROR``). The supervisor then shuts the socket
  down and closes it, which wakes every thread blocked on it.
* **After the end**, a thread still holding the old connection reads the bytes that were
  buffered before the end, then gets ``b""`` (end of stream) or the connection error that
  ended it (``PeerUnresponsive``, ``ConnectionResetError``, ...); a connection ended on this
  side, or by a handler's exception, gives ``OSError(EBADF)``. Writes fail. Call
  :meth:`Supervisor.wait_connected` for the next one. Closing the connection yourself asks
  for a new one; to stop, close the supervisor.
* **Two ways to use it.** Without a ``handler``, threads take :attr:`Supervisor.connection`
  (``None`` while down) or :meth:`Supervisor.wait_connected`. With ``handler(conn)``, the
  handler runs once per connection on its own thread (``keepalive-handler:...``), started
  after ``on_connect`` passed; when it returns, the connection is closed and replaced (a
  handler that wants to stop everything calls :meth:`Supervisor.close`, which is safe from
  the handler and from every hook). The supervisor waits for the handler to return before it
  reconnects, so handlers never overlap: a handler must return once calls on its connection
  fail (every call does, promptly, after the end).
* **Never two live connections.** The previous connection is shut down, closed, and its
  handler joined before the next attempt starts.
* **Hooks** run on the supervisor thread. ``on_connect(conn)`` runs before the connection is
  published (re-handshake, resubscribe); it may read and write the connection directly; if it
  raises, the attempt counts as failed (the retry policy's ``is_retryable`` judges its
  exception like a connect error: a ``ConnectionError`` or ``TimeoutError`` is retried, a
  ``ValueError`` makes the supervisor give up unless ``retry_on`` says otherwise).
  ``on_disconnect(reason, error)`` after a published connection ended; ``on_backoff(delay,
  error)`` before every wait, after a failed attempt or an ended connection (``delay`` 0.0
  after a connection that stayed up ``healthy_after`` seconds). Exceptions from these two are
  logged and ignored.
* **Backoff across outages** follows :class:`~keepalive.supervision.SupervisorCore`: a
  connection that stayed up ``healthy_after`` seconds earns an immediate reconnect and a fresh
  backoff sequence; a shorter one continues the sequence (and its end counts as a failed
  attempt, so a server that accepts and drops every connection makes the policy give up when
  it is bounded; the end's error is judged by the policy like a connect error, so a handler
  raising ``RuntimeError`` soon after connecting makes a default policy give up). When the
  policy gives up, :attr:`Supervisor.state` is ``FAILED``, the thread ends, and
  :meth:`~Supervisor.wait_connected` raises :class:`~keepalive.errors.ConnectFailed`.
* **Prompt close.** Every wait of the supervisor thread (backoff, connect, TLS handshake,
  reading) is a ``poll`` that includes a wake-up socket pair, and connects are non-blocking
  (the dial of :mod:`keepalive.dial` waits for them through that poll), so
  :meth:`Supervisor.close` interrupts a backoff wait, a connect to a black hole (SYN never
  answered) or a read at once. It closes the live connection, then joins the thread (unless
  called from the supervisor or handler thread itself). Not interruptible: name resolution
  (``getaddrinfo``; use numeric addresses where that matters), a hook or handler that blocks
  on something other than the connection.
* **Connecting** is :func:`keepalive.connect`'s dial, one attempt at a time: kernel
  keepalive (strict) configured on each socket before it connects, every address the name
  resolves to tried, each with ``connect_timeout`` (default: the policy's; also the TLS
  handshake's bound). A keepalive setting this platform cannot honour is refused by the
  constructor.
* **Without a heartbeat** (``heartbeat=None``) a connection is a plain one: nothing is
  pinged, scheduled or filtered (kernel keepalive, end of stream and errors still end
  connections); see :class:`SupervisedSocket` for what its heartbeat read-outs say then.

Logging goes to the ``keepalive.supervisor`` logger (see :mod:`keepalive.supervision`):
DEBUG per attempt, INFO for connections made and failed attempts, WARNING for ended
connections and failing ``on_connect`` or handlers, ERROR when giving up or when
``on_disconnect``/``on_backoff`` raise.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import math
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from typing_extensions import Buffer, Self

from keepalive._validate import positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.dial import _AttemptError, _dialer, _peer_address
from keepalive.errors import InvalidSocket
from keepalive.framing import Framing, PongMatcher, PongSource
from keepalive.heartbeat import Heartbeat, HeartbeatConfig
from keepalive.reconnect import Backoff, RetryPolicy, StopReason
from keepalive.supervision import (
    AttemptFailure,
    DisconnectReason,
    NextAttempt,
    OnBackoff,
    OnDisconnect,
    SupervisorCore,
    SupervisorOptions,
    SupervisorState,
    SupervisorStats,
    classify_disconnect,
    ended_during_on_connect,
)
from keepalive.sync.connection import MonitoredSocket, PingSource, _recv_into_view

__all__ = [
    "READ_BUFFER_LIMIT",
    "Handler",
    "OnBackoff",
    "OnConnect",
    "OnDisconnect",
    "PongSource",
    "SupervisedSocket",
    "Supervisor",
]

if TYPE_CHECKING:
    import ssl as ssl_module

READ_BUFFER_LIMIT = 256 * 1024
"""Bytes the supervisor reads ahead of the application per connection before it stops reading."""

_READ_CHUNK = 64 * 1024
_HAVE_POLL = hasattr(select, "poll")
_EAGAIN_MESSAGE = os.strerror(errno.EAGAIN)


class _Cancelled(Exception):
    """The supervisor was closed while connecting."""


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "the supervised connection is closed")


def _is_own_timeout(exc: OSError) -> bool:
    """A timeout of the wrapper's own ``settimeout`` (not the kernel's ETIMEDOUT)."""
    return isinstance(exc, TimeoutError) and exc.errno is None


def _is_failure(exc: OSError) -> bool:
    """Whether an error from a call on the connection means the connection is broken."""
    return not isinstance(exc, (BlockingIOError, InterruptedError)) and not _is_own_timeout(exc)


def _fresh(error: BaseException) -> BaseException:
    """A copy of ``error`` to raise once more (one exception object, raised by several
    threads, would share and grow one traceback)."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception class copy cannot rebuild: raise the original
        return error
    clone.__cause__ = error
    return clone


# ---------------------------------------------------------------------------------------------
# Waiting with a wake-up: every wait of the supervisor thread goes through here


class _Waker:
    """A socket pair whose write end wakes the supervisor thread out of any of its waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._closed = False

    def wake(self) -> None:
        with self._lock:  # never write to a closed (and possibly reused) descriptor
            if self._closed:
                return
            with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is pending anyway
                self._writer.send(b"\0")

    def wait(self, sock: socket.socket | None, *, write: bool, timeout: float | None) -> bool:
        """Wait until woken, ``sock`` is ready (readable, or writable with ``write``; errors
        count as ready) or ``timeout`` passed. True when ``sock`` is ready."""
        wake_fd = self._reader.fileno()
        fd = None if sock is None else sock.fileno()
        if fd is not None and fd < 0:
            return True  # closed meanwhile: the caller's next call on it reports that
        if _HAVE_POLL:
            poller = select.poll()
            poller.register(wake_fd, select.POLLIN)
            if fd is not None:
                poller.register(fd, select.POLLOUT if write else select.POLLIN)
            wait_ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
            events = poller.poll(wait_ms)
            ready_fds = {ready for ready, _mask in events}
        else:  # Windows: select() takes sockets; failed connects show in the error set
            watched = [] if fd is None else [fd]
            readable, writable, failed = select.select(
                [wake_fd, *([] if write else watched)],
                watched if write else [],
                watched,
                timeout,
            )
            ready_fds = {*readable, *writable, *failed}
        if wake_fd in ready_fds:
            self._drain()
        return fd is not None and fd in ready_fds

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._reader.close()
            self._writer.close()


# ---------------------------------------------------------------------------------------------
# The connection handed to the application


class SupervisedSocket(MonitoredSocket):
    """A supervised connection: a :class:`~keepalive.sync.MonitoredSocket` whose inbound bytes
    are read ahead by the supervisor thread (see the module docstring).

    Differences from a plain monitored socket: ``recv``/``recv_into`` (and files from
    ``makefile``) read the supervisor's buffer, so they never miss an end the supervisor saw;
    after the end they return what was buffered, then ``b""`` or the error that ended it;
    :meth:`pending` counts buffered bytes; :meth:`close` ends the connection and makes the
    supervisor open a new one. :attr:`disconnect_reason` tells whether, and why, it ended.
    Created by :class:`Supervisor` only.

    Without a heartbeat (``heartbeat=None``) it is a plain connection: nothing is pinged,
    scheduled or filtered, reads and writes go straight through, :attr:`heartbeat` and
    :attr:`config` are ``None``, :attr:`monitoring` is False, :attr:`rtt`/:attr:`srtt` are
    ``None``, and :attr:`stats` counts bytes only (pings, pongs, stalls: 0).
    """

    _heartbeat_optional = True

    def __init__(
        self,
        sock: socket.socket,
        *,
        heartbeat: HeartbeatConfig | None,
        ping: PingSource,
        pong: PongMatcher | None,
        wake: Callable[[], None],
    ) -> None:
        # Set before the heartbeat starts: its on_dead may use them.
        self._wake_supervisor = wake
        self._reading = threading.Condition(threading.Lock())
        self._buffer = bytearray()
        self._buffered = False  # direct reads (on_connect) until the supervisor reads ahead
        self._end: tuple[DisconnectReason, BaseException | None] | None = None
        self._closed_by_application = False
        self._peer_address = _peer_address(sock)
        super().__init__(
            sock,
            heartbeat=heartbeat,  # type: ignore[arg-type]  # None: none (_heartbeat_optional)
            ping=ping,
            pong=pong,
            on_dead=_heartbeat_died,
        )

    # -- read-outs ---------------------------------------------------------------------------

    # A supervised connection may run without a heartbeat, which a socket from monitor()
    # never does: hence the wider types.
    @property
    def heartbeat(self) -> Heartbeat | None:  # type: ignore[override]
        """The heartbeat state machine (read its properties, never call its methods), or
        ``None`` without a heartbeat."""
        return self._heartbeat

    @property
    def config(self) -> HeartbeatConfig | None:  # type: ignore[override]
        """The heartbeat configuration, or ``None`` without a heartbeat."""
        return self._config

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, or ``None`` while it is live."""
        end = self._end
        return None if end is None else end[0]

    @property
    def disconnect_error(self) -> BaseException | None:
        """The error that ended this connection (``None`` while live or for a clean end)."""
        end = self._end
        return None if end is None else end[1]

    def pending(self) -> int:
        """Bytes read ahead and waiting for ``recv``."""
        return len(self._buffer) + super().pending()

    # -- reading (from the supervisor's buffer) ----------------------------------------------

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes; ``b""`` at end of stream. Raises the error that ended the
        connection once its buffered bytes are read, ``OSError(EBADF)`` after a close on this
        side, ``TimeoutError``/``BlockingIOError`` per :meth:`settimeout`."""
        if not self._buffered:
            return super().recv(bufsize, flags)
        limit = self._check_read(bufsize, flags)
        if limit == 0:
            return b""
        with self._reading:
            self._await_bytes_locked()
            was_full = len(self._buffer) >= READ_BUFFER_LIMIT
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
        if was_full and data:
            self._wake_supervisor()  # room again: the supervisor may read on
        return data

    def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into ``buffer``; returns the count (0 at end of stream)."""
        if not self._buffered:
            return super().recv_into(buffer, nbytes, flags)
        view, wanted = _recv_into_view(buffer, nbytes)
        with view:
            limit = self._check_read(wanted, flags)
            if limit == 0:
                return 0
            with self._reading:
                self._await_bytes_locked()
                was_full = len(self._buffer) >= READ_BUFFER_LIMIT
                count = min(limit, len(self._buffer))
                view[:count] = self._buffer[:count]
                del self._buffer[:count]
        if was_full and count:
            self._wake_supervisor()
        return count

    def _await_bytes_locked(self) -> None:
        """Return once bytes are buffered or the stream ended cleanly; raise otherwise."""
        timeout = self.gettimeout()
        deadline = None if not timeout else time.monotonic() + timeout
        while True:
            if self._closed_by_application:
                raise _closed_error()
            if self._buffer:
                return
            end = self._end
            if end is not None:
                reason, error = end
                if isinstance(error, OSError):  # PeerUnresponsive, a reset, ETIMEDOUT, ...
                    raise _fresh(error)
                if reason is DisconnectReason.PEER_CLOSED:
                    return  # end of stream
                raise _closed_error()  # ended on this side (or by a handler's own exception)
            if timeout == 0:
                raise BlockingIOError(errno.EAGAIN, _EAGAIN_MESSAGE)
            if deadline is None:
                self._reading.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self._reading.wait(remaining)

    # -- writing (straight through; failures end the connection) ------------------------------

    def sendall(self, data: Buffer, flags: int = 0) -> None:
        """Write all of ``data`` (see :meth:`MonitoredSocket.sendall`); a connection error
        ends the connection."""
        try:
            super().sendall(data, flags)
        except OSError as exc:
            self._write_failed(exc)
            raise

    def send(self, data: Buffer, flags: int = 0) -> int:
        """Write some of ``data`` (see :meth:`MonitoredSocket.send`); a connection error ends
        the connection."""
        try:
            return super().send(data, flags)
        except OSError as exc:
            self._write_failed(exc)
            raise

    def _write_failed(self, exc: OSError) -> None:
        if self._buffered and _is_failure(exc):
            self._end_with(classify_disconnect(exc), exc)

    # -- ending -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the supervisor replaces it (close the supervisor to stop)."""
        if not self.closed:
            self._closed_by_application = True
            self._end_with(DisconnectReason.CLOSED, None)
        super().close()
        with self._reading:
            self._reading.notify_all()

    def _end_with(self, reason: DisconnectReason, error: BaseException | None) -> bool:
        """Record the end (the first one wins), shut the socket down (waking every call on
        it, the supervisor's read included) and wake the supervisor. True if this was it."""
        with self._reading:
            if self._end is not None:
                return False
            self._end = (reason, error)
            self._reading.notify_all()
        with contextlib.suppress(OSError):  # already closed, or never connected any more
            MonitoredSocket.shutdown(self, socket.SHUT_RDWR)
        self._wake_supervisor()
        return True

    def _retire(self) -> None:
        """The supervisor is done with it: end it (if not yet) and close it."""
        self._end_with(DisconnectReason.CLOSED, None)
        MonitoredSocket.close(self)
        with self._reading:
            self._reading.notify_all()

    # -- for the supervisor's reader ----------------------------------------------------------

    def _room(self) -> int:
        return READ_BUFFER_LIMIT - len(self._buffer)

    def _feed(self, data: bytes) -> None:
        with self._reading:
            self._buffer += data
            self._reading.notify_all()


OnConnect: TypeAlias = Callable[[SupervisedSocket], object]
"""``on_connect(conn)``: runs before a new connection is published; raising fails the attempt."""

Handler: TypeAlias = Callable[[SupervisedSocket], object]
"""``handler(conn)``: serves one connection on its own thread; returning ends the connection."""


def _heartbeat_died(sock: MonitoredSocket, error: BaseException) -> None:
    """``on_dead`` of every supervised socket (runs on the heartbeat scheduler thread)."""
    if isinstance(sock, SupervisedSocket):
        # Bytes received before the verdict (a partial pong the matcher held) are the
        # application's: into its buffer before the end is recorded.
        with sock._state_lock:
            held = sock._inbox + (sock._matcher.flush() if sock._matcher is not None else b"")
            sock._inbox = b""
        if held:
            sock._feed(held)
        sock._end_with(DisconnectReason.HEARTBEAT_TIMEOUT, error)


# ---------------------------------------------------------------------------------------------
# The supervisor


class Supervisor:
    """Keeps one TCP connection to ``address`` up, reconnecting per ``retry``.

    ``keepalive``: kernel keepalive for each socket (``None``: leave it). ``heartbeat``,
    ``ping``, ``pong``: the application-level heartbeat (``None``: none); ``pong`` is a token,
    a predicate on messages or ``None``, matched per ``framing``
    (:func:`keepalive.framing.make_pong_matcher`); ``pong_matcher``: a factory of your own
    :class:`~keepalive.framing.PongMatcher` instead (one per connection). ``retry``: the
    reconnect policy (:class:`~keepalive.reconnect.Backoff` or any
    :class:`~keepalive.reconnect.RetryPolicy`). ``healthy_after``: seconds a connection must
    stay up to reset the backoff. ``connect_timeout``: per address and attempt (default: the
    policy's). Hooks ``on_connect``, ``on_disconnect``, ``on_backoff`` and the per-connection
    ``handler``: see the module docstring. ``rng``: seeds the policy's jitter. ``name``:
    for thread names and logs (default ``host:port``). ``ssl`` (an :class:`ssl.SSLContext`)
    and ``server_hostname`` (default: the address's host): TLS on every connection, its
    handshake bounded by ``connect_timeout`` and interrupted by :meth:`close`, before
    ``on_connect``; pings and pongs travel inside TLS, as with :mod:`keepalive.aio`.

    Every argument is checked here (a kernel keepalive setting this platform cannot honour
    included), before anything connects. Use as a context manager, or :meth:`start` then
    :meth:`close`. Thread-safe.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
        heartbeat: HeartbeatConfig | None = None,
        ping: PingSource = b"PING\n",
        pong: PongSource = b"PONG\n",
        framing: Framing | None = None,
        pong_matcher: Callable[[], PongMatcher] | None = None,
        retry: RetryPolicy = Backoff(),  # noqa: B008 - immutable value
        healthy_after: float = 30.0,
        connect_timeout: float | None = None,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_backoff: OnBackoff | None = None,
        handler: Handler | None = None,
        rng: random.Random | None = None,
        name: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._options = options = SupervisorOptions.check(
            address,
            heartbeat=heartbeat,
            ping=ping,
            pong=pong,
            framing=framing,
            pong_matcher=pong_matcher,
            retry=retry,
            healthy_after=healthy_after,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_backoff=on_backoff,
            handler=handler,
            handler_shape="(conn)",
            rng=rng,
            name=name,
            ssl=ssl,
            server_hostname=server_hostname,
        )
        self._dialer = _dialer(
            options.address,
            keepalive=keepalive,
            retry=options.retry,
            connect_timeout=connect_timeout,
        )
        self._label = options.label
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a connection came or went, or the end
        self._core = SupervisorCore.for_options(options)
        self._waker: _Waker | None = None
        self._thread: threading.Thread | None = None
        self._handler_thread: threading.Thread | None = None
        self._live: SupervisedSocket | None = None  # exists: in on_connect, or published
        self._current: SupervisedSocket | None = None  # published to the application

    @property
    def _closing(self) -> bool:
        return self._core.is_closed

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the supervisor thread; returns ``self``. Only once."""
        with self._lock:
            if self._closing:
                raise RuntimeError(f"supervisor for {self._label} is closed")
            if self._thread is not None:
                raise RuntimeError(f"supervisor for {self._label} was already started")
            self._waker = _Waker()
            self._thread = threading.Thread(
                target=self._run, name=f"keepalive-supervisor:{self._label}", daemon=True
            )
            try:
                self._thread.start()
            except BaseException:
                self._waker.close()
                self._waker = None
                self._thread = None
                raise
        return self

    def close(self) -> None:
        """Stop: end the live connection (``on_disconnect(CLOSED, None)``), interrupt any
        backoff wait or connect, and wait for the supervisor thread to finish (not when
        called from the supervisor or handler thread: then it ends right after). Idempotent."""
        with self._lock:
            first = self._core.closed(time.monotonic())
            if first:
                self._changed.notify_all()
            waker = self._waker
            live = self._live
            thread = self._thread
            handler_thread = self._handler_thread
        if first:
            self._core.log_closing()
        if waker is not None:
            waker.wake()
        if live is not None:
            live._retire()
        me = threading.current_thread()
        if thread is not None and me is not thread and me is not handler_thread:
            thread.join()

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- for the application -----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the supervisor connects to."""
        return self._options.address

    @property
    def connection(self) -> SupervisedSocket | None:
        """The live connection, or ``None`` while there is none."""
        current = self._current
        return current if current is not None and current._end is None else None

    def wait_connected(self, timeout: float | None = None) -> SupervisedSocket:
        """The live connection, waiting up to ``timeout`` seconds (None: forever) for one.

        Raises ``TimeoutError`` when none came in time, :class:`~keepalive.errors.ConnectFailed`
        when the supervisor is closed (``reason="closed"``) or its policy gave up
        (``"exhausted"``, ``"deadline"``, ``"not retryable"``; ``__cause__`` is the last error,
        ``attempts`` the current outage's failures), ``RuntimeError`` before :meth:`start`.
        """
        if timeout is not None:
            timeout = positive_seconds("timeout", timeout, allow_zero=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                current = self._current
                if current is not None and current._end is None:
                    return current  # (an ended one is about to be replaced: wait for that)
                if self._core.finished:
                    raise self._core.failure()
                if self._thread is None:
                    raise RuntimeError(f"supervisor for {self._label} is not started")
                if deadline is None:
                    self._changed.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no connection to {self._label} within {timeout:g} s")
                self._changed.wait(remaining)

    @property
    def state(self) -> SupervisorState:
        """Where the supervisor stands (see :class:`~keepalive.supervision.SupervisorState`)."""
        with self._lock:
            return self._core.state

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the policy gave up (state ``FAILED``), else ``None``."""
        with self._lock:
            return self._core.stop_reason

    @property
    def stats(self) -> SupervisorStats:
        """Counters and uptimes for monitoring (a snapshot)."""
        with self._lock:
            return self._core.stats(time.monotonic())

    def __repr__(self) -> str:
        return f"<Supervisor {self._label} {self.state}>"

    # -- the supervisor thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:  # a bug here: do not leave waiters hanging
            self._core.log_crashed(exc)
            with self._lock:
                self._core.crashed(exc)
        finally:
            with self._lock:
                live, self._live, self._current = self._live, None, None
                self._changed.notify_all()
                waker, self._waker = self._waker, None
            if live is not None:
                live._retire()
            if waker is not None:
                waker.close()

    def _supervise(self) -> None:
        while True:
            outcome = self._attempt()
            if outcome is None:  # closed
                return
            if isinstance(outcome, SupervisedSocket):
                reason, error = self._serve(outcome)
                with self._lock:
                    outcome = self._core.disconnected(
                        reason, error, time.monotonic(), peer=outcome._peer_address
                    )
                    if outcome.delay is None:
                        self._changed.notify_all()
            if not self._follow(outcome):
                return

    def _follow(self, step: NextAttempt) -> bool:
        """Call the hooks due after ``step`` and wait for the next attempt; False to stop."""
        for name, hook, args in self._core.hook_calls(step):
            try:
                hook(*args)
            except Exception as exc:
                self._core.hook_raised(name, exc)
        return step.delay is not None and self._wait(step.delay)

    # -- connecting --------------------------------------------------------------------------

    def _attempt(self) -> SupervisedSocket | NextAttempt | None:
        """One attempt: the published connection, the core's answer to its failure, or None
        once closed."""
        with self._lock:
            attempt = self._core.attempt_started(time.monotonic())
        if attempt is None:
            return None
        self._core.log_attempt(attempt)
        try:
            raw = self._dialer.attempt(attempt, wait=self._wait_writable)
        except _Cancelled:
            return None
        except _AttemptError as exc:
            return self._failed(exc.last, failures=exc.failures)
        except Exception as exc:  # e.g. configuring keepalive failed
            return self._failed(exc)
        peer = _peer_address(raw)
        try:
            if self._options.ssl is not None:
                raw = self._start_tls(raw, self._options.ssl)
            conn = SupervisedSocket(
                raw,
                heartbeat=self._options.heartbeat,
                ping=self._options.ping,
                pong=self._options.new_matcher(),
                wake=self._wake,
            )
        except _Cancelled:
            raw.close()
            return None
        except InvalidSocket as exc:
            # Reset between the connect and the heartbeat's start (not connected any more):
            # a connection failure the retry policy judges as such, not a bad argument.
            raw.close()
            reset = ConnectionResetError(errno.ECONNRESET, f"the connection ended at once: {exc}")
            return self._failed(reset, address=peer)
        except BaseException as exc:
            raw.close()
            if isinstance(exc, Exception):
                return self._failed(exc, address=peer)
            raise
        with self._lock:
            closing = self._closing
            if not closing:
                self._live = conn
        if closing:
            conn._retire()
            return None
        try:
            if self._options.on_connect is not None:
                self._options.on_connect(conn)
            if conn._end is not None:
                raise ended_during_on_connect(*conn._end)
        except Exception as exc:
            conn._retire()
            with self._lock:
                self._live = None
            if self._closing:
                return None
            self._core.log_on_connect_failed(exc)
            return self._failed(exc, address=peer)
        except BaseException:
            conn._retire()
            raise
        with self._lock:
            closing = self._closing
            if closing:
                self._live = None
            else:
                conn._buffered = True  # from now on the supervisor reads ahead
                self._core.connected(time.monotonic())
                self._current = conn
                self._changed.notify_all()
        if closing:
            conn._retire()
            return None
        self._core.log_connected(attempt)
        return conn

    def _failed(
        self,
        error: BaseException,
        *,
        failures: Sequence[AttemptFailure] = (),
        address: tuple[Any, ...] | None = None,
    ) -> NextAttempt:
        """Tell the core the attempt failed; its answer."""
        with self._lock:
            step = self._core.attempt_failed(
                error, time.monotonic(), failures=failures, address=address
            )
            if step.delay is None:
                self._changed.notify_all()
        return step

    def _wait_writable(self, sock: socket.socket, timeout: float) -> bool:
        """The dial's wait for a connecting ``sock``, in a poll that close() can wake."""
        assert self._waker is not None
        if self._closing:
            raise _Cancelled
        ready = self._waker.wait(sock, write=True, timeout=timeout)
        if self._closing:
            raise _Cancelled
        return ready

    def _start_tls(self, sock: socket.socket, context: ssl_module.SSLContext) -> socket.socket:
        """TLS on the connected ``sock``: a non-blocking handshake in polls close() can wake,
        within the connect timeout. Closes ``sock`` on failure."""
        import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

        try:
            tls = context.wrap_socket(
                sock, server_hostname=self._options.server_hostname, do_handshake_on_connect=False
            )
        except BaseException:
            sock.close()
            raise
        timeout = self._dialer.timeout
        try:
            tls.setblocking(False)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl_module.SSLWantReadError:
                    write = False
                except ssl_module.SSLWantWriteError:
                    write = True
                if self._closing:
                    raise _Cancelled
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        errno.ETIMEDOUT, f"TLS handshake timed out after {timeout:g} s"
                    )
                assert self._waker is not None
                self._waker.wait(tls, write=write, timeout=remaining)
            tls.setblocking(True)
        except BaseException:
            tls.close()
            raise
        return tls

    # -- connected ---------------------------------------------------------------------------

    def _serve(self, conn: SupervisedSocket) -> tuple[DisconnectReason, BaseException | None]:
        """Read ahead until the connection ends; then close it and join its handler."""
        handler_thread = None
        if self._options.handler is not None:
            handler_thread = threading.Thread(
                target=self._run_handler,
                args=(self._options.handler, conn),
                name=f"keepalive-handler:{self._label}",
                daemon=True,
            )
            with self._lock:
                self._handler_thread = handler_thread
            handler_thread.start()
        try:
            self._read_ahead(conn)
        finally:
            with self._lock:
                self._current = None
                self._live = None
                self._changed.notify_all()
            conn._retire()
            if handler_thread is not None:
                handler_thread.join()  # its calls on conn fail now: it returns
                with self._lock:
                    self._handler_thread = None
        end = conn._end
        assert end is not None  # _retire recorded one at the latest
        return end

    def _read_ahead(self, conn: SupervisedSocket) -> None:
        """Move inbound bytes into the connection's buffer until the connection ends."""
        assert self._waker is not None
        raw = conn.socket
        while conn._end is None and not self._closing:
            room = conn._room()
            if room <= 0:  # the application is behind: wait until its recv makes room
                self._waker.wait(None, write=False, timeout=None)
                continue
            # Bytes the heartbeat wrapper already holds (a pong filter's leftovers) do not
            # show in poll: read them without waiting.
            if not MonitoredSocket.pending(conn) and not self._waker.wait(
                raw, write=False, timeout=None
            ):
                continue  # woken: look at the flags again
            try:
                data = MonitoredSocket.recv(conn, min(room, _READ_CHUNK))
            except OSError as exc:
                if not _is_failure(exc):
                    continue  # only a pong (or part of one) was there
                conn._end_with(classify_disconnect(exc), exc)
                return
            if not data:
                conn._end_with(DisconnectReason.PEER_CLOSED, None)
                return
            conn._feed(data)

    def _run_handler(self, handler: Handler, conn: SupervisedSocket) -> None:
        try:
            handler(conn)
        except BaseException as exc:  # ends this connection; the supervisor decides what next
            if conn._end is None and not self._closing:
                self._core.log_handler_raised(exc)
            conn._end_with(classify_disconnect(exc), exc)
        else:
            conn._end_with(DisconnectReason.CLOSED, None)

    # -- waiting -----------------------------------------------------------------------------

    def _wait(self, delay: float) -> bool:
        """Wait ``delay`` seconds before the next attempt; False when closed meanwhile."""
        assert self._waker is not None
        deadline = time.monotonic() + delay
        while not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._waker.wait(None, write=False, timeout=remaining)
        return False

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.wake()
