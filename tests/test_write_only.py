"""A write-only client (a producer, a metrics sender) still learns that the peer is gone.

Only *new* inbound bytes are life: pongs that arrived before the loss and sit unread in the
kernel must not keep a dead peer alive. The relay that loses the server is the library's own
:class:`FaultProxy` (frozen) and a real third-party relay, socat, stopped with SIGSTOP (its
kernel keeps accepting and ACKing, as a proxying NAT's does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import loops
import pytest

from keepalive._unread import unread_bytes
from keepalive.aio import monitor_of, open_connection
from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.sync import MonitoredSocket, monitor
from keepalive.testing import EchoServer

BEAT = HeartbeatConfig(interval=0.2, timeout=0.3)  # bound 0.5 s
SLACK = 0.5
REQUIRED = os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1"


class Relay:
    """Where the client connects, and how to make the relay lose the server."""

    def __init__(self, address: tuple[str, int], lose: Callable[[], object]) -> None:
        self.address = address
        self.lose = lose


@contextlib.contextmanager
def socat_relay(upstream: tuple[str, int]) -> Iterator[tuple[tuple[str, int], int]]:
    tool = shutil.which("socat")
    if tool is None:
        if REQUIRED:
            pytest.fail("socat is not installed (.ci/run installs it)")
        pytest.skip("socat is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            tool,
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"TCP:{upstream[0]}:{upstream[1]}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "socat did not start listening"
            time.sleep(0.02)
        yield ("127.0.0.1", port), process.pid
    finally:
        # socat forks a child per connection: continue and end them all.
        for pid in [*_children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
        process.wait(10)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _stop_relay(pid: int) -> None:
    """SIGSTOP socat and its per-connection children: the relay stops forwarding."""
    for child in [*_children(pid), pid]:
        os.kill(child, signal.SIGSTOP)


@pytest.fixture(params=["fault_proxy", "socat"])
def relay(
    request: pytest.FixtureRequest, echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> Iterator[Relay]:
    if request.param == "fault_proxy":
        proxy = fault_proxy(echo_server.address)
        yield Relay(proxy.address, proxy.freeze)
    else:
        with socat_relay(echo_server.address) as (address, pid):
            yield Relay(address, lambda: _stop_relay(pid))


def test_a_blocking_write_only_client_gets_its_verdict(relay: Relay) -> None:
    deaths: list[tuple[float, PeerUnresponsive]] = []
    sock = monitor(
        socket.create_connection(relay.address),
        heartbeat=BEAT,
        on_dead=lambda _s, e: deaths.append((time.monotonic(), e)),
    )
    with sock:
        # The application only writes; pongs pile up unread (or are taken by the driver).
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            sock.sendall(b"metric 1\n")
            time.sleep(0.02)
        assert sock.stats.pings_sent == 0 or not sock.dead  # (echoed lines keep it alive)
        assert not sock.dead
        relay.lose()
        lost_at = time.monotonic()
        error: BaseException | None = None
        while time.monotonic() - lost_at < BEAT.detection_bound + 5:
            try:
                sock.sendall(b"metric 2\n")
            except PeerUnresponsive as exc:
                error = exc
                raised_at = time.monotonic()
                break
            time.sleep(0.02)
        assert isinstance(error, PeerUnresponsive), "the write-only client was never told"
        # on_dead runs on the scheduler thread; a call made after the verdict raises at once,
        # possibly while on_dead is still being called.
        deadline = time.monotonic() + 2
        while not deaths and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(deaths) == 1
        silent = deaths[0][0] - sock.heartbeat.last_received
        assert BEAT.detection_bound - 0.01 <= silent <= BEAT.detection_bound + SLACK
        assert abs(raised_at - deaths[0][0]) <= 0.1  # the next send after the verdict raises


@pytest.mark.usefixtures("event_loop_kind")
def test_an_asyncio_write_only_client_gets_its_verdict(relay: Relay) -> None:
    async def main() -> None:
        deaths: list[float] = []
        reader, writer = await open_connection(
            *relay.address,
            heartbeat=BEAT,
            on_dead=lambda _m, _e: deaths.append(asyncio.get_running_loop().time()),
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        while loop.time() - started < 1.0:
            writer.write(b"metric 1\n")
            await writer.drain()
            await asyncio.sleep(0.02)
        monitor = monitor_of(writer)
        assert monitor is not None
        assert not monitor.dead
        relay.lose()
        lost_at = loop.time()
        error: BaseException | None = None
        while loop.time() - lost_at < BEAT.detection_bound + 5:
            try:
                # After the verdict the transport is closed: asyncio's would drop the bytes,
                # uvloop's raises RuntimeError. drain() raises the verdict on both.
                if not writer.is_closing():
                    writer.write(b"metric 2\n")
                await writer.drain()
            except PeerUnresponsive as exc:
                error = exc
                break
            await asyncio.sleep(0.02)
        assert isinstance(error, PeerUnresponsive), "the write-only client was never told"
        assert len(deaths) == 1
        assert monitor.heartbeat is not None
        silent = deaths[0] - monitor.heartbeat.last_received
        assert BEAT.detection_bound - 0.01 <= silent <= BEAT.detection_bound + SLACK
        writer.close()
        del reader

    loops.run(main())


def test_unread_pongs_do_not_pile_up_forever(echo_server: EchoServer) -> None:
    """Pongs nobody reads: counted once each, and never an endless backlog."""
    sock: MonitoredSocket = monitor(
        socket.create_connection(echo_server.address), heartbeat=HeartbeatConfig(0.02, 0.05)
    )
    with sock:
        time.sleep(1.0)  # a ping every 70 ms at most, and nobody reads
        assert not sock.dead
        stats = sock.stats
        assert stats.pings_sent >= 8
        # The scheduler took the pongs itself: at most the last one or two wait in the kernel.
        assert unread_bytes(sock.fileno()) <= 2 * len(b"PONG\n")
        assert stats.pongs_received >= stats.pings_sent - 2
        assert sock.pending() == 0  # nothing was put in front of the application's bytes
        sock.sendall(b"hello\n")
        sock.settimeout(5)
        assert sock.recv(100) == b"hello\n"  # its own bytes come through, pongs never do
