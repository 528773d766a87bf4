"""The blocking-socket heartbeat driver, :mod:`keepalive.sync`, on real loopback sockets.

Peers: the in-process :class:`EchoServer` (answers ``PING\\n`` lines with ``PONG\\n``) behind a
:class:`FaultProxy` where a fault is needed, a :class:`LinePeer` thread on the far end of a
socket pair where the test must see the exact byte stream, and an EchoServer in a child
process where our own process must be stalled while the peer keeps answering.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import hashlib
import logging
import math
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keepalive
import keepalive.heartbeat
import keepalive.sync
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, InvalidSocket, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.sync import MonitoredSocket, active_monitors, monitor
from keepalive.testing import EchoServer

REPO = Path(__file__).resolve().parents[1]
FAST = HeartbeatConfig(interval=0.2, timeout=0.2)  # detection bound 0.4 s
QUIET = HeartbeatConfig(interval=30, timeout=30)  # no ping during a short test
SLACK = 0.5  # seconds a verdict may come after its bound on this shared 2-core machine


# ---------------------------------------------------------------------------------------------
# Helpers


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


class LinePeer:
    """The far end of a connection, on a thread: records every byte it reads and, while
    ``answering``, answers each ``PING\\n`` line with ``PONG\\n`` (other bytes are not echoed)."""

    def __init__(self, sock: socket.socket, *, answering: bool = True) -> None:
        self.sock = sock
        self.answering = answering
        self.received = bytearray()
        self.pings = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        line = b""
        with contextlib.suppress(OSError):
            while data := self.sock.recv(65536):
                self.received += data
                line += data
                *complete, line = line.split(b"\n")
                for item in complete:
                    if item == b"PING":
                        self.pings += 1
                        if self.answering:
                            self.sock.sendall(b"PONG\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self.sock.close()


class Outcome:
    """Runs ``call`` on a thread; keeps its result or exception and when it ended."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call is still blocked"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def echo_round_trip(sock: MonitoredSocket, line: bytes = b"hello\n") -> None:
    sock.sendall(line)
    received = b""
    while len(received) < len(line):
        chunk = sock.recv(4096)
        assert chunk, "unexpected end of stream"
        received += chunk
    assert received == line


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_leftover_monitors() -> Iterator[None]:
    """Every test must leave no monitored socket behind, and the scheduler thread must stop."""
    yield
    gc.collect()
    wait_for(lambda: active_monitors() == 0, 5, "monitors to be released")
    thread = _scheduler_thread()
    if thread is not None:
        thread.join(5)
        assert not thread.is_alive()


def _scheduler_thread() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == "keepalive-heartbeat"), None)


# ---------------------------------------------------------------------------------------------
# The story: a userspace NAT that lies to kernel keepalive


@pytest.mark.slow
def test_heartbeat_sees_past_a_frozen_proxy_that_kernel_keepalive_trusts(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    kernel = KeepaliveConfig(idle=1, interval=1, count=2)
    beat = HeartbeatConfig(interval=1, timeout=1)
    proxy = fault_proxy(echo_server.address)
    deaths: list[tuple[MonitoredSocket, PeerUnresponsive]] = []
    sock = monitor(
        socket.create_connection(proxy.address),
        heartbeat=beat,
        keepalive=kernel,
        on_dead=lambda s, e: deaths.append((s, e)),
    )
    # A twin connection with the same kernel keepalive and no heartbeat: the kernel's view.
    twin = socket.create_connection(proxy.address)
    keepalive.configure(twin, kernel)
    with sock, twin:
        assert keepalive.inspect(sock.socket).idle == 1
        echo_round_trip(sock)
        twin.sendall(b"twin\n")
        assert twin.recv(100) == b"twin\n"

        proxy.freeze()  # the server is gone; the proxy's kernel still answers keepalive probes
        frozen_at = time.monotonic()
        reader = Outcome(lambda: sock.recv(4096))
        reader.wait(beat.detection_bound + 2)

        assert isinstance(reader.error, PeerUnresponsive)
        assert isinstance(reader.error, ConnectionError)
        assert isinstance(reader.error, keepalive.KeepaliveError)
        assert reader.ended_at is not None
        detected_after = reader.ended_at - sock.heartbeat.last_received
        assert beat.detection_bound <= detected_after <= beat.detection_bound + SLACK
        assert len(deaths) == 1
        assert deaths[0][0] is sock
        assert isinstance(deaths[0][1], PeerUnresponsive)
        assert sock.dead
        assert not sock.monitoring

        # Three kernel detection bounds later the kernel still calls the twin healthy.
        time.sleep(max(0.0, frozen_at + 3 * kernel.detection_bound - time.monotonic()))
        probe = twin.dup()
        with probe, pytest.raises(BlockingIOError):  # no error, no EOF: just no data
            probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        tcp_established = 1
        assert twin.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0] == tcp_established
        assert len(deaths) == 1
        with pytest.raises(PeerUnresponsive):  # every later call says so too
            sock.sendall(b"more\n")


# ---------------------------------------------------------------------------------------------
# Stream integrity


def test_50_mb_echo_with_pings_every_10_ms_arrives_exactly(echo_server: EchoServer) -> None:
    # Hex lines: no line can equal the ping, no byte run can equal the pong.
    payload = random.Random(1234).randbytes(25 * 1024 * 1024).hex().encode()
    lines = b"\n".join(payload[i : i + 64] for i in range(0, len(payload), 64)) + b"\n"
    assert len(lines) >= 50 * 1024 * 1024
    chunk = 65 * 1000  # whole lines per sendall: pings may only land between lines
    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.01, timeout=5),
    )

    def write() -> None:
        view = memoryview(lines)
        for number, start in enumerate(range(0, len(view), chunk)):
            sock.sendall(view[start : start + chunk])
            if number % 16 == 15:
                time.sleep(0.015)  # a gap in the echo: a ping goes out

    with sock:
        writer = Outcome(write)
        digest = hashlib.sha256()
        received = 0
        sock.settimeout(10)
        while received < len(lines):
            data = sock.recv(65536)
            assert data
            digest.update(data)
            received += len(data)
        writer.wait(10)
        assert writer.error is None
        assert received == len(lines)
        assert digest.digest() == hashlib.sha256(lines).digest()
        # Nothing but pongs follow, and those are filtered.
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        stats = sock.stats
        assert stats.pings_sent >= 10
        assert stats.pongs_received >= stats.pings_sent - 1
        assert stats.bytes_sent == len(lines)
        assert not sock.dead


