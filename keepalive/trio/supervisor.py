"""A supervised trio connection that heals itself: :class:`Supervisor` (``keepalive.trio``).

::

    from keepalive import Backoff, HeartbeatConfig
    from keepalive.trio import Supervisor

    async def resubscribe(conn):
        await conn.stream.send_all(b"SUBSCRIBE news\\n")

    async with Supervisor(("db.internal", 7000), heartbeat=HeartbeatConfig(interval=10, timeout=5),
                          retry=Backoff(initial=0.5, max_delay=30),
                          on_connect=resubscribe) as sup:
        while True:
            conn = await sup.wait_connected()      # the live connection (waits for one)
            try:
                data = await conn.stream.receive_some()
            except (trio.BrokenResourceError, ConnectionError):
                continue                           # it ended: a new one comes
            ...

The loop is :mod:`keepalive.supervision`'s, as for :class:`keepalive.aio.Supervisor`::

    connect (per the retry policy) -> kernel keepalive (set before the SYN) -> TLS
    -> heartbeat -> on_connect(conn) -> publish the connection -> ... it ends -> close it
    -> on_disconnect(reason, error) -> on_backoff(delay, error) -> sleep -> connect again

A :class:`~keepalive.supervision.SupervisorCore` keeps the state, the counters, the failure
log, the delays, the give-up and the hook order, and writes the log; this module does trio's
I/O. What differs from asyncio comes from trio:

* **Structured.** The supervisor runs in a nursery: ``async with Supervisor(...) as sup:``
  opens one, or ``await nursery.start(sup.run)`` runs it in yours. Everything it starts
  (the handler) runs inside it; nothing outlives it.
* **Cancellation.** Cancelling the scope it runs in (or :meth:`Supervisor.close`) stops it
  at once, wherever it is (a backoff sleep, a connect to a black hole, the TLS handshake,
  ``on_connect``, the handler); the live connection is closed and ``on_disconnect(CLOSED,
  None)`` called, shielded for at most one second.
* **When a connection is over.** trio allows one reader per stream, so the supervisor does
  not read: the end is seen by the heartbeat (its verdict, or a ping that cannot be
  written), by the application's own calls on :attr:`SupervisedConnection.stream` (end of
  stream, a reset: each classified by
  :func:`~keepalive.supervision.classify_disconnect`, which judges trio's
  ``BrokenResourceError`` by the socket error it wraps), by :meth:`SupervisedConnection.close`,
  by the handler returning or raising, or by :meth:`Supervisor.close`. Without a heartbeat
  and without a reader, a silent end is only seen by the kernel's keepalive on the next
  call.
* **Hooks** (``on_connect(conn)``, ``on_disconnect(reason, error)``, ``on_backoff(delay,
  error)``) may be plain or async functions; ``handler(stream)`` is an async function run
  once per connection, in the supervisor's nursery; when it returns the connection is closed
  and replaced.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import trio
from typing_extensions import Self

from keepalive._validate import positive_seconds
from keepalive.config import KeepaliveConfig
from keepalive.dial import _AttemptError, _dialer
from keepalive.errors import InvalidSettingType
from keepalive.framing import Framing, PongMatcher, PongSource
from keepalive.heartbeat import HeartbeatConfig, PingSource
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
from keepalive.trio._dial import TRIO_IO
from keepalive.trio.connection import MonitoredStream

if TYPE_CHECKING:
    import ssl

__all__ = ["Handler", "OnConnect", "SupervisedConnection", "Supervisor"]

# How long the teardown after a cancellation may take (closing the connection, the
# on_disconnect(CLOSED) hook): shielded, so it is bounded.
_TEARDOWN_LIMIT: Final = 1.0

_End: TypeAlias = tuple[DisconnectReason, BaseException | None]


class SupervisedConnection:
    """One connection of a :class:`Supervisor`: its :attr:`stream` (a
    :class:`~keepalive.trio.MonitoredStream`), what the supervisor knows about it, and
    :meth:`close`. Created by :class:`Supervisor` only."""

    def __init__(self, stream: MonitoredStream, peer: tuple[Any, ...] | None) -> None:
        self._stream = stream
        self._peer = peer
        self._end: _End | None = None
        self._ended = trio.Event()
        stream._end_listener = self._ended_with

    @property
    def stream(self) -> MonitoredStream:
        """The connection's stream (pongs removed)."""
        return self._stream

    @property
    def monitor(self) -> MonitoredStream | None:
        """The stream, if it runs a heartbeat (RTT, pings, pongs); else ``None``."""
        return self._stream if self._stream.config is not None else None

    @property
    def peer(self) -> tuple[Any, ...] | None:
        """The peer's address, as ``getpeername()`` gave it when the connection was made."""
        return self._peer

    @property
    def ended(self) -> bool:
        """Whether this connection is over (a new one may be up already)."""
        return self._end is not None

    @property
    def disconnect_reason(self) -> DisconnectReason | None:
        """Why this connection ended, or ``None`` while it is live."""
        return None if self._end is None else self._end[0]

    @property
    def disconnect_error(self) -> BaseException | None:
        """The error that ended this connection (``None`` while live or for a clean end), as
        trio raised it: a reset is a ``BrokenResourceError`` whose ``__cause__`` is the
        socket's ``ConnectionResetError``."""
        return None if self._end is None else self._end[1]

    async def wait_ended(self) -> DisconnectReason:
        """Wait until this connection is over; returns why."""
        await self._ended.wait()
        assert self._end is not None
        return self._end[0]

    def close(self) -> None:
        """End this connection (``CLOSED``); the supervisor replaces it. Idempotent."""
        self._end_with(DisconnectReason.CLOSED, None)

    def __repr__(self) -> str:
        state = "live" if self._end is None else f"ended ({self._end[0]})"
        return f"<SupervisedConnection peer={self._peer!r} {state}>"

    # -- for the supervisor ------------------------------------------------------------------

    def _ended_with(self, error: BaseException | None) -> None:
        """The stream saw its end (None: end of stream)."""
        if isinstance(error, trio.ClosedResourceError):
            self._end_with(DisconnectReason.CLOSED, None)
        else:
            self._end_with(classify_disconnect(error), error)

    def _end_with(self, reason: DisconnectReason, error: BaseException | None) -> None:
        if self._end is None:
            self._end = (reason, error)
            self._stream._end_listener = None
            self._ended.set()

    async def _closed(self) -> None:
        """Close the stream at once (no TLS goodbye: the connection is over)."""
        await trio.aclose_forcefully(self._stream)


