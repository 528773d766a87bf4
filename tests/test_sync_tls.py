"""Blocking TLS: :func:`keepalive.sync.monitor` and :class:`keepalive.sync.Supervisor` over TLS.

The TLS server is a real third-party relay, socat (``OPENSSL-LISTEN``), terminating TLS in
front of the in-process :class:`EchoServer` (which answers ``PING\\n`` lines with ``PONG\\n``);
faults come from a :class:`FaultProxy` between the client and socat, so pings and pongs cross
the proxy inside TLS records.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest
import tls_certs
from servers import free_port
from tls_certs import CertificateFiles, tls_contexts

from keepalive.errors import InvalidSocket, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.reconnect import Backoff
from keepalive.sync import MonitoredSocket, Supervisor, monitor
from keepalive.testing import EchoServer

SLACK = 0.5  # seconds a verdict may come after its bound (the tolerance)
REQUIRED = os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1"


# ---------------------------------------------------------------------------------------------
# Fixtures: a certificate, socat terminating TLS in front of an EchoServer


certificate = tls_certs.certificate  # the module-scoped fixture


@pytest.fixture
def client_context(certificate: CertificateFiles) -> ssl.SSLContext:
    return tls_contexts(certificate)[1]


@contextlib.contextmanager
def socat_tls(
    certificate: CertificateFiles, upstream: tuple[str, int]
) -> Iterator[tuple[str, int]]:
    """socat accepting TLS on a loopback port and relaying the plaintext to ``upstream``."""
    tool = shutil.which("socat")
    if tool is None:
        if REQUIRED:
            pytest.fail("socat is not installed (.ci/run installs it)")
        pytest.skip("socat is not installed")
    cert, key = certificate
    port = free_port()
    listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0"
    process = subprocess.Popen(
        [tool, listen, f"TCP:{upstream[0]}:{upstream[1]}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert process.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not start listening"
            time.sleep(0.02)
        yield ("127.0.0.1", port)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def tls_echo(certificate: CertificateFiles, echo_server: EchoServer) -> Iterator[tuple[str, int]]:
    with socat_tls(certificate, echo_server.address) as address:
        yield address


def tls_connect(context: ssl.SSLContext, address: tuple[str, int]) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


class Outcome:
    """Runs ``call`` on a thread; records when it ended and what it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not end in time"


def read_exactly(sock: MonitoredSocket, size: int) -> bytes:
    parts = []
    while size:
        data = sock.recv(min(size, 65536))
        assert data, "end of stream"
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Monitoring TLS sockets


def test_an_ssl_socket_is_monitored_and_pongs_travel_inside_tls(
    client_context: ssl.SSLContext, tls_echo: tuple[str, int]
) -> None:
    sock = monitor(tls_connect(client_context, tls_echo), heartbeat=HeartbeatConfig(0.05, 2))
    with sock:
        sock.settimeout(5)
        for number in range(20):
            line = f"line {number}\n".encode()
            sock.sendall(line)
            assert read_exactly(sock, len(line)) == line
            time.sleep(0.02)
        deadline = time.monotonic() + 5
        while sock.stats.pongs_received < 3:
            assert time.monotonic() < deadline, sock.stats
            sock.settimeout(0.1)
            with contextlib.suppress(TimeoutError):
                assert sock.recv(100) == b""  # nothing but pongs, which are filtered
        assert sock.rtt is not None
        assert isinstance(sock.socket, ssl.SSLSocket)
        assert not sock.dead


def test_monitor_starts_tls_itself_with_ssl_and_server_hostname(
    client_context: ssl.SSLContext, tls_echo: tuple[str, int]
) -> None:
    raw = socket.create_connection(tls_echo)
    sock = monitor(
        raw,
        heartbeat=HeartbeatConfig(0.05, 2),
        ssl=client_context,
        server_hostname="127.0.0.1",
        handshake_timeout=5,
    )
    with sock:
        assert isinstance(sock.socket, ssl.SSLSocket)
        assert sock.socket.version() is not None
        sock.settimeout(5)
        sock.sendall(b"over tls\n")
        assert read_exactly(sock, 9) == b"over tls\n"


