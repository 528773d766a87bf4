"""The blocking supervised connection, :class:`keepalive.sync.Supervisor`, on real sockets.

Peers: the in-process :class:`EchoServer` (answers ``PING\\n`` with ``PONG\\n``, echoes the
rest; ``kill_connections`` resets like a crashed server), a :class:`FaultProxy` in front of it
to freeze the path, plain listening sockets where the test must control accepting and closing
(a listener with a full backlog is a loopback black hole: the kernel drops further SYNs), and
a private network namespace for a black hole that only kernel keepalive can detect.
"""

from __future__ import annotations

import errno
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import supervisor_checks as checks
from loopback_peers import black_hole, down_server, open_fds
from netns import Namespace
from supervisor_checks import BAD_ARGUMENTS, FAST, QUICK, SLACK, WAIT, HookRecords

import keepalive
import keepalive.sync
from keepalive.config import KeepaliveConfig
from keepalive.dial import _Dialer
from keepalive.errors import ConnectFailed, InvalidSetting, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig, MonitorStats
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.reconnect import Backoff, StopReason
from keepalive.supervision import DisconnectReason, SupervisorState
from keepalive.sync.supervisor import READ_BUFFER_LIMIT, SupervisedSocket, Supervisor
from keepalive.testing import EchoServer

# ---------------------------------------------------------------------------------------------
# Helpers


class Events(HookRecords[SupervisedSocket]):
    """Records the hooks' calls, in order, and lets the test wait for them."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()

    def on_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        with self._cond:
            self.record_disconnect(reason, error)
            self._cond.notify_all()

    def on_backoff(self, delay: float, error: BaseException | None) -> None:
        with self._cond:
            self.record_backoff(delay, error)
            self._cond.notify_all()

    def on_connect(self, conn: SupervisedSocket) -> None:
        with self._cond:
            self.record_connect(conn)
            self._cond.notify_all()

    def supervisor(self, address: tuple[str, int], **kwargs: Any) -> Supervisor:
        """A supervisor reporting to these records."""
        return Supervisor(
            address,
            on_disconnect=self.on_disconnect,
            on_backoff=self.on_backoff,
            on_connect=self.on_connect,
            **kwargs,
        )

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise self.timed_out()


def blocked_reader(
    conn: SupervisedSocket,
) -> tuple[threading.Thread, queue.Queue[BaseException | bytes]]:
    """A started thread blocked in ``conn.recv(10)``; the queue gets what it returned or raised."""
    outcome: queue.Queue[BaseException | bytes] = queue.Queue()

    def reader() -> None:
        try:
            outcome.put(conn.recv(10))
        except BaseException as exc:
            outcome.put(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    return thread, outcome


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.005)


def echo(conn: socket.socket | SupervisedSocket, payload: bytes) -> bytes:
    """Send ``payload`` and read back as many bytes."""
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(len(payload) - len(got))
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves threads or file descriptors behind."""
    threads = set(threading.enumerate())
    fds = open_fds()
    yield
    wait_until(lambda: set(threading.enumerate()) <= threads, what="threads to end")
    wait_until(lambda: open_fds() <= fds, what=f"fds back to {fds} (now {open_fds()})")


# ---------------------------------------------------------------------------------------------
# Connecting


def test_server_down_at_start_comes_up_after_a_few_attempts(no_leaks: None) -> None:
    events = Events()
    with (
        down_server() as listener,
        events.supervisor(listener.getsockname(), retry=QUICK) as sup,
    ):
        wait_until(lambda: sup.stats.attempts >= 3, what="3 refused attempts")
        assert sup.connection is None
        assert sup.state in (SupervisorState.BACKING_OFF, SupervisorState.CONNECTING)
        listener.listen()  # the server comes up
        conn = sup.wait_connected(timeout=WAIT)
        peer, _ = listener.accept()
        with peer:
            peer.sendall(b"hello")
            assert conn.recv(5) == b"hello"
            conn.sendall(b"back")
            assert peer.recv(4) == b"back"
            stats = sup.stats
            assert sup.connection is conn
            sup.close()  # before the server side closes
    checks.came_up_after_refused_attempts(events, stats, conn)
    assert sup.state is SupervisorState.CLOSED


