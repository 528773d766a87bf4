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

and a :class:`~keepalive.supervision.SupervisorCore` decides the delays, the give-up, and keeps
the counters (:attr:`Supervisor.stats`). Decisions worth knowing:

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
* **Prompt close.** Every wait of the supervisor thread (backoff, connect, reading) is a
  ``poll`` that includes a wake-up socket pair, and connects are non-blocking, so
  :meth:`Supervisor.close` interrupts a backoff wait, a connect to a black hole (SYN never
  answered) or a read at once. It closes the live connection, then joins the thread (unless
  called from the supervisor or handler thread itself). Not interruptible: name resolution
  (``getaddrinfo``; use numeric addresses where that matters), a hook or handler that blocks
  on something other than the connection.
* **Kernel keepalive** is configured (strict) on each socket before it connects, as by
  :func:`keepalive.connect`; each attempt tries every address the name resolves to, each with
  ``connect_timeout`` (default: the policy's). ``heartbeat=None`` runs no heartbeat (kernel
  keepalive, end of stream and errors still end connections) and filters no pongs.

Logging goes to the ``keepalive.supervisor`` logger: DEBUG per attempt, INFO for connections
made and failed attempts, WARNING for ended connections and failing ``on_connect`` or handlers,
ERROR when giving up or when ``on_disconnect``/``on_backoff`` raise.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import math
import os
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from typing_extensions import Buffer, Self

from keepalive._validate import positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.dial import AttemptFailure
from keepalive.errors import ConnectFailed, InvalidSetting, InvalidSettingType, InvalidSocket
from keepalive.framing import Framing, PongMatcher, PongSource, pong_matcher_factory
from keepalive.heartbeat import HeartbeatConfig, check_ping
from keepalive.reconnect import Backoff, RetryPolicy, StopReason
from keepalive.sockets import configure
from keepalive.supervision import (
    DisconnectReason,
    SupervisorCore,
    SupervisorState,
    SupervisorStats,
    check_address,
    check_callable,
    classify_disconnect,
)
from keepalive.sync.connection import MonitoredSocket, PingSource

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

logger = logging.getLogger("keepalive.supervisor")
logging.getLogger("keepalive").addHandler(logging.NullHandler())

READ_BUFFER_LIMIT = 256 * 1024
"""Bytes the supervisor reads ahead of the application per connection before it stops reading."""

