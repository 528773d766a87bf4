"""FaultProxy and EchoServer (keepalive.testing) on real loopback sockets."""

# The fixtures are imported by name so that this file works without the plugin being
# registered; pytest then passes them in as arguments of the same name (F811).
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import gc
import os
import random
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keepalive.errors import InvalidSetting, InvalidSettingType
from keepalive.pytest_plugin import FaultProxyFactory, echo_server, fault_proxy  # noqa: F401
from keepalive.testing import BUFFER_LIMIT, EchoServer, FaultProxy, _LineEcho

TIMEOUT = 3.0  # generous upper bound for anything that should happen "at once"
BULK_TIMEOUT = 30.0  # for megabytes on a shared 2-core machine; also a sender thread's deadline


# ---------------------------------------------------------------------------------------------
# helpers


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int, timeout: float = TIMEOUT) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def assert_silent(sock: socket.socket, seconds: float) -> None:
    """Nothing arrives on ``sock`` (no bytes, no EOF, no error) for ``seconds``."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence, got {data!r}")


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def round_trip(sock: socket.socket, message: bytes = b"PING\n", reply: bytes = b"PONG\n") -> float:
    started = time.monotonic()
    sock.sendall(message)
    assert recv_exactly(sock, len(reply)) == reply
    return time.monotonic() - started


def expect_reset(sock: socket.socket, timeout: float = TIMEOUT) -> None:
    """The peer reset ``sock`` (an RST, not a FIN): recv raises ConnectionResetError."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return
    raise AssertionError(f"expected a reset, got {data!r}")


def expect_connection_reset(address: tuple[str, int]) -> None:
    """Connecting to ``address`` succeeds at the TCP level, then the peer resets at once.

    The RST may arrive before connect() returns, in which case connect() raises it.
    """
    try:
        sock = socket.create_connection(address, timeout=TIMEOUT)
    except ConnectionResetError:
        return
    with sock:
        expect_reset(sock)


def start_sender(sock: socket.socket, payload: bytes) -> threading.Thread:
    """sendall() in a thread; the socket's timeout becomes the whole transfer's deadline."""
    sock.settimeout(BULK_TIMEOUT)
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    return sender