def test_kernel_keepalive_is_set_on_each_connection(echo_server: EchoServer) -> None:
    cfg = KeepaliveConfig(idle=7, interval=3, count=4)
    with Supervisor(echo_server.address, keepalive=cfg, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        state = keepalive.inspect(conn.socket)
    assert state.enabled
    assert (state.idle, state.interval, state.count) == (7, 3, 4)


def test_on_connect_failures_count_as_failed_attempts_and_retry(echo_server: EchoServer) -> None:
    events = Events()
    tried: list[SupervisedSocket] = []

    def handshake(conn: SupervisedSocket) -> None:
        tried.append(conn)
        if len(tried) < 3:
            raise ConnectionError(f"handshake {len(tried)} refused")
        assert echo(conn, b"HELLO\n") == b"HELLO\n"  # on_connect may use the connection

    with Supervisor(
        echo_server.address,
        retry=QUICK,
        on_connect=handshake,
        on_disconnect=events.on_disconnect,
        on_backoff=events.on_backoff,
    ) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        assert conn is tried[-1]
        assert echo(conn, b"after\n") == b"after\n"
        stats = sup.stats
        # The failed connections were closed before the next attempt.
        assert [c.fileno() for c in tried[:2]] == [-1, -1]
        assert all(c.disconnect_reason is DisconnectReason.CLOSED for c in tried[:2])
    checks.failed_handshakes_were_retried(events, stats)


def test_on_connect_error_the_policy_does_not_retry_gives_up(echo_server: EchoServer) -> None:
    def handshake(conn: SupervisedSocket) -> None:
        raise ValueError("bad greeting")

    with Supervisor(echo_server.address, retry=QUICK, on_connect=handshake) as sup:
        with pytest.raises(ConnectFailed) as caught:
            sup.wait_connected(timeout=WAIT)
        assert sup.state is SupervisorState.FAILED
        assert sup.stop_reason is StopReason.NOT_RETRYABLE
    assert caught.value.reason == "not retryable"
    assert isinstance(caught.value.__cause__, ValueError)
    assert sup.stats.attempts == 1


def test_policy_exhausted_gives_up(no_leaks: None) -> None:
    policy = Backoff(initial=0.01, jitter="none", max_attempts=3)
    with down_server() as server:
        sup = Supervisor(server.getsockname(), retry=policy).start()
        try:
            with pytest.raises(ConnectFailed) as caught:
                sup.wait_connected(timeout=WAIT)
            wait_until(
                lambda: (
                    not any(
                        t.name.startswith("keepalive-supervisor") for t in threading.enumerate()
                    )
                ),
                what="the supervisor thread to end",
            )
            stats = sup.stats
            assert sup.state is SupervisorState.FAILED
            assert sup.stop_reason is StopReason.EXHAUSTED
            with pytest.raises(ConnectFailed):  # and keeps raising
                sup.wait_connected(timeout=0)
        finally:
            sup.close()
    checks.exhausted_by_refusals(caught.value, stats)
    assert isinstance(stats.last_error, ConnectionRefusedError)
    assert sup.stats.state is SupervisorState.CLOSED  # close() after giving up


# ---------------------------------------------------------------------------------------------
# Closing promptly


def test_close_during_backoff_returns_within_100_ms(no_leaks: None) -> None:
    with down_server() as server:
        sup = Supervisor(server.getsockname(), retry=Backoff.constant(30)).start()
        wait_until(lambda: sup.state is SupervisorState.BACKING_OFF, what="the backoff wait")
        time.sleep(0.05)  # well inside the 30 s wait
        started = time.perf_counter()
        sup.close()
        elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"close() took {elapsed * 1000:.1f} ms during a backoff wait"
    assert sup.state is SupervisorState.CLOSED
    with pytest.raises(ConnectFailed) as caught:
        sup.wait_connected()
    assert caught.value.reason == "closed"


def test_close_during_a_connect_to_a_black_hole_returns_within_100_ms(no_leaks: None) -> None:
    with black_hole() as address:
        sup = Supervisor(address, retry=Backoff(connect_timeout=30)).start()
        wait_until(lambda: sup.state is SupervisorState.CONNECTING, what="the connect")
        time.sleep(0.2)  # the SYN is unanswered: the connect is waiting
        assert sup.state is SupervisorState.CONNECTING
        started = time.perf_counter()
        sup.close()
        elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"close() took {elapsed * 1000:.1f} ms during a connect"
    assert sup.stats.attempts == 1


@pytest.mark.netns
def test_close_during_a_connect_to_a_dropping_host_returns_within_100_ms(
    netns: Namespace, no_leaks: None
) -> None:
    """SYNs dropped by nftables (no answer, no RST): the connect of keepalive.dial's dial,
    made cancellable by the supervisor's wait, ends at close()."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        netns.black_hole(port)
        sup = Supervisor(("127.0.0.1", port), retry=Backoff(connect_timeout=30)).start()
        wait_until(lambda: sup.state is SupervisorState.CONNECTING, what="the connect")
        time.sleep(0.2)
        assert sup.state is SupervisorState.CONNECTING
        started = time.perf_counter()
        sup.close()
        elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"close() took {elapsed * 1000:.1f} ms during a connect"
    assert (sup.stats.attempts, sup.stats.connects) == (1, 0)


def test_the_supervisor_dials_through_keepalive_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """One dial for everything: each attempt is one cancellable attempt of the dialer
    connect() uses, numbered as the supervisor counts, its failures in ConnectFailed."""
    calls: list[tuple[int, bool]] = []
    real = _Dialer.attempt

    def recording(dialer: _Dialer, attempt: int, wait: Any = None) -> socket.socket:
        calls.append((attempt, wait is not None))
        return real(dialer, attempt, wait)

    monkeypatch.setattr(_Dialer, "attempt", recording)
    with down_server() as server:
        address = server.getsockname()
        policy = Backoff.constant(0.01, max_attempts=3)
        with Supervisor(address, retry=policy) as sup, pytest.raises(ConnectFailed) as caught:
            sup.wait_connected(timeout=WAIT)
    assert calls == [(0, True), (1, True), (2, True)]
    failures = caught.value.attempts
    assert [(f.attempt, f.address) for f in failures] == [(n, address) for n in range(3)]  # type: ignore[attr-defined]
    assert all(isinstance(f.error, ConnectionRefusedError) for f in failures)  # type: ignore[attr-defined]


def test_every_address_is_tried_and_each_failure_is_logged(
    monkeypatch: pytest.MonkeyPatch, echo_server: EchoServer
) -> None:
    with down_server() as refusing, down_server() as also_refusing:
        addresses = [refusing.getsockname(), also_refusing.getsockname()]
        real = socket.getaddrinfo

        def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host != "dual.test":
                return real(host, port, *args, **kwargs)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in addresses]

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        policy = Backoff.constant(0.01, max_attempts=2)
        with Supervisor(("dual.test", 1), retry=policy) as sup:
            with pytest.raises(ConnectFailed) as caught:
                sup.wait_connected(timeout=WAIT)
            failures = caught.value.attempts
            assert [(f.attempt, f.address) for f in failures] == [  # type: ignore[attr-defined]
                (0, addresses[0]),
                (0, addresses[1]),
                (1, addresses[0]),
                (1, addresses[1]),
            ]
        addresses[1] = echo_server.address  # the second address answers
        with Supervisor(("dual.test", 1), retry=QUICK) as sup:
            conn = sup.wait_connected(timeout=WAIT)
            assert conn.getpeername() == echo_server.address
            assert echo(conn, b"x\n") == b"x\n"
            assert sup.stats.attempts == 1


def test_a_keepalive_setting_this_platform_refuses_is_refused_at_construction(
    no_leaks: None,
) -> None:
    with pytest.raises(InvalidSetting, match="count"):
        Supervisor(("127.0.0.1", 9), keepalive=KeepaliveConfig(count=1000))


def test_close_during_on_connect_returns_within_100_ms(echo_server: EchoServer) -> None:
    entered = threading.Event()
    outcome: queue.Queue[BaseException | bytes] = queue.Queue()

    def handshake(conn: SupervisedSocket) -> None:
        entered.set()
        try:
            outcome.put(conn.recv(10))  # the echo server says nothing first: blocks
        except BaseException as exc:
            outcome.put(exc)
            raise

    sup = Supervisor(echo_server.address, retry=QUICK, on_connect=handshake).start()
    assert entered.wait(WAIT)
    time.sleep(0.05)
    started = time.perf_counter()
    sup.close()
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, f"close() took {elapsed * 1000:.1f} ms during on_connect"
    # The blocked read is woken: end of stream (the socket was shut down) or EBADF (closed).
    woken = outcome.get(timeout=WAIT)
    assert woken == b"" or isinstance(woken, OSError)
    stats = sup.stats
    assert (stats.attempts, stats.connects, stats.disconnects) == (1, 0, 0)


def test_connect_timeout_to_a_black_hole_counts_as_a_failed_attempt() -> None:
    events = Events()
    with black_hole() as address:
        policy = Backoff.constant(0.01, connect_timeout=0.2)
        with Supervisor(address, retry=policy, on_backoff=events.on_backoff) as sup:
            events.wait(lambda: len(events.backoffs) >= 2)
    _delay, error = events.backoffs[0]
    assert isinstance(error, TimeoutError)
    assert error.errno == errno.ETIMEDOUT
    assert sup.stats.attempts >= 2


def test_close_while_connected_wakes_a_blocked_reader(echo_server: EchoServer) -> None:
    events = Events()
    with events.supervisor(echo_server.address, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        thread, outcome = blocked_reader(conn)
        time.sleep(0.1)
        started = time.perf_counter()
        sup.close()
        elapsed = time.perf_counter() - started
        thread.join(WAIT)
    result = outcome.get(timeout=WAIT)
    assert isinstance(result, OSError)
    assert result.errno == errno.EBADF
    assert elapsed < 0.1
    assert events.disconnects == [(DisconnectReason.CLOSED, None)]
    assert sup.stats.disconnects == 1
    assert conn.fileno() == -1


# ---------------------------------------------------------------------------------------------
# Detecting the end of a connection


def test_server_killed_mid_session_is_detected_and_the_client_reconnects(
    echo_server: EchoServer,
) -> None:
    events = Events()
    with events.supervisor(echo_server.address, heartbeat=FAST, retry=QUICK) as sup:
        first = sup.wait_connected(timeout=WAIT)
        assert echo(first, b"one\n") == b"one\n"
        thread, outcome = blocked_reader(first)  # an application thread blocked in recv
        time.sleep(0.05)
        killed = time.monotonic()
        assert echo_server.kill_connections() == 1
        events.wait(lambda: len(events.connects) == 2)
        second = sup.wait_connected(timeout=WAIT)
        assert second is events.connects[1] is not first
        assert echo(second, b"two\n") == b"two\n"
        thread.join(WAIT)
        stats = sup.stats
    checks.reset_seen_at_once_and_reconnected(events, stats, killed)
    assert isinstance(outcome.get_nowait(), ConnectionResetError)  # the blocked reader too
    assert first.disconnect_reason is DisconnectReason.RESET
    assert first.fileno() == -1


def test_server_closing_is_peer_closed_and_buffered_bytes_survive() -> None:
    events = Events()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        with events.supervisor(address, retry=QUICK) as sup:
            first = sup.wait_connected(timeout=WAIT)
            peer, _ = listener.accept()
            peer.sendall(b"last words")
            peer.close()  # FIN, while the application reads nothing
            events.wait(lambda: len(events.connects) == 2)  # noticed and reconnected
            second = sup.wait_connected(timeout=WAIT)
            # The old connection still yields what arrived before its end, then end of stream.
            assert first.pending() == 10
            assert first.recv(100) == b"last words"
            assert first.recv(100) == b""
            with pytest.raises(OSError, match="closed"):
                first.sendall(b"too late")
            peer2, _ = listener.accept()
            with peer2:
                peer2.sendall(b"new")
                assert second.recv(3) == b"new"
    assert events.disconnects[0] == (DisconnectReason.PEER_CLOSED, None)


def test_frozen_proxy_is_detected_by_the_heartbeat_and_healed_by_forwarding(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    events = Events()
    with events.supervisor(proxy.address, heartbeat=FAST, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        assert echo(conn, b"before\n") == b"before\n"
        time.sleep(0.3)  # idle: only the heartbeat talks
        proxy.freeze()  # the server is unreachable; TCP to the proxy stays up
        frozen = time.monotonic()
        events.wait(lambda: len(events.disconnects) >= 1)
        checks.heartbeat_verdict_in_time(events, frozen)
        assert sup.connection is not conn
        with pytest.raises(PeerUnresponsive):
            conn.recv(10)

        proxy.forward()
        healed = time.monotonic()
        deadline = healed + WAIT
        while True:  # connections made while frozen die too; wait for one that answers
            current = sup.wait_connected(timeout=WAIT)
            current.settimeout(1.0)
            try:
                if echo(current, b"after\n") == b"after\n":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no working connection after forward()"
        time.sleep(FAST.detection_bound + 0.3)  # it stays up past the detection bound
        assert sup.connection is current
        assert sup.state is SupervisorState.CONNECTED
    checks.heartbeat_timeouts_until_closed(events)


@pytest.mark.netns
def test_black_hole_is_detected_by_kernel_keepalive(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=1)  # dead after 2 s of silence
    events = Events()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()
        policy = Backoff.constant(0.05, connect_timeout=0.3)
        with events.supervisor(address, keepalive=cfg, retry=policy) as sup:
            sup.wait_connected(timeout=WAIT)
            peer, _ = listener.accept()
            hole = netns.black_hole(address[1])
            holed = time.monotonic()
            events.wait(lambda: len(events.disconnects) >= 1, timeout=cfg.detection_bound + 3)
            detected = events.times["disconnect"][0] - holed
            hole.remove()
            events.wait(lambda: len(events.connects) >= 2)
            peer.close()
    checks.kernel_verdict_in_time(events, cfg, detected)


def test_application_closing_its_connection_asks_for_a_new_one(echo_server: EchoServer) -> None:
    events = Events()
    with events.supervisor(echo_server.address, retry=QUICK) as sup:
        first = sup.wait_connected(timeout=WAIT)
        first.close()
        events.wait(lambda: len(events.connects) == 2)
        second = sup.wait_connected(timeout=WAIT)
        assert echo(second, b"x\n") == b"x\n"
        with pytest.raises(OSError, match="closed") as caught:
            first.recv(1)
    assert caught.value.errno == errno.EBADF
    assert events.disconnects[0] == (DisconnectReason.CLOSED, None)


def test_application_write_failure_ends_the_connection(echo_server: EchoServer) -> None:
    events = Events()
    with events.supervisor(echo_server.address, heartbeat=None, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        conn.settimeout(0.1)
        with pytest.raises(TimeoutError):  # its own timeout is no failure
            conn.recv(1)
        assert sup.connection is conn
        # Fill the read-ahead buffer: the supervisor stops reading, so only a write can
        # notice the reset.
        line = b"x" * 1023 + b"\n"
        conn.settimeout(None)
        conn.sendall(line * (READ_BUFFER_LIMIT // len(line)))
        wait_until(lambda: conn.pending() == READ_BUFFER_LIMIT, what="a full buffer")
        assert echo_server.kill_connections() == 1
        time.sleep(0.1)
        assert sup.connection is conn  # not noticed yet
        with pytest.raises((ConnectionResetError, BrokenPipeError)) as caught:
            conn.sendall(b"more\n")
        events.wait(lambda: len(events.connects) == 2)
        # The buffered bytes are still there, then the error that ended the connection.
        received = 0
        ended: OSError | None = None
        while ended is None:
            try:
                received += len(conn.recv(65536))
            except OSError as exc:
                ended = exc
    assert received == READ_BUFFER_LIMIT
    assert type(ended) is type(caught.value)
    assert events.disconnects[0] == (DisconnectReason.RESET, caught.value)


# ---------------------------------------------------------------------------------------------
# Backoff across outages


def test_backoff_continues_after_short_connections_and_resets_after_healthy_ones(
    echo_server: EchoServer,
) -> None:
    policy = Backoff(initial=0.05, multiplier=2, max_delay=10, jitter="none")
    events = Events()
    # healthy_after leaves room for a loaded machine: a "short" connection lives from its
    # on_connect through an echo to the kill, which took over 0.4 s once in CI.
    with events.supervisor(echo_server.address, retry=policy, healthy_after=2.0) as sup:

        def kill_connection(number: int) -> None:
            events.wait(lambda: len(events.connects) == number)
            assert echo(events.connects[-1], b"x\n") == b"x\n"  # the server has it
            assert echo_server.kill_connections() == 1
            events.wait(lambda: len(events.backoffs) == number)

        for number in (1, 2, 3):  # short-lived: the sequence goes on
            kill_connection(number)
        events.wait(lambda: len(events.connects) == 4)
        time.sleep(2.1)  # healthy
        kill_connection(4)  # reconnect at once, and start the sequence over
        kill_connection(5)
        events.wait(lambda: len(events.connects) == 6)
        stats = sup.stats
    checks.backoff_went_on_then_started_over(events, stats)


def test_short_connections_exhaust_a_bounded_policy(echo_server: EchoServer) -> None:
    events = Events()
    policy = Backoff.constant(0.01, max_attempts=3)
    with events.supervisor(echo_server.address, retry=policy) as sup:
        for number in (1, 2, 3):
            events.wait(lambda n=number: len(events.connects) == n)  # type: ignore[misc]
            assert echo(events.connects[-1], b"x\n") == b"x\n"
            echo_server.kill_connections()
        wait_until(lambda: sup.state is SupervisorState.FAILED, what="giving up")
        with pytest.raises(ConnectFailed) as caught:
            sup.wait_connected(timeout=WAIT)
    checks.exhausted_by_short_connections(events, caught.value, sup.stats.attempts)


# ---------------------------------------------------------------------------------------------
# The connection as the application sees it


def test_bytes_stream_through_unchanged_with_pings_in_between(echo_server: EchoServer) -> None:
    # Lines, so that the line echo server tells the pings (sent between writes) apart.
    letters = random.Random(7).choices(b"abcdefghijklmnopqrstuvwxyz", k=3 * READ_BUFFER_LIMIT)
    payload = b"\n".join(bytes(letters[i : i + 99]) for i in range(0, len(letters), 99)) + b"\n"
    busy = HeartbeatConfig(interval=0.02, timeout=1.0)
    with Supervisor(echo_server.address, heartbeat=busy, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        writer = threading.Thread(target=conn.sendall, args=(payload,))
        writer.start()
        received = bytearray()
        time.sleep(0.3)  # let the read-ahead buffer fill up: it must stop, not drop
        assert conn.pending() <= READ_BUFFER_LIMIT
        while len(received) < len(payload):
            received += conn.recv(65536)
        writer.join(WAIT)
        time.sleep(busy.interval * 5)  # idle: pings go out, pongs come back and are removed
        with conn.makefile("rwb") as file:
            file.write(b"line one\nline two\n")
            file.flush()
            assert file.readline() == b"line one\n"
            assert file.readline() == b"line two\n"
        assert conn.stats.pongs_received > 0
        assert sup.connection is conn
    assert bytes(received) == payload


def test_recv_timeouts_and_non_blocking_mode(echo_server: EchoServer) -> None:
    with Supervisor(echo_server.address, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        conn.settimeout(0)
        with pytest.raises(BlockingIOError):
            conn.recv(1)
        conn.settimeout(0.1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.recv(1)
        assert 0.09 <= time.monotonic() - started < 0.1 + SLACK
        conn.settimeout(None)
        conn.sendall(b"abc\n")
        buffer = bytearray(10)
        wait_until(lambda: conn.pending() == 4)
        assert conn.recv_into(buffer, 2) == 2
        assert conn.recv_into(buffer) == 2
        assert bytes(buffer[:2]) == b"c\n"
        assert conn.recv(0) == b""
        with pytest.raises(InvalidSetting, match="flags"):
            conn.recv(1, socket.MSG_PEEK)
        assert sup.connection is conn


def test_no_heartbeat_leaves_pongs_alone(echo_server: EchoServer) -> None:
    with Supervisor(echo_server.address, heartbeat=None, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        assert not conn.monitoring
        assert echo(conn, b"PING\n") == b"PONG\n"  # the application's own, not filtered


def test_without_a_heartbeat_the_connection_is_plain(echo_server: EchoServer) -> None:
    """heartbeat=None is a plain connection: nothing scheduled, pinged or filtered."""
    with Supervisor(echo_server.address, heartbeat=None, retry=QUICK) as sup:
        before = keepalive.sync.active_monitors()
        conn = sup.wait_connected(timeout=WAIT)
        assert keepalive.sync.active_monitors() <= before  # not registered with the scheduler
        assert isinstance(conn, keepalive.sync.MonitoredSocket)
        assert (conn.heartbeat, conn.config, conn.rtt, conn.srtt) == (None, None, None, None)
        assert not conn.monitoring
        assert not conn.dead
        assert echo(conn, b"PING\n") == b"PONG\n"  # the application's own, not filtered
        with conn.makefile("rwb") as file:
            file.write(b"data\n")
            file.flush()
            assert file.readline() == b"data\n"
        stats = conn.stats
        assert "not monitored" in repr(conn)
    assert stats == MonitorStats(
        pings_sent=0,
        pongs_received=0,
        bytes_received=10,
        bytes_sent=10,
        stalls=0,
        unread_life=0,
        blocked_pings=0,
        rtt=None,
        srtt=None,
    )


def test_with_a_heartbeat_its_state_is_visible(echo_server: EchoServer) -> None:
    with Supervisor(echo_server.address, heartbeat=FAST, retry=QUICK) as sup:
        conn = sup.wait_connected(timeout=WAIT)
        assert conn.config is FAST
        assert conn.heartbeat is not None
        assert conn.monitoring
        wait_until(lambda: conn.rtt is not None, what="a pong")
        assert conn.stats.pongs_received >= 1


def test_pong_matcher_factory_gives_each_connection_its_own(echo_server: EchoServer) -> None:
    matcher = checks.PongMatchers()
    with Supervisor(echo_server.address, heartbeat=FAST, pong_matcher=matcher, retry=QUICK) as sup:
        sup.wait_connected(timeout=WAIT)
        echo_server.kill_connections()
        wait_until(lambda: len(matcher.made) == 2 and sup.connection is not None)
        conn = sup.wait_connected(timeout=WAIT)
        time.sleep(FAST.interval + 0.1)
        assert conn.stats.pongs_received >= 1
        assert echo(conn, b"data\n") == b"data\n"


# ---------------------------------------------------------------------------------------------
# Handler mode


def test_handler_runs_once_per_connection_and_returning_reconnects(
    echo_server: EchoServer,
) -> None:
    events = Events()
    served: list[SupervisedSocket] = []
    sup: Supervisor

    def handler(conn: SupervisedSocket) -> None:
        # The previous connection is gone before the next one is handed out.
        assert all(old.fileno() == -1 for old in served)
        assert threading.current_thread().name.startswith("keepalive-handler")
        served.append(conn)
        assert echo(conn, b"hi %d\n" % len(served)) == b"hi %d\n" % len(served)
        if len(served) == 3:
            sup.close()  # from the handler: no deadlock

    sup = events.supervisor(echo_server.address, retry=QUICK, handler=handler)
    with sup:
        events.wait(lambda: len(events.disconnects) == 3)
        wait_until(lambda: sup.state is SupervisorState.CLOSED)
    assert len(served) == 3
    assert events.connects == served
    checks.three_handlers_then_closed(events, sup.stats)


def test_handler_sees_the_death_and_its_exception_ends_the_connection(
    echo_server: EchoServer,
) -> None:
    events = Events()
    calls = 0

    def handler(conn: SupervisedSocket) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            conn.recv(10)  # blocked until the server is killed: raises ConnectionResetError
        if calls == 2:
            raise RuntimeError("protocol error")
        conn.recv(10)

    with events.supervisor(
        echo_server.address, retry=QUICK, handler=handler, healthy_after=0
    ) as sup:
        events.wait(lambda: len(events.connects) == 1)
        wait_until(lambda: echo_server.connections == 1)
        echo_server.kill_connections()
        events.wait(lambda: len(events.connects) == 3)
    checks.handler_ends(events, sup.stats.reconnects)


def test_hooks_that_raise_are_logged_and_ignored(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("hook bug")

    with Supervisor(
        echo_server.address, retry=QUICK, on_disconnect=broken, on_backoff=broken, healthy_after=0
    ) as sup:
        sup.wait_connected(timeout=WAIT)
        echo_server.kill_connections()
        wait_until(lambda: sup.stats.connects == 2)
    assert sum("hook for" in record.getMessage() for record in caplog.records) >= 2


# ---------------------------------------------------------------------------------------------
# Resources


def test_200_forced_reconnects_leak_no_threads_or_fds(
    echo_server: EchoServer, no_leaks: None
) -> None:
    conns: queue.Queue[SupervisedSocket] = queue.Queue()
    previous: list[SupervisedSocket] = []

    def ready(conn: SupervisedSocket) -> None:
        # Never two live connections: the previous one is closed before the next exists.
        assert all(old.fileno() == -1 for old in previous[-1:])
        previous.append(conn)
        assert echo(conn, b"hello\n") == b"hello\n"  # accepted by the server
        conns.put(conn)

    with Supervisor(
        echo_server.address, heartbeat=FAST, retry=QUICK, healthy_after=0, on_connect=ready
    ) as sup:
        for _ in range(200):
            conn = conns.get(timeout=WAIT)
            echo_server.kill_connections()
        conns.get(timeout=WAIT)
        stats = sup.stats
        assert conn.fileno() == -1
    assert (stats.connects, stats.disconnects) == (201, 200)
    assert len({id(c) for c in previous}) == len(previous) == 201
    assert all(c.fileno() == -1 for c in previous)
    assert keepalive.sync.active_monitors() == 0


def test_200_handler_cycles_leak_no_threads_or_fds(echo_server: EchoServer, no_leaks: None) -> None:
    done = threading.Event()
    count = 0

    def handler(conn: SupervisedSocket) -> None:
        nonlocal count
        count += 1
        if count == 200:
            done.set()

    with Supervisor(echo_server.address, retry=QUICK, healthy_after=0, handler=handler) as sup:
        assert done.wait(WAIT * 2)
    assert sup.stats.connects >= 200


# ---------------------------------------------------------------------------------------------
# API details


def test_exported_from_keepalive_sync() -> None:
    assert keepalive.sync.Supervisor is Supervisor
    assert "Supervisor" in keepalive.sync.__all__


def test_wait_connected_before_start_and_timeout() -> None:
    with down_server() as server:
        sup = Supervisor(server.getsockname(), retry=Backoff.constant(30))
        with pytest.raises(RuntimeError, match="not started"):
            sup.wait_connected(timeout=0)
        assert sup.state is SupervisorState.IDLE
        with sup:
            with pytest.raises(TimeoutError):
                sup.wait_connected(timeout=0.05)
            with pytest.raises(RuntimeError, match="already started"):
                sup.start()
    with pytest.raises(RuntimeError, match="closed"):
        sup.start()
    sup.close()  # idempotent


@pytest.mark.parametrize(("kwargs", "field", "error"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_the_field_named(
    kwargs: dict[str, object], field: str, error: type[Exception]
) -> None:
    checks.refused_at_construction(Supervisor, kwargs, field, error)
