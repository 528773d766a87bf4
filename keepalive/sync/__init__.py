"""Heartbeats for blocking sockets, plain and TLS.

* :func:`monitor` wraps a connected socket in a :class:`MonitoredSocket` (module
  :mod:`keepalive.sync.connection`): one scheduler thread pings every monitored socket.
* ``monitor(sock, ..., mode="selector")`` returns a :class:`SelectorSocket` (module
  :mod:`keepalive.sync.selector`): one watcher thread reads every such socket and takes the
  pongs, so pongs never wake the application's reader threads (plain sockets only).
* :class:`Supervisor` (module :mod:`keepalive.sync.supervisor`) keeps one connection up and
  reconnects when it dies.

The same shape as :mod:`keepalive.aio`; both drive the pure core in
:mod:`keepalive.heartbeat`.
"""

from __future__ import annotations

from keepalive.sync.connection import (
    MonitoredSocket,
    MonitorStats,
    OnDead,
    PingSource,
    active_monitors,
    monitor,
)
from keepalive.sync.selector import SelectorSocket, watched_sockets
from keepalive.sync.supervisor import SupervisedSocket, Supervisor

__all__ = [
    "MonitorStats",
    "MonitoredSocket",
    "OnDead",
    "PingSource",
    "SelectorSocket",
    "SupervisedSocket",
    "Supervisor",
    "active_monitors",
    "monitor",
    "watched_sockets",
]
