"""Inbound bytes waiting unread in the kernel, and whether they may be holding the peer back:
one helper for both heartbeat drivers."""

from __future__ import annotations

import select
import socket
import struct

from keepalive._tcp_info import receive_window

try:  # FIONREAD (= SIOCINQ on Linux): unread bytes, without consuming them
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # pragma: no cover - Windows: readability is asked with select() instead
    _FIONREAD = None

_INT = struct.Struct("i")
_FOUR_ZERO_BYTES = bytes(4)


def unread_bytes(fd: int) -> int:
    """Bytes waiting unread on socket ``fd`` (0 if closed or unknown).

    Where ``FIONREAD`` is missing or refused, a readable socket counts as 1 byte: growth can
    then only be seen from nothing to something.
    """
    if fd < 0:
        return 0
    if _FIONREAD is not None:
        try:
            count: int = _INT.unpack(fcntl.ioctl(fd, _FIONREAD, _FOUR_ZERO_BYTES))[0]
        except OSError:
            pass  # not supported for this socket: readability below
        else:
            return count
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile
        return 0
    return 1 if readable else 0


def peer_may_be_blocked(sock: socket.socket, unread: int) -> bool:
    """Whether ``unread`` bytes the application has not read may keep the peer from sending.

    Where the kernel reports the receive window we last advertised (Linux 6.2+,
    :func:`keepalive._tcp_info.receive_window`): exactly when it is closed (0) with bytes
    unread, the peer's sends wait for our application. Elsewhere: when the unread bytes fill
    at least half of ``SO_RCVBUF``, a guess: after receive-buffer autotuning the window can
    close with far less unread (measured on Linux: as low as 11 %, see docs/reliability.md).
    """
    if unread <= 0:
        return False
    window = receive_window(sock)
    if window is not None:
        return window == 0
    try:
        capacity: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return False
    return capacity > 0 and 2 * unread >= capacity
