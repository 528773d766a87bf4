"""A supervised asyncio connection that heals itself: :class:`Supervisor` (``keepalive.aio``).

::

    from keepalive import Backoff, HeartbeatConfig
    from keepalive.aio import Supervisor

    async def resubscribe(conn):
        conn.writer.write(b"SUBSCRIBE news\\n")
        await conn.writer.drain()

    async with Supervisor(("db.internal", 7000), heartbeat=HeartbeatConfig(interval=10, timeout=5),
                          retry=Backoff(initial=0.5, max_delay=30),
                          on_connect=resubscribe) as sup:
        while True:
            reader, writer = await sup.wait_connected()  # the live connection (waits for one)
            try:
                line = await reader.readline()     # b"" or an error: it ended, a new one comes
            except ConnectionError:
                continue
            if line:
                handle(line)

One task per supervisor (``keepalive-supervisor:HOST:PORT``) runs the loop of
:mod:`keepalive.supervision`::

    connect (per the retry policy) -> kernel keepalive (set before the SYN) -> heartbeat
    -> on_connect(conn) -> publish the connection -> ... it ends -> close it
    -> on_disconnect(reason, error) -> on_backoff(delay, error) -> sleep -> connect again

and a :class:`~keepalive.supervision.SupervisorCore` keeps the state, the counters
(:attr:`Supervisor.stats`) and the failure log, decides the delays, the give-up and which
hook fires when, and writes the log; this module does the I/O: the task, the dial (that of
:mod:`keepalive.dial`), the transport and TLS, ``on_connect``, watching for the end, the
sleeps and cancellation. The rules are those of the blocking
:class:`keepalive.sync.Supervisor`; what differs comes from asyncio:

* **The connection** is a :class:`SupervisedConnection`: a ``(reader, writer)`` pair, as
  :func:`asyncio.open_connection` returns (so ``reader, writer = await
  sup.wait_connected()`` works), with :attr:`~SupervisedConnection.monitor` (the
  :class:`~keepalive.aio.HeartbeatProtocol`, ``None`` without a heartbeat), the peer's
  address, and why it ended.
* **No reader is needed to notice the end.** The supervisor's protocol sits behind the
  heartbeat's :class:`~keepalive.aio.HeartbeatProtocol` and in front of the
  :class:`asyncio.StreamReader`; it sees end of stream, resets, kernel timeouts and the
  heartbeat's verdict as they happen, whether or not the application reads, and no byte is
  taken from the application. (One exception, as for every asyncio stream: once the
  application leaves more than twice the reader's ``limit`` unread, asyncio stops reading
  the socket, and an end is noticed after the application catches up.)
* **When a connection is over.** The first of these ends it and gives the reason passed to
  ``on_disconnect``: the peer's end of stream (``PEER_CLOSED``; a loss without an error
  that this side did not cause counts as one: uvloop's TLS transport reports a stream cut
  without close_notify that way, without ``eof_received()``); an error on the socket, the
  application's writes included (``RESET``, ``KERNEL_TIMEOUT``, ``ERROR``, classified by
  :func:`~keepalive.supervision.classify_disconnect`); the heartbeat's verdict
  (``HEARTBEAT_TIMEOUT``); the application closing it (:meth:`SupervisedConnection.close`
  or ``writer.close()``, not ``writer.transport.close()``), the handler returning, or
  :meth:`Supervisor.close` (``CLOSED``); the handler raising (its exception, classified,
  mostly ``ERROR``). The supervisor then aborts the transport (bytes still in asyncio's
  write buffer are dropped: ``await writer.drain()`` first if the last ones matter) and
  waits until its socket is closed.
* **After the end** the old reader returns what was buffered and then ``b""``, or raises
  the error that ended the connection (``PeerUnresponsive``, ``ConnectionResetError``, ...;
  asyncio raises it at once, before buffered bytes); ``await writer.drain()`` raises.
  Await :meth:`Supervisor.wait_connected` for the next connection.
* **Two ways to use it.** Without a ``handler``, coroutines take :attr:`Supervisor.connection`
  (``None`` while down) or await :meth:`Supervisor.wait_connected`. With ``handler(reader,
  writer)`` (a coroutine function, like :func:`asyncio.start_server`'s callback), the handler
  runs as its own task (``keepalive-handler:...``) once per connection, after ``on_connect``
  passed; when it returns, the connection is closed and replaced. Once a connection ended,
  the supervisor waits for its handler to return before it reconnects, so handlers never
  overlap: a handler must return once calls on its connection fail (every read and drain
  does, at once, after the end). Closing the supervisor cancels the handler.
* **Never two live connections.** The previous transport is aborted, its socket closed and
  its handler finished before the next attempt starts.
* **Hooks** may be plain or coroutine functions; they run in the supervisor's task.
  ``on_connect(conn)`` runs before the connection is published (re-handshake, resubscribe;
  it may read and write ``conn.reader``/``conn.writer``); if it raises, the attempt counts as
  failed (the retry policy's ``is_retryable`` judges its exception like a connect error: a
  ``ConnectionError`` or ``TimeoutError`` is retried, a ``ValueError`` makes the supervisor
  give up unless ``retry_on`` says otherwise). ``on_disconnect(reason, error)`` after a
  published connection ended; ``on_backoff(delay, error)`` before every wait (``delay`` 0.0
  after a connection that stayed up ``healthy_after`` seconds). Exceptions from these two
  are logged and ignored.
* **Backoff across outages** follows :class:`~keepalive.supervision.SupervisorCore`: a
  connection that stayed up ``healthy_after`` seconds earns an immediate reconnect and a
  fresh backoff sequence; a shorter one continues the sequence, and its end counts as a
  failed attempt. When the policy gives up, :attr:`Supervisor.state` is ``FAILED``, the task
  ends and :meth:`~Supervisor.wait_connected` raises :class:`~keepalive.errors.ConnectFailed`.
* **Prompt close.** :meth:`Supervisor.aclose` cancels the supervisor's task: a backoff
  sleep, a connect (also to a black hole), ``on_connect`` and the handler are interrupted at
  once; the live connection is aborted and ``on_disconnect(CLOSED, None)`` called. Not
  interruptible: name resolution runs in the loop's executor (the attempt is abandoned at
  once, the lookup finishes in its thread). :meth:`Supervisor.close` asks for the same
  without waiting (safe from hooks and the handler; ``aclose`` from those returns at once).
* **Connecting** is :func:`keepalive.connect_async`'s dial, one attempt at a time: kernel
  keepalive (strict) set before the SYN, every address the name resolves to tried, each
  with ``connect_timeout`` (default: the policy's; also the TLS handshake's timeout with
  ``ssl``). A keepalive setting this platform cannot honour is refused by the constructor.
  ``heartbeat=None`` runs no heartbeat: no monitor, nothing scheduled or filtered (kernel
  keepalive, end of stream and errors still end connections).

Logging goes to the ``keepalive.supervisor`` logger (see :mod:`keepalive.supervision`):
DEBUG per attempt, INFO for connections made and failed attempts, WARNING for ended
connections and failing ``on_connect`` or handlers, ERROR when giving up or when
``on_disconnect``/``on_backoff`` raise. Everything here must be used from the event loop's
thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, TypeAlias

from typing_extensions import Self

import keepalive.aio.connection as aio
from keepalive._validate import positive_int, positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.dial import _AttemptError, _dialer, _peer_address
from keepalive.errors import InvalidSettingType
from keepalive.framing import Framing, PongMatcher, PongSource
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff, RetryPolicy, StopReason
from keepalive.supervision import (
    DisconnectReason,
    NextAttempt,
    OnBackoff,
    OnDisconnect,
    SupervisorCore,
    SupervisorOptions,
    SupervisorState,
    SupervisorStats,
    call_hook,
    classify_disconnect,
    ended_during_on_connect,
)

__all__ = [
    "Handler",
    "OnBackoff",
    "OnConnect",
    "OnDisconnect",
    "PongSource",
    "SupervisedConnection",
    "Supervisor",
]

logger = logging.getLogger("keepalive.supervisor")  # (the core logs the events)

# How long a teardown waits for asyncio to report an aborted transport lost (one loop
# iteration in practice); a bound, so that close() can never hang on it.
_TEARDOWN_LIMIT: Final = 1.0

_End: TypeAlias = tuple[DisconnectReason, BaseException | None]


# ---------------------------------------------------------------------------------------------
# Seeing the end of a connection


class _EndWatch(asyncio.StreamReaderProtocol):
    """The stream protocol of a supervised connection: a :class:`asyncio.StreamReaderProtocol`
    that also records the first end it sees (end of stream, connection lost, with its error)
    and resolves :attr:`ended` then, and :attr:`lost` once the transport reported the loss."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self.end: _End | None = None
        self.ended: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.closed_here = False  # the application called writer.close()

    def end_with(self, reason: DisconnectReason, error: BaseException | None) -> bool:
        """Record the end (the first one wins); True if this was it."""
        if self.end is not None:
            return False
        self.end = (reason, error)
        if not self.ended.done():
            self.ended.set_result(None)
        return True

    def eof_received(self) -> bool:
        # Before the reader sees it. (Closing TLS, the peer's close_notify answers ours.)
        reason = DisconnectReason.CLOSED if self.closed_here else DisconnectReason.PEER_CLOSED
        self.end_with(reason, None)
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.end_with(classify_disconnect(exc), exc)
        elif self.closed_here:
            self.end_with(DisconnectReason.CLOSED, None)
        else:
            # The supervisor's own closes recorded CLOSED first: this is the peer's end of
            # stream, which uvloop's TLS transport reports without eof_received() when no
            # close_notify came first.
            self.end_with(DisconnectReason.PEER_CLOSED, None)
        try:
            super().connection_lost(exc)
        finally:
            if not self.lost.done():
                self.lost.set_result(None)


