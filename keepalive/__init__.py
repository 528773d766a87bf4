"""keepalive: know when the other end of a TCP connection is gone.

Three layers, each usable alone:

1. kernel keepalive on any socket, on every major OS: :func:`configure`, :func:`inspect`,
   :func:`socket_options`, :class:`KeepaliveConfig`;
2. an application-level heartbeat that sees past proxies and userspace NATs
   (:mod:`keepalive.sync`, :mod:`keepalive.aio`);
3. reconnect policies and supervised connections (:mod:`keepalive.reconnect`).

Process-wide: :func:`install` gives every outbound TCP connection of the process kernel
keepalive, for libraries that offer no hook (:mod:`keepalive.installer`).

``import keepalive`` stays light: names are loaded on first use (PEP 562), and neither
asyncio nor psutil is ever imported by it.
"""

from __future__ import annotations

import sys

# `typing` stays unimported by `import keepalive` and the first configure() (mypy reads this
# as True, as it does typing.TYPE_CHECKING).
TYPE_CHECKING = False

__version__ = "0.1.0.dev0"

# public name -> module that defines it; loaded on first attribute access
_EXPORTS: dict[str, str] = {
    "KeepaliveConfig": "keepalive.config",
    "KeepaliveError": "keepalive.errors",
    "InvalidSetting": "keepalive.errors",
    "InvalidSettingType": "keepalive.errors",
    "InvalidSocket": "keepalive.errors",
    "PeerUnresponsive": "keepalive.errors",
    "SocketOptionError": "keepalive.errors",
    "UnsupportedOption": "keepalive.errors",
    "Platform": "keepalive.platforms",
    "SettingOutcome": "keepalive.platforms",
    "SettingStatus": "keepalive.platforms",
    "ConfigureResult": "keepalive.sockets",
    "SocketKeepalive": "keepalive.sockets",
    "configure": "keepalive.sockets",
    "inspect": "keepalive.sockets",
    "socket_options": "keepalive.sockets",
    "SystemDefaults": "keepalive.system",
    "system_defaults": "keepalive.system",
    "ConnectFailed": "keepalive.errors",
    "HeartbeatConfig": "keepalive.heartbeat",
    "Backoff": "keepalive.reconnect",
    "connect": "keepalive.dial",
    "connect_async": "keepalive.dial",
    "install": "keepalive.installer",
    "installed": "keepalive.installer",
    "uninstall": "keepalive.installer",
}
_SUBMODULES = frozenset(
    {
        "aio",
        "diagnostics",
        "dial",
        "heartbeat",
        "installer",
        "integrations",
        "platforms",
        "reconnect",
        "supervision",
        "sync",
        "testing",
    }
)

__all__ = [
    "ConfigureResult",
    "Backoff",
    "ConnectFailed",
    "HeartbeatConfig",
    "InvalidSetting",
    "InvalidSettingType",
    "InvalidSocket",
    "KeepaliveConfig",
    "KeepaliveError",
    "SocketKeepalive",
    "PeerUnresponsive",
    "Platform",
    "SettingOutcome",
    "SocketOptionError",
    "SettingStatus",
    "SystemDefaults",
    "UnsupportedOption",
    "__version__",
    "configure",
    "connect",
    "connect_async",
    "inspect",
    "install",
    "installed",
    "socket_options",
    "system_defaults",
    "uninstall",
]

if TYPE_CHECKING:
    from typing import Any

    from keepalive.config import KeepaliveConfig
    from keepalive.dial import connect, connect_async
    from keepalive.errors import (
        ConnectFailed,
        InvalidSetting,
        InvalidSettingType,
        InvalidSocket,
        KeepaliveError,
        PeerUnresponsive,
        SocketOptionError,
        UnsupportedOption,
    )
    from keepalive.heartbeat import HeartbeatConfig
    from keepalive.installer import install, installed, uninstall
    from keepalive.platforms import Platform, SettingOutcome, SettingStatus
    from keepalive.reconnect import Backoff
    from keepalive.sockets import (
        ConfigureResult,
        SocketKeepalive,
        configure,
        inspect,
        socket_options,
    )
    from keepalive.system import SystemDefaults, system_defaults


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_load(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return _load(f"keepalive.{name}")
    raise AttributeError(f"module 'keepalive' has no attribute {name!r}")


def _load(module: str) -> Any:
    """``importlib.import_module(module)`` without importing importlib (and warnings)."""
    __import__(module)
    return sys.modules[module]


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