def test_the_handshake_timeout_bounds_a_server_that_never_answers(
    client_context: ssl.SSLContext,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts (backlog), says nothing
        raw = socket.create_connection(listener.getsockname())
        started = time.monotonic()
        with pytest.raises((TimeoutError, ssl.SSLError, OSError)):
            monitor(
                raw,
                heartbeat=HeartbeatConfig(1, 1),
                ssl=client_context,
                server_hostname="127.0.0.1",
                handshake_timeout=0.3,
            )
        assert time.monotonic() - started < 2
        assert raw.fileno() == -1  # taken over by TLS, then closed on failure


def test_wrapping_a_monitored_socket_in_tls_says_what_to_do_instead(
    client_context: ssl.SSLContext, echo_server: EchoServer
) -> None:
    sock = monitor(socket.create_connection(echo_server.address), heartbeat=HeartbeatConfig(5, 5))
    with sock:
        with pytest.raises(AttributeError, match="wrap the socket before monitoring it"):
            client_context.wrap_socket(sock, server_hostname="127.0.0.1")  # type: ignore[arg-type]
        sock.settimeout(5)
        sock.sendall(b"still fine\n")  # nothing was taken from the monitored socket
        assert read_exactly(sock, 11) == b"still fine\n"


def test_a_monitored_socket_cannot_be_monitored_twice(echo_server: EchoServer) -> None:
    sock = monitor(socket.create_connection(echo_server.address), heartbeat=HeartbeatConfig(5, 5))
    with sock, pytest.raises(InvalidSocket):
        monitor(sock, heartbeat=HeartbeatConfig(5, 5))  # type: ignore[arg-type]


@pytest.mark.slow
def test_50_mb_echo_over_tls_with_pings_every_10_ms_then_a_freeze_is_detected(
    client_context: ssl.SSLContext,
    certificate: CertificateFiles,
    echo_server: EchoServer,
    fault_proxy: FaultProxyFactory,
) -> None:
    # Hex lines: no line can equal the ping or the pong.
    payload = random.Random(99).randbytes(25 * 1024 * 1024).hex().encode()
    lines = b"\n".join(payload[i : i + 64] for i in range(0, len(payload), 64)) + b"\n"
    assert len(lines) >= 50 * 1024 * 1024
    chunk = 65 * 1000  # whole lines per sendall
    beat = HeartbeatConfig(interval=0.01, timeout=1)
    with socat_tls(certificate, echo_server.address) as tls_address:
        proxy = fault_proxy(tls_address)
        sock = monitor(tls_connect(client_context, proxy.address), heartbeat=beat)

        def write() -> None:
            view = memoryview(lines)
            for number, start in enumerate(range(0, len(view), chunk)):
                sock.sendall(view[start : start + chunk])
                if number % 16 == 15:
                    time.sleep(0.04)  # a gap in the echo: pings go out

        with sock:
            writer = Outcome(write)
            digest = hashlib.sha256()
            received = 0
            sock.settimeout(30)
            while received < len(lines):
                data = sock.recv(65536)
                assert data
                digest.update(data)
                received += len(data)
            writer.wait(30)
            assert writer.error is None
            assert digest.digest() == hashlib.sha256(lines).digest()
            stats = sock.stats
            assert stats.pings_sent >= 10
            assert stats.bytes_sent == len(lines)
            assert not sock.dead

            proxy.freeze()
            reader = Outcome(lambda: sock.recv(4096))
            reader.wait(beat.detection_bound + 5)
            assert isinstance(reader.error, PeerUnresponsive)
            assert reader.ended_at is not None
            detected_after = reader.ended_at - (sock.heartbeat.last_received)
            assert beat.detection_bound <= detected_after + 0.01
            assert detected_after <= beat.detection_bound + SLACK


@pytest.mark.slow
def test_supervised_tls_reconnects_after_the_proxy_thaws(
    client_context: ssl.SSLContext,
    certificate: CertificateFiles,
    echo_server: EchoServer,
    fault_proxy: FaultProxyFactory,
) -> None:
    beat = HeartbeatConfig(interval=0.2, timeout=0.3)
    with socat_tls(certificate, echo_server.address) as tls_address:
        proxy = fault_proxy(tls_address)
        connected: list[MonitoredSocket] = []
        with Supervisor(
            proxy.address,
            heartbeat=beat,
            retry=Backoff(initial=0.05, max_delay=0.2, jitter="none"),
            connect_timeout=1,
            ssl=client_context,
            server_hostname="127.0.0.1",
            on_connect=connected.append,
        ) as sup:
            first = sup.wait_connected(10)
            assert isinstance(first.socket, ssl.SSLSocket)
            first.settimeout(5)
            first.sendall(b"first\n")
            assert read_exactly(first, 6) == b"first\n"

            proxy.freeze()
            frozen_at = time.monotonic()
            deadline = frozen_at + beat.detection_bound + 3
            while sup.connection is first:
                assert time.monotonic() < deadline, "the frozen TLS connection was not dropped"
                time.sleep(0.02)
            assert first.dead
            time.sleep(0.5)  # attempts meanwhile: handshakes through a frozen proxy time out
            proxy.forward()

            second = sup.wait_connected(10)
            assert second is not first
            assert isinstance(second.socket, ssl.SSLSocket)
            second.settimeout(5)
            second.sendall(b"second\n")
            assert read_exactly(second, 7) == b"second\n"
            assert sup.stats.connects >= 2


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_concurrent_sendall_threads_never_tear_a_record_while_pings_fire(
    use_tls: bool,
    client_context: ssl.SSLContext,
    certificate: CertificateFiles,
    echo_server: EchoServer,
) -> None:
    threads, records = 4, 300
    stack = contextlib.ExitStack()
    with stack:
        if use_tls:
            address = stack.enter_context(socat_tls(certificate, echo_server.address))
            raw: socket.socket = tls_connect(client_context, address)
        else:
            raw = socket.create_connection(echo_server.address)
        sock = stack.enter_context(monitor(raw, heartbeat=HeartbeatConfig(0.002, 5)))
        sock.settimeout(20)

        def record(writer: int, number: int) -> bytes:
            body = random.Random(writer * 100_000 + number).randbytes(200 + number % 700).hex()
            text = f"{writer}:{number}:{body}"
            return f"{text}:{zlib.crc32(text.encode()):08x}\n".encode()

        def write(writer: int) -> None:
            for number in range(records):
                sock.sendall(record(writer, number))
                if number % 50 == 49:
                    time.sleep(0.01)  # a quiet moment: pings go out between records

        workers = [Outcome(functools.partial(write, writer)) for writer in range(threads)]
        expected = sum(len(record(w, n)) for w in range(threads) for n in range(records))
        echoed = read_exactly(sock, expected)
        for worker in workers:
            worker.wait(20)
            assert worker.error is None
        seen = {writer: 0 for writer in range(threads)}
        for line in echoed.split(b"\n")[:-1]:
            text, _, crc = line.decode().rpartition(":")
            assert f"{zlib.crc32(text.encode()):08x}" == crc, f"torn record: {line[:80]!r}"
            writer_text, number_text, _ = text.split(":", 2)
            writer, number = int(writer_text), int(number_text)
            assert seen[writer] == number  # each writer's records in its own order
            seen[writer] += 1
        assert seen == dict.fromkeys(range(threads), records)
        assert sock.stats.pings_sent > 0
        assert not sock.dead


def test_unwrap_ends_tls_and_returns_the_plain_socket(certificate: CertificateFiles) -> None:
    server_context, client_context = tls_contexts(certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        tls = server_context.wrap_socket(conn, server_side=True)
        tls.settimeout(10)
        reader = tls.makefile("rb")
        while (line := reader.readline()) != b"":
            served.append(line)
            tls.sendall(b"PONG\n" if line == b"PING\n" else line)
        plain = tls.unwrap()  # the client's close_notify arrived: answer it
        plain.sendall(b"in the clear\n")
        plain.close()

    server = Outcome(serve)
    with listener:
        sock = monitor(
            tls_connect(client_context, listener.getsockname()),
            heartbeat=HeartbeatConfig(0.05, 5),
        )
        sock.settimeout(5)
        sock.sendall(b"secret\n")
        assert read_exactly(sock, 7) == b"secret\n"
        time.sleep(0.2)  # a few pings and pongs inside TLS
        assert sock.stats.pongs_received >= 1 or sock.stats.pings_sent >= 1
        plain = sock.unwrap()
        assert not isinstance(plain, ssl.SSLSocket)
        assert sock.closed
        with plain:
            data = b""
            while not data.endswith(b"\n"):
                chunk = plain.recv(100)
                assert chunk
                data += chunk
        assert data == b"in the clear\n"
        server.wait(10)
        assert server.error is None
        assert b"secret\n" in served


def test_supervised_tls_reads_bursts_that_stay_buffered_inside_tls(
    client_context: ssl.SSLContext, tls_echo: tuple[str, int]
) -> None:
    """Decrypted bytes waiting in the TLS object are invisible to poll(): the supervisor's
    reader must take them without waiting for the socket to become readable again."""
    lines = b"".join(b"%07d burst line\n" % number for number in range(40_000))  # ~640 KB
    with Supervisor(
        tls_echo,
        heartbeat=HeartbeatConfig(interval=0.5, timeout=2),
        ssl=client_context,
        server_hostname="127.0.0.1",
    ) as sup:
        conn = sup.wait_connected(10)
        conn.settimeout(10)
        writer = Outcome(lambda: conn.sendall(lines))
        assert read_exactly(conn, len(lines)) == lines
        writer.wait(10)
        assert writer.error is None
        assert conn.pending() == 0
