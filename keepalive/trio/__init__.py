"""Heartbeats for trio, on the same pure cores as :mod:`keepalive.sync` and :mod:`keepalive.aio`.

* :func:`open_connection` and :func:`monitor` (module :mod:`keepalive.trio.connection`) put
  a heartbeat on a ``trio.SocketStream`` or ``trio.SSLStream``: a :class:`MonitoredStream`;
  one scheduler task per trio run serves every monitored stream.
* :class:`Supervisor` (module :mod:`keepalive.trio.supervisor`) keeps one connection up and
  reconnects when it dies, inside a nursery.

Importing this package imports trio (``import keepalive`` does not). Requires trio 0.22.2 or
later (``pip install tcp-keepalive[trio]``).
"""

from __future__ import annotations

from keepalive.trio.connection import (
    MonitoredStream,
    OnDead,
    PingHold,
    SchedulerStats,
    monitor,
    open_connection,
    scheduler_stats,
)
from keepalive.trio.supervisor import Handler, OnConnect, SupervisedConnection, Supervisor

__all__ = [
    "Handler",
    "MonitoredStream",
    "OnConnect",
    "OnDead",
    "PingHold",
    "SchedulerStats",
    "SupervisedConnection",
    "Supervisor",
    "monitor",
    "open_connection",
    "scheduler_stats",
]
