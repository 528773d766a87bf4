"""keepalive.aio on each event loop's own transports and sockets.

tests/loops.py runs every asyncio test on asyncio's loop and on uvloop's, whose transports are
not subclasses of asyncio's and whose ``get_extra_info("socket")`` is not a
:class:`socket.socket`. This file checks that the parameter really gives that loop, and reads
kernel keepalive back from the live socket of every entry point (through a duplicate of its
descriptor: what the kernel holds, not what a wrapper remembers).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

import loops
import pytest

import keepalive
from keepalive import aio
from keepalive.config import KeepaliveConfig
from keepalive.heartbeat import HeartbeatConfig
from keepalive.reconnect import Backoff
from keepalive.testing import EchoServer

pytestmark = pytest.mark.usefixtures("event_loop_kind")

KERNEL = KeepaliveConfig(idle=7, interval=3, count=4)
BEAT = HeartbeatConfig(interval=0.05, timeout=1)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 20)

    loops.run(bounded())


def kernel_keepalive(
    transport: asyncio.BaseTransport,
) -> tuple[bool, float | None, float | None, int | None]:
    """(SO_KEEPALIVE, idle, interval, count) read from the kernel through a duplicate fd."""
    fd = transport.get_extra_info("socket").fileno()
    with socket.socket(fileno=os.dup(fd)) as duplicate:
        state = keepalive.inspect(duplicate)
        enabled = duplicate.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    return enabled, state.idle, state.interval, state.count


WANTED = (True, KERNEL.idle, KERNEL.interval, KERNEL.count)


async def until_a_pong(monitor: aio.HeartbeatProtocol | None) -> None:
    assert monitor is not None
    for _ in range(400):
        if monitor.pongs_received >= 1:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no pong within 2 s")


def test_the_parameter_gives_that_loop_and_its_own_transports(
    event_loop_kind: str, echo_server: EchoServer
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert ("uvloop" in type(loop).__module__) == (event_loop_kind == "uvloop")
        reader, writer = await aio.open_connection(*echo_server.address, heartbeat=BEAT)
        sock = writer.transport.get_extra_info("socket")
        if event_loop_kind == "uvloop":  # why monitor_of() must not ask for asyncio's classes
            assert not isinstance(writer.transport, asyncio.BaseTransport)
            assert not isinstance(sock, socket.socket)
        assert aio.monitor_of(writer) is aio.monitor_of(writer.transport) is not None
        await until_a_pong(aio.monitor_of(writer))
        writer.write(b"hello\n")
        assert await reader.readline() == b"hello\n"
        writer.close()

    run(main)


def test_kernel_keepalive_is_set_on_every_entry_points_socket(echo_server: EchoServer) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        host, port = echo_server.address

        # open_connection: asyncio's dial, then keepalive dialled by keepalive.dial (retry=).
        for retry in (None, Backoff(initial=0.05, max_attempts=2)):
            _, writer = await aio.open_connection(
                host, port, keepalive=KERNEL, heartbeat=BEAT, retry=retry
            )
            assert kernel_keepalive(writer.transport) == WANTED
            await until_a_pong(aio.monitor_of(writer))
            writer.close()

        # monitor_streams on streams the loop opened.
        reader, writer = await asyncio.open_connection(host, port)
        aio.monitor_streams(reader, writer, heartbeat=BEAT, keepalive=KERNEL)
        assert kernel_keepalive(writer.transport) == WANTED
        await until_a_pong(aio.monitor_of(writer))
        writer.close()

        # monitor() on a protocol's transport.
        transport, protocol = await loop.create_connection(asyncio.Protocol, host, port)
        watched = aio.monitor(transport, heartbeat=BEAT, keepalive=KERNEL)
        assert watched.protocol is protocol
        assert kernel_keepalive(transport) == WANTED
        await until_a_pong(watched)
        transport.close()

        # The supervisor's connections.
        async with aio.Supervisor((host, port), keepalive=KERNEL, heartbeat=BEAT) as sup:
            conn = await sup.wait_connected(timeout=5)
            assert kernel_keepalive(conn.writer.transport) == WANTED
            await until_a_pong(conn.monitor)

    run(main)
