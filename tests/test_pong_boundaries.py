"""Both drivers: pongs are removed only as whole messages; the application's bytes arrive exact.

A peer thread on real loopback TCP (optionally behind a relay: the library's FaultProxy, or a
real third-party one, socat) writes application lines in random pieces and answers each ping
with a pong at a message boundary, sometimes split across TCP segments; the client reads with
random sizes. What the application reads must equal, byte for byte, what the peer sent as
application data, including lines that contain the pong, or its prefixes and suffixes. The
asyncio driver runs on asyncio's loop and on uvloop's (tests/loops.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import loops
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepalive.aio import open_connection
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.sync import monitor

REQUIRED = os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1"
TRICKY = [
    b"ping-pong score: PING PONG\n",
    b"xPONG\n",
    b"PONG PONG\n",
    b"PONG\r\n",
    b"PONGPONG\n",
    b"PON\n",
    b"ONG\n",
    b" PONG\n",
]


# ---------------------------------------------------------------------------------------------
# The peer


class LinePeer:
    """Accepts one connection; writes ``messages`` in pieces, answers pings at boundaries."""

    def __init__(
        self,
        listener: socket.socket,
        messages: list[bytes],
        *,
        seed: int,
        pong_delay: float = 0.0,
        gap: float = 0.0,
    ) -> None:
        self.messages = messages
        self.random = random.Random(seed)
        self.pong_delay = pong_delay
        self.gap = gap
        self.pongs_sent = 0
        self.error: BaseException | None = None
        self._listener = listener
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve(conn)
        except BaseException as exc:
            self.error = exc

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        owed: list[float] = []  # when each received ping may be answered

        def take_pings() -> None:
            nonlocal pending
            conn.setblocking(False)
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    pending += data
            except BlockingIOError:
                pass
            finally:
                conn.setblocking(True)
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                assert line == b"PING", line  # the client sends nothing else
                owed.append(time.monotonic() + self.pong_delay)

        def send_in_pieces(data: bytes) -> None:
            cuts = sorted(self.random.sample(range(1, len(data)), min(2, len(data) - 1)))
            for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                conn.sendall(data[start:end])
                if self.random.random() < 0.3:
                    time.sleep(0.002)  # separate segments: the pong split across reads

        def answer_due() -> None:
            take_pings()
            now = time.monotonic()
            while owed and owed[0] <= now:
                owed.pop(0)
                send_in_pieces(b"PONG\n")
                self.pongs_sent += 1

        for message in self.messages:
            answer_due()
            send_in_pieces(message)
            if self.gap:
                time.sleep(self.gap)
        time.sleep(self.pong_delay)
        answer_due()  # the pongs due by now, then the end (the rest stay unanswered)
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):  # wait for the client's close
            conn.settimeout(5)
            while conn.recv(4096):
                pass

    def join(self) -> None:
        self._thread.join(15)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def socat_relay(upstream: tuple[str, int]) -> Iterator[tuple[str, int]]:
    tool = shutil.which("socat")
    if tool is None:
        if REQUIRED:
            pytest.fail("socat is not installed (.ci/run installs it)")
        pytest.skip("socat is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [tool, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr", f"TCP:{upstream[0]}:{upstream[1]}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # (a probe connection would be the one socat serves: look, don't touch)
            with open("/proc/net/tcp") as table:
                if f":{port:04X} 00000000:0000 0A" in table.read():
                    break
            assert time.monotonic() < deadline, "socat did not start listening"
            time.sleep(0.02)
        yield ("127.0.0.1", port)
    finally:
        process.terminate()
        process.wait(10)


def read_all_sync(address: tuple[str, int], sizes: list[int], beat: HeartbeatConfig) -> bytes:
    sock = monitor(socket.create_connection(address), heartbeat=beat)
    received = b""
    with sock:
        sock.settimeout(20)
        for index in range(10**9):
            data = sock.recv(sizes[index % len(sizes)])
            if not data:
                break
            received += data
        assert not sock.dead
    return received


def read_all_async(address: tuple[str, int], sizes: list[int], beat: HeartbeatConfig) -> bytes:
    async def main() -> bytes:
        reader, writer = await open_connection(*address, heartbeat=beat)
        received = b""
        for index in range(10**9):
            data = await asyncio.wait_for(reader.read(sizes[index % len(sizes)]), 20)
            if not data:
                break
            received += data
        writer.close()
        return received

    return loops.run(main())


# ---------------------------------------------------------------------------------------------
# The bug report's scenario, through relays


@pytest.fixture(params=["direct", "fault_proxy", "socat"])
def route(
    request: pytest.FixtureRequest, fault_proxy: FaultProxyFactory
) -> Iterator[tuple[socket.socket, tuple[str, int]]]:
    """(the peer's listener, the address the client connects to)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        upstream = listener.getsockname()
        if request.param == "direct":
            yield listener, upstream
        elif request.param == "fault_proxy":
            yield listener, fault_proxy(upstream).address
        else:
            with socat_relay(upstream) as address:
                yield listener, address


Reader = Callable[[tuple[str, int], list[int], HeartbeatConfig], bytes]


def check_a_line_that_contains_the_pong_is_never_cut(
    read_all: Reader, route: tuple[socket.socket, tuple[str, int]]
) -> None:
    listener, address = route
    # Pings every 0.1 s, answered 0.3 s late: pings are always owed while the lines arrive.
    lines = [b"hello\n", *TRICKY, b"next line\n"]
    peer = LinePeer(listener, lines, seed=1, pong_delay=0.3, gap=0.12)
    received = read_all(address, [4096], HeartbeatConfig(interval=0.1, timeout=2))
    peer.join()
    assert received == b"".join(lines)
    assert peer.pongs_sent >= 3  # pings were outstanding while the tricky lines arrived


def test_a_line_that_contains_the_pong_is_never_cut_sync(
    route: tuple[socket.socket, tuple[str, int]],
) -> None:
    check_a_line_that_contains_the_pong_is_never_cut(read_all_sync, route)


@pytest.mark.usefixtures("event_loop_kind")
def test_a_line_that_contains_the_pong_is_never_cut_aio(
    route: tuple[socket.socket, tuple[str, int]],
) -> None:
    check_a_line_that_contains_the_pong_is_never_cut(read_all_async, route)


# ---------------------------------------------------------------------------------------------
# Property: random messages, random pong placement and splits, random read sizes

piece = st.sampled_from([b"PONG", b"PO", b"NG", b"PING", b"P", b"x", b" ", b"\r", b"ONG"])
message = st.lists(piece, min_size=0, max_size=6).map(lambda parts: b"".join(parts) + b"\n")


EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PEER_STREAMS = given(
    messages=st.lists(message, min_size=1, max_size=25).filter(
        lambda ms: all(m != b"PONG\n" for m in ms)  # pong-equal lines are ambiguous by design
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)


def check_the_application_reads_exactly_what_the_peer_sent(
    read_all: Reader, messages: list[bytes], sizes: list[int], seed: int
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = LinePeer(listener, messages, seed=seed, gap=0.004)
        received = read_all(
            listener.getsockname(), sizes, HeartbeatConfig(interval=0.005, timeout=5)
        )
        peer.join()
    assert received == b"".join(messages)


@EXAMPLES
@PEER_STREAMS
def test_the_application_reads_exactly_what_the_peer_sent_sync(
    messages: list[bytes], sizes: list[int], seed: int
) -> None:
    check_the_application_reads_exactly_what_the_peer_sent(read_all_sync, messages, sizes, seed)


@pytest.mark.usefixtures("event_loop_kind")
@EXAMPLES
@PEER_STREAMS
def test_the_application_reads_exactly_what_the_peer_sent_aio(
    messages: list[bytes], sizes: list[int], seed: int
) -> None:
    check_the_application_reads_exactly_what_the_peer_sent(read_all_async, messages, sizes, seed)
