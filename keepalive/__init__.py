"""keepalive: know when the other end of a TCP connection is gone.

Three layers, each usable alone:

1. kernel keepalive on any socket, on every major OS: :func:`configure`, :func:`inspect`,
   :func:`socket_options`, :class:`KeepaliveConfig`;
2. an application-level heartbeat that sees past proxies and userspace NATs
   (:mod:`keepalive.sync`, :mod:`keepalive.aio`);
3. reconnect policies and supervised connections (:mod:`keepalive.reconnect`).

``import keepalive`` stays light: it imports neither asyncio nor psutil.
"""

from __future__ import annotations

from keepalive.config import KeepaliveConfig
from keepalive.errors import (
    InvalidSetting,
    InvalidSettingType,
    InvalidSocket,
    KeepaliveError,
    PeerUnresponsive,
    SocketOptionError,
    UnsupportedOption,
)
from keepalive.platforms import Platform, SettingResult, Status
from keepalive.sockets import Applied, KeepaliveState, configure, inspect, socket_options
from keepalive.system import SystemDefaults, system_defaults

__version__ = "0.1.0.dev0"

__all__ = [
    "Applied",
    "InvalidSetting",
    "InvalidSettingType",
    "InvalidSocket",
    "KeepaliveConfig",
    "KeepaliveError",
    "KeepaliveState",
    "PeerUnresponsive",
    "Platform",
    "SettingResult",
    "SocketOptionError",
    "Status",
    "SystemDefaults",
    "UnsupportedOption",
    "__version__",
    "configure",
    "inspect",
    "socket_options",
    "system_defaults",
]