def test_a_ping_never_lands_inside_a_message() -> None:
    client, server = tcp_pair()
    peer = LinePeer(server)
    sock = monitor(client, heartbeat=HeartbeatConfig(interval=0.01, timeout=5))
    with sock:
        with sock.hold_pings():  # two writes, one message
            sock.sendall(b"first half, ")
            time.sleep(0.1)
            sock.sendall(b"second half\n")
        sock.sendall(b"split, ")  # without hold_pings(): a ping goes into the gap
        time.sleep(0.1)
        sock.sendall(b"apart\n")
        wait_for(lambda: b"apart\n" in peer.received, 5, "the last write")
    peer.close()
    stream = bytes(peer.received)
    assert b"first half, second half\n" in stream
    assert b"split, PING\n" in stream
    assert stream.replace(b"PING\n", b"") == b"first half, second half\nsplit, apart\n"


# ---------------------------------------------------------------------------------------------
# Life and death


def test_a_busy_peer_that_ignores_pings_is_never_declared_dead() -> None:
    beat = HeartbeatConfig(interval=0.05, timeout=0.15)  # bound 0.2 s; the peer talks every 0.1
    client, server = tcp_pair()
    stop = threading.Event()

    def stream() -> None:
        while not stop.wait(0.1):
            server.sendall(b"tick\n")  # never reads, never answers a ping

    sock = monitor(client, heartbeat=beat)
    talker = Outcome(stream)
    with sock:
        sock.settimeout(1)
        until = time.monotonic() + 10 * beat.detection_bound
        received = b""
        while time.monotonic() < until:
            received += sock.recv(4096)
        assert not sock.dead
        assert sock.stats.pings_sent >= 5  # pings really went out unanswered
        assert sock.stats.pongs_received == 0
        assert received.count(b"tick\n") >= 10
    stop.set()
    talker.wait(2)
    server.close()


