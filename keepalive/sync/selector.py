"""Selector mode for blocking sockets: one watcher thread reads every watched socket.

Opt in with ``keepalive.sync.monitor(sock, ..., mode="selector")``. In the default mode each
application reader thread waits in ``poll`` on its own socket and filters the pongs it reads,
so every pong wakes that thread. Here one daemon thread per process (``keepalive-watcher``)
waits on all of them through :mod:`selectors` (epoll, kqueue, ...), reads what arrives, removes
whole pongs at message boundaries and hands the application bytes to the reader: a reader
thread wakes only for application bytes, end of stream, an error, a close or the verdict.

Decisions worth knowing:

* **Reads move to the watcher.** The kernel's bytes are read in chunks of up to 64 KiB; each
  chunk of application bytes is handed to the reader as the same ``bytes`` object when the
  reader asks for at least its size (no copy beyond the one out of the kernel), else split.
* **Bounded buffering.** At most ``_BUFFER_LIMIT`` bytes wait per socket; beyond that the
  watcher stops reading it until the reader catches up, so a slow reader holds its peer back
  through TCP as in the default mode (and bytes left in the kernel count as life).
* **Writes and pings are unchanged**: the scheduler thread pings, and never inside a write.
* **Plain sockets only.** TLS needs every OpenSSL call on one thread at a time and decrypts
  inside ``recv``: it is refused with :class:`~keepalive.errors.InvalidSetting`.
* ``select`` on :meth:`~MonitoredSocket.fileno` does not see bytes the watcher already read:
  non-blocking users check :meth:`SelectorSocket.pending` first (as for TLS).
* **Fork**: a child starts with no watcher; sockets inherited in selector mode read the
  default way there (bytes the parent's watcher had buffered come first).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING

from typing_extensions import Buffer

from keepalive.errors import InvalidSetting
from keepalive.framing import Framing, PongSource
from keepalive.heartbeat import HeartbeatConfig, PeerDead, PingSource
from keepalive.sync.connection import (
    _FORKS,
    _SELECTOR_MODE,
    _SLOW_READS,
    MonitoredSocket,
    OnDead,
    _closed_error,
    _recv_into_view,
    _recv_sized,
    _tls_errors,
)

if TYPE_CHECKING:
    from keepalive.config import KeepaliveConfig

__all__ = ["SelectorSocket", "watched_sockets"]

logger = logging.getLogger("keepalive.sync")

_THREAD_NAME = "keepalive-watcher"
_READ_SIZE = 64 * 1024  # one read of the watcher
# Bytes buffered per socket before the watcher stops reading it (resumes at half).
_BUFFER_LIMIT = 256 * 1024


class _Watcher:
    """The watcher thread and its selector (one per process, started on demand).

    Lock order: a monitor's state lock may be held while calling in here; the thread never
    holds ``_lock`` while it takes a state lock.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # Weak references of the sockets watched (read registered or paused).
        self._registered: set[weakref.ref[SelectorSocket]] = set()

    def active(self) -> int:
        return len(self._registered)

    def register(self, sock: SelectorSocket) -> None:
        with self._lock:
            if self._thread is None:
                self._start_locked()
            self._registered.add(sock._watch_ref)
            self._select_locked(sock)

    def pause(self, sock: SelectorSocket) -> None:
        """Stop reading ``sock`` (its buffer is full); it stays registered."""
        with self._lock:
            self._deselect_locked(sock)

    def resume(self, sock: SelectorSocket) -> None:
        with self._lock:
            if sock._watch_ref in self._registered:
                self._select_locked(sock)

    def unregister(self, sock: SelectorSocket) -> None:
        with self._lock:
            self._deselect_locked(sock)
            self._registered.discard(sock._watch_ref)
            if not self._registered:
                self._wake_locked()  # let the thread exit now

    def collected(self, ref: weakref.ref[SelectorSocket]) -> None:
        """A watched socket was garbage-collected (any thread, any time: no blocking lock)."""
        self._registered.discard(ref)
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"\0")

    def after_fork_in_child(self) -> None:
        # The parent's thread is gone; its selector and wake-up pair are the parent's.
        for resource in (self._selector, self._wake_r, self._wake_w):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()
        self._reset()

    def _start_locked(self) -> None:
        selector = selectors.DefaultSelector()
        wake_r, wake_w = socket.socketpair()
        try:
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            selector.register(wake_r, selectors.EVENT_READ, None)
            thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
            self._selector, self._wake_r, self._wake_w, self._thread = (
                selector,
                wake_r,
                wake_w,
                thread,
            )
            thread.start()
        except BaseException:
            selector.close()
            wake_r.close()
            wake_w.close()
            self._selector = self._wake_r = self._wake_w = self._thread = None
            raise
        logger.debug("watcher thread started")

    def _select_locked(self, sock: SelectorSocket) -> None:
        selector = self._selector
        assert selector is not None
        if sock._watch_fd in selector.get_map():
            key = selector.get_key(sock._watch_fd)
            if key.data is sock._watch_ref:
                return
            # A collected socket's descriptor, reused: epoll dropped it at close already.
            selector.unregister(sock._watch_fd)
        selector.register(sock._watch_fd, selectors.EVENT_READ, sock._watch_ref)

    def _deselect_locked(self, sock: SelectorSocket) -> None:
        selector = self._selector
        if selector is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            key = selector.get_key(sock._watch_fd)
            if key.data is sock._watch_ref:
                selector.unregister(sock._watch_fd)

    def _wake_locked(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _sweep_locked(self) -> None:
        """Forget descriptors of collected sockets (their fds are closed or reused)."""
        selector = self._selector
        assert selector is not None
        for key in list(selector.get_map().values()):
            ref = key.data
            if ref is not None and ref() is None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    selector.unregister(key.fd)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        me = threading.current_thread()
        with self._lock:
            selector, wake_r = self._selector, self._wake_r
        assert selector is not None
        assert wake_r is not None
        while True:
            with self._lock:
                if self._thread is not me:
                    return
                if not self._registered:
                    self._thread = None
                    for resource in (self._selector, self._wake_r, self._wake_w):
                        if resource is not None:
                            resource.close()
                    self._selector = self._wake_r = self._wake_w = None
                    logger.debug("watcher thread exiting: no watched sockets left")
                    return
            events = selector.select(1.0)
            for key, _ in events:
                ref = key.data
                if ref is None:
                    with contextlib.suppress(OSError):
                        wake_r.recv(4096)
                    with self._lock:
                        self._sweep_locked()
                    continue
                sock = ref()
                if sock is None:  # collected, its descriptor maybe still open: forget it
                    with self._lock, contextlib.suppress(KeyError, ValueError, OSError):
                        selector.unregister(key.fd)
                    continue
                try:
                    sock._on_readable()
                except Exception:  # never let one socket take the thread down for all
                    logger.exception("watcher failed reading %s", sock._label)
            del events
            sock = None  # hold no strong reference while waiting


_WATCHER = _Watcher()


def _collected(ref: weakref.ref[SelectorSocket]) -> None:
    _WATCHER.collected(ref)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHER.after_fork_in_child)


