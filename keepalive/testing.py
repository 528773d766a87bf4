"""Loopback fault injection: a TCP proxy that misbehaves on demand, and an echo server.

The problem this library exists for is a userspace NAT (VMware vmnat, VirtualBox NAT, slirp,
SOCKS, an SSH tunnel) that terminates the client's TCP connection, opens its own connection to
the server and copies only payload. The proxy's kernel answers the client's keepalive probes, so
when the server dies behind it the client's kernel keepalive never notices.
:class:`FaultProxy` is such a relay, with switchable faults; :class:`EchoServer` is a peer that
answers heartbeat pings. Both run one background thread each around a :mod:`selectors`
selector (no thread per connection, no asyncio) and are meant for loopback addresses::

    from keepalive.testing import EchoServer, FaultProxy

    with EchoServer() as server, FaultProxy(server.address) as proxy:
        sock = socket.create_connection(proxy.address)
        proxy.freeze()   # the server is "gone"; the client's keepalive probes are still answered
        ...
        proxy.forward()  # back to normal; nothing queued meanwhile is lost

Every method that changes a fault is synchronous: when it returns, the background thread has
applied it to every current flow, so no byte is copied under the old fault afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from typing_extensions import Self

from keepalive._validate import check_address, positive_seconds
from keepalive.errors import InvalidSetting, InvalidSettingType

__all__ = ["BUFFER_LIMIT", "EchoServer", "FaultProxy", "ProxyMode"]

ProxyMode = Literal["forward", "freeze", "refuse", "delay", "drop_after_idle"]
"""The fault a :class:`FaultProxy` currently applies (see :attr:`FaultProxy.mode`)."""

BUFFER_LIMIT = 256 * 1024
"""Bytes queued in user space toward one socket before the side feeding it stops being read."""

_CHUNK = 64 * 1024
_ACCEPTS_PER_EVENT = 64
_LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}: close() sends RST

_T = TypeVar("_T")
_Address = tuple[str, int]
_Handler = Callable[[int], None]


# ---------------------------------------------------------------------------------------------
# Socket helpers


def _resolve(address: _Address) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    """The family and socket address of a (host, port) pair, IPv4 or IPv6."""
    family, _, _, _, sockaddr = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[
        0
    ]
    return family, tuple(sockaddr)


def _listen(address: _Address) -> socket.socket:
    family, sockaddr = _resolve(address)
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(128)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def _prepare(sock: socket.socket) -> None:
    """Non-blocking, and no Nagle delay so that measured latencies are the injected ones."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # e.g. a socket already reset by its peer
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):  # already reset: a plain close is all that is left
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


def _local_address(sock: socket.socket) -> _Address:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


# ---------------------------------------------------------------------------------------------
# One selector thread, with commands from other threads run on it synchronously


class _Command(Generic[_T]):
    __slots__ = ("_function", "_result", "done", "error")

    def __init__(self, function: Callable[[], _T]) -> None:
        self._function = function
        self._result: _T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._result = self._function()
        except BaseException as exc:  # handed to the calling thread
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> _T:
        if self.error is not None:
            raise self.error
        return self._result  # type: ignore[return-value]