@pytest.fixture
def upstream() -> Iterator[socket.socket]:
    """A plain listening socket: the test accepts and plays the server by hand."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    with listener:
        yield listener


def address_of(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


def open_flow(proxy: FaultProxy, listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """A client connected through ``proxy`` and the server side accepted from ``listener``."""
    client = connect(proxy.address)
    server, _ = listener.accept()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.sendall(b"hello")
    assert recv_exactly(server, 5) == b"hello"
    return client, server


# ---------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_forward_copies_5_mb_both_ways_unchanged(host: str, fault_proxy: FaultProxyFactory) -> None:
    if host == "::1" and not _ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this host")
    payload = random.Random(1).randbytes(5 * 1024 * 1024)
    with EchoServer(ping=None, host=host) as server:
        proxy = fault_proxy(server.address, listen=(host, 0))
        assert proxy.address[0] == host
        with connect(proxy.address) as client:
            sender = start_sender(client, payload)
            echoed = recv_exactly(client, len(payload), timeout=BULK_TIMEOUT)
            sender.join()
        assert echoed == payload
        # The counters are updated by the proxy thread just after its send() calls.
        wait_until(lambda: proxy.bytes_to_client == len(payload))
        assert proxy.bytes_to_server == len(payload)
        assert proxy.bytes_discarded == 0
        assert proxy.mode == "forward"


def test_half_close_is_passed_on_and_the_flow_ends(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy.address) as client:
        client.sendall(b"last words\nPI")
        client.shutdown(socket.SHUT_WR)
        assert recv_exactly(client, 13) == b"last words\nPI"
        assert client.recv(10) == b""  # the server's FIN came through the proxy
    wait_until(lambda: proxy.flows == 0 and echo_server.connections == 0)


def test_backpressure_bounds_what_the_proxy_reads(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    """With a server that never reads, the client soon cannot send any more."""
    proxy = fault_proxy(address_of(upstream))
    client, server = open_flow(proxy, upstream)
    with client, server:
        client.setblocking(False)
        block = b"x" * 65536
        sent = 0
        while sent < 64 * 1024 * 1024:
            try:
                sent += client.send(block)
            except BlockingIOError:
                _, writable, _ = select.select([], [client], [], 0.5)
                if not writable:
                    break
        # Kernel buffers on both legs hold a few MB each; the proxy itself holds at most
        # BUFFER_LIMIT plus one chunk. Without backpressure the loop would run to 64 MB.
        assert sent < 40 * 1024 * 1024
        assert BUFFER_LIMIT <= proxy.buffered < BUFFER_LIMIT + 65536


def test_upstream_refusing_resets_the_client(fault_proxy: FaultProxyFactory) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        closed_port = address_of(placeholder)
    proxy = fault_proxy(closed_port)
    expect_connection_reset(proxy.address)
    wait_until(lambda: proxy.refused == 1 and proxy.flows == 0)


# ---------------------------------------------------------------------------------------------
# freeze


@pytest.mark.skipif(
    not all(hasattr(socket, name) for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")),
    reason="needs per-socket TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT",
)
def test_freeze_keeps_kernel_keepalive_happy_while_nothing_crosses(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(address_of(upstream))
    client, server = open_flow(proxy, upstream)
    with client, server:
        # Aggressive kernel keepalive: a dead path would kill the socket within 1 + 1 * 2 s.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)

        proxy.freeze()
        assert proxy.mode == "freeze"
        client.sendall(b"up-1,")
        client.sendall(b"up-2")
        server.sendall(b"down-1")

        deadline = time.monotonic() + 5.0
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([client, server], [], [], left)
            assert readable == [], "bytes crossed a frozen proxy"

        if sys.platform.startswith("linux"):
            tcp_state = struct.unpack(
                "B", client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
            )
            assert tcp_state == (1,), "client socket is no longer ESTABLISHED"
        assert_silent(client, 0.2)  # still alive: a timeout, not a reset or EOF
        assert proxy.flows == 1
        assert proxy.bytes_to_server == 5  # only the bytes before freeze()
        assert proxy.buffered == 0  # not even read: the bytes wait in the proxy's kernel

        proxy.forward()
        assert recv_exactly(server, 9) == b"up-1,up-2"
        assert recv_exactly(client, 6) == b"down-1"


def test_freeze_then_forward_loses_and_reorders_nothing_under_load(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    """Bytes held in every buffer (kernels and the proxy's own) survive a freeze."""
    payload = random.Random(2).randbytes(16 * 1024 * 1024)  # more than all buffers hold
    proxy = fault_proxy(address_of(upstream))
    client, server = open_flow(proxy, upstream)
    with client, server:
        sender = start_sender(client, payload)
        time.sleep(0.3)  # the server reads nothing yet: every buffer on the way fills up
        proxy.freeze()
        copied_before = proxy.bytes_to_server
        assert proxy.buffered >= BUFFER_LIMIT
        # Drain what the proxy's kernel had already queued toward the server, until silence.
        received = bytearray()
        server.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while chunk := server.recv(1 << 20):
                received += chunk
        assert proxy.bytes_to_server == copied_before  # frozen: the proxy copied nothing
        assert len(received) < len(payload)
        proxy.forward()
        received += recv_exactly(server, len(payload) - len(received), timeout=BULK_TIMEOUT)
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        assert bytes(received) == payload


def test_new_flows_are_frozen_too(upstream: socket.socket, fault_proxy: FaultProxyFactory) -> None:
    proxy = fault_proxy(address_of(upstream))
    proxy.freeze()
    with connect(proxy.address) as client:
        client.sendall(b"queued")
        server, _ = upstream.accept()  # the proxy still connects upstream
        with server:
            assert_silent(server, 0.3)
            proxy.forward()
            assert recv_exactly(server, 6) == b"queued"


# ---------------------------------------------------------------------------------------------
# reset and refuse


def test_reset_sends_rst_to_both_sides_and_keeps_serving(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(address_of(upstream))
    client, server = open_flow(proxy, upstream)
    with client, server:
        started = time.monotonic()
        assert proxy.reset() == 1
        assert proxy.flows == 0
        expect_reset(client)
        expect_reset(server)
        assert time.monotonic() - started < 1.0
    assert proxy.mode == "forward"
    client, server = open_flow(proxy, upstream)  # new connections are forwarded as before
    client.close()
    server.close()


def test_refuse_resets_new_connections_only_until_forward(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(address_of(upstream))
    old_client, old_server = open_flow(proxy, upstream)
    with old_client, old_server:
        proxy.refuse()
        assert proxy.mode == "refuse"
        expect_connection_reset(proxy.address)
        wait_until(lambda: proxy.refused == 1)
        upstream.settimeout(0.3)
        with pytest.raises(TimeoutError):
            upstream.accept()  # the proxy did not even try the server
        old_client.sendall(b"still here")  # flows that existed go on
        assert recv_exactly(old_server, 10) == b"still here"

        proxy.forward()
        upstream.settimeout(TIMEOUT)
        client, server = open_flow(proxy, upstream)
        client.close()
        server.close()


# ---------------------------------------------------------------------------------------------
# delay


def test_delay_adds_latency_in_both_directions_and_keeps_order(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy.address) as client:
        baseline = min(round_trip(client) for _ in range(3))
        assert baseline < 0.2

        proxy.delay(0.2)
        assert (proxy.mode, proxy.mode_seconds) == ("delay", 0.2)
        delayed = round_trip(client)
        assert 0.4 <= delayed <= 0.4 + 0.6  # 0.2 s each way

        lines = [f"line {number}\n".encode() for number in range(30)]
        for line in lines:
            client.send(line)
            time.sleep(0.002)
        expected = b"".join(lines)
        assert recv_exactly(client, len(expected)) == expected

        proxy.forward()
        assert round_trip(client) < 0.2


def test_forward_releases_delayed_chunks_at_once(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    with connect(proxy.address) as client:
        proxy.delay(30)
        client.sendall(b"PING\n")
        time.sleep(0.1)
        started = time.monotonic()
        proxy.forward()
        assert recv_exactly(client, 5) == b"PONG\n"
        assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------------------------------
# drop_after_idle


def test_drop_after_idle_forgets_a_silent_flow_for_good(
    upstream: socket.socket, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(address_of(upstream))
    proxy.drop_after_idle(0.5)
    client, server = open_flow(proxy, upstream)
    with client, server:
        for _ in range(5):  # talking more often than the idle limit keeps the flow
            time.sleep(0.2)
            client.sendall(b"a")
            assert recv_exactly(server, 1) == b"a"
        server.sendall(b"reply")
        assert recv_exactly(client, 5) == b"reply"

        time.sleep(0.8)  # silent for longer than the limit: the NAT forgets the flow
        client.sendall(b"late")
        server.sendall(b"back")
        assert_silent(server, 0.4)
        assert_silent(client, 0.1)  # the connections stay open: silence, not EOF
        wait_until(lambda: proxy.bytes_discarded == 8)
        assert proxy.flows == 1

        proxy.forward()  # a forgotten flow stays forgotten
        client.sendall(b"again")
        assert_silent(server, 0.3)
        client.shutdown(socket.SHUT_WR)  # not even a FIN crosses
        assert_silent(server, 0.3)
    wait_until(lambda: proxy.flows == 0)  # both ends left: the flow is gone


# ---------------------------------------------------------------------------------------------
# thread safety, validation, lifecycle


def test_faults_switched_from_many_threads_lose_nothing(
    fault_proxy: FaultProxyFactory,
) -> None:
    payload = random.Random(3).randbytes(1024 * 1024)
    with EchoServer(ping=None) as server:
        proxy = fault_proxy(server.address)
        with connect(proxy.address) as client:
            sender = start_sender(client, payload)

            def toggle() -> None:
                for _ in range(30):
                    proxy.freeze()
                    proxy.delay(0.001)
                    proxy.forward()

            togglers = [threading.Thread(target=toggle) for _ in range(4)]
            for thread in togglers:
                thread.start()
            for thread in togglers:
                thread.join()
            proxy.forward()
            assert recv_exactly(client, len(payload), timeout=BULK_TIMEOUT) == payload
            sender.join()


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidSetting, match="upstream"):
        FaultProxy(("127.0.0.1", 0))
    with pytest.raises(InvalidSettingType, match="upstream"):
        FaultProxy("127.0.0.1:80")  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="listen"):
        FaultProxy(("127.0.0.1", 80), listen=("127.0.0.1", 70000))
    proxy = FaultProxy(("127.0.0.1", 80))
    with pytest.raises(InvalidSetting, match="delay"):
        proxy.delay(-1)
    with pytest.raises(InvalidSettingType, match="delay"):
        proxy.delay(True)
    with pytest.raises(InvalidSetting, match="drop_after_idle"):
        proxy.drop_after_idle(0)
    with pytest.raises(InvalidSetting, match="ping"):
        EchoServer(ping=b"PING")
    with pytest.raises(InvalidSetting, match="ping"):
        EchoServer(ping=b"PI\nNG\n")
    with pytest.raises(InvalidSettingType, match="pong"):
        EchoServer(pong="PONG\n")  # type: ignore[arg-type]


def test_lifecycle_rules() -> None:
    proxy = FaultProxy(("127.0.0.1", 80))
    with pytest.raises(RuntimeError, match="not started"):
        _ = proxy.address
    proxy.freeze()  # faults can be chosen before start
    assert proxy.mode == "freeze"
    proxy.start()
    with pytest.raises(RuntimeError, match="already started"):
        proxy.start()
    proxy.close()
    proxy.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"), proxy:
        pass
    never_started = EchoServer()
    never_started.close()

    paused_from_the_start = EchoServer()
    paused_from_the_start.pause()
    with paused_from_the_start, connect(paused_from_the_start.address) as client:
        client.sendall(b"PING\n")
        assert_silent(client, 0.2)
        assert paused_from_the_start.accepted == 0
        paused_from_the_start.resume()
        assert recv_exactly(client, 5) == b"PONG\n"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_close_leaks_no_threads_or_fds(echo_server: EchoServer) -> None:
    for _ in range(2):  # warm up lazily created resources (resolver, selector modules)
        with FaultProxy(echo_server.address) as proxy, connect(proxy.address) as client:
            round_trip(client)
    wait_until(lambda: echo_server.connections == 0)  # its side of the warm-up flows
    gc.collect()  # sockets an earlier failing test left behind must not close mid-count
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    for lifetime in range(50):
        with FaultProxy(echo_server.address) as proxy:
            with connect(proxy.address) as client:
                round_trip(client)
                if lifetime % 2:
                    proxy.freeze()  # closing with a frozen, open flow
                    client.sendall(b"PING\n")
            if lifetime % 3 == 0:
                proxy.delay(0.5)
        if lifetime % 5 == 0:
            with EchoServer() as extra, connect(extra.address) as client:
                round_trip(client)
    assert set(threading.enumerate()) == threads_before
    wait_until(lambda: echo_server.connections == 0)
    gc.collect()
    assert _open_fds() == fds_before


# ---------------------------------------------------------------------------------------------
# EchoServer


def test_echo_server_answers_ping_lines_and_echoes_everything_else(
    echo_server: EchoServer,
) -> None:
    with connect(echo_server.address) as client:
        assert round_trip(client) < 1.0
        for message in [b"hello\n", b"xPING\n", b"PING PONG\n", b"PINGPING\n", b"PIN\n", b"\n"]:
            client.sendall(message)
            assert recv_exactly(client, len(message)) == message
        client.sendall(b"PI")  # a ping split across chunks
        assert_silent(client, 0.1)  # held: it may still become a ping line
        client.sendall(b"NG\n")
        assert recv_exactly(client, 5) == b"PONG\n"
        client.sendall(b"partial")  # cannot be a ping line: echoed without waiting for \n
        assert recv_exactly(client, 7) == b"partial"
        client.sendall(b"PING\n")  # not at a line start
        assert recv_exactly(client, 5) == b"PING\n"
        client.sendall(b"\nPING\nPING\nok\n")
        assert recv_exactly(client, 14) == b"\nPONG\nPONG\nok\n"
        client.sendall(b"PIN")
        client.sendall(b"X")  # the held prefix is released once the line diverges
        assert recv_exactly(client, 4) == b"PINX"
    assert echo_server.accepted == 1


def test_echo_server_without_ping_is_a_pure_echo() -> None:
    with EchoServer(ping=None) as server, connect(server.address) as client:
        client.sendall(b"PING\n")
        assert recv_exactly(client, 5) == b"PING\n"


def test_echo_server_custom_ping_and_eof() -> None:
    with EchoServer(ping=b"hb\n", pong=b"") as server, connect(server.address) as client:
        client.sendall(b"hb\nhb\nx\nh")
        client.shutdown(socket.SHUT_WR)
        assert recv_exactly(client, 3) == b"x\nh"  # an empty pong swallows the pings
        assert client.recv(10) == b""
        wait_until(lambda: server.connections == 0)


def test_echo_server_pause_resume_and_kill(echo_server: EchoServer) -> None:
    with connect(echo_server.address) as client:
        round_trip(client)
        echo_server.pause()
        assert echo_server.paused
        client.sendall(b"PING\n")
        with connect(echo_server.address) as late:  # the kernel still completes the handshake
            assert_silent(client, 0.3)
            assert echo_server.accepted == 1
            echo_server.resume()
            assert recv_exactly(client, 5) == b"PONG\n"
            assert round_trip(late) < 1.0
            assert echo_server.connections == 2

            assert echo_server.kill_connections() == 2
            expect_reset(client)
            expect_reset(late)
            assert echo_server.connections == 0
    with connect(echo_server.address) as client:  # still serving
        round_trip(client)


def _reference_echo(data: bytes, ping: bytes, pong: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(pong if line == ping else line for line in lines)


@given(
    pieces=st.lists(
        st.lists(st.sampled_from([b"P", b"I", b"N", b"G", b"\n", b"x", b"PING\n"]), max_size=8),
        max_size=12,
    ),
    ping=st.sampled_from([b"PING\n", b"\n", b"P\n"]),
)
def test_line_echo_matches_the_line_rule_for_any_chunking(
    pieces: list[list[bytes]], ping: bytes
) -> None:
    chunks = [b"".join(piece) for piece in pieces]
    echo = _LineEcho(ping, b"<pong>")
    received = b""
    output = b""
    for chunk in chunks:
        received += chunk
        output += echo.feed(chunk)
        # Everything is echoed at once, except an unfinished last line that may still become
        # a ping line (it is a prefix of ping): that one is held back.
        line_start = received.rfind(b"\n") + 1
        if ping.startswith(received[line_start:]):
            assert output == _reference_echo(received[:line_start], ping, b"<pong>")
        else:
            assert output == _reference_echo(received, ping, b"<pong>")
    output += echo.finish()
    assert output == _reference_echo(received, ping, b"<pong>")


# ---------------------------------------------------------------------------------------------
# the pytest fixtures


def test_fixtures_give_started_objects_that_work_together(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    assert proxy.upstream == echo_server.address
    with connect(proxy.address) as client:
        assert round_trip(client) < 1.0
        assert proxy.flows == 1
        assert echo_server.connections == 1