def test_a_peer_slower_than_the_timeout_is_declared_dead(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    sock = monitor(socket.create_connection(proxy.address), heartbeat=FAST)
    with sock:
        echo_round_trip(sock)
        proxy.delay(FAST.timeout * 2)  # the pong comes after 4 x timeout
        reader = Outcome(lambda: sock.recv(4096))
        reader.wait(FAST.detection_bound + 2)
        assert isinstance(reader.error, PeerUnresponsive)
        assert reader.ended_at is not None
        detected_after = reader.ended_at - sock.heartbeat.last_received
        assert FAST.detection_bound <= detected_after <= FAST.detection_bound + SLACK


def test_a_peer_slower_than_the_interval_but_within_the_timeout_lives_and_rtt_is_measured(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    proxy.delay(0.05)  # round trip 0.1 s
    sock = monitor(
        socket.create_connection(proxy.address),
        heartbeat=HeartbeatConfig(interval=0.1, timeout=0.4),
    )
    with sock:
        sock.settimeout(1.2)
        with pytest.raises(TimeoutError):  # only pongs arrive: filtered, recv keeps waiting
            sock.recv(4096)
        assert not sock.dead
        assert sock.stats.pongs_received >= 2
        assert sock.rtt is not None
        assert 0.1 <= sock.rtt < 0.4
        assert sock.srtt is not None
        assert 0.1 <= sock.srtt < 0.4


def test_on_dead_is_called_once_and_every_blocked_call_wakes_up() -> None:
    client, server = tcp_pair()  # the far end never reads and never answers
    calls: list[tuple[MonitoredSocket, PeerUnresponsive]] = []
    sock = monitor(client, heartbeat=FAST, on_dead=lambda s, e: calls.append((s, e)))
    with sock, server:
        reader = Outcome(lambda: sock.recv(4096))
        writer = Outcome(lambda: sock.sendall(b"x" * (64 * 1024 * 1024)))  # fills the buffers
        reader.wait(FAST.detection_bound + 2)
        writer.wait(2)
        assert isinstance(reader.error, PeerUnresponsive)
        assert isinstance(writer.error, PeerUnresponsive)
        time.sleep(0.1)
        assert len(calls) == 1
        assert calls[0][0] is sock
        assert "no reply" in str(calls[0][1])
        with pytest.raises(PeerUnresponsive):
            sock.recv(1)


def test_on_dead_has_returned_when_a_blocked_call_raises() -> None:
    client, server = tcp_pair()  # the far end never answers
    returned: list[float] = []

    def slow_on_dead(_sock: MonitoredSocket, _error: PeerUnresponsive) -> None:
        time.sleep(0.3)  # e.g. recording the death somewhere the reader will look
        returned.append(time.monotonic())

    sock = monitor(client, heartbeat=FAST, on_dead=slow_on_dead)
    with sock, server:
        reader = Outcome(lambda: sock.recv(4096))
        reader.wait(FAST.detection_bound + 0.3 + 2)
        assert isinstance(reader.error, PeerUnresponsive)
        assert len(returned) == 1
        assert reader.ended_at is not None
        assert reader.ended_at >= returned[0]


def test_a_writer_stuck_behind_a_frozen_proxy_is_released(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    sock = monitor(socket.create_connection(proxy.address), heartbeat=FAST)
    with sock:
        echo_round_trip(sock)
        proxy.freeze()
        # The big write holds the send lock, so no ping can be written; once the buffers are
        # full our bytes stop moving, and that counts as an unanswered ping.
        writer = Outcome(lambda: sock.sendall(b"y" * (64 * 1024 * 1024)))
        writer.wait(FAST.detection_bound + 3)
        assert isinstance(writer.error, PeerUnresponsive)
        stats = sock.stats
        # Usually the ping is blocked by the write; on a loaded machine the writer thread may
        # start after a ping went out (unanswered: the proxy is frozen), and the next is blocked.
        assert stats.blocked_pings <= 1
        assert stats.blocked_pings + stats.pings_sent - stats.pongs_received >= 1
        assert writer.ended_at is not None
        assert writer.ended_at - sock.heartbeat.last_received <= FAST.detection_bound + 1.5


def test_pings_counted_while_writes_were_stuck_are_written_when_the_path_recovers(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    beat = HeartbeatConfig(interval=0.5, timeout=0.3, misses=4)  # bound 1.7 s
    proxy = fault_proxy(echo_server.address)
    sock = monitor(socket.create_connection(proxy.address), heartbeat=beat)
    lines = b"y" * 63 + b"\n"
    payload = lines * (32 * 1024 * 1024 // len(lines))
    with sock:
        echo_round_trip(sock)
        proxy.freeze()
        writer = Outcome(lambda: sock.sendall(payload))

        def read_echo() -> bytes:
            received = bytearray()
            while len(received) < len(payload):
                received += sock.recv(1024 * 1024)
            return bytes(received)

        reader = Outcome(read_echo)
        wait_for(lambda: sock.stats.blocked_pings >= 1, 2, "a ping counted as sent")
        proxy.forward()  # before the fourth miss
        writer.wait(10)
        reader.wait(10)
        assert writer.error is None
        assert reader.error is None
        assert reader.result == payload  # no pong in the application's stream
        assert not sock.dead
        # The pings it counted meanwhile are written and answered: their pongs are read and
        # filtered (no byte reaches the application), and nothing stays owed. (The pongs
        # cross the test's own proxy thread: under load they take longer than an interval.)
        sock.settimeout(0.05)
        deadline = time.monotonic() + 5
        stats = sock.stats
        while stats.pongs_received != stats.pings_sent and time.monotonic() < deadline:
            with pytest.raises(TimeoutError):
                sock.recv(4096)
            stats = sock.stats
        assert stats.blocked_pings >= 1
        assert stats.pongs_received == stats.pings_sent
        assert not sock.dead


def test_end_of_stream_stops_the_heartbeat() -> None:
    client, server = tcp_pair()
    sock = monitor(client, heartbeat=FAST)
    with sock:
        assert sock.monitoring
        assert active_monitors() == 1
        server.sendall(b"bye\n")
        server.close()
        assert sock.recv(100) == b"bye\n"
        assert sock.recv(100) == b""
        assert not sock.monitoring
        assert not sock.dead
        assert active_monitors() == 0
        time.sleep(FAST.detection_bound + 0.2)
        assert not sock.dead  # a closed stream is not a dead peer


# ---------------------------------------------------------------------------------------------
# Our own stalls must not kill a healthy connection


def _child_echo_server() -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    code = (
        "import sys\n"
        "from keepalive.testing import EchoServer\n"
        "with EchoServer() as server:\n"
        "    print(server.address[1], flush=True)\n"
        "    sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO
    )
    assert child.stdout is not None
    return child, ("127.0.0.1", int(child.stdout.readline()))


def _hold_the_gil(seconds: float) -> float:
    """Keep this thread busy inside one C call (no thread switch) for at least ``seconds``,
    unless the machine gets much faster than in the fastest calibration run."""
    fastest = math.inf
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        fastest = min(fastest, time.perf_counter() - started)
    rate = 1_000_000 / max(fastest, 1e-6)
    started = time.monotonic()
    sum(range(int(rate * seconds)))
    return time.monotonic() - started


@pytest.mark.parametrize("peer", ["child process", "same process"])
def test_a_thread_holding_the_gil_for_3_bounds_does_not_kill_a_healthy_connection(
    peer: str, echo_server: EchoServer
) -> None:
    # In a child process the peer answers during the stall; in ours it is stalled too (like
    # a paused VM) and answers only afterwards: the late timer must give it that chance.
    child, address = (
        _child_echo_server() if peer == "child process" else (None, echo_server.address)
    )
    try:
        sock = monitor(socket.create_connection(address), heartbeat=FAST)
        with sock:
            echo_round_trip(sock)
            # Start the stall while a ping is in flight; the application is not reading, so
            # its pong waits in the kernel until the scheduler runs again, late.
            wait_for(lambda: sock.heartbeat.ping_in_flight, 2, "a ping in flight")
            stalled = _hold_the_gil(2 * 3 * FAST.detection_bound)
            assert stalled >= 3 * FAST.detection_bound
            time.sleep(2 * FAST.detection_bound)
            assert not sock.dead
            stats = sock.stats
            assert stats.unread_life + stats.stalls >= 1
            if child is not None:  # the pong was waiting: unread bytes count as life
                assert stats.unread_life >= 1
            sock.settimeout(2)
            echo_round_trip(sock)
    finally:
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)


def test_a_scheduler_stalled_by_a_slow_callback_does_not_kill_a_healthy_connection(
    echo_server: EchoServer,
) -> None:
    stall = 3 * FAST.detection_bound
    slept: list[float] = []

    def slow_on_dead(_sock: MonitoredSocket, _error: PeerUnresponsive) -> None:
        started = time.monotonic()
        time.sleep(stall)  # a user's callback blocks the scheduler thread: our own stall
        slept.append(time.monotonic() - started)

    healthy = monitor(socket.create_connection(echo_server.address), heartbeat=FAST)
    silent_client, silent_server = tcp_pair()
    with healthy, silent_server:
        echo_round_trip(healthy)
        wait_for(lambda: healthy.heartbeat.ping_in_flight, 2, "a ping in flight")
        doomed = monitor(
            silent_client,
            heartbeat=HeartbeatConfig(interval=0.02, timeout=0.02),
            on_dead=slow_on_dead,
        )
        with doomed:
            wait_for(lambda: bool(slept), stall + 3, "the slow callback")
            time.sleep(2 * FAST.detection_bound)
            assert doomed.dead
            assert not healthy.dead
            assert healthy.stats.unread_life + healthy.stats.stalls >= 1
            healthy.settimeout(2)
            echo_round_trip(healthy)


def test_pongs_wait_unread_while_the_application_is_not_reading(echo_server: EchoServer) -> None:
    sock = monitor(socket.create_connection(echo_server.address), heartbeat=FAST)
    with sock:
        sock.sendall(b"hello\n")
        time.sleep(4 * FAST.detection_bound)  # the application is busy elsewhere
        assert not sock.dead
        stats = sock.stats
        assert stats.pings_sent >= 2
        assert stats.unread_life >= 1
        assert sock.recv(4096) == b"hello\n"  # the waiting pongs are filtered out
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        assert sock.stats.pongs_received >= stats.pings_sent


def test_a_full_receive_buffer_the_application_does_not_drain_is_not_a_dead_peer() -> None:
    client, server = tcp_pair()
    payload = random.Random(7).randbytes(32 * 1024 * 1024)
    assert b"PONG\n" not in payload  # pings are owed: the filter would take a pong out
    sock = monitor(client, heartbeat=FAST)
    with sock, server:
        # The peer fills our receive buffer and then cannot send anything, pongs included.
        writer = Outcome(lambda: server.sendall(payload))
        time.sleep(5 * FAST.detection_bound)
        assert writer.running  # the peer is blocked by our full buffer
        assert not sock.dead
        received = bytearray()
        sock.settimeout(5)
        while len(received) < len(payload):
            received += sock.recv(1024 * 1024)
        assert received == payload
        writer.wait(5)


# ---------------------------------------------------------------------------------------------
# Socket behaviour: timeouts, close, files, arguments


def test_settimeout_bounds_a_recv_that_only_sees_pongs(echo_server: EchoServer) -> None:
    raw = socket.create_connection(echo_server.address)
    raw.settimeout(2.5)
    sock = monitor(raw, heartbeat=HeartbeatConfig(interval=0.05, timeout=1))
    with sock:
        assert sock.gettimeout() == 2.5
        assert raw.gettimeout() == 0.0  # the wrapper implements the timeout
        sock.settimeout(0.4)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        assert 0.4 <= time.monotonic() - started < 0.4 + SLACK
        assert sock.stats.pongs_received >= 2

        sock.setblocking(False)
        assert sock.gettimeout() == 0.0
        started = time.monotonic()
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        assert time.monotonic() - started < 0.1
        sock.sendall(b"nb\n")
        got = bytearray()

        def echoed() -> bool:
            if sock.pending() or select.select([sock], [], [], 0.01)[0]:
                with contextlib.suppress(BlockingIOError):  # maybe only a pong was waiting
                    got.extend(sock.recv(4096))
            return got == b"nb\n"

        wait_for(echoed, 2, "the echo")
        sock.setblocking(True)
        assert sock.gettimeout() is None
        with pytest.raises(InvalidSetting):
            sock.settimeout(-1)
        assert not sock.dead


def test_writers_take_turns_and_a_waiting_writer_keeps_its_timeout() -> None:
    client, server = tcp_pair()
    peer = LinePeer(server, answering=False)
    sock = monitor(client, heartbeat=QUIET)
    with sock:
        with sock.hold_pings():
            sock.sendall(b"first, ")
            queued = Outcome(lambda: sock.sendall(b"second\n"))  # waits: the turn is ours
            time.sleep(0.2)
            assert queued.running
            with sock.hold_pings():  # the thread holding the turn may take it again
                sock.sendall(b"still first\n")
        queued.wait(2)
        assert queued.error is None
        wait_for(lambda: len(peer.received) >= 26, 2, "both messages")
        assert bytes(peer.received) == b"first, still first\nsecond\n"

        with sock.hold_pings():
            sock.settimeout(0.2)
            started = time.monotonic()
            timed = Outcome(lambda: sock.sendall(b"never\n"))
            timed.wait(0.2 + SLACK + 1)
            assert isinstance(timed.error, TimeoutError)
            assert timed.ended_at is not None
            assert timed.ended_at - started >= 0.2
            sock.setblocking(False)
            busy = Outcome(lambda: sock.send(b"never\n"))
            busy.wait(2)
            assert isinstance(busy.error, BlockingIOError)
            sock.setblocking(True)
            closing = Outcome(lambda: sock.sendall(b"never\n"))
            time.sleep(0.1)
            sock.close()
            time.sleep(0.1)
            assert closing.running  # it still waits for the turn
        closing.wait(2)  # the turn came back: the socket is closed now
        assert isinstance(closing.error, OSError)
        assert closing.error.errno == errno.EBADF
    peer.close()
    assert bytes(peer.received) == b"first, still first\nsecond\n"


def test_close_wakes_a_blocked_recv_and_releases_the_fd() -> None:
    client, server = tcp_pair()
    fds = open_fds()
    sock = monitor(client, heartbeat=QUIET)
    reader = Outcome(lambda: sock.recv(4096))
    time.sleep(0.1)
    assert reader.running
    sock.close()
    reader.wait(2)
    assert isinstance(reader.error, OSError)
    assert not isinstance(reader.error, PeerUnresponsive)
    assert reader.error.errno == 9  # EBADF
    assert sock.fileno() == -1
    assert sock.closed
    assert open_fds() == fds - 1
    with pytest.raises(OSError, match="closed"):
        sock.recv(1)
    sock.close()  # idempotent
    server.close()


def test_makefile_reads_lines_through_the_filter(echo_server: EchoServer) -> None:
    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.01, timeout=2),
    )
    with sock:
        binary = sock.makefile("rwb")
        text = sock.makefile("r", encoding="ascii")
        for number in range(40):
            binary.write(b"line %d\n" % number)
            binary.flush()
            assert binary.readline() == b"line %d\n" % number
            time.sleep(0.015)  # longer than the interval: a ping goes out between lines
        binary.write(b"text line\n")
        binary.flush()
        assert text.readline() == "text line\n"
        assert sock.stats.pongs_received >= 3
        fd = sock.fileno()
        sock.close()  # the files keep the socket open
        binary.write(b"after close\n")
        binary.flush()
        assert binary.readline() == b"after close\n"
        binary.close()
        assert sock.fileno() == fd
        text.close()
        assert sock.fileno() == -1


def test_a_callable_ping_is_called_for_every_ping(echo_server: EchoServer) -> None:
    made: list[float] = []

    def make_ping() -> bytes:
        made.append(time.monotonic())
        return b"PING\n"

    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.05, timeout=1),
        ping=make_ping,
    )
    with sock:
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        with sock.hold_pings():  # holding the send turn, no ping is made or written: one snapshot
            made_count = len(made)
            stats = sock.stats
        assert made_count >= 3
        assert made_count - 1 <= stats.pings_sent <= made_count
        assert stats.pongs_received >= made_count - 2


