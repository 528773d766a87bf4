"""What the integration tests read back from the sockets a client library opened, and the
fixtures that start the servers those clients talk to.

The sockets are found from outside the library (tests/servers.py ``client_sockets_to``: this
process's sockets connected to a port), so nothing private to a client says where its socket
went; every option is read with raw ``getsockopt``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar

import pytest
from servers import client_sockets_to

from keepalive import KeepaliveConfig
from keepalive.sockets import socket_options

# Distinct from every default (Linux 7200/75/9, redis-py 30/5/3), with an idle that must be
# rounded up (36.2 -> 37 s) exactly as configure() rounds it.
CFG = KeepaliveConfig(idle=36.2, interval=7, count=4, user_timeout=23.5)
# CFG as Linux stores it, literally (so a check does not only compare the library with itself).
LINUX_EXPECTED = {
    "TCP_KEEPIDLE": 37,  # whole seconds, rounded up
    "TCP_KEEPINTVL": 7,
    "TCP_KEEPCNT": 4,
    "TCP_USER_TIMEOUT": 23500,
}
WANTED = {"SO_KEEPALIVE": 1, **LINUX_EXPECTED}  # what keepalive_options() reads for CFG
KEEPALIVE_TCP_OPTIONS = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")


def keepalive_options(sock: socket.socket, extra: tuple[str, ...] = ()) -> dict[str, int]:
    """SO_KEEPALIVE and the TCP-level keepalive options this platform has (plus the TCP-level
    options named in ``extra``), by name, as ``getsockopt`` reads them."""
    read = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in (*KEEPALIVE_TCP_OPTIONS, *extra):
        if hasattr(socket, name):
            read[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return read


def configured_sockets(port: int, extra: tuple[str, ...] = ()) -> list[dict[str, int]]:
    """keepalive_options() of every socket of this process connected to ``port``."""
    found = client_sockets_to(port)
    try:
        return [keepalive_options(sock, extra) for sock in found]
    finally:
        for sock in found:
            sock.close()


def assert_keepalive(sock: Any, cfg: KeepaliveConfig = CFG) -> None:
    """``sock`` carries ``cfg``: every planned option reads back as planned, and on Linux the
    literal values too (so the check does not only compare the library with itself)."""
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    for level, optname, value in socket_options(cfg):
        assert sock.getsockopt(level, optname) == value, (level, optname)
    if sys.platform.startswith("linux") and cfg is CFG:
        read = keepalive_options(sock)
        assert {name: read[name] for name in LINUX_EXPECTED} == LINUX_EXPECTED


def assert_nodelay(sock: Any) -> None:
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def assert_sockets_to(port: int, cfg: KeepaliveConfig = CFG) -> int:
    """Every socket of this process connected to 127.0.0.1:``port`` carries ``cfg``; returns
    how many there are (at least one)."""
    found = client_sockets_to(port)
    try:
        assert found, f"no socket of this process is connected to port {port}"
        for sock in found:
            assert_keepalive(sock, cfg)
        return len(found)
    finally:
        for sock in found:
            sock.close()


@contextlib.contextmanager
def only_socket_to(port: int) -> Iterator[socket.socket]:
    """The one socket of this process connected to ``port`` (there must be exactly one)."""
    found = client_sockets_to(port)
    try:
        assert len(found) == 1
        yield found[0]
    finally:
        for sock in found:
            sock.close()


def has_socket_to(port: int) -> bool:
    """Whether this process has a socket connected to ``port`` (duplicates closed at once)."""
    found = client_sockets_to(port)
    for sock in found:
        sock.close()
    return bool(found)


def assert_no_keepalive_to(port: int) -> None:
    found = client_sockets_to(port)
    try:
        assert found
        for sock in found:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        for sock in found:
            sock.close()


# -- server fixtures ----------------------------------------------------------------------------

Served = TypeVar("Served")


def server_fixture(
    start: Callable[[], AbstractContextManager[Served]],
    *,
    before: Callable[[], object] | None = None,
    scope: Literal["function", "module"] = "module",
) -> Any:
    """A fixture yielding what ``start()`` serves (module-scoped unless told: servers are slow
    to start); ``before`` runs first, e.g. to skip when the client library is missing before a
    server is started for nothing. Pytest names the fixture after the module attribute it is
    assigned to: ``pg = server_fixture(postgres_server)``."""

    def serve() -> Iterator[Served]:
        if before is not None:
            before()
        with start() as served:
            yield served

    return pytest.fixture(scope=scope)(serve)
