"""Selector mode (``monitor(..., mode="selector")``): one watcher thread reads every socket.

Real loopback sockets throughout: a raw peer on the far end where the exact byte stream
matters, :class:`~keepalive.testing.EchoServer` for pongs and
:class:`~keepalive.testing.FaultProxy` for a peer that goes silent.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.sync import MonitoredSocket, monitor
from keepalive.sync.selector import SelectorSocket, watched_sockets
from keepalive.testing import EchoServer

FAST = HeartbeatConfig(interval=0.2, timeout=0.2)  # detection bound 0.4 s
QUIET = HeartbeatConfig(interval=30, timeout=30)  # no ping during a short test
SLACK = 0.5  # seconds a verdict may come after its bound on this shared 2-core machine


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with client, accepted:
        yield client, accepted


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keepalive-watcher"]


def wait_until(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def read_exactly(sock: MonitoredSocket, size: int) -> bytes:
    parts = []
    while size:
        chunk = sock.recv(size)
        assert chunk, "end of stream before all the bytes came"
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Exact bytes


def test_pongs_split_across_segments_are_removed_and_application_bytes_are_exact(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    beat = HeartbeatConfig(interval=0.05, timeout=2)
    sock = monitor(ours, heartbeat=beat, mode="selector")
    assert isinstance(sock, SelectorSocket)
    expected = bytearray()
    answered = 0

    def answer_pings() -> None:
        nonlocal answered
        peer.settimeout(5)
        pending = b""
        while answered < 8:
            pending += peer.recv(100)
            while b"PING\n" in pending:
                pending = pending.replace(b"PING\n", b"", 1)
                line = b"line %d: PONG\n" % answered  # contains PONG, is no pong
                # An application line in two segments, the pong in two, then a message
                # equal to the pong's prefix and one starting like it.
                for part in (line[:5], line[5:], b"PO", b"NG\n", b"PON\n", b"PONGS\n"):
                    peer.sendall(part)
                    time.sleep(0.005)
                expected.extend(line + b"PON\nPONGS\n")
                answered += 1

    with sock:
        answering = threading.Thread(target=answer_pings)
        answering.start()
        answering.join(10)
        assert not answering.is_alive()
        got = read_exactly(sock, len(expected))
        assert got == bytes(expected)
        stats = sock.stats
        assert stats.pongs_received >= 8  # every pong was taken out by the watcher
        assert stats.bytes_received == len(expected) + 5 * stats.pongs_received
        assert sock.pending() == 0


def test_pongs_never_wake_a_blocked_reader(
    echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[int] = []
    take = SelectorSocket._take_locked

    def counted(self: SelectorSocket, limit: int) -> bytes | None:
        looks.append(threading.get_ident())
        return take(self, limit)

    monkeypatch.setattr(SelectorSocket, "_take_locked", counted)
    beat = HeartbeatConfig(interval=0.05, timeout=2)
    sock = monitor(socket.create_connection(echo_server.address), heartbeat=beat, mode="selector")
    got: list[bytes] = []
    with sock:
        reader = threading.Thread(target=lambda: got.append(sock.recv(100)))
        reader.start()
        assert wait_until(lambda: sock.stats.pongs_received >= 6)
        assert reader.ident is not None
        assert looks.count(reader.ident) == 1  # it looked once, then slept through the pongs
        sock.sendall(b"wake up\n")
        reader.join(5)
        assert got == [b"wake up\n"]
        assert looks.count(reader.ident) == 2


def test_bytes_beyond_the_buffer_limit_arrive_whole_and_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    payload = os.urandom(3 * 1024 * 1024)  # beyond the watcher's per-socket limit
    sock = monitor(ours, heartbeat=QUIET, mode="selector")
    with sock:
        sending = threading.Thread(target=peer.sendall, args=(payload,))
        sending.start()
        time.sleep(0.3)  # the watcher fills its buffer and stops reading this socket
        assert 0 < sock.pending() <= 512 * 1024
        digest = hashlib.sha256()
        received = 0
        buffer = bytearray(70_000)
        while received < len(payload):
            count = sock.recv_into(buffer, 1000 + received % 65536)
            assert count > 0
            digest.update(memoryview(buffer)[:count])
            received += count
        sending.join(10)
        assert digest.digest() == hashlib.sha256(payload).digest()
        peer.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""  # end of stream reaches the reader
        assert not sock.monitoring


def test_small_reads_of_a_large_chunk_return_every_byte_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    payload = bytes(range(256)) * 256  # 64 KiB: one chunk of the watcher, or a few
    with monitor(ours, heartbeat=QUIET, mode="selector") as sock:
        peer.sendall(payload)
        assert wait_until(lambda: sock.pending() == len(payload))
        got = bytearray()
        sizes = [1, 7, 100, 4096, 3]
        while len(got) < len(payload):
            got += sock.recv(sizes[len(got) % len(sizes)])
        assert bytes(got) == payload
        assert sock.pending() == 0


def test_timeouts_and_non_blocking_reads(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    with monitor(ours, heartbeat=QUIET, mode="selector") as sock:
        sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            sock.recv(10)
        sock.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert 0.15 < time.monotonic() - started < 0.2 + SLACK
        peer.sendall(b"abc")
        assert wait_until(lambda: sock.pending() == 3)
        sock.settimeout(0)
        assert sock.recv(2) == b"ab"
        assert sock.recv(10) == b"c"


def test_makefile_reads_and_writes_lines(echo_server: EchoServer) -> None:
    raw = socket.create_connection(echo_server.address)
    beat = HeartbeatConfig(interval=0.05, timeout=2)
    with monitor(raw, heartbeat=beat, mode="selector") as sock:
        with sock.makefile("rwb") as file:
            for index in range(5):
                file.write(b"line %d\n" % index)
                file.flush()
                assert file.readline() == b"line %d\n" % index
                time.sleep(0.1)  # pings and pongs between the lines
        stats = sock.stats
        assert stats.pongs_received >= 1
        assert stats.bytes_sent == 35  # the application's bytes
        assert stats.bytes_received == 35 + 5 * stats.pongs_received  # pongs read, not handed


# ---------------------------------------------------------------------------------------------
# Verdicts, errors, close


def test_a_frozen_peer_is_declared_dead_within_the_bound_and_wakes_the_reader(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    deaths: list[float] = []
    sock = monitor(
        socket.create_connection(proxy.address),
        heartbeat=FAST,
        on_dead=lambda s, e: deaths.append(time.monotonic()),
        mode="selector",
    )
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(sock.recv(100))
        except Exception as exc:  # the test looks at what came
            outcome.append(exc)
        outcome.append(time.monotonic())

    with sock:
        time.sleep(0.5)  # pings answered meanwhile: alive
        assert sock.stats.pongs_received >= 1
        assert not sock.dead
        reader = threading.Thread(target=read)
        reader.start()
        proxy.freeze()
        frozen_at = time.monotonic()
        reader.join(FAST.detection_bound + 5)
        assert not reader.is_alive()
        error, woke_at = outcome
        assert isinstance(error, PeerUnresponsive)
        assert isinstance(woke_at, float)
        assert len(deaths) == 1
        assert deaths[0] <= woke_at  # on_dead ran before the reader woke
        assert woke_at - frozen_at <= FAST.detection_bound + SLACK
        with pytest.raises(PeerUnresponsive):
            sock.recv(10)


def test_close_wakes_a_blocked_reader_and_a_reset_reaches_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    sock = monitor(ours, heartbeat=QUIET, mode="selector")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            sock.recv(10)
        except OSError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)
    sock.close()
    reader.join(5)
    assert not reader.is_alive()
    assert len(errors) == 1
    assert getattr(errors[0], "errno", None) == errno.EBADF
    assert sock.fileno() == -1


def test_a_reset_reaches_the_reader(echo_server: EchoServer) -> None:
    raw = socket.create_connection(echo_server.address)
    with monitor(raw, heartbeat=QUIET, mode="selector") as sock:
        sock.sendall(b"x\n")
        assert sock.recv(10) == b"x\n"
        echo_server.kill_connections()
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert not sock.monitoring  # a broken connection carries no heartbeat
        with pytest.raises(ConnectionResetError):
            sock.recv(10)  # and says so again


# ---------------------------------------------------------------------------------------------
# Many sockets, leaks, fork


def test_hundreds_of_sockets_share_one_watcher_and_leave_nothing_behind(
    echo_server: EchoServer,
) -> None:
    assert wait_until(lambda: not watcher_threads())
    fds_before = open_fds()
    beat = HeartbeatConfig(interval=0.2, timeout=2)
    socks = [
        monitor(socket.create_connection(echo_server.address), heartbeat=beat, mode="selector")
        for _ in range(300)
    ]
    try:
        assert watched_sockets() == 300
        assert len(watcher_threads()) == 1
        # Nobody reads: the watcher takes every pong all the same.
        assert wait_until(lambda: all(s.stats.pongs_received >= 1 for s in socks), 10)
        for index, sock in enumerate(socks):
            sock.sendall(b"message %d\n" % index)
        for index, sock in enumerate(socks):
            assert read_exactly(sock, len(b"message %d\n" % index)) == b"message %d\n" % index
        assert not any(s.dead for s in socks)
    finally:
        for sock in socks:
            sock.close()
    assert watched_sockets() == 0
    assert wait_until(lambda: not watcher_threads())
    assert wait_until(lambda: open_fds() <= fds_before)


def test_a_dropped_socket_is_forgotten_and_its_descriptor_can_be_watched_again(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    sock = monitor(ours, heartbeat=QUIET, mode="selector")
    del sock  # never closed: collected, its socket closed with it
    gc.collect()
    assert wait_until(lambda: watched_sockets() == 0)
    with socket.create_server(("127.0.0.1", 0)) as server:
        again = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with accepted, monitor(again, heartbeat=QUIET, mode="selector") as sock:
        accepted.sendall(b"hello")
        sock.settimeout(5)
        assert sock.recv(10) == b"hello"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_no_watcher_and_still_reads(
    pair: tuple[socket.socket, socket.socket], echo_server: EchoServer
) -> None:
    ours, peer = pair
    sock = monitor(ours, heartbeat=QUIET, mode="selector")
    peer.sendall(b"before fork\n")
    assert wait_until(lambda: sock.pending() == 12)
    assert watcher_threads()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            assert watched_sockets() == 0
            assert not watcher_threads()
            sock.settimeout(5)
            assert read_exactly(sock, 12) == b"before fork\n"  # buffered in the parent
            assert read_exactly(sock, 6) == b"later\n"  # read the default way
            fresh = monitor(
                socket.create_connection(echo_server.address), heartbeat=QUIET, mode="selector"
            )
            fresh.sendall(b"child\n")
            fresh.settimeout(5)
            assert read_exactly(fresh, 6) == b"child\n"
            assert len(watcher_threads()) == 1  # its own, started on demand
            fresh.close()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    # The parent lets go (its watcher would race the child for the next bytes); closing its
    # copy leaves the child's descriptor, and the connection, open.
    sock.close()
    time.sleep(0.2)
    peer.sendall(b"later\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------------------------------------
# Refusals


def test_tls_is_refused_before_the_socket_is_touched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    context = ssl.create_default_context()
    with pytest.raises(InvalidSetting, match="selector"):
        monitor(ours, heartbeat=QUIET, ssl=context, server_hostname="x", mode="selector")
    tls = context.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)
    with tls, pytest.raises(InvalidSetting, match="TLS"):
        SelectorSocket(tls, heartbeat=QUIET)
    assert ours.gettimeout() is None  # untouched: still blocking
    assert watched_sockets() == 0


def test_bad_input_is_refused_with_a_clear_error(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    with pytest.raises(InvalidSetting, match="'default' or 'selector'"):
        monitor(ours, heartbeat=QUIET, mode="epoll")  # type: ignore[arg-type]
    assert ours.gettimeout() is None
    with pytest.raises(InvalidSettingType):
        monitor(ours, heartbeat=10, mode="selector")  # type: ignore[arg-type]
    assert watched_sockets() == 0
    with monitor(ours, heartbeat=QUIET, mode="selector") as sock:
        with pytest.raises(InvalidSetting):
            sock.recv(-1)
        with pytest.raises(InvalidSettingType):
            sock.recv_into(b"read-only")
        with pytest.raises(InvalidSetting):
            sock.recv_into(bytearray(4), 5)
        with pytest.raises(InvalidSetting):
            sock.recv(10, socket.MSG_PEEK)
        assert sock.recv(0) == b""


def test_the_default_mode_is_unchanged(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    with monitor(ours, heartbeat=QUIET) as sock:
        assert type(sock) is MonitoredSocket
        assert watched_sockets() == 0