class _SelectorService:
    """A background thread that dispatches selector events to handlers.

    Registered ``key.data`` is a handler called with the ready event mask. Other threads change
    state only through :meth:`_call`, which runs a function on the service thread (or directly
    while no thread is running) and waits for it, so handlers never need a lock.
    """

    _kind = "service"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: Literal["new", "running", "closed"] = "new"
        self._stopping = False
        self._commands: deque[_Command[Any]] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._masks: dict[socket.socket, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind, then start the background thread; returns ``self``. Only once per object."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"{self._kind} was already started")
            self._state = "running"
        try:
            self._selector = selectors.DefaultSelector()
            self._wake_reader, self._wake_writer = socket.socketpair()
            self._wake_reader.setblocking(False)
            self._wake_writer.setblocking(False)
            self._selector.register(self._wake_reader, selectors.EVENT_READ, self._on_wake)
            self._open()
            self._thread = threading.Thread(
                target=self._run, name=f"keepalive-{self._kind}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._teardown()
            self._release_selector()
            with self._lock:
                self._state = "closed"
            self._run_commands()  # release anyone who queued a change meanwhile
            raise
        return self

    def close(self) -> None:
        """Close every socket and join the thread. Idempotent.

        Raises :class:`RuntimeError` (once) if the background thread died of an unexpected error.
        """
        with self._lock:
            if self._state == "new":
                self._state = "closed"
                return
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._release_selector()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError(f"the {self._kind} thread failed: {failure!r}") from failure

    def __enter__(self) -> Self:
        if self._state == "new":
            self.start()
        elif self._state == "closed":
            raise RuntimeError(f"{self._kind} is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- for subclasses ------------------------------------------------------------------------

    def _open(self) -> None:
        """Create and register the service's own sockets (runs in :meth:`start`)."""
        raise NotImplementedError

    def _teardown(self) -> None:
        """Close every socket the service opened (on its thread, or after a failed start)."""
        raise NotImplementedError

    def _timeout(self) -> float | None:
        """Seconds until :meth:`_tick` is due; None to wait for events only."""
        return None

    def _tick(self) -> None:
        """Called after every round of events (for timers)."""

    def _set_interest(self, sock: socket.socket, mask: int, handler: _Handler) -> None:
        """Watch ``sock`` for ``mask`` (0: not at all), calling ``handler(ready_mask)``."""
        selector = self._selector
        if selector is None:
            return
        current = self._masks.get(sock, 0)
        if mask == current:
            return
        if current == 0:
            selector.register(sock, mask, handler)
            self._masks[sock] = mask
        elif mask == 0:
            selector.unregister(sock)
            del self._masks[sock]
        else:
            selector.modify(sock, mask, handler)
            self._masks[sock] = mask

    def _forget(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` (call before closing it)."""
        if self._masks.pop(sock, 0) and self._selector is not None:
            self._selector.unregister(sock)

    def _call(self, function: Callable[[], _T]) -> _T:
        """Run ``function`` on the service thread and return its result (thread-safe)."""
        with self._lock:
            if self._state != "running":
                # No thread to race with: before start, or after close (nothing left to change).
                return function()
            command: _Command[_T] = _Command(function)
            self._commands.append(command)
        self._wake()
        command.done.wait()
        return command.result()

    # -- the thread ----------------------------------------------------------------------------

    def _wake(self) -> None:
        writer = self._wake_writer
        if writer is None:
            return
        with contextlib.suppress(OSError):  # BlockingIOError: a wake-up is already pending
            writer.send(b"\0")

    def _on_wake(self, _mask: int) -> None:
        assert self._wake_reader is not None
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._run_commands()

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                command = self._commands.popleft()
            command.run()

    def _run(self) -> None:
        assert self._selector is not None
        try:
            while not self._stopping:
                for key, mask in self._selector.select(self._timeout()):
                    # An earlier handler of this round (or a command such as reset(), run by
                    # the wake-up handler) may have unregistered and closed this socket: its
                    # event is stale, and its fd closed (EBADF) or reused. Deliver only what
                    # is still watched; the wake-up socket is registered outside _masks.
                    ready = mask
                    if key.fileobj is not self._wake_reader:
                        ready &= self._masks.get(key.fileobj, 0)  # type: ignore[call-overload]
                    if ready:
                        handler: _Handler = key.data
                        handler(ready)
                self._tick()
        except BaseException as exc:
            self._failure = exc
        finally:
            try:
                self._teardown()
            except BaseException as exc:  # pragma: no cover - closing sockets does not fail
                self._failure = self._failure or exc
            with self._lock:
                self._state = "closed"
            self._run_commands()  # release callers that queued work while we were stopping

    def _release_selector(self) -> None:
        for sock in (self._wake_reader, self._wake_writer):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._selector = self._wake_reader = self._wake_writer = None
        self._masks.clear()


# ---------------------------------------------------------------------------------------------
# FaultProxy


class _Chunk:
    __slots__ = ("data", "release_at")

    def __init__(self, data: memoryview, release_at: float) -> None:
        self.data = data
        self.release_at = release_at


class _Side:
    """One of a flow's two connections: the client's, or the proxy's own to the server."""

    __slots__ = (
        "eof_received",
        "handler",
        "last_release",
        "outbox",
        "queued",
        "shut_pending",
        "shut_sent",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.handler: _Handler = lambda _mask: None
        self.outbox: deque[_Chunk] = deque()  # bytes waiting to be written to this socket
        self.queued = 0  # total size of outbox
        self.last_release = 0.0  # release time of the newest chunk: delays never reorder
        self.eof_received = False  # this socket sent FIN (recv returned b"")
        self.shut_pending = False  # the peer sent FIN: shut this one down once outbox drains
        self.shut_sent = False

    def discard_outbox(self) -> int:
        dropped = self.queued
        self.outbox.clear()
        self.queued = 0
        return dropped


class _Flow:
    __slots__ = ("client", "connecting", "forgotten", "last_activity", "server")

    def __init__(self, client: _Side, server: _Side, now: float) -> None:
        self.client = client
        self.server = server
        self.connecting = True
        self.forgotten = False  # drop_after_idle: the NAT lost this flow for good
        self.last_activity = now

    def peer(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client


class FaultProxy(_SelectorService):
    """A TCP relay on loopback that copies payload between a client and ``upstream``, with faults.

    Each accepted client connection (a *flow*) gets the proxy's own connection to ``upstream``,
    exactly like a userspace NAT: the client's keepalive probes are answered by the kernel on the
    proxy's side and never reach the server. Use as a context manager, or :meth:`start` then
    :meth:`close`. Connect clients to :attr:`address`.

    Faults (one at a time; each call replaces the previous one, applies to current and new flows,
    and has taken effect when it returns):

    - :meth:`forward`: copy normally (the default).
    - :meth:`freeze`: copy nothing and read nothing; both connections stay open and both kernels
      keep ACKing and answering keepalive probes: the server looks alive to the client's kernel.
    - :meth:`refuse`: reset new client connections at once (server down); current flows go on.
    - :meth:`delay`: hold every chunk that long, in both directions, in order.
    - :meth:`drop_after_idle`: a NAT that forgets flows that were silent for that long.

    :meth:`reset` is an action rather than a fault: it resets every current flow and leaves the
    mode as it is.

    Bytes are copied in chunks of up to 64 KiB. At most about :data:`BUFFER_LIMIT` bytes are held
    toward each socket; beyond that the side feeding it is not read (backpressure). A FIN from one
    side is passed on as ``shutdown(SHUT_WR)`` to the other once its queued bytes are written; an
    error or RST on one side resets the other. If ``upstream`` refuses the proxy's connection, the
    client's connection is reset.
    """

    _kind = "FaultProxy"

    def __init__(self, upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0)):
        super().__init__()
        self._upstream = check_address(upstream, field="upstream")
        self._listen_at = check_address(listen, field="listen", allow_port_zero=True)
        self._listener: socket.socket | None = None
        self._address: _Address | None = None
        self._upstream_family = socket.AF_INET
        self._upstream_sockaddr: tuple[object, ...] = ()
        self._mode: ProxyMode = "forward"
        self._seconds: float | None = None
        self._flows: dict[_Side, _Flow] = {}  # both sides of each flow map to it
        self._timed: set[_Side] = set()  # sides whose next chunk is held back by delay()
        self._bytes_to_server = 0
        self._bytes_to_client = 0
        self._bytes_discarded = 0
        self._accepted = 0
        self._refused = 0

    # -- public state --------------------------------------------------------------------------

    @property
    def upstream(self) -> tuple[str, int]:
        """The (host, port) every flow is relayed to."""
        return self._upstream

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) clients connect to. Available once started."""
        if self._address is None:
            raise RuntimeError("FaultProxy is not started: use start() or a with block")
        return self._address

    @property
    def mode(self) -> ProxyMode:
        """The current fault: "forward", "freeze", "refuse", "delay" or "drop_after_idle"."""
        return self._mode

    @property
    def mode_seconds(self) -> float | None:
        """The seconds given to :meth:`delay` or :meth:`drop_after_idle`; None in other modes."""
        return self._seconds

    @property
    def flows(self) -> int:
        """Number of live flows (client connections with their upstream connection)."""
        return len(self._flows) // 2

    @property
    def accepted(self) -> int:
        """Client connections accepted so far, including refused ones."""
        return self._accepted

    @property
    def refused(self) -> int:
        """Client connections reset on arrival by :meth:`refuse` or a failed upstream connect."""
        return self._refused

    @property
    def buffered(self) -> int:
        """Bytes read from one side and not yet written to the other, over all flows.

        Bounded by about :data:`BUFFER_LIMIT` plus one 64 KiB chunk per direction and flow.
        """
        return self._call(lambda: sum(side.queued for side in self._flows))

    @property
    def bytes_to_server(self) -> int:
        """Payload bytes written to upstream connections (client to server direction)."""
        return self._bytes_to_server

    @property
    def bytes_to_client(self) -> int:
        """Payload bytes written to client connections (server to client direction)."""
        return self._bytes_to_client

    @property
    def bytes_discarded(self) -> int:
        """Payload bytes read but never delivered: by drop_after_idle, reset() or a dead peer."""
        return self._bytes_discarded

    def __repr__(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "not started"
        return (
            f"<FaultProxy {where} -> {self._upstream[0]}:{self._upstream[1]}"
            f" mode={self._mode} flows={self.flows}>"
        )

    # -- faults --------------------------------------------------------------------------------

    def forward(self) -> None:
        """Copy normally. Undoes every fault; chunks held by :meth:`delay` are released now.

        After :meth:`freeze`, copying resumes where it stopped: nothing queued is lost or
        reordered. Flows already forgotten by :meth:`drop_after_idle` stay forgotten (a NAT that
        lost a flow does not get it back).
        """
        self._call(lambda: self._switch("forward", None))

    def freeze(self) -> None:
        """Stop copying and reading, in both directions, for current and new flows.

        Every connection stays open and unread: the client's kernel sees its bytes acknowledged
        and its keepalive probes answered by the proxy's kernel, the server's likewise, yet
        nothing crosses. New client connections are still accepted and connected upstream.
        This is the "server is gone behind a userspace NAT" case. :meth:`forward` resumes.
        """
        self._call(lambda: self._switch("freeze", None))

    def refuse(self) -> None:
        """Reset new client connections as soon as they arrive; current flows keep copying.

        Combine with :meth:`reset` for a server that is completely down. :meth:`forward` undoes it.
        """
        self._call(lambda: self._switch("refuse", None))

    def delay(self, seconds: float) -> None:
        """Hold every chunk read from either side ``seconds`` before writing it on (order kept).

        Applies to chunks read from now on; an established flow's round trip grows by twice
        ``seconds``. Throughput is bounded by :data:`BUFFER_LIMIT` bytes per ``seconds``.
        """
        value = positive_seconds("delay", seconds, allow_zero=True)
        self._call(lambda: self._switch("delay", value))

    def drop_after_idle(self, seconds: float) -> None:
        """Act like a NAT that forgets flows silent for longer than ``seconds``.

        Once a flow carried no payload in either direction for ``seconds`` (measured from its
        last payload, or from its creation), the next bytes from either side, and all later ones,
        are read and silently discarded, FINs included: both connections stay open but nothing
        crosses any more, for good. Flows that keep talking more often than that are copied
        normally.
        """
        value = positive_seconds("drop_after_idle", seconds)
        self._call(lambda: self._switch("drop_after_idle", value))

    def reset(self) -> int:
        """Reset (RST) both connections of every current flow and drop them; returns how many.

        Queued bytes are discarded. The mode is unchanged: new connections are still accepted
        and handled under it (forwarded, unless :meth:`refuse` or another fault is set).
        """
        return self._call(self._reset_all)

    # -- service hooks (all below run on the proxy thread) -------------------------------------

    def _open(self) -> None:
        self._upstream_family, self._upstream_sockaddr = _resolve(self._upstream)
        self._listener = _listen(self._listen_at)
        self._address = _local_address(self._listener)
        self._set_interest(self._listener, selectors.EVENT_READ, self._on_accept)

    def _teardown(self) -> None:
        for flow in self._live_flows():
            self._close_flow(flow, abort=False)
        if self._listener is not None:
            self._forget(self._listener)
            self._listener.close()

    def _timeout(self) -> float | None:
        due = min((side.outbox[0].release_at for side in self._timed if side.outbox), default=None)
        return None if due is None else max(0.0, due - time.monotonic())

    def _tick(self) -> None:
        if not self._timed:
            return
        now = time.monotonic()
        for side in [
            side for side in self._timed if not side.outbox or side.outbox[0].release_at <= now
        ]:
            flow = self._flows.get(side)
            if flow is None:
                self._timed.discard(side)
                continue
            self._flush(flow, side)
            self._refresh(flow)

    def _live_flows(self) -> list[_Flow]:
        return list(dict.fromkeys(self._flows.values()))

    def _switch(self, mode: ProxyMode, seconds: float | None) -> None:
        self._mode = mode
        self._seconds = seconds
        if mode != "delay":  # held chunks are due now
            for side in self._flows:
                for chunk in side.outbox:
                    chunk.release_at = 0.0
                side.last_release = 0.0
        for flow in self._live_flows():
            for side in (flow.client, flow.server):
                if side in self._flows:
                    self._flush(flow, side)  # does nothing while frozen
            self._refresh(flow)

    def _reset_all(self) -> int:
        flows = self._live_flows()
        for flow in flows:
            self._close_flow(flow, abort=True)
        return len(flows)

    # -- flows ---------------------------------------------------------------------------------

    def _on_accept(self, _mask: int) -> None:
        assert self._listener is not None
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                client_sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ECONNABORTED, EMFILE: skip this one, keep serving
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return
                continue
            self._accepted += 1
            if self._mode == "refuse":
                self._refused += 1
                _abort(client_sock)
                continue
            self._connect_upstream(client_sock)

    def _connect_upstream(self, client_sock: socket.socket) -> None:
        try:
            server_sock = socket.socket(self._upstream_family, socket.SOCK_STREAM)
        except OSError:
            self._refused += 1
            _abort(client_sock)
            return
        _prepare(client_sock)
        _prepare(server_sock)
        code = server_sock.connect_ex(self._upstream_sockaddr)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self._refused += 1
            server_sock.close()
            _abort(client_sock)
            return
        flow = _Flow(_Side(client_sock), _Side(server_sock), time.monotonic())
        for side in (flow.client, flow.server):
            side.handler = self._handler(flow, side)
            self._flows[side] = flow
        self._refresh(flow)

    def _handler(self, flow: _Flow, side: _Side) -> _Handler:
        def handle(mask: int) -> None:
            if self._flows.get(side) is not flow:  # closed meanwhile: a stale event
                return
            if flow.connecting:
                self._on_connected(flow)
                return
            if mask & selectors.EVENT_WRITE:
                self._flush(flow, side)
            if mask & selectors.EVENT_READ and side in self._flows:
                self._receive(flow, side)
            self._refresh(flow)

        return handle

    def _on_connected(self, flow: _Flow) -> None:
        error = flow.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._refused += 1
            self._close_flow(flow, abort=True)
            return
        flow.connecting = False
        self._refresh(flow)

    def _receive(self, flow: _Flow, side: _Side) -> None:
        try:
            data = side.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lose_side(flow, side)
            return
        now = time.monotonic()
        peer = flow.peer(side)
        if not data:
            side.eof_received = True
            if flow.forgotten:
                if peer.eof_received:  # both ends left a forgotten flow: nothing holds it open
                    self._close_flow(flow, abort=False)
                return
            peer.shut_pending = True
            self._flush(flow, peer)
            return
        if self._mode == "drop_after_idle" and not flow.forgotten:
            assert self._seconds is not None
            if now - flow.last_activity > self._seconds:
                flow.forgotten = True
                self._bytes_discarded += flow.client.discard_outbox()
                self._bytes_discarded += flow.server.discard_outbox()
                for forgotten_side in (flow.client, flow.server):
                    self._timed.discard(forgotten_side)
        if flow.forgotten:
            self._bytes_discarded += len(data)
            return
        flow.last_activity = now
        release_at = 0.0
        if self._mode == "delay":
            assert self._seconds is not None
            release_at = max(now + self._seconds, peer.last_release)
            peer.last_release = release_at
        peer.outbox.append(_Chunk(memoryview(data), release_at))
        peer.queued += len(data)
        self._flush(flow, peer)

    def _flush(self, flow: _Flow, side: _Side) -> None:
        """Write ``side``'s released chunks, then pass a pending FIN on once they are out."""
        if self._mode == "freeze" or flow.connecting or flow.forgotten:
            return
        now = time.monotonic()
        sent_total = 0
        while side.outbox and side.outbox[0].release_at <= now:
            chunk = side.outbox[0]
            try:
                sent = side.sock.send(chunk.data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._lose_side(flow, side)
                return
            sent_total += sent
            if sent < len(chunk.data):
                chunk.data = chunk.data[sent:]
                break
            side.outbox.popleft()
        if sent_total:
            side.queued -= sent_total
            flow.last_activity = now
            if side is flow.server:
                self._bytes_to_server += sent_total
            else:
                self._bytes_to_client += sent_total
        if side.shut_pending and not side.outbox and not side.shut_sent:
            side.shut_sent = True
            try:
                side.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._lose_side(flow, side)
                return
            if flow.peer(side).shut_sent:
                self._close_flow(flow, abort=False)  # both directions are finished

    def _refresh(self, flow: _Flow) -> None:
        """Bring the selector interest and delay timers of both sides up to date."""
        if flow.client not in self._flows:  # closed meanwhile
            return
        frozen = self._mode == "freeze"
        if flow.connecting:
            self._set_interest(flow.client.sock, 0, flow.client.handler)
            self._set_interest(
                flow.server.sock, 0 if frozen else selectors.EVENT_WRITE, flow.server.handler
            )
            return
        now = time.monotonic()
        for side in (flow.client, flow.server):
            peer = flow.peer(side)
            mask = 0
            if not frozen:
                if not side.eof_received and (flow.forgotten or peer.queued < BUFFER_LIMIT):
                    mask |= selectors.EVENT_READ
                if side.outbox and side.outbox[0].release_at <= now and not flow.forgotten:
                    mask |= selectors.EVENT_WRITE
            self._set_interest(side.sock, mask, side.handler)
            if not frozen and side.outbox and side.outbox[0].release_at > now:
                self._timed.add(side)
            else:
                self._timed.discard(side)

    def _lose_side(self, flow: _Flow, side: _Side) -> None:
        """``side`` failed (reset, broken pipe): reset the other one, as a relay would."""
        if flow.forgotten:  # a forgotten flow tells the other side nothing, ever
            side.eof_received = True
            self._forget(side.sock)
            if flow.peer(side).eof_received:
                self._close_flow(flow, abort=False)
            return
        self._close_flow(flow, abort=True)

    def _close_flow(self, flow: _Flow, *, abort: bool) -> None:
        for side in (flow.client, flow.server):
            self._bytes_discarded += side.discard_outbox()
            self._timed.discard(side)
            self._flows.pop(side, None)
            self._forget(side.sock)
            if abort:
                _abort(side.sock)
            else:
                side.sock.close()


# ---------------------------------------------------------------------------------------------
# EchoServer


class _LineEcho:
    """What an :class:`EchoServer` connection sends back, as a pure function of what it got.

    Every complete line equal to ``ping`` (which ends with its only newline) is replaced by
    ``pong``; every other byte is echoed unchanged, in order, as soon as it is known not to belong
    to a ping line. Only a proper prefix of ``ping`` at a line start is ever held back.
    """

    __slots__ = ("_held", "_in_other_line", "_ping", "_pong")

    def __init__(self, ping: bytes, pong: bytes) -> None:
        self._ping = ping
        self._pong = pong
        self._held = b""  # start of the current line, a proper prefix of ping
        self._in_other_line = False  # the current line is known not to be a ping line

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        position = 0
        while position < len(data):
            if self._in_other_line:
                newline = data.find(b"\n", position)
                end = len(data) if newline == -1 else newline + 1
                out += data[position:end]
                position = end
                self._in_other_line = newline == -1
                continue
            wanted = len(self._ping) - len(self._held)
            candidate = self._held + data[position : position + wanted]
            if not self._ping.startswith(candidate):
                # Not a ping line: echo what was held and pass the rest of the line through.
                # (A newline inside ``candidate`` ends the line; the pass-through stops there.)
                out += self._held
                self._held = b""
                self._in_other_line = True
                continue
            position += len(candidate) - len(self._held)
            if len(candidate) == len(self._ping):
                out += self._pong
                self._held = b""
            else:
                self._held = candidate
        return bytes(out)

    def finish(self) -> bytes:
        """The bytes still held back when the peer sends EOF (an incomplete line)."""
        held, self._held = self._held, b""
        return held


class _PassThrough:
    """A pure byte echo (``ping=None``)."""

    __slots__ = ()

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _EchoConnection:
    __slots__ = ("echo", "eof_received", "handler", "outbox", "sock")

    def __init__(self, sock: socket.socket, echo: _LineEcho | _PassThrough) -> None:
        self.sock = sock
        self.echo = echo
        self.outbox = bytearray()
        self.eof_received = False
        self.handler: _Handler = lambda _mask: None


class EchoServer(_SelectorService):
    """A loopback server that echoes what it receives and answers heartbeat pings.

    With ``ping`` set (default ``b"PING\\n"``) the server is line-oriented: every complete line
    equal to ``ping`` is answered with ``pong`` instead of being echoed; all other bytes are
    echoed unchanged and in order, partial lines as soon as they cannot be a ping line any more.
    With ``ping=None`` it is a pure byte echo. When a client sends EOF, the rest is echoed and
    the server closes its side.

    One background thread serves every connection. Use as a context manager, or :meth:`start`
    then :meth:`close`; connect to :attr:`address`. :meth:`pause` simulates a stuck server
    process (its kernel still accepts and ACKs); :meth:`kill_connections` a crashed one.
    """

    _kind = "EchoServer"

    def __init__(
        self,
        *,
        ping: bytes | None = b"PING\n",
        pong: bytes = b"PONG\n",
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__()
        if ping is not None:
            allowed = "bytes ending with its only newline, e.g. b'PING\\n', or None"
            if not isinstance(ping, bytes):
                raise InvalidSettingType("ping", ping, allowed)
            if not ping.endswith(b"\n") or b"\n" in ping[:-1]:
                raise InvalidSetting("ping", ping, allowed)
        if not isinstance(pong, bytes):
            raise InvalidSettingType("pong", pong, "bytes")
        if not isinstance(host, str):
            raise InvalidSettingType("host", host, "a host name or address string")
        self._ping = ping
        self._pong = pong
        self._host = host
        self._listener: socket.socket | None = None
        self._address: _Address | None = None
        self._connections: dict[socket.socket, _EchoConnection] = {}
        self._paused = False
        self._accepted = 0

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) to connect to. Available once started."""
        if self._address is None:
            raise RuntimeError("EchoServer is not started: use start() or a with block")
        return self._address

    @property
    def connections(self) -> int:
        """Number of currently open client connections."""
        return len(self._connections)

    @property
    def accepted(self) -> int:
        """Client connections accepted so far."""
        return self._accepted

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def __repr__(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "not started"
        return f"<EchoServer {where} connections={self.connections} paused={self._paused}>"

    def pause(self) -> None:
        """Stop reading, writing and accepting, like a stuck server process.

        The kernel still completes handshakes (into the listen backlog) and ACKs incoming bytes
        until its buffers fill, so keepalive probes are answered. :meth:`resume` undoes it.
        """
        self._call(lambda: self._set_paused(True))

    def resume(self) -> None:
        """Serve again after :meth:`pause`, including bytes and connections queued meanwhile."""
        self._call(lambda: self._set_paused(False))

    def kill_connections(self) -> int:
        """Reset (RST) every current client connection, like a crashed server; returns how many.

        The server keeps listening and serves new connections.
        """
        return self._call(self._kill_all)

    # -- service hooks (all below run on the server thread) ------------------------------------

    def _open(self) -> None:
        self._listener = _listen((self._host, 0))
        self._address = _local_address(self._listener)
        if not self._paused:  # pause() may come before start()
            self._set_interest(self._listener, selectors.EVENT_READ, self._on_accept)

    def _teardown(self) -> None:
        for connection in list(self._connections.values()):
            self._drop(connection, abort=False)
        if self._listener is not None:
            self._forget(self._listener)
            self._listener.close()

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self._listener is not None:
            self._set_interest(
                self._listener, 0 if paused else selectors.EVENT_READ, self._on_accept
            )
        for connection in list(self._connections.values()):
            self._flush(connection)  # does nothing while paused
            self._refresh(connection)

    def _kill_all(self) -> int:
        connections = list(self._connections.values())
        for connection in connections:
            self._drop(connection, abort=True)
        return len(connections)

    def _on_accept(self, _mask: int) -> None:
        assert self._listener is not None
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return
                continue
            self._accepted += 1
            _prepare(sock)
            echo: _LineEcho | _PassThrough = (
                _PassThrough() if self._ping is None else _LineEcho(self._ping, self._pong)
            )
            connection = _EchoConnection(sock, echo)
            connection.handler = self._handler(connection)
            self._connections[sock] = connection
            self._refresh(connection)

    def _handler(self, connection: _EchoConnection) -> _Handler:
        def handle(mask: int) -> None:
            if self._connections.get(connection.sock) is not connection:  # dropped: stale
                return
            if mask & selectors.EVENT_WRITE:
                self._flush(connection)
            if mask & selectors.EVENT_READ and connection.sock in self._connections:
                self._receive(connection)
            self._refresh(connection)

        return handle

    def _receive(self, connection: _EchoConnection) -> None:
        try:
            data = connection.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(connection, abort=False)
            return
        if data:
            connection.outbox += connection.echo.feed(data)
        else:
            connection.eof_received = True
            connection.outbox += connection.echo.finish()
        self._flush(connection)

    def _flush(self, connection: _EchoConnection) -> None:
        if self._paused:
            return
        while connection.outbox:
            try:
                sent = connection.sock.send(connection.outbox)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(connection, abort=False)
                return
            del connection.outbox[:sent]
        if connection.eof_received:  # everything is echoed and the client is done
            self._drop(connection, abort=False)

    def _refresh(self, connection: _EchoConnection) -> None:
        if connection.sock not in self._connections:  # dropped meanwhile
            return
        mask = 0
        if not self._paused:
            if not connection.eof_received and len(connection.outbox) < BUFFER_LIMIT:
                mask |= selectors.EVENT_READ
            if connection.outbox:
                mask |= selectors.EVENT_WRITE
        self._set_interest(connection.sock, mask, connection.handler)

    def _drop(self, connection: _EchoConnection, *, abort: bool) -> None:
        self._forget(connection.sock)
        if abort:
            _abort(connection.sock)
        else:
            connection.sock.close()
        # Uncounted only once closed: another thread that sees ``connections`` drop may count
        # this process's descriptors at once.
        self._connections.pop(connection.sock, None)