def test_a_failing_ping_callable_is_logged_and_retried(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    answers: Iterator[Any] = iter([b"", "PING\n"])  # empty, then text: both refused
    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.05, timeout=1),
        ping=lambda: next(answers, b"PING\n"),
    )
    with caplog.at_level(logging.ERROR, logger="keepalive"), sock:
        sock.settimeout(0.6)
        with pytest.raises(TimeoutError):  # pongs are counted as they are read
            sock.recv(100)
        assert sock.stats.pongs_received >= 1
    failures = [r for r in caplog.records if "ping() for" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.name.startswith("keepalive") for r in failures)


def test_pong_none_lets_the_application_read_replies(echo_server: EchoServer) -> None:
    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.05, timeout=1),
        pong=None,
    )
    with sock:
        sock.settimeout(2)
        lines = sock.makefile("rb")
        assert lines.readline() == b"PONG\n"  # the application sees the reply itself
        assert lines.readline() == b"PONG\n"
        lines.close()
        assert sock.rtt is not None
        assert not sock.dead


class LengthPrefixedPongs:
    """A PongMatcher for frames made of a 2-byte big-endian length and a body: a pong is a whole
    frame equal to :attr:`PONG`, at a frame boundary. Frame boundaries are tracked always;
    bytes are held back only while a pong is owed and they may still turn out to be one."""

    PONG = b"\x00\x04pong"

    def __init__(self) -> None:
        self._body_left = 0  # bytes of the current application frame still to pass on
        self._header = b""  # the part of an application frame's header already passed on
        self._held = b""

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        buffer, self._held = self._held + data, b""
        out = bytearray()
        removed = position = 0
        while position < len(buffer):
            if self._body_left:
                take = min(self._body_left, len(buffer) - position)
                out += buffer[position : position + take]
                position += take
                self._body_left -= take
                continue
            if not self._header:  # a frame starts here: a pong?
                rest = buffer[position:]
                if removed < outstanding and rest.startswith(self.PONG):
                    position += len(self.PONG)
                    removed += 1
                    continue
                if removed < outstanding and self.PONG.startswith(rest):
                    self._held = rest  # may still become a pong
                    break
            part = buffer[position : position + 2 - len(self._header)]
            out += part
            position += len(part)
            self._header += part
            if len(self._header) == 2:
                self._body_left = int.from_bytes(self._header, "big")
                self._header = b""
        return bytes(out), removed

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def test_a_custom_matcher_removes_only_whole_pong_frames() -> None:
    client, server = tcp_pair()

    def framed_peer() -> None:  # answers b"ping" frames with pong frames, echoes the rest
        buffer = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buffer += data
                while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                    size = 2 + int.from_bytes(buffer[:2], "big")
                    frame, buffer = buffer[:size], buffer[size:]
                    server.sendall(LengthPrefixedPongs.PONG if frame[2:] == b"ping" else frame)

    peer = Outcome(framed_peer)
    sock = monitor(
        client,
        heartbeat=HeartbeatConfig(interval=0.01, timeout=2),
        ping=b"\x00\x04ping",
        pong=LengthPrefixedPongs(),
    )
    with sock:
        sock.settimeout(2)
        for number in range(30):
            # Bodies that contain the pong's bytes: a token filter would cut them out.
            body = b"<%d>" % number + LengthPrefixedPongs.PONG + b"</>"
            frame = len(body).to_bytes(2, "big") + body
            sock.sendall(frame)
            received = b""
            while len(received) < len(frame):
                received += sock.recv(4096)
            assert received == frame
            time.sleep(0.015)  # longer than the interval: a ping goes out
        assert sock.stats.pongs_received >= 3
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # no pong frame leaks afterwards
            sock.recv(4096)
    server.shutdown(socket.SHUT_RDWR)
    peer.wait(2)
    server.close()


