"""configure()'s fast path for a config reused across sockets keeps every check of the slow
path: the same values reach the kernel, and wrong or closed sockets are still refused."""

from __future__ import annotations

import socket

import pytest

import keepalive
from keepalive.errors import InvalidSocket

CFG = keepalive.KeepaliveConfig(idle=41, interval=7, count=3, user_timeout=62)
TCP = socket.IPPROTO_TCP


def _pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket, socket.socket]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.create_server((host, 0), family=family)
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    return server, client, accepted


def _stored(sock: socket.socket) -> tuple[int, ...]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(TCP, socket.TCP_USER_TIMEOUT),
    )


def test_repeated_calls_store_the_same_values_on_every_socket() -> None:
    sockets = [_pair() for _ in range(5)]
    try:
        results = [keepalive.configure(client, CFG) for _, client, _ in sockets]
        for _, client, accepted in sockets:
            assert _stored(client) == (1, 41, 7, 3, 62000)
            assert _stored(accepted)[0] == 0  # the other end is untouched
        assert all(result is results[0] for result in results)
    finally:
        for group in sockets:
            for sock in group:
                sock.close()


def test_wrong_and_closed_sockets_are_refused_after_a_success() -> None:
    server, client, accepted = _pair()
    try:
        keepalive.configure(client, CFG)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp, pytest.raises(InvalidSocket, match="SOCK_DGRAM"):
            keepalive.configure(udp, CFG)
        closed = socket.create_connection(server.getsockname())
        closed.close()
        with pytest.raises(InvalidSocket, match="closed"):
            keepalive.configure(closed, CFG)
        unix_a, unix_b = socket.socketpair(socket.AF_UNIX)
        with unix_a, unix_b, pytest.raises(InvalidSocket, match="AF_UNIX"):
            keepalive.configure(unix_a, CFG)
    finally:
        for sock in (server, client, accepted):
            sock.close()


def test_another_family_takes_the_checked_path() -> None:
    try:
        v6 = _pair(socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    v4 = _pair()
    try:
        keepalive.configure(v4[1], CFG)
        keepalive.configure(v6[1], CFG)
        keepalive.configure(v4[1], CFG)
        assert _stored(v6[1]) == _stored(v4[1]) == (1, 41, 7, 3, 62000)
    finally:
        for sock in (*v4, *v6):
            sock.close()
