"""How many inbound bytes wait unread in the kernel: one helper for both heartbeat drivers."""

from __future__ import annotations

import select
import socket
import struct

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


def receive_capacity(sock: socket.socket) -> int:
    """The socket's receive buffer size (``SO_RCVBUF``), or 0 if it cannot be read."""
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        return 0
