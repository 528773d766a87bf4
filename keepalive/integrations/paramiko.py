"""OpenSSH's ``ServerAliveInterval`` / ``ServerAliveCountMax`` for paramiko.

paramiko's ``Transport.set_keepalive(n)`` sends ``keepalive@openssh.com`` requests *without*
asking for a reply and never declares the server dead (paramiko#918, #2463, #2326). Kernel
keepalive sees only the nearest TCP peer, which behind a userspace NAT, a SOCKS proxy or an SSH
jump is not the server. :func:`server_alive` adds what is missing: a thread per transport that
sends ``keepalive@openssh.com`` global requests *with* ``want_reply`` (the server must answer,
with SUCCESS or, as OpenSSH does for requests it does not know, FAILURE: both are answers),
timed by :class:`keepalive.heartbeat.Heartbeat` from a :class:`~keepalive.HeartbeatConfig`
(``interval`` = ServerAliveInterval, ``misses`` = ServerAliveCountMax), and the verdict:
:class:`~keepalive.PeerUnresponsive`, the transport closed, ``on_dead`` called.

As in OpenSSH, a request is sent only after ``interval`` seconds in which no packet at all
arrived from the server: any inbound packet is life, so a busy session costs nothing.

paramiko offers no public way to send a request that wants a reply without blocking on it, so
this hooks the transport, per instance: its handler table (which paramiko keeps per instance
for "per-instance manipulation") for the replies, its packetizer's ``read_message`` to see
every inbound packet, and ``_send_message`` to note who owns each reply: replies to global
requests carry no request id and come in request order (OpenSSH's client relies on that too),
so replies to the application's own (``request_port_forward``) still reach paramiko.
Tested with paramiko 5.1.0 against OpenSSH 9.2.
"""

from __future__ import annotations

import collections
import importlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from keepalive._unread import peer_may_be_blocked, unread_bytes
from keepalive.errors import InvalidSettingType, PeerUnresponsive
from keepalive.heartbeat import Heartbeat, HeartbeatConfig, PeerDead, SendPing, Wait

__all__ = ["KEEPALIVE_REQUEST", "ServerAlive", "server_alive"]

KEEPALIVE_REQUEST: Final = "keepalive@openssh.com"
"""The global request OpenSSH's client sends for ``ServerAliveInterval``."""

# RFC 4253 section 12 message numbers.
_MSG_DISCONNECT: Final = 1
_MSG_GLOBAL_REQUEST: Final = 80
_MSG_REQUEST_SUCCESS: Final = 81
_MSG_REQUEST_FAILURE: Final = 82

_CHECK_ACTIVE: Final = 0.5  # seconds between checks that the transport still runs

_WATCHED: Final = "_keepalive_server_alive"  # on the transport: its ServerAlive

_OURS: Final = True
_THEIRS: Final = False


def _wants_reply(message: Any) -> bool:
    """Whether an outgoing paramiko ``Message`` is a global request with ``want_reply`` set."""
    with message.packet.getbuffer() as view:  # no copy of every data packet's payload
        if not view or view[0] != _MSG_GLOBAL_REQUEST:
            return False
    # byte 80, string request name (uint32 length + bytes), boolean want_reply
    payload: bytes = message.asbytes()
    end = 5 + int.from_bytes(payload[1:5], "big")
    return len(payload) > end and payload[end] != 0