def test_deaths_and_forgiven_stalls_are_logged_under_the_keepalive_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, server = tcp_pair()
    with caplog.at_level(logging.DEBUG, logger="keepalive"):
        sock = monitor(client, heartbeat=HeartbeatConfig(interval=0.05, timeout=0.05))
        with sock, server:
            wait_for(lambda: sock.dead, 2, "the verdict")
            # The scheduler thread logs the verdict just after publishing it.
            wait_for(
                lambda: any("declared dead" in r.getMessage() for r in caplog.records),
                2,
                "the verdict's warning",
            )
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert all(name.startswith("keepalive") for name, _, _ in messages)
    assert any(level == logging.WARNING and "declared dead" in m for _, level, m in messages)
    assert any(level == logging.DEBUG and "ping to" in m for _, level, m in messages)


def test_bad_arguments_are_refused_before_the_socket_is_touched() -> None:
    client, server = tcp_pair()
    with client, server:
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"heartbeat": 5}, InvalidSettingType, "heartbeat"),
            ({"heartbeat": FAST, "ping": b""}, InvalidSetting, "ping"),
            ({"heartbeat": FAST, "ping": "PING\n"}, InvalidSettingType, "ping"),
            ({"heartbeat": FAST, "pong": "PONG\n"}, InvalidSettingType, "pong"),
            ({"heartbeat": FAST, "on_dead": 3}, InvalidSettingType, "on_dead"),
        ]
        for kwargs, error, field in cases:
            with pytest.raises(error) as caught:
                monitor(client, **kwargs)
            assert getattr(caught.value, "field", None) == field
            assert client.gettimeout() is None  # untouched
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with udp, pytest.raises(InvalidSocket, match="stream"):
            monitor(udp, heartbeat=FAST)
        closed = socket.socket()
        closed.close()
        with pytest.raises(InvalidSocket, match="closed"):
            monitor(closed, heartbeat=FAST)
        with pytest.raises(InvalidSocket):
            monitor(client.fileno(), heartbeat=FAST)  # type: ignore[arg-type]
        sock = monitor(client, heartbeat=QUIET)
        with sock:
            with pytest.raises(InvalidSetting, match="flags"):
                sock.recv(10, socket.MSG_PEEK)
            with pytest.raises(InvalidSetting, match="bufsize"):
                sock.recv(-1)
            assert sock.recv(0) == b""
        assert active_monitors() == 0