class _SupervisedWriter(asyncio.StreamWriter):
    """The writer of a supervised connection: ``close()`` marks the end as this side's
    (``CLOSED``) once the transport reports it, after flushing as asyncio's does."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        watch: _EndWatch,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(transport, watch, reader, loop)
        self._watch = watch

    def close(self) -> None:
        self._watch.closed_here = True
        super().close()


# ---------------------------------------------------------------------------------------------
# The connection handed to the application


class SupervisedConnection(tuple[asyncio.StreamReader, asyncio.StreamWriter]):
    """One connection of a :class:`Supervisor`: the ``(reader, writer)`` pair, plus what the
    supervisor knows about it.

    Unpacks like :func:`asyncio.open_connection`'s result (``reader, writer = conn``).
    :attr:`monitor` is the heartbeat's :class:`~keepalive.aio.HeartbeatProtocol` (``None``
    without a heartbeat), :attr:`peer` the peer's address. :attr:`disconnect_reason` tells
    whether, and why, it ended; :meth:`wait_ended` waits for that; :meth:`close` ends it and
    makes the supervisor open a new one. Created by :class:`Supervisor` only.
    """

    _watch: _EndWatch
    _monitor: aio.HeartbeatProtocol | None
    _peer: tuple[Any, ...] | None

    def __new__(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        watch: _EndWatch,
        monitor: aio.HeartbeatProtocol | None,
    ) -> Self:
        conn = super().__new__(cls, (reader, writer))
        conn._watch = watch
        conn._monitor = monitor
        peer = writer.get_extra_info("peername")
        conn._peer = tuple(peer) if isinstance(peer, tuple) else None
        return conn

    @property
    def reader(self) -> asyncio.StreamReader:
        """The connection's :class:`asyncio.StreamReader` (pongs removed)."""
        return self[0]

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The connection's :class:`asyncio.StreamWriter`."""
        return self[1]

    @property
    def monitor(self) -> aio.HeartbeatProtocol | None:
        """The heartbeat's monitor (RTT, pings, pongs), or ``None`` without a heartbeat."""
        return self._monitor

    @property
    def peer(self) -> tuple[Any, ...] | None:
        """The peer's address, as ``getpeername()`` gave it when the connection was made."""
        return self._peer

    @property
    def ended(self) -> bool:
        """Whether this connection is over (a new one may be up already)."""
        return self._watch.end is not None

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, or ``None`` while it is live."""
        end = self._watch.end
        return None if end is None else end[0]

    @property
    def disconnect_error(self) -> BaseException | None:
        """The error that ended this connection (``None`` while live or for a clean end)."""
        end = self._watch.end
        return None if end is None else end[1]

    async def wait_ended(self) -> DisconnectReason:
        """Wait until this connection is over; returns why."""
        await asyncio.wait({self._watch.ended})  # (cancelling the waiter leaves it alone)
        end = self._watch.end
        assert end is not None
        return end[0]

    def close(self) -> None:
        """End this connection (``CLOSED``); the supervisor replaces it (close the supervisor
        to stop). Idempotent."""
        self._end_with(DisconnectReason.CLOSED, None)

    def __repr__(self) -> str:
        end = self._watch.end
        state = "live" if end is None else f"ended ({end[0]})"
        return f"<SupervisedConnection peer={self._peer!r} {state}>"

    # -- for the supervisor ------------------------------------------------------------------

    def _end_with(self, reason: DisconnectReason, error: BaseException | None) -> None:
        """Record the end (the first one wins) and abort the transport."""
        self._watch.end_with(reason, error)
        self.writer.transport.abort()

    async def _closed(self) -> None:
        """Wait until the transport reported the loss and its socket is closed."""
        transport = self.writer.transport
        transport.abort()  # (nothing if it is gone already)
        await asyncio.wait({self._watch.lost}, timeout=_TEARDOWN_LIMIT)
        sock = transport.get_extra_info("socket")
        # The outer transport closes the socket in a callback of its own, maybe one loop
        # iteration after the protocol heard of the loss (the heartbeat reports a verdict at
        # once): wait for it, so that the next attempt never overlaps this connection.
        for _ in range(100):
            if sock is None or sock.fileno() < 0:
                return
            await asyncio.sleep(0)
        logger.warning("the socket of %r was not closed in time", self)


OnConnect: TypeAlias = Callable[[SupervisedConnection], object]
"""``on_connect(conn)``: runs before a new connection is published; raising fails the
attempt. A plain or a coroutine function."""

Handler: TypeAlias = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[object]]
"""``handler(reader, writer)``: a coroutine function serving one connection in its own task;
returning ends the connection."""


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
    ``handler``: see the module docstring. ``rng``: seeds the policy's jitter. ``name``: for
    task names and logs (default ``host:port``). ``ssl``, ``server_hostname`` (default: the
    host): TLS on each connection, as for :func:`asyncio.open_connection`. ``limit``: the
    :class:`asyncio.StreamReader` buffer limit.

    Every argument is checked here (a kernel keepalive setting this platform cannot honour
    included), before anything connects. Use as ``async with Supervisor(...) as sup:``, or
    :meth:`start` (in a running loop) then :meth:`aclose`. One event loop; not thread-safe.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
        heartbeat: HeartbeatConfig | None = None,
        ping: aio.PingSource = b"PING\n",
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
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
        limit: int = aio.DEFAULT_STREAM_LIMIT,
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
            handler_shape="(reader, writer) returning an awaitable",
            rng=rng,
            name=name,
            ssl=ssl,
            server_hostname=server_hostname,
        )
        self._limit = positive_int("limit", limit)
        self._dialer = _dialer(
            options.address,
            keepalive=keepalive,
            retry=options.retry,
            connect_timeout=connect_timeout,
        )
        self._tls: dict[str, object] = {}
        if options.ssl is not None:
            self._tls = {
                "ssl": options.ssl,
                "server_hostname": options.server_hostname,
                "ssl_handshake_timeout": self._dialer.timeout,
            }
        self._label = options.label
        self._core = SupervisorCore.for_options(options)
        self._finishing = False  # the task is cleaning up: no more cancelling it
        self._task: asyncio.Task[None] | None = None
        self._handler_task: asyncio.Task[None] | None = None
        self._live: SupervisedConnection | None = None  # exists: in on_connect, or published
        self._current: SupervisedConnection | None = None  # published to the application
        self._interrupted: SupervisedConnection | None = None  # published when closed
        self._changed: asyncio.Future[None] | None = None  # resolved at every change

    @property
    def _closing(self) -> bool:
        return self._core.is_closed

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the supervisor's task on the running loop; returns ``self``. Only once."""
        if self._closing:
            raise RuntimeError(f"supervisor for {self._label} is closed")
        if self._task is not None:
            raise RuntimeError(f"supervisor for {self._label} was already started")
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"keepalive-supervisor:{self._label}")
        return self

    def close(self) -> None:
        """Ask the supervisor to stop, without waiting: cancels its task (a backoff sleep,
        a connect, ``on_connect`` or the handler are interrupted) and aborts the live
        connection. Idempotent; safe from hooks and the handler. :meth:`aclose` waits too."""
        if not self._mark_closed():
            return
        live = self._live
        if live is not None:
            live._end_with(DisconnectReason.CLOSED, None)
        task = self._task
        if task is not None and not task.done() and not self._finishing:
            task.cancel()

    def _mark_closed(self) -> bool:
        """Enter the CLOSED state; False if it was closed already."""
        if not self._core.closed(time.monotonic()):
            return False
        self._core.log_closing()
        self._notify()
        return True

    async def aclose(self) -> None:
        """Stop (see :meth:`close`) and wait until the supervisor's task has finished: the
        live connection closed, ``on_disconnect(CLOSED, None)`` called, the handler done.
        From a hook or the handler it returns at once (the task ends right after)."""
        self.close()
        task = self._task
        if task is None or task.done():
            return
        current = asyncio.current_task()
        if current is task or (current is not None and current is self._handler_task):
            return
        await asyncio.wait({task})  # (cancelling the caller leaves the task alone)

    async def __aenter__(self) -> Self:
        if self._task is None:
            self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- for the application -----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the supervisor connects to."""
        return self._options.address

    @property
    def connection(self) -> SupervisedConnection | None:
        """The live connection, or ``None`` while there is none."""
        current = self._current
        return current if current is not None and not current.ended else None

    async def wait_connected(self, timeout: float | None = None) -> SupervisedConnection:
        """The live connection, waiting up to ``timeout`` seconds (None: forever) for one.

        Raises ``TimeoutError`` when none came in time, :class:`~keepalive.errors.ConnectFailed`
        when the supervisor is closed (``reason="closed"``) or its policy gave up
        (``"exhausted"``, ``"deadline"``, ``"not retryable"``; ``"failed"`` if the supervisor
        itself failed; ``__cause__`` is the last error, ``attempts`` the current outage's
        failures), ``RuntimeError`` before :meth:`start`.
        """
        if timeout is not None:
            timeout = positive_seconds("timeout", timeout, allow_zero=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self._current
            if current is not None and not current.ended:
                return current  # (an ended one is about to be replaced: wait for that)
            if self._core.finished:
                raise self._core.failure()
            if self._task is None:
                raise RuntimeError(f"supervisor for {self._label} is not started")
            changed = self._changed
            if changed is None:
                changed = self._changed = asyncio.get_running_loop().create_future()
            if deadline is None:
                await asyncio.wait({changed})
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no connection to {self._label} within {timeout:g} s")
            await asyncio.wait({changed}, timeout=remaining)

    @property
    def state(self) -> SupervisorState:
        """Where the supervisor stands (see :class:`~keepalive.supervision.SupervisorState`)."""
        return self._core.state

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the policy gave up (state ``FAILED``), else ``None``."""
        return self._core.stop_reason

    @property
    def stats(self) -> SupervisorStats:
        """Counters and uptimes for monitoring (a snapshot)."""
        return self._core.stats(time.monotonic())

    def __repr__(self) -> str:
        return f"<Supervisor {self._label} {self.state}>"

    # -- the supervisor's task ---------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._supervise()
        except asyncio.CancelledError:
            if not self._closing:  # cancelled from outside (the loop shuts down): closed too
                self._mark_closed()
                raise
        except Exception as exc:  # a bug here: do not leave waiters hanging
            self._core.log_crashed(exc)
            self._core.crashed(exc)
        finally:
            await self._finish()

    async def _finish(self) -> None:
        """Close what is left (after close(), or a crash) and wake every waiter."""
        self._finishing = True
        live, self._live = self._live, None
        self._current = None
        try:
            if live is not None:  # closed during on_connect
                live._end_with(DisconnectReason.CLOSED, None)
                await live._closed()
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None:  # a published connection, ended by close()
                end = interrupted._watch.end
                reason, error = (DisconnectReason.CLOSED, None) if end is None else end
                step = self._core.disconnected(
                    reason, error, time.monotonic(), peer=interrupted.peer
                )
                await self._follow(step)
        finally:
            self._notify()

    async def _supervise(self) -> None:
        while True:
            self._check_open()
            outcome = await self._attempt()
            if isinstance(outcome, SupervisedConnection):
                try:
                    reason, error = await self._serve(outcome)
                except asyncio.CancelledError:
                    self._interrupted = outcome
                    raise
                outcome = self._core.disconnected(
                    reason, error, time.monotonic(), peer=outcome.peer
                )
            if outcome.delay is None:
                self._notify()
            if not await self._follow(outcome):
                return

    async def _follow(self, step: NextAttempt) -> bool:
        """Call the hooks due after ``step`` and sleep until the next attempt (cancelled by
        close()); False to stop."""
        await self._core.call_hooks(step)
        if step.delay is None:
            return False
        self._check_open()
        await asyncio.sleep(step.delay)
        return True

    # -- connecting --------------------------------------------------------------------------

    async def _attempt(self) -> SupervisedConnection | NextAttempt:
        """One attempt: the published connection, or the core's answer to its failure."""
        attempt = self._core.attempt_started(time.monotonic())
        if attempt is None:
            raise asyncio.CancelledError  # closed
        self._core.log_attempt(attempt)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self._limit, loop=loop)
        watch = _EndWatch(reader, loop)
        monitor: aio.HeartbeatProtocol | None = None
        heartbeat = self._options.heartbeat
        try:
            if heartbeat is not None:
                pong = self._options.new_matcher()
                ping = self._options.ping
                monitor = aio.HeartbeatProtocol(watch, heartbeat, ping=ping, pong=pong)
            sock = await self._dialer.attempt_async(attempt)
        except _AttemptError as exc:
            return self._core.attempt_failed(exc.last, time.monotonic(), failures=exc.failures)
        except Exception as exc:
            return self._core.attempt_failed(exc, time.monotonic())
        peer = _peer_address(sock)
        try:
            if self._closing:  # closed, and the cancellation was lost on the way
                sock.close()
                raise asyncio.CancelledError
            protocol = watch if monitor is None else monitor
            transport = await aio._start_transport(
                loop, protocol, sock, self._options.address[0], self._tls
            )
        except Exception as exc:
            return self._core.attempt_failed(exc, time.monotonic(), address=peer)
        writer = _SupervisedWriter(transport, watch, reader, loop)
        conn = SupervisedConnection(reader, writer, watch, monitor)
        self._live = conn  # closed by close(), or by _finish() once cancelled
        try:
            self._check_open()
            if self._options.on_connect is not None:
                await call_hook(self._options.on_connect, conn)
            self._check_open()  # (a hook may swallow the cancellation)
            if watch.end is not None:
                raise ended_during_on_connect(*watch.end)
        except Exception as exc:
            self._live = None
            conn._end_with(DisconnectReason.CLOSED, None)
            await conn._closed()
            self._check_open()
            self._core.log_on_connect_failed(exc)
            return self._core.attempt_failed(exc, time.monotonic(), address=peer)
        self._core.connected(time.monotonic())
        self._current = conn
        self._notify()
        self._core.log_connected(attempt)
        return conn

    # -- connected ---------------------------------------------------------------------------

    async def _serve(self, conn: SupervisedConnection) -> _End:
        """Wait until the connection ends (and its handler returned); then close it."""
        handler_task = None
        handler = self._options.handler
        if handler is not None:
            handler_task = asyncio.get_running_loop().create_task(
                self._run_handler(handler, conn), name=f"keepalive-handler:{self._label}"
            )
            self._handler_task = handler_task
        try:
            waiting: set[asyncio.Future[Any]] = {conn._watch.ended}
            if handler_task is not None:
                waiting.add(handler_task)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._current = None
            self._live = None
            conn._end_with(DisconnectReason.CLOSED, None)  # (if it is not over yet)
            self._notify()
            try:
                await conn._closed()
            finally:
                if handler_task is not None:
                    if self._closing:
                        handler_task.cancel()
                    await asyncio.wait({handler_task})  # its calls on conn fail now: it returns
                    self._handler_task = None
        end = conn._watch.end
        assert end is not None
        return end

    async def _run_handler(
        self, handler: Callable[..., object], conn: SupervisedConnection
    ) -> None:
        try:
            result = handler(conn.reader, conn.writer)
            if not inspect.isawaitable(result):
                raise InvalidSettingType(
                    "handler", handler, "a coroutine function (reader, writer)"
                )
            await result
        except asyncio.CancelledError:
            conn._end_with(DisconnectReason.CLOSED, None)
            raise
        except Exception as exc:  # ends this connection; the supervisor decides what next
            if not conn.ended and not self._closing:
                self._core.log_handler_raised(exc)
            conn._end_with(classify_disconnect(exc), exc)
        else:
            conn._end_with(DisconnectReason.CLOSED, None)

    # -- helpers -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        """Raise CancelledError once closing. close() cancels the task, but a cancellation
        can be lost before it is seen (``asyncio.wait_for`` before Python 3.12 drops one that
        arrives as its future completes; a hook may catch it): nothing is connected or
        published, and no wait starts, after close()."""
        if self._closing:
            raise asyncio.CancelledError

    def _notify(self) -> None:
        """Wake every wait_connected()."""
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)
