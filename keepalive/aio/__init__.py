"""Heartbeats for asyncio: streams and protocols, one timer per event loop for all of them.

* :func:`open_connection`, :func:`monitor_streams`, :func:`monitor` and
  :class:`HeartbeatProtocol` (module :mod:`keepalive.aio.connection`) put a heartbeat on a
  connection;
* :class:`Supervisor` (module :mod:`keepalive.aio.supervisor`) keeps one connection up and
  reconnects when it dies.

The same shape as :mod:`keepalive.sync`; both drive the pure core in
:mod:`keepalive.heartbeat`. Importing this package imports asyncio (``import keepalive``
does not).
"""

from __future__ import annotations

from keepalive.aio.connection import (
    DEFAULT_STREAM_LIMIT,
    HeartbeatProtocol,
    OnDead,
    PingHold,
    PingSource,
    PongSource,
    SchedulerStats,
    monitor,
    monitor_of,
    monitor_streams,
    open_connection,
    scheduler_stats,
)
from keepalive.aio.supervisor import SupervisedConnection, Supervisor

__all__ = [
    "DEFAULT_STREAM_LIMIT",
    "HeartbeatProtocol",
    "OnDead",
    "PingHold",
    "PingSource",
    "PongSource",
    "SchedulerStats",
    "SupervisedConnection",
    "Supervisor",
    "monitor_of",
    "monitor",
    "open_connection",
    "scheduler_stats",
    "monitor_streams",
]