def test_kernel_keepalive_can_be_configured_with_the_heartbeat() -> None:
    client, server = tcp_pair()
    sock = monitor(client, heartbeat=QUIET, keepalive=KeepaliveConfig(idle=7, interval=3, count=4))
    with sock, server:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


# ---------------------------------------------------------------------------------------------
# The scheduler: timers on a grid, pongs read without rescheduling


@given(
    interval=st.floats(1e-4, 1e5),
    timeout=st.floats(1e-4, 1e5),
    deadline=st.floats(0, 1e8),
)
def test_timers_are_rounded_up_to_a_power_of_two_grid_never_early(
    interval: float, timeout: float, deadline: float
) -> None:
    grid = keepalive.heartbeat.timer_grid(HeartbeatConfig(interval=interval, timeout=timeout))
    assert math.log2(grid).is_integer()  # grids of different configurations nest
    assert grid <= 0.25
    assert grid <= min(interval, timeout) / 64 or grid == 2.0**-20
    key = keepalive.heartbeat.grid_time(deadline, grid)
    assert key - grid < deadline <= key  # the cell's end: never early, late by under a cell
    assert keepalive.heartbeat.grid_time(key, grid) == key


def test_pings_are_never_early_and_late_by_little() -> None:
    beat = HeartbeatConfig(interval=0.1, timeout=1)
    client, server = tcp_pair()
    pings: list[float] = []  # when each ping reached the peer
    pongs: list[float] = []  # just before each pong was written

    def answer() -> None:
        line = b""
        with contextlib.suppress(OSError):
            while data := server.recv(4096):
                arrived = time.monotonic()
                line += data
                *complete, line = line.split(b"\n")
                for _item in complete:
                    pings.append(arrived)
                    pongs.append(time.monotonic())
                    server.sendall(b"PONG\n")

    peer = Outcome(answer)
    sock = monitor(client, heartbeat=beat)
    with sock:
        sock.settimeout(1.3)
        with pytest.raises(TimeoutError):  # reads (and filters) the pongs
            sock.recv(4096)
    server.shutdown(socket.SHUT_RDWR)
    peer.wait(2)
    server.close()
    assert len(pings) >= 6
    gaps = [ping - pong for pong, ping in zip(pongs, pings[1:], strict=False)]
    # Each pong is read after it was written; the next ping waits an interval from then.
    assert min(gaps) >= beat.interval
    assert sorted(gaps)[len(gaps) // 2] <= beat.interval + SLACK


def test_reading_pongs_does_not_reschedule_the_timer(
    echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While a ping is in flight its timer is set an interval after it: the pong's deadline
    # is later, so the reader never calls into the scheduler (a lock and a heap push per pong).
    from_readers: list[float] = []
    scheduler = keepalive.sync.connection._SCHEDULER
    wake_at = scheduler.wake_at

    def counting_wake_at(sock: MonitoredSocket, deadline: float) -> None:
        if threading.current_thread().name != "keepalive-heartbeat":
            from_readers.append(deadline)
        wake_at(sock, deadline)

    monkeypatch.setattr(scheduler, "wake_at", counting_wake_at)
    sock = monitor(
        socket.create_connection(echo_server.address),
        heartbeat=HeartbeatConfig(interval=0.2, timeout=2),
    )
    with sock:
        sock.settimeout(1.3)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        assert sock.stats.pongs_received >= 4
        assert not sock.dead
    assert from_readers == []


# ---------------------------------------------------------------------------------------------
# Resources: one thread, no leaks, fork


def test_a_monitor_keeps_its_state_in_slots() -> None:
    client, server = tcp_pair()
    with monitor(client, heartbeat=QUIET) as sock, server:
        assert not hasattr(sock, "__dict__")  # thousands per process: no dict for each
        assert weakref.ref(sock)() is sock


def test_2000_monitored_connections_leak_no_thread_fd_or_monitor() -> None:
    gc.collect()
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    for _batch in range(4):
        pairs = [socket.socketpair() for _ in range(500)]
        monitors = [monitor(a, heartbeat=QUIET) for a, _b in pairs]
        assert active_monitors() == 500
        scheduler = [t for t in threading.enumerate() if t.name == "keepalive-heartbeat"]
        assert len(scheduler) == 1  # one thread serves every monitored socket
        for sock, (_a, b) in zip(monitors, pairs, strict=True):
            sock.close()
            b.close()
        assert active_monitors() == 0
        scheduler[0].join(5)
        assert not scheduler[0].is_alive()  # it exits once nothing is monitored
    probe = weakref.ref(monitors[0])
    del monitors, sock
    gc.collect()
    assert probe() is None
    assert set(threading.enumerate()) == threads_before
    assert open_fds() == fds_before


def test_a_monitor_dropped_without_close_stops_being_pinged() -> None:
    client, server = tcp_pair()
    sock = monitor(client, heartbeat=HeartbeatConfig(interval=0.05, timeout=5))
    assert active_monitors() == 1
    del sock  # the scheduler holds monitors weakly
    gc.collect()
    assert active_monitors() == 0
    client.close()
    server.close()


# Forking with the scheduler thread running is the point: 3.12+ warns about any fork of a
# multi-threaded process.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_scheduler() -> None:
    parent_client, parent_server = tcp_pair()
    parent_peer = LinePeer(parent_server)
    inherited = monitor(parent_client, heartbeat=HeartbeatConfig(interval=0.05, timeout=2))
    inherited.settimeout(0.3)
    with pytest.raises(TimeoutError):  # reads the pongs
        inherited.recv(100)
    assert inherited.stats.pongs_received >= 1
    pid = os.fork()
    if pid == 0:  # the child: exit status tells the parent what went wrong
        status = 1
        try:
            assert not inherited.monitoring  # the parent heartbeats it, not the child
            client, server = tcp_pair()
            peer = LinePeer(server)
            own = monitor(client, heartbeat=HeartbeatConfig(interval=0.05, timeout=2))
            own.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                own.recv(100)
            assert own.stats.pongs_received >= 2
            own.close()
            peer.close()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert inherited.monitoring
    assert not inherited.dead
    pongs = inherited.stats.pongs_received
    with pytest.raises(TimeoutError):
        inherited.recv(100)
    assert inherited.stats.pongs_received > pongs  # the parent's heartbeat goes on
    inherited.close()
    parent_peer.close()


# ---------------------------------------------------------------------------------------------
# The fast data path: one critical section per call while nothing can be filtered


def _ping_read_by(peer: socket.socket) -> None:
    """Wait (at most 5 s) for the monitored side's ping on ``peer``."""
    peer.settimeout(5)
    assert peer.recv(5) == b"PING\n"


def _read_exactly(sock: MonitoredSocket, size: int, *, into: str = "") -> bytes:
    """``size`` bytes read with recv, or recv_into a bytearray or a memoryview (``into``)."""
    received = bytearray()
    buffer = bytearray(8192)
    target = memoryview(buffer) if into == "memoryview" else buffer
    while len(received) < size:
        if into:
            count = sock.recv_into(target)
            chunk = bytes(buffer[:count])
        else:
            chunk = sock.recv(8192)
        assert chunk, "unexpected end of stream"
        received += chunk
    return bytes(received)


def test_the_fast_read_route_turns_off_while_a_pong_is_owed_and_back_on_after_it() -> None:
    client, peer = socket.socketpair()
    with monitor(client, heartbeat=HeartbeatConfig(interval=0.5, timeout=5)) as sock, peer:
        assert sock._read_route != 0  # idle: reads take the fast route
        peer.sendall(b"hello\n")
        assert sock.recv(100) == b"hello\n"
        _ping_read_by(peer)
        wait_for(lambda: sock.stats.pings_sent == 1, 2, "the ping to be reported")
        assert sock._read_route == 0  # a pong is owed: every read goes through the filter
        peer.sendall(b"PONG\nafter\n")
        assert sock.recv(100) == b"after\n"
        assert sock.stats.pongs_received == 1
        assert sock._read_route != 0  # nothing owed any more (next ping: 0.5 s from now)


@pytest.mark.parametrize("into", ["", "bytearray", "memoryview"], ids=["recv", "into", "into-view"])
@pytest.mark.parametrize(
    ("before", "pong_is_a_message_end"),
    [
        (b"ok\n", False),  # the chunk ends a line: the next message starts at the pong
        (b"abc", True),  # mid-line: "abcPONG\n" is the application's message
        (b"z" * 5000 + b"\nab", True),  # a line end near the end of a long chunk
        (b"x" * 5000, True),  # no line end at all in a chunk longer than the tail looked at
        (b"line\n" + b"y" * 5000, True),  # a line end, but further back than that tail
    ],
    ids=["line-end", "mid-line", "end-in-tail", "no-line-end", "end-before-tail"],
)
def test_line_ends_read_on_the_fast_route_decide_what_a_later_pong_is(
    before: bytes, pong_is_a_message_end: bool, into: str
) -> None:
    client, peer = socket.socketpair()
    with monitor(client, heartbeat=HeartbeatConfig(interval=0.2, timeout=5)) as sock, peer:
        assert sock._read_route != 0
        peer.sendall(before)
        assert _read_exactly(sock, len(before), into=into) == before  # on the fast route
        _ping_read_by(peer)
        wait_for(lambda: sock.stats.pings_sent == 1, 2, "the ping to be reported")
        peer.sendall(b"PONG\n")
        if pong_is_a_message_end:
            # "PONG\n" ends the application's message that began before the ping: not a pong.
            assert _read_exactly(sock, 5, into=into) == b"PONG\n"
            assert sock.stats.pongs_received == 0
            peer.sendall(b"PONG\n")  # the real pong, at a message boundary
        peer.sendall(b"end\n")
        assert _read_exactly(sock, 4, into=into) == b"end\n"
        assert sock.stats.pongs_received == 1
        assert sock.stats.bytes_received == len(before) + 5 * (1 + pong_is_a_message_end) + 4


def test_fast_writes_cut_short_by_a_full_buffer_keep_pings_between_messages() -> None:
    client, server = socket.socketpair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)  # partial sends
    peer = LinePeer(server)  # answers the pings: the writers are never declared dead
    sock = monitor(client, heartbeat=HeartbeatConfig(interval=0.01, timeout=5))
    messages = {letter: letter * 49_999 + b"\n" for letter in (b"a", b"b", b"c")}

    def write(message: bytes) -> None:
        for _ in range(15):
            sock.sendall(message)  # up to 64 KiB: tried on the fast path first
            time.sleep(0.002)

    writers = [Outcome(functools.partial(write, message)) for message in messages.values()]
    for writer in writers:
        writer.wait(30)
        assert writer.error is None
    sock.settimeout(0.3)
    with contextlib.suppress(TimeoutError):  # read the last pongs
        while sock.recv(100):
            pass
    wait_for(lambda: len(peer.received) >= 45 * 50_000, 10, "every message to arrive")
    sock.close()
    peer.close()
    lines = bytes(peer.received).split(b"\n")
    assert lines.pop() == b""
    pings = lines.count(b"PING")
    assert pings >= 1  # (else the test proved nothing)
    assert sorted(line for line in lines if line != b"PING") == sorted(
        message[:-1] for message in messages.values() for _ in range(15)
    )


def test_reads_on_the_fast_route_keep_timeouts_nonblocking_mode_and_argument_checks() -> None:
    client, peer = socket.socketpair()
    with monitor(client, heartbeat=QUIET) as sock, peer:
        assert sock._read_route != 0
        sock.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert 0.2 <= time.monotonic() - started < 0.2 + SLACK
        with pytest.raises(TimeoutError):
            sock.recv_into(bytearray(10))
        sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            sock.recv(100)
        with pytest.raises(BlockingIOError):
            sock.recv_into(bytearray(10))
        with pytest.raises(InvalidSetting, match="nbytes"):
            sock.recv_into(bytearray(10), 11)
        with pytest.raises(InvalidSettingType, match="buffer"):
            sock.recv_into(b"read-only")
        with pytest.raises(InvalidSetting, match="flags"):
            sock.recv(10, socket.MSG_PEEK)
        sock.settimeout(None)
        peer.sendall(b"0123456789")
        buffer = bytearray(10)
        assert sock.recv_into(buffer, 4) == 4
        assert buffer[:4] == b"0123"
        assert sock.recv(100) == b"456789"
        assert sock.stats.bytes_received == 10
        peer.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # end of stream, seen on the fast route
        assert not sock.monitoring
        assert sock.recv_into(buffer) == 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_held_a_state_lock_can_use_its_sockets() -> None:
    client, peer = socket.socketpair()
    sock = monitor(client, heartbeat=QUIET)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with sock._state_lock:  # (state locks are shared by a few monitors)
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            sock.settimeout(0)
            with contextlib.suppress(BlockingIOError):
                sock.recv(10)
            other = socket.socketpair()
            monitor(other[0], heartbeat=QUIET).close()  # a new monitor, maybe on that stripe
            sock.close()
            status = 0
        finally:
            os._exit(status)
    release.set()
    holder.join(5)
    deadline = time.monotonic() + 10
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child deadlocked on a state lock held at the fork")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(ended[1]) == 0
    peer.sendall(b"still works\n")  # the parent's monitor is untouched by the child
    assert sock.recv(100) == b"still works\n"
    sock.close()
    peer.close()


def test_a_monitor_costs_at_most_768_bytes() -> None:
    import tracemalloc

    pairs = [socket.socketpair() for _ in range(1000)]
    gc.collect()
    # Only what keepalive's own code allocates: other threads of this test process (servers
    # left by earlier tests, the logging machinery) allocate meanwhile too.
    own = [tracemalloc.Filter(True, str(Path(keepalive.__file__).parent / "*"))]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(own)
        monitors = [monitor(a, heartbeat=QUIET) for a, _b in pairs]
        after = tracemalloc.take_snapshot().filter_traces(own)
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    per_monitor = grown / len(monitors)
    for sock, (_a, b) in zip(monitors, pairs, strict=True):
        sock.close()
        b.close()
    # The monitor, its heartbeat, matcher, weak reference and scheduler entries (the socket
    # itself is the application's). 871 B before the state locks were shared.
    assert per_monitor <= 768, per_monitor


def test_concurrent_readers_on_the_fast_route_never_see_a_pong_or_lose_a_byte() -> None:
    client, peer = socket.socketpair()
    sock = monitor(client, heartbeat=HeartbeatConfig(interval=0.005, timeout=5))
    lines = 20_000
    line = b"x" * 99 + b"\n"
    peer_writes = threading.Lock()  # whole lines only: pongs land at message boundaries
    answered = [0]

    def answer_pings() -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := peer.recv(4096):
                pending += data
                *complete, pending = pending.split(b"\n")
                for item in complete:
                    assert item == b"PING"
                    with peer_writes:
                        peer.sendall(b"PONG\n")
                    answered[0] += 1

    def send_lines() -> None:
        for index in range(lines):
            with peer_writes:
                peer.sendall(line)
            if index % 500 == 0:
                time.sleep(0.005)  # let pings fall due in between

    received: list[bytes] = []
    total = [0]
    counting = threading.Lock()

    def read(into: bool) -> None:
        buffer = bytearray(4096)
        while True:
            with counting:
                if total[0] >= lines * len(line):
                    return
            try:
                chunk = bytes(buffer[: sock.recv_into(buffer)]) if into else sock.recv(4096)
            except TimeoutError:
                continue
            with counting:
                received.append(chunk)
                total[0] += len(chunk)

    sock.settimeout(0.2)  # readers look at the total again between waits
    answerer = threading.Thread(target=answer_pings, daemon=True)
    answerer.start()
    readers = [Outcome(functools.partial(read, into)) for into in (False, True, False, True)]
    sender = Outcome(send_lines)
    sender.wait(60)
    for reader in readers:
        reader.wait(60)
        assert reader.error is None
    stream = b"".join(received)
    assert len(stream) == lines * len(line)
    assert stream.count(b"x") == lines * 99  # no byte lost, none of a pong let through
    assert stream.count(b"\n") == lines
    assert sock.stats.pings_sent >= 1
    # A ping may fall due after the readers took the last line: its pong then arrives behind
    # them. Read on until every answered pong is counted: each must be removed (no byte of
    # it reaches the application) and counted once.
    deadline = time.monotonic() + 5
    sock.settimeout(0.05)
    while sock.stats.pongs_received < answered[0] and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            assert sock.recv(4096) == b"", "only pongs were left to read"
    sock.close()
    peer.close()
    answerer.join(5)
    assert sock.stats.pongs_received == answered[0]