OnConnect: TypeAlias = Callable[[SupervisedConnection], object]
"""``on_connect(conn)``: runs before a new connection is published; raising fails the
attempt. A plain or an async function."""

Handler: TypeAlias = Callable[[MonitoredStream], Awaitable[object]]
"""``handler(stream)``: an async function serving one connection; returning ends it."""


def _now() -> float:
    """The run's clock; outside a run (a supervisor closed before or after it ran, when no
    connection is up and the time is not used) any value does."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


class Supervisor:
    """Keeps one TCP connection to ``address`` up, reconnecting per ``retry``.

    The arguments of :class:`keepalive.aio.Supervisor`, with trio's names for TLS
    (``ssl_context``, ``server_hostname``); ``handler(stream)`` gets the connection's
    :class:`~keepalive.trio.MonitoredStream`. Every argument is checked here, before
    anything connects. Run it with ``async with Supervisor(...) as sup:`` or
    ``await nursery.start(sup.run)``; one trio run, not thread-safe.
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
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if ssl_context is not None:  # (named here as the caller spelt it)
            import ssl as ssl_module  # noqa: PLC0415 - only for TLS users

            if not isinstance(ssl_context, ssl_module.SSLContext):
                raise InvalidSettingType("ssl_context", ssl_context, "an ssl.SSLContext or None")
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
            handler_shape="(stream) returning an awaitable",
            rng=rng,
            name=name,
            ssl=ssl_context,
            server_hostname=server_hostname,
        )
        self._dialer = _dialer(
            options.address,
            keepalive=keepalive,
            retry=options.retry,
            connect_timeout=connect_timeout,
        )
        self._label = options.label
        self._core = SupervisorCore.for_options(options)
        self._scope: trio.CancelScope | None = None
        self._started = False
        self._done = trio.Event()
        self._run_task: trio.lowlevel.Task | None = None
        self._handler_task: trio.lowlevel.Task | None = None
        self._live: SupervisedConnection | None = None  # exists: in on_connect, or published
        self._current: SupervisedConnection | None = None  # published to the application
        self._interrupted: SupervisedConnection | None = None  # published when cancelled
        self._changed = trio.Event()
        self._exits: contextlib.AsyncExitStack | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until closed, cancelled, or the policy gives up (then
        :meth:`wait_connected` raises). For ``nursery.start(sup.run)``; only once."""
        if self._started:
            raise RuntimeError(f"supervisor for {self._label} was already started")
        self._started = True
        self._run_task = trio.lowlevel.current_task()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._core.is_closed:
                    scope.cancel()
                task_status.started()
                try:
                    await self._supervise()
                except Exception as exc:  # a bug here: do not leave waiters hanging
                    self._core.log_crashed(exc)
                    self._core.crashed(exc)
        except BaseException:
            self._mark_closed()  # the scope the supervisor runs in was cancelled: closed too
            raise
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_TEARDOWN_LIMIT):
                await self._finish()
            self._scope = None
            self._done.set()

    def close(self) -> None:
        """Stop the supervisor without waiting: whatever it does is cancelled at once and the
        live connection closed. Idempotent; safe from hooks and the handler."""
        if not self._mark_closed():
            return
        live = self._live
        if live is not None:
            live.close()
        if self._scope is not None:
            self._scope.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the supervisor has finished (from a hook or the
        handler it returns at once)."""
        self.close()
        if not self._started:
            await trio.lowlevel.checkpoint()
            return
        current = trio.lowlevel.current_task()
        if current is self._run_task or current is self._handler_task:
            await trio.lowlevel.checkpoint()
            return
        await self._done.wait()

    async def __aenter__(self) -> Self:
        exits = contextlib.AsyncExitStack()
        nursery = await exits.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.run)
        except BaseException:
            await exits.aclose()
            raise
        self._exits = exits
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        self.close()
        exits, self._exits = self._exits, None
        assert exits is not None
        try:
            return bool(await exits.__aexit__(exc_type, exc, traceback))
        except BaseException as error:
            # run() raises nothing of its own: an exception group holding only the body's
            # exception is trio's wrapping of it; give the caller the exception it raised.
            inner = getattr(error, "exceptions", None)
            if exc is not None and isinstance(inner, tuple) and len(inner) == 1 and inner[0] is exc:
                raise exc from None
            raise

    def _mark_closed(self) -> bool:
        if not self._core.closed(_now()):
            return False
        self._core.log_closing()
        self._notify()
        return True

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
        when the supervisor is closed (``reason="closed"``) or its policy gave up,
        ``RuntimeError`` before it runs.
        """
        if timeout is not None:
            timeout = positive_seconds("timeout", timeout, allow_zero=True)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            current = self._current
            if current is not None and not current.ended:
                await trio.lowlevel.checkpoint()
                return current
            if self._core.finished:
                raise self._core.failure()
            if not self._started:
                raise RuntimeError(f"supervisor for {self._label} is not running")
            with trio.move_on_at(deadline):
                await self._changed.wait()
                continue
            raise TimeoutError(f"no connection to {self._label} within {timeout:g} s")

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
        return self._core.stats(_now())

    def __repr__(self) -> str:
        return f"<Supervisor {self._label} {self.state}>"

    # -- the loop ----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._core.is_closed:
            outcome = await self._attempt()
            if outcome is None:
                return
            if isinstance(outcome, SupervisedConnection):
                self._interrupted = outcome  # (until it is served: _finish() reports it then)
                reason, error = await self._serve(outcome)
                self._interrupted = None
                outcome = self._core.disconnected(
                    reason, error, trio.current_time(), peer=outcome.peer
                )
            if outcome.delay is None:
                self._notify()
            if not await self._follow(outcome):
                return

    async def _follow(self, step: NextAttempt) -> bool:
        """Call the hooks due after ``step`` and sleep until the next attempt; False to stop."""
        await self._core.call_hooks(step)
        if step.delay is None or self._core.is_closed:
            return False
        await trio.sleep(step.delay)
        return True

    async def _finish(self) -> None:
        """Close what is left (after a close or a crash) and wake every waiter."""
        live, self._live = self._live, None
        self._current = None
        try:
            if live is not None:  # closed during on_connect
                live.close()
                await live._closed()
            interrupted, self._interrupted = self._interrupted, None
            if interrupted is not None:  # a published connection, ended by close()
                interrupted.close()
                await interrupted._closed()
                end = interrupted._end
                assert end is not None
                step = self._core.disconnected(
                    end[0], end[1], trio.current_time(), peer=interrupted.peer
                )
                await self._follow(step)
        finally:
            self._notify()

    async def _attempt(self) -> SupervisedConnection | NextAttempt | None:
        """One attempt: the published connection, the core's answer to its failure, or
        ``None`` once closed."""
        attempt = self._core.attempt_started(trio.current_time())
        if attempt is None:
            return None
        self._core.log_attempt(attempt)
        options = self._options
        try:
            tcp = await self._dialer.attempt_with(TRIO_IO, attempt)
        except _AttemptError as exc:
            return self._core.attempt_failed(exc.last, trio.current_time(), failures=exc.failures)
        except Exception as exc:
            return self._core.attempt_failed(exc, trio.current_time())
        try:
            peer = tuple(tcp.socket.getpeername())
        except OSError:
            peer = None
        try:
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
            if options.ssl is not None:
                tls = trio.SSLStream(tcp, options.ssl, server_hostname=options.server_hostname)
                stream = tls
                with trio.move_on_after(self._dialer.timeout) as scope:
                    await tls.do_handshake()
                if scope.cancelled_caught:
                    raise TimeoutError(f"TLS handshake timed out after {self._dialer.timeout:g} s")
            monitored = MonitoredStream(
                stream, options.heartbeat, ping=options.ping, pong=options.new_matcher()
            )
        except Exception as exc:
            await trio.aclose_forcefully(tcp)
            return self._core.attempt_failed(exc, trio.current_time(), address=peer)
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        conn = SupervisedConnection(monitored, peer)
        self._live = conn  # closed by close(), or by _finish() once cancelled
        try:
            if options.on_connect is not None:
                await call_hook(options.on_connect, conn)
            if conn._end is not None:
                raise ended_during_on_connect(*conn._end)
        except Exception as exc:
            self._live = None
            conn.close()
            await conn._closed()
            self._core.log_on_connect_failed(exc)
            return self._core.attempt_failed(exc, trio.current_time(), address=peer)
        self._core.connected(trio.current_time())
        self._current = conn
        self._notify()
        self._core.log_connected(attempt)
        return conn

    async def _serve(self, conn: SupervisedConnection) -> _End:
        """Wait until the connection ends (and its handler returned); then close it."""
        try:
            async with trio.open_nursery() as nursery:
                handler = self._options.handler
                if handler is not None:
                    nursery.start_soon(
                        self._run_handler, handler, conn, name=f"keepalive-handler:{self._label}"
                    )
                await conn._ended.wait()
                # Closing the stream makes the handler's calls fail: it returns.
                self._current = None
                self._live = None
                self._notify()
                await conn._closed()
        finally:
            self._current = None
            self._live = None
            self._handler_task = None
        assert conn._end is not None
        return conn._end

    async def _run_handler(
        self, handler: Callable[..., object], conn: SupervisedConnection
    ) -> None:
        self._handler_task = trio.lowlevel.current_task()
        try:
            result = handler(conn.stream)
            if not inspect.isawaitable(result):
                raise InvalidSettingType("handler", handler, "an async function (stream)")
            await result
        except Exception as exc:  # ends this connection; the supervisor decides what next
            if not conn.ended and not self._core.is_closed:
                self._core.log_handler_raised(exc)
            conn._end_with(classify_disconnect(exc), exc)
        else:
            conn._end_with(DisconnectReason.CLOSED, None)

    def _notify(self) -> None:
        """Wake every wait_connected()."""
        changed, self._changed = self._changed, trio.Event()
        changed.set()
