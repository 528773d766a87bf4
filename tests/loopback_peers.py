"""Loopback peers that refuse or never answer, and a count of this process's descriptors.

For tests of dialing and supervision: a refusing address is a bound socket that does not
listen; an address that never answers is a listener with a full backlog (the kernel then drops
further SYNs, as a black hole would).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def down_server(*, blocking: bool = True) -> Iterator[socket.socket]:
    """A bound, not yet listening socket: connections to its address are refused until the
    test calls ``listen()`` on it (holding the port keeps other sockets from taking it).
    ``blocking=False`` for a test that accepts on it through an event loop."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.setblocking(blocking)
        yield server


@contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """A loopback address whose SYNs go unanswered: a listener with a full backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=1):  # fills the backlog
            yield address


def open_fds() -> int:
    """How many file descriptors this process has open (Linux: /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


def sockets_connected_to(address: tuple[str, int]) -> int:
    """How many TCP sockets of this process are connected to ``address`` (their client ends;
    psutil lists a process's own descriptors, so a closed socket no longer counts)."""
    import psutil

    process = psutil.Process()
    # psutil 6 renamed connections() to net_connections().
    list_connections = getattr(process, "net_connections", None) or process.connections
    return sum(
        1
        for connection in list_connections(kind="tcp")
        if connection.raddr and (connection.raddr.ip, connection.raddr.port) == tuple(address)
    )