class ServerAlive:
    """Watches one paramiko ``Transport`` with keepalive requests the server must answer.

    A transport can be watched by one ``ServerAlive`` in its life (a second raises
    ``ValueError``).

    Made and started by :func:`server_alive`. ``error`` holds the
    :class:`~keepalive.PeerUnresponsive` once the server was declared dead; :meth:`wait`
    blocks until the monitor ends (verdict, transport closed, or :meth:`stop`).
    """

    def __init__(
        self,
        transport: Any,
        heartbeat: HeartbeatConfig,
        *,
        on_dead: Callable[[PeerUnresponsive], object] | None = None,
        close: bool = True,
    ) -> None:
        if not isinstance(heartbeat, HeartbeatConfig):
            raise InvalidSettingType("heartbeat", heartbeat, "a keepalive.HeartbeatConfig")
        if on_dead is not None and not callable(on_dead):
            raise InvalidSettingType("on_dead", on_dead, "a callable or None")
        table = vars(transport).get("_handler_table")
        packetizer = getattr(transport, "packetizer", None)
        if (
            not isinstance(table, dict)
            or not callable(getattr(packetizer, "read_message", None))
            or not callable(getattr(transport, "_send_message", None))
            or not callable(getattr(transport, "_send_user_message", None))
        ):
            raise TypeError(
                f"{transport!r} is not a paramiko.Transport this integration knows "
                "(it needs a per-instance _handler_table; tested with paramiko 5.1)"
            )
        if getattr(transport, _WATCHED, None) is not None:
            # Two sets of hooks would each queue reply owners and split the replies between them.
            raise ValueError(
                f"{transport!r} is already watched by {getattr(transport, _WATCHED)!r}"
            )
        self._transport: Any = transport
        self._config = heartbeat
        self._on_dead = on_dead
        self._close = close
        self._cond = threading.Condition()
        self._order = threading.Lock()  # guards _owners
        self._ping_message: object = None
        self._owners: collections.deque[bool] = collections.deque()
        self._heartbeat = Heartbeat(heartbeat, time.monotonic())
        self._wake_at = 0.0
        self._stopping = False
        self._error: PeerUnresponsive | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"keepalive-ssh-{id(transport):x}", daemon=True
        )
        self._install(table, packetizer)
        setattr(transport, _WATCHED, self)

    # -- hooks (they run on the transport's thread, or the application's) ----------------------

    def _install(self, table: dict[int, Callable[[Any], None]], packetizer: Any) -> None:
        read_message = packetizer.read_message
        send_message = self._transport._send_message

        def read() -> tuple[int, Any]:
            try:
                ptype, message = read_message()
            except BaseException:
                self._wake()  # the transport is ending (EOF, closed, socket error)
                raise
            self._life(pong=False)
            if ptype == _MSG_DISCONNECT:
                self._wake()
            return ptype, message

        def send(message: Any) -> None:
            # Queue who owns the reply just before the request goes out (paramiko serialises
            # user messages), so replies, which come in request order, find their owner.
            if _wants_reply(message):
                with self._order:
                    self._owners.append(message is self._ping_message)
            send_message(message)

        for ptype in (_MSG_REQUEST_SUCCESS, _MSG_REQUEST_FAILURE):
            table[ptype] = self._reply_handler(table[ptype])
        packetizer.read_message = read
        self._transport._send_message = send

    def _reply_handler(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        def handle(message: Any) -> None:
            with self._order:
                owner = self._owners.popleft() if self._owners else _THEIRS
            if owner is _OURS:
                self._life(pong=True)  # ours: keep it from paramiko's global_request()
            else:
                original(message)

        return handle

    def _life(self, *, pong: bool) -> None:
        now = time.monotonic()
        with self._cond:
            if pong:
                self._heartbeat.pong_received(now)
            else:
                self._heartbeat.bytes_received(now)
            deadline = self._heartbeat.deadline
            # Rarely the deadline moves earlier (interval < the rest of a ping's timeout).
            if deadline is not None and deadline < self._wake_at:
                self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the monitor thread --------------------------------------------------------------------

    def _run(self) -> None:
        transport = self._transport
        while True:
            with self._cond:
                if self._stopping or not transport.is_active():
                    return
                now = time.monotonic()
                if self._heartbeat.miss_possible(now):
                    self._look_for_unread(now)  # a verdict is final: bytes first
                action = self._heartbeat.poll(now)
                if isinstance(action, Wait):
                    self._wake_at = action.deadline
                    # Capped: the transport can end unseen by our hooks (a read already in
                    # progress when they were installed, a handler raising). paramiko's own
                    # thread wakes ten times a second anyway.
                    self._cond.wait(min(action.deadline - now, _CHECK_ACTIVE))
                    continue
            if isinstance(action, SendPing):
                self._ping()
                continue
            assert isinstance(action, PeerDead)
            self._verdict(action.as_error())
            return

    def _look_for_unread(self, now: float) -> None:
        # Bytes in the kernel that paramiko's thread has not read yet (it was busy, or starved
        # of the GIL) are life, as in the library's own drivers.
        sock = self._transport.sock
        if not isinstance(sock, socket.socket):
            return  # a ProxyCommand or a channel: nothing to ask the kernel
        count = unread_bytes(sock.fileno())
        self._heartbeat.unread(now, count, peer_blocked=peer_may_be_blocked(sock, count))

    def _ping(self) -> None:
        # Imported by name: paramiko ships no type information (types-paramiko is optional).
        message = importlib.import_module("paramiko.message").Message()
        message.add_byte(bytes([_MSG_GLOBAL_REQUEST]))
        message.add_string(KEEPALIVE_REQUEST)
        message.add_boolean(True)
        self._ping_message = message
        with self._cond:  # before the send: the reply may beat its return
            self._heartbeat.ping_sent(time.monotonic())
        # Waits while a key exchange runs, like every message the application sends; returns
        # without sending once the transport is inactive. A key exchange that never ends
        # raises after paramiko's clear_to_send_timeout: the ping's window has run meanwhile.
        try:
            self._transport._send_user_message(message)
        except Exception:  # the heartbeat, not this thread's death, decides
            return

    def _verdict(self, error: PeerUnresponsive) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()
        if self._close:
            self._transport.close()
            # After close(): the transport thread's own EOF would overwrite it. paramiko
            # raises it from open_channel() and returns it from get_exception().
            self._transport.saved_exception = error
        if self._on_dead is not None:
            self._on_dead(error)

    # -- public --------------------------------------------------------------------------------

    @property
    def transport(self) -> Any:
        """The watched ``paramiko.Transport``."""
        return self._transport

    @property
    def config(self) -> HeartbeatConfig:
        """The heartbeat's configuration."""
        return self._config

    @property
    def error(self) -> PeerUnresponsive | None:
        """The verdict once the server was declared dead, else ``None``."""
        return self._error

    @property
    def dead(self) -> bool:
        """Whether the server was declared dead."""
        return self._error is not None

    @property
    def pings_sent(self) -> int:
        """Keepalive requests sent."""
        with self._cond:
            return self._heartbeat.pings_sent

    @property
    def replies(self) -> int:
        """Replies (SUCCESS or FAILURE) received to our keepalive requests."""
        with self._cond:
            return self._heartbeat.pongs_received

    @property
    def rtt(self) -> float | None:
        """The last request-to-reply round trip in seconds, or ``None``."""
        with self._cond:
            return self._heartbeat.rtt

    @property
    def running(self) -> bool:
        """Whether the monitor thread is still running."""
        return self._thread.is_alive()

    def start(self) -> ServerAlive:
        """Start the monitor thread (once); returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop monitoring (the transport stays open; the hooks stay, inert)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the monitor ends (verdict, transport closed, or stopped); True if so."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def check(self) -> None:
        """Raise the verdict, if there is one."""
        if self._error is not None:
            raise self._error

    def __enter__(self) -> ServerAlive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "dead" if self.dead else "running" if self.running else "stopped"
        return f"<ServerAlive {state} pings={self.pings_sent} replies={self.replies}>"


def server_alive(
    transport: Any,
    heartbeat: HeartbeatConfig,
    *,
    on_dead: Callable[[PeerUnresponsive], object] | None = None,
    close: bool = True,
) -> ServerAlive:
    """Start OpenSSH-style server-alive checks on a connected transport (or client).

    ``heartbeat``: ``interval`` seconds without any packet from the server before a
    ``keepalive@openssh.com`` request (wanting a reply) is sent, ``timeout`` to answer it,
    ``misses`` unanswered requests in a row (ServerAliveCountMax) make the server dead; the
    verdict comes at most ``heartbeat.detection_bound`` seconds after the last packet. Then the
    transport is closed (unless ``close=False``), ``on_dead(error)`` runs on the monitor's
    thread, and ``error`` / :meth:`ServerAlive.check` give the
    :class:`~keepalive.PeerUnresponsive`. The monitor ends by itself when the transport closes.
    """
    if hasattr(transport, "get_transport") and not hasattr(transport, "packetizer"):
        found = transport.get_transport()
        if found is None:
            raise ValueError("the SSHClient is not connected: call connect() first")
        transport = found
    if not transport.is_active():
        raise ValueError("the transport is not active: connect it first")
    return ServerAlive(transport, heartbeat, on_dead=on_dead, close=close).start()
