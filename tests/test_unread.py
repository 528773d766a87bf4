"""Whether unread bytes may hold the peer back (``keepalive._unread.peer_may_be_blocked``), on
real loopback sockets: the heartbeat counts such bytes as life while the application is behind."""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from keepalive import _unread
from keepalive._tcp_info import receive_window
from keepalive._unread import peer_may_be_blocked, unread_bytes

LINUX_6_2 = sys.platform.startswith("linux") and receive_window(socket.socket()) is not None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with client, accepted:
        yield client, accepted


def fill_until_the_sender_blocks(
    sender: socket.socket, receiver: socket.socket, read_first: int
) -> None:
    """Send as fast as possible while the receiver reads ``read_first`` bytes then stops; return
    once the sender's writes have failed with EAGAIN for 0.3 s (it can send nothing more)."""
    sender.setblocking(False)
    chunk = b"x" * 65536
    got = 0
    blocked_since = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sender.send(chunk)
            blocked_since = None
        except BlockingIOError:
            now = time.monotonic()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > 0.3:
                return
            time.sleep(0.005)
        while got < read_first and select.select([receiver], [], [], 0)[0]:
            got += len(receiver.recv(min(65536, read_first - got)))
    raise AssertionError("the sender never blocked")


@pytest.mark.parametrize("read_first", [0, 100_000, 400_000, 1_000_000])
def test_a_blocked_sender_is_seen_whatever_the_buffer_fill(
    pair: tuple[socket.socket, socket.socket], read_first: int
) -> None:
    client, accepted = pair
    fill_until_the_sender_blocks(accepted, client, read_first)
    unread = unread_bytes(client.fileno())
    assert unread > 0
    assert peer_may_be_blocked(client, unread)
    if LINUX_6_2:
        assert receive_window(client) == 0


def test_a_few_unread_bytes_with_the_window_open_are_no_excuse(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, accepted = pair
    accepted.sendall(b"hello\n")
    deadline = time.monotonic() + 5
    while unread_bytes(client.fileno()) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unread_bytes(client.fileno()) == 6
    assert not peer_may_be_blocked(client, 6)
    assert not peer_may_be_blocked(client, 0)
    if LINUX_6_2:
        window = receive_window(client)
        assert window is not None
        assert window > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tcp_info is Linux's")
def test_linux_reports_the_receive_window_here() -> None:
    # The CI machine runs Linux >= 6.2: the exact rule, not the half-buffer guess, is tested.
    import platform

    major, minor = (int(part) for part in platform.release().split(".")[:2])
    assert ((major, minor) >= (6, 2)) == LINUX_6_2


def test_without_the_window_half_the_receive_buffer_is_the_guess(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = pair
    monkeypatch.setattr(_unread, "receive_window", lambda sock: None)
    capacity = client.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert peer_may_be_blocked(client, (capacity + 1) // 2)
    assert not peer_may_be_blocked(client, capacity // 2 - 1)
    assert not peer_may_be_blocked(client, 0)
