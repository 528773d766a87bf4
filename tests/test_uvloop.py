"""keepalive.aio on uvloop's event loop, whose transports are not subclasses of asyncio's."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

import keepalive
from keepalive import aio
from keepalive.config import KeepaliveConfig
from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.testing import EchoServer

if os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1":
    import uvloop  # CI installs the test extra: a missing uvloop must fail, not skip
else:
    uvloop = pytest.importorskip("uvloop")

BEAT = HeartbeatConfig(interval=0.2, timeout=0.3)
SLACK = 0.5


def run(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(main())  # type: ignore[arg-type]


def test_open_connection_monitor_of_and_stats_on_uvloop(echo_server: EchoServer) -> None:
    async def main() -> None:
        reader, writer = await aio.open_connection(
            *echo_server.address,
            heartbeat=HeartbeatConfig(0.05, 1),
            keepalive=KeepaliveConfig(idle=7, interval=3, count=4),
        )
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        assert not isinstance(writer.transport, asyncio.BaseTransport)  # why this test exists
        await asyncio.sleep(0.3)
        monitor = aio.monitor_of(writer)
        assert monitor is not None
        assert monitor.stats.pongs_received >= 2
        state = keepalive.inspect(writer.transport.get_extra_info("socket"))
        assert (state.idle, state.interval, state.count) == (7, 3, 4)
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()

    run(main)


def test_wrap_and_monitor_transport_on_uvloop(echo_server: EchoServer) -> None:
    async def main() -> None:
        reader, writer = await asyncio.open_connection(*echo_server.address)
        aio.monitor_streams(reader, writer, heartbeat=HeartbeatConfig(0.05, 1))
        monitor = aio.monitor_of(writer.transport)
        assert isinstance(monitor, aio.HeartbeatProtocol)
        await asyncio.sleep(0.3)
        assert monitor.pongs_received >= 2
        writer.write(b"PONG line of the application\n")
        assert await reader.readline() == b"PONG line of the application\n"
        writer.close()

        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(asyncio.Protocol, *echo_server.address)
        watched = aio.monitor(transport, heartbeat=HeartbeatConfig(0.05, 1))
        assert transport.get_protocol() is watched
        assert watched.protocol is protocol
        transport.close()

    run(main)


def test_a_frozen_proxy_is_detected_within_the_bound_on_uvloop(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)

    async def main() -> None:
        deaths: list[float] = []
        reader, writer = await aio.open_connection(
            *proxy.address,
            heartbeat=BEAT,
            on_dead=lambda _m, _e: deaths.append(asyncio.get_running_loop().time()),
        )
        monitor = aio.monitor_of(writer)
        assert monitor is not None
        writer.write(b"before\n")
        assert await reader.readline() == b"before\n"
        proxy.freeze()
        with pytest.raises(PeerUnresponsive):
            await asyncio.wait_for(reader.read(100), BEAT.detection_bound + 5)
        assert len(deaths) == 1
        assert monitor.last_received is not None
        silent = deaths[0] - monitor.last_received
        assert BEAT.detection_bound - 0.01 <= silent <= BEAT.detection_bound + SLACK
        writer.close()

    run(main)


def test_the_supervisor_heals_on_uvloop(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)

    async def main() -> None:
        async with aio.Supervisor(
            proxy.address,
            heartbeat=BEAT,
            retry=keepalive.Backoff(initial=0.05, max_delay=0.2, jitter="none"),
            connect_timeout=1,
        ) as sup:
            first = await sup.wait_connected(timeout=5)
            proxy.freeze()
            deadline = time.monotonic() + BEAT.detection_bound + 3
            while sup.connection is first:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            proxy.forward()
            second = await sup.wait_connected(timeout=5)
            assert second is not first
            second.writer.write(b"healed\n")
            assert await second.reader.readline() == b"healed\n"

    run(main)


def test_socket_keepalive_options_round_trip_on_uvloops_socket() -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        with listener:
            _reader, writer = await asyncio.open_connection(*listener.getsockname())
            sock = writer.transport.get_extra_info("socket")
            keepalive.configure(sock, KeepaliveConfig(idle=11, interval=5, count=3))
            assert keepalive.inspect(sock).idle == 11
            writer.close()

    run(main)