_READ_CHUNK = 64 * 1024
_FAILURES_KEPT = 64  # attempt failures of the current outage kept for ConnectFailed.attempts
_NO_HEARTBEAT = HeartbeatConfig(interval=3600.0, timeout=3600.0)  # placeholder, stopped at once
_IN_PROGRESS = frozenset(
    code
    for code in (
        errno.EINPROGRESS,
        errno.EWOULDBLOCK,
        errno.EAGAIN,
        errno.EALREADY,
        errno.EINTR,
        getattr(errno, "WSAEWOULDBLOCK", None),
    )
    if code is not None
)
_HAVE_POLL = hasattr(select, "poll")
# ConnectFailed.reason when the policy gave up ("failed": the supervisor thread itself failed)
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
    """

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
        self._peer_address = _peer(sock)
        super().__init__(
            sock,
            heartbeat=_NO_HEARTBEAT if heartbeat is None else heartbeat,
            ping=ping,
            pong=None if heartbeat is None else pong,
            on_dead=_heartbeat_died,
        )
        if heartbeat is None:
            # monitor() has no "no heartbeat" mode: stop it before its first deadline.
            self._stop_quietly()

    # -- read-outs ---------------------------------------------------------------------------

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
        limit = _check_read(bufsize, flags)
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
        with memoryview(buffer) as raw, raw.cast("B") as view:
            if isinstance(nbytes, bool) or not isinstance(nbytes, int):
                raise InvalidSettingType("nbytes", nbytes, "a whole number >= 0")
            if nbytes < 0:
                raise InvalidSetting("nbytes", nbytes, "a whole number >= 0")
            if nbytes > len(view):
                raise InvalidSetting("nbytes", nbytes, f"at most the buffer's size, {len(view)}")
            limit = _check_read(nbytes or len(view), flags)
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

OnDisconnect: TypeAlias = Callable[[DisconnectReason, BaseException | None], object]
"""``on_disconnect(reason, error)``: a published connection ended (``error`` None: no error)."""

OnBackoff: TypeAlias = Callable[[float, BaseException | None], object]
"""``on_backoff(delay, error)``: the supervisor waits ``delay`` seconds before the next attempt."""

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


def _check_read(bufsize: object, flags: object) -> int:
    if flags != 0:
        raise InvalidSetting("flags", flags, "0 (flags are not supported on a monitored socket)")
    if isinstance(bufsize, bool) or not isinstance(bufsize, int):
        raise InvalidSettingType("bufsize", bufsize, "a whole number >= 0")
    if bufsize < 0:
        raise InvalidSetting("bufsize", bufsize, "a whole number >= 0")
    return bufsize


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

    Use as a context manager, or :meth:`start` then :meth:`close`. Thread-safe.
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
        self._address = check_address(address)
        if ssl is not None:
            import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

            if not isinstance(ssl, ssl_module.SSLContext):
                raise InvalidSettingType("ssl", ssl, "an ssl.SSLContext or None")
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise InvalidSettingType("server_hostname", server_hostname, "a string or None")
        self._ssl = ssl
        self._server_hostname = self._address[0] if server_hostname is None else server_hostname
        if keepalive is not None and not isinstance(keepalive, KeepaliveConfig):
            raise InvalidSettingType("keepalive", keepalive, "a KeepaliveConfig or None")
        if heartbeat is not None and not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a HeartbeatConfig or None")
        check_ping(ping)
        self._new_matcher = pong_matcher_factory(pong, framing, pong_matcher)
        if not isinstance(retry, RetryPolicy):
            raise InvalidSettingType("retry", retry, "a retry policy such as keepalive.Backoff()")
        if rng is not None and not isinstance(rng, random.Random):
            raise InvalidSettingType("rng", rng, "a random.Random instance or None")
        if name is not None and not isinstance(name, str):
            raise InvalidSettingType("name", name, "a string or None")
        check_callable("on_connect", on_connect, "(conn)")
        check_callable("on_disconnect", on_disconnect, "(reason, error)")
        check_callable("on_backoff", on_backoff, "(delay, error)")
        check_callable("handler", handler, "(conn)")
        self._connect_timeout = (
            retry.connect_timeout
            if connect_timeout is None
            else positive_seconds("connect_timeout", connect_timeout)
        )
        self._keepalive = keepalive
        self._heartbeat = heartbeat
        self._ping = ping
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_backoff = on_backoff
        self._handler = handler
        self._label = name if name is not None else f"{self._address[0]}:{self._address[1]}"

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a connection came or went, or the end
        self._core = SupervisorCore(retry, healthy_after=healthy_after, rng=rng)
        self._failures: deque[AttemptFailure] = deque(maxlen=_FAILURES_KEPT)
        self._closing = False
        self._waker: _Waker | None = None
        self._thread: threading.Thread | None = None
        self._handler_thread: threading.Thread | None = None
        self._live: SupervisedSocket | None = None  # exists: in on_connect, or published
        self._current: SupervisedSocket | None = None  # published to the application

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
            first = not self._closing
            if first:
                self._closing = True
                self._core.closed(time.monotonic())
                self._changed.notify_all()
            waker = self._waker
            live = self._live
            thread = self._thread
            handler_thread = self._handler_thread
        if first:
            logger.debug("closing the supervisor for %s", self._label)
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
        return self._address

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
                if self._closing or self._core.state is SupervisorState.FAILED:
                    raise self._failure_locked()
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
            logger.exception("the supervisor for %s failed", self._label)
            with self._lock:
                self._core.last_error = exc
                if self._core.state is not SupervisorState.CLOSED:
                    self._core.state = SupervisorState.FAILED
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
            if isinstance(outcome, BaseException):
                if not self._after_failed_attempt(outcome):
                    return
                continue
            reason, error = self._serve(outcome)
            if not self._after_disconnect(outcome, reason, error):
                return

    # -- connecting --------------------------------------------------------------------------

    def _attempt(self) -> SupervisedSocket | BaseException | None:
        """One attempt: the published connection, the error that failed it, or None if closed."""
        with self._lock:
            if self._closing:
                return None
            self._core.attempt_started(time.monotonic())
            attempt = self._core.attempts - 1
        logger.debug("connecting to %s (attempt %d)", self._label, attempt + 1)
        try:
            raw = self._dial(attempt)
            if self._ssl is not None:
                raw = self._start_tls(raw, self._ssl, attempt)
        except _Cancelled:
            return None
        except Exception as exc:
            return exc
        try:
            conn = SupervisedSocket(
                raw,
                heartbeat=self._heartbeat,
                ping=self._ping,
                pong=self._new_matcher(),
                wake=self._wake,
            )
        except InvalidSocket as exc:
            # Reset between the connect and the heartbeat's start (not connected any more):
            # a connection failure the retry policy judges as such, not a bad argument.
            raw.close()
            return ConnectionResetError(errno.ECONNRESET, f"the connection ended at once: {exc}")
        except BaseException as exc:
            raw.close()
            if isinstance(exc, Exception):
                return exc
            raise
        with self._lock:
            closing = self._closing
            if not closing:
                self._live = conn
        if closing:
            conn._retire()
            return None
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
            end = conn._end
            if end is not None:
                raise ConnectionAbortedError(
                    f"the connection ended during on_connect ({end[0]})"
                ) from end[1]
        except Exception as exc:
            conn._retire()
            with self._lock:
                self._live = None
                if self._closing:
                    return None
                self._failures.append(AttemptFailure(attempt, conn._peer_address, exc))
            logger.warning("on_connect for %s failed: %r", self._label, exc, exc_info=exc)
            return exc
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
                self._failures.clear()
                self._changed.notify_all()
                connects = self._core.connects
        if closing:
            conn._retire()
            return None
        logger.info(
            "connected to %s (attempt %d, connection %d)", self._label, attempt + 1, connects
        )
        return conn

    def _dial(self, attempt: int) -> socket.socket:
        """A connected, blocking socket with keepalive set; every resolved address in turn."""
        host, port = self._address
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            self._note_failure(AttemptFailure(attempt, None, exc))
            raise
        last: OSError | None = None
        for family, _kind, _proto, _name, sockaddr in infos:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if self._keepalive is not None:
                    configure(sock, self._keepalive)  # before the SYN: no window without it
                self._connect_socket(sock, sockaddr)
            except OSError as exc:
                sock.close()
                self._note_failure(AttemptFailure(attempt, tuple(sockaddr), exc))
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        if last is None:
            last = OSError(f"{host} resolved to no address")
            self._note_failure(AttemptFailure(attempt, None, last))
        raise last

    def _start_tls(
        self, sock: socket.socket, context: ssl_module.SSLContext, attempt: int
    ) -> socket.socket:
        """TLS on the connected ``sock``: a non-blocking handshake in polls close() can wake."""
        import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

        peer = _peer(sock)
        try:
            tls = context.wrap_socket(
                sock, server_hostname=self._server_hostname, do_handshake_on_connect=False
            )
        except BaseException as exc:
            sock.close()
            if isinstance(exc, Exception):
                self._note_failure(AttemptFailure(attempt, peer, exc))
            raise
        try:
            tls.setblocking(False)
            deadline = time.monotonic() + self._connect_timeout
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
                        errno.ETIMEDOUT,
                        f"TLS handshake timed out after {self._connect_timeout:g} s",
                    )
                assert self._waker is not None
                self._waker.wait(tls, write=write, timeout=remaining)
            tls.setblocking(True)
        except BaseException as exc:
            tls.close()
            if isinstance(exc, Exception) and not isinstance(exc, _Cancelled):
                self._note_failure(AttemptFailure(attempt, peer, exc))
            raise
        return tls

    def _connect_socket(self, sock: socket.socket, sockaddr: Any) -> None:
        """A non-blocking connect, waited for in a poll that close() can wake."""
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code in _IN_PROGRESS:
            deadline = time.monotonic() + self._connect_timeout
            while True:
                if self._closing:
                    raise _Cancelled
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        errno.ETIMEDOUT, f"connect timed out after {self._connect_timeout:g} s"
                    )
                assert self._waker is not None
                if self._waker.wait(sock, write=True, timeout=remaining):
                    break
            if self._closing:
                raise _Cancelled
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        sock.setblocking(True)

    def _note_failure(self, failure: AttemptFailure) -> None:
        with self._lock:
            self._failures.append(failure)

    def _after_failed_attempt(self, error: BaseException) -> bool:
        """Record a failed attempt and wait; False when the supervisor stops."""
        with self._lock:
            if self._closing:
                return False
            delay = self._core.attempt_failed(error, time.monotonic())
            attempts = self._core.attempts
            if delay is None:
                self._changed.notify_all()
        if delay is None:
            self._log_give_up(error)
            return False
        logger.info(
            "attempt %d to connect to %s failed (%s); retrying in %.3f s",
            attempts,
            self._label,
            error,
            delay,
        )
        return self._back_off(delay, error)

    # -- connected ---------------------------------------------------------------------------

    def _serve(self, conn: SupervisedSocket) -> tuple[DisconnectReason, BaseException | None]:
        """Read ahead until the connection ends; then close it and join its handler."""
        handler_thread = None
        if self._handler is not None:
            handler_thread = threading.Thread(
                target=self._run_handler,
                args=(self._handler, conn),
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
                logger.warning("handler for %s raised %r", self._label, exc, exc_info=exc)
            conn._end_with(classify_disconnect(exc), exc)
        else:
            conn._end_with(DisconnectReason.CLOSED, None)

    def _after_disconnect(
        self, conn: SupervisedSocket, reason: DisconnectReason, error: BaseException | None
    ) -> bool:
        """Account for the ended connection, call the hooks and wait; False to stop."""
        with self._lock:
            uptime = self._core.uptime(time.monotonic())
            delay = self._core.disconnected(reason, error, time.monotonic())
            closing = self._closing
            if delay is None and not closing:
                self._failures.append(
                    AttemptFailure(
                        self._core.attempts - 1,
                        conn._peer_address,
                        error or ConnectionResetError("connection ended"),
                    )
                )
                self._changed.notify_all()
        if closing:
            logger.info("connection to %s closed", self._label)
        else:
            logger.warning(
                "connection to %s ended after %.3f s: %s%s",
                self._label,
                uptime,
                reason,
                "" if error is None else f" ({error!r})",
            )
        self._call_hook("on_disconnect", self._on_disconnect, reason, error)
        if delay is None:
            if not closing:
                self._log_give_up(error)
            return False
        return self._back_off(delay, error)

    # -- waiting -----------------------------------------------------------------------------

    def _back_off(self, delay: float, error: BaseException | None) -> bool:
        """Call on_backoff and wait ``delay`` seconds; False when closed meanwhile."""
        if self._closing:  # e.g. by on_disconnect
            return False
        self._call_hook("on_backoff", self._on_backoff, delay, error)
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

    # -- helpers -----------------------------------------------------------------------------

    def _call_hook(self, field: str, hook: Callable[..., object] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception("%s hook for %s raised", field, self._label)

    def _log_give_up(self, error: BaseException | None) -> None:
        with self._lock:
            stop = self._core.stop_reason
            attempts = self._core.attempts
        logger.error(
            "giving up on %s after %d attempt(s) (%s); last error: %r",
            self._label,
            attempts,
            "unknown" if stop is None else stop.value,
            error,
        )

    def _failure_locked(self) -> ConnectFailed:
        """The error wait_connected raises once no connection will come (lock held)."""
        return self._core.failure(self._label, tuple(self._failures), closing=self._closing)


def _peer(sock: socket.socket) -> tuple[Any, ...] | None:
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    return tuple(peer) if isinstance(peer, tuple) else None