def watched_sockets() -> int:
    """How many sockets the watcher thread of this process reads for (selector mode)."""
    return _WATCHER.active()


class SelectorSocket(MonitoredSocket):
    """A :class:`MonitoredSocket` whose reads are made by the watcher thread (selector mode).

    Create it with ``keepalive.sync.monitor(sock, ..., mode="selector")``; same API and
    guarantees as the default mode.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_data_ready",
        "_head",
        "_paused",
        "_read_error",
        "_watch_fd",
        "_watch_generation",
        "_watch_ref",
        "_watching",
    )

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
        if isinstance(sock, socket.socket) and _tls_errors(sock) is not None:
            raise InvalidSetting(
                "mode",
                "selector",
                "'default' for a TLS socket (selector mode reads plain sockets only)",
            )
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._head = 0  # bytes of the first chunk already handed out
        self._data_ready: threading.Condition | None = None
        self._paused = False
        self._read_error: OSError | None = None
        self._watching = False
        self._watch_fd = -1
        self._watch_generation = _FORKS[0]
        super().__init__(
            sock,
            heartbeat=heartbeat,
            ping=ping,
            pong=pong,
            framing=framing,
            on_dead=on_dead,
            keepalive=keepalive,
        )
        # (Made once the socket is accepted: its callback hashes it, a dead one cannot be.)
        self._watch_ref: weakref.ref[SelectorSocket] = weakref.ref(self, _collected)
        hash(self._watch_ref)
        with self._state_lock:
            if self._closing or self._eof:
                return
            self._watch_fd = self._sock.fileno()
            self._watching = True
            try:
                _WATCHER.register(self)
            except BaseException:  # (no thread could start): no half-monitored socket
                self._watching = False
                self._stop_locked()
                raise

    # -- reading (application threads) ---------------------------------------------------

    def _refresh_read_route_locked(self) -> None:
        self._read_route = _SLOW_READS  # reads never go to the kernel from here

    def _take_unread_pongs_locked(self, now: float) -> None:
        pass  # the watcher takes pongs as they come

    def pending(self) -> int:
        """Bytes read by the watcher and waiting for ``recv`` (``select`` cannot see them)."""
        return self._buffered + len(self._inbox)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Read up to ``bufsize`` application bytes, as :meth:`MonitoredSocket.recv`."""
        if self._watch_generation != _FORKS[0]:
            return self._recv_after_fork(bufsize, flags)
        limit = self._check_read(bufsize, flags)
        if limit == 0:
            return b""
        return self._take(limit)

    def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into ``buffer``; returns the count (0 at end of stream)."""
        if self._watch_generation != _FORKS[0]:
            self._adopt_after_fork()
            return super().recv_into(buffer, nbytes, flags)
        view, wanted = _recv_into_view(buffer, nbytes)
        limit = self._check_read(wanted, flags)
        if limit == 0:
            return 0
        data = self._take(limit)
        count = len(data)
        view[:count] = data
        return count

    def _take(self, limit: int) -> bytes:
        """Wait for application bytes (or the end) and take up to ``limit`` of them."""
        deadline, nonblocking = self._call_deadline()
        self._enter()
        try:
            with self._state_lock:
                while True:
                    data = self._take_locked(limit)
                    if data is not None:
                        return data
                    if nonblocking:
                        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
                    ready = self._data_ready
                    if ready is None:
                        ready = self._data_ready = threading.Condition(self._state_lock)
                    if deadline is None:
                        ready.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                    ready.wait(remaining)
        finally:
            self._leave()

    def _take_locked(self, limit: int) -> bytes | None:
        """Bytes for a reader (state lock held), b"" at the end, None if it must wait."""
        if self._closing:
            raise _closed_error()
        chunks = self._chunks
        if not chunks and self._verdict is not None and self._matcher is not None:
            # Bytes received before the verdict still reach the application, then the error.
            held = self._matcher.flush()
            if held:
                chunks.append(held)
                self._buffered += len(held)
        if chunks:
            # The first chunk whole when it fits (no copy), else a slice from where the last
            # read stopped (a copy of the slice only: recv(1) in a loop stays linear).
            chunk = chunks[0]
            start = self._head
            end = start + limit
            if end >= len(chunk):
                chunks.popleft()
                self._head = 0
                if start:
                    chunk = chunk[start:]
            else:
                self._head = end
                chunk = chunk[start:end]
            self._buffered -= len(chunk)
            if self._paused and self._buffered <= _BUFFER_LIMIT // 2:
                self._paused = False
                if self._watching:
                    _WATCHER.resume(self)
            return chunk
        self._check_usable()
        error = self._read_error
        if error is not None:
            raise self._translate(error)
        if self._eof:
            return b""
        return None

    def _recv_after_fork(self, bufsize: int, flags: int) -> bytes:
        self._adopt_after_fork()
        return super().recv(bufsize, flags)

    def _adopt_after_fork(self) -> None:
        """In a forked child (no watcher): read the default way, buffered bytes first."""
        with self._state_lock:
            if self._chunks:
                self._chunks[0] = self._chunks[0][self._head :]
                self._inbox = b"".join(self._chunks) + self._inbox
                self._chunks.clear()
                self._buffered = self._head = 0
            self._watching = False

    # -- the watcher thread ----------------------------------------------------------------

    def _on_readable(self) -> None:
        """Read what the kernel has (watcher thread): pongs out, application bytes queued."""
        with self._state_lock:
            if not self._watching or self._paused or self._closing:
                return
            try:
                chunk = _recv_sized(self._sock, _READ_SIZE)
            except self._would_block:
                return
            except OSError as exc:
                self._read_error = exc
                self._read_failed_locked(exc)
                self._unwatch_locked()
                self._notify_locked()
                return
            if not chunk:
                data = self._end_of_stream_locked()
                self._unwatch_locked()
            else:
                matcher = self._matcher
                if matcher is None:
                    data, pongs = chunk, 0
                else:
                    hb = self._heartbeat
                    assert hb is not None  # (a matcher comes with a heartbeat)
                    data, pongs = matcher.feed(chunk, hb.outstanding)
                self._note_inbound_locked(len(chunk), pongs, time.monotonic())
                if not data:
                    return  # only a pong (or part of one): no reader wakes up
            if data:
                self._chunks.append(data)
                self._buffered += len(data)
                if self._buffered > _BUFFER_LIMIT and self._watching:
                    self._paused = True
                    _WATCHER.pause(self)
            self._notify_locked()

    def _notify_locked(self) -> None:
        ready = self._data_ready
        if ready is not None:
            ready.notify_all()

    def _unwatch_locked(self) -> None:
        if self._watching:
            self._watching = False
            _WATCHER.unregister(self)

    # -- stopping ----------------------------------------------------------------------------

    def _report_death(self, verdict: PeerDead) -> None:
        super()._report_death(verdict)
        with self._state_lock:
            self._notify_locked()  # on_dead has run: blocked readers raise the verdict now

    def _close_locked(self) -> None:
        self._unwatch_locked()  # before the descriptor can be closed and reused
        super()._close_locked()
        self._notify_locked()


_SELECTOR_MODE.append(SelectorSocket)  # monitor(..., mode="selector") makes these
