"""websockets: its heartbeat from a :class:`~keepalive.HeartbeatConfig`, and a socket with
kernel keepalive configured before the connect, for ``sock=``.

- :func:`ping_kwargs`: ``{"ping_interval": ..., "ping_timeout": ...}`` for
  ``websockets.asyncio.client.connect`` and (websockets >= 15) ``websockets.sync.client.connect``.
  websockets pings every ``ping_interval`` seconds, busy or not, and closes the connection
  (``ConnectionClosedError``, "keepalive ping timeout") when the pong is ``ping_timeout``
  late: ``ping_interval`` = ``interval``, ``ping_timeout`` = ``timeout * misses`` (one ping
  waited on that long, where our heartbeat would send ``misses`` pings; same detection bound,
  ``interval + timeout * misses``). After that verdict websockets still waits
  ``close_timeout`` (default 10 s) for a closing handshake before the connection ends: pass a
  short one to websockets' ``connect`` as well. Unlike our heartbeat, only the pong counts as
  life: an event loop blocked longer than ``ping_timeout`` can fail a healthy connection
  (python-websockets#1012).
- :func:`connect_socket_async` / :func:`connect_socket`: the host and port of a ``ws://`` or
  ``wss://`` URI dialled by :func:`keepalive.connect_async` / :func:`keepalive.connect`, kernel
  keepalive set before the SYN. websockets uses a ``sock=`` as given: no proxy of its own.

Nothing here imports websockets.
"""

from __future__ import annotations

import socket
from typing import Any, TypedDict
from urllib.parse import urlsplit

from keepalive.config import KeepaliveConfig
from keepalive.dial import connect, connect_async
from keepalive.errors import InvalidSetting, InvalidSettingType
from keepalive.heartbeat import HeartbeatConfig

__all__ = ["PingKwargs", "connect_socket", "connect_socket_async", "ping_kwargs", "uri_address"]

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


class PingKwargs(TypedDict):
    """Keyword arguments for websockets' ``connect`` (and ``serve``)."""

    ping_interval: float
    ping_timeout: float


def ping_kwargs(heartbeat: HeartbeatConfig) -> PingKwargs:
    """``{"ping_interval": interval, "ping_timeout": timeout * misses}`` (seconds)."""
    if not isinstance(heartbeat, HeartbeatConfig):
        raise InvalidSettingType("heartbeat", heartbeat, "a keepalive.HeartbeatConfig")
    return {
        "ping_interval": heartbeat.interval,
        "ping_timeout": heartbeat.timeout * heartbeat.misses,
    }


def uri_address(uri: str) -> tuple[str, int]:
    """``(host, port)`` of a ``ws://`` or ``wss://`` URI, with the scheme's default port."""
    if not isinstance(uri, str):
        raise InvalidSettingType("uri", uri, "a str such as 'wss://example.com/ws'")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidSetting("uri", uri, "a ws:// or wss:// URI with a host")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidSetting("uri", uri, "a port from 0 to 65535") from exc
    return parts.hostname, port if port is not None else _DEFAULT_PORTS[scheme]


async def connect_socket_async(
    uri: str,
    *,
    keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
    **connect_kwargs: Any,
) -> socket.socket:
    """A connected, non-blocking socket to ``uri``'s host and port, keepalive configured before
    the connect, for ``websockets.asyncio.client.connect(uri, sock=...)``.

    ``connect_kwargs`` go to :func:`keepalive.connect_async` (``retry``, ``connect_timeout``,
    ``strict``, ...).
    """
    return await connect_async(uri_address(uri), keepalive=keepalive, **connect_kwargs)


def connect_socket(
    uri: str,
    *,
    keepalive: KeepaliveConfig | None = KeepaliveConfig(),  # noqa: B008 - immutable value
    **connect_kwargs: Any,
) -> socket.socket:
    """:func:`connect_socket_async` for ``websockets.sync.client.connect(uri, sock=...)``: a
    connected, blocking socket, via :func:`keepalive.connect`."""
    return connect(uri_address(uri), keepalive=keepalive, **connect_kwargs)
