"""keepalive.trio: monitored trio streams and the supervisor, against real sockets.

Every test runs its own ``trio.run``. The servers are :class:`keepalive.testing.EchoServer`
(answers ``PING\\n`` with ``PONG\\n``, echoes the rest) and trio listeners in the same run;
the faults come from the thread-based :class:`keepalive.testing.FaultProxy`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
import supervisor_checks
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_streams import read_until

from keepalive.config import KeepaliveConfig
from keepalive.errors import ConnectFailed, InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.reconnect import Backoff
from keepalive.supervision import DisconnectReason, SupervisorState
from keepalive.testing import EchoServer
from keepalive.trio import (
    MonitoredStream,
    SchedulerStats,
    SupervisedConnection,
    Supervisor,
    monitor,
    open_connection,
    scheduler_stats,
)

SLACK = 0.5  # seconds a verdict may come after its bound (2 cores, ~7 test runs at once)
FAST = HeartbeatConfig(interval=0.2, timeout=0.2)
QUIET = HeartbeatConfig(interval=3600, timeout=3600)  # pings only when a test sends them


def run(main: Callable[[], Awaitable[object]]) -> None:
    trio.run(main)


def task_count() -> int:
    """Tasks alive in this trio run, system tasks included."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    count = 0
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


def open_fds() -> int:
    count: int = psutil.Process().num_fds()
    return count


async def listener() -> trio.SocketListener:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listeners[0]


async def write_forever(stream: MonitoredStream) -> None:
    while True:
        await stream.send_all(b"x\n")
        await trio.sleep(0.02)


def port_of(listener: trio.SocketListener) -> int:
    port: int = listener.socket.getsockname()[1]
    return port


# ---------------------------------------------------------------------------------------------
# The story: a frozen NAT, and kernel keepalive on the real socket


def test_a_frozen_proxy_is_detected_within_the_bound_and_keepalive_is_on_the_socket(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    kernel = KeepaliveConfig(idle=7, interval=3, count=4)

    async def main() -> None:
        stream = await open_connection(*proxy.address, keepalive=kernel, heartbeat=FAST)
        sock = stream.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if sys.platform == "linux":
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        await stream.send_all(b"hello\n")
        assert await read_until(stream, 6) == b"hello\n"
        await trio.sleep(FAST.detection_bound * 2)  # pings answered, nothing declared
        assert not stream.dead
        assert stream.pings_sent >= 2
        proxy.freeze()  # the server looks alive to the kernel: only the heartbeat sees it
        frozen_at = trio.current_time()
        with pytest.raises(PeerUnresponsive):
            await stream.receive_some()  # blocked here when the verdict comes
        elapsed = trio.current_time() - frozen_at
        assert elapsed <= FAST.detection_bound + SLACK
        assert stream.dead
        assert stream.error is not None
        assert "no reply" in str(stream.error)
        with pytest.raises(PeerUnresponsive):
            await stream.send_all(b"more\n")  # every later call raises it too
        await stream.aclose()
        assert scheduler_stats().monitors == 0

    run(main)


def test_rtt_and_stats_come_from_pongs_read_by_the_application(echo_server: EchoServer) -> None:
    async def main() -> None:
        stream = await open_connection(*echo_server.address, heartbeat=QUIET)
        assert stream.rtt is None
        assert stream.send_ping()
        await stream.send_all(b"after the ping\n")
        # The pong comes first and is removed: the application reads only its own line.
        assert await read_until(stream, 15) == b"after the ping\n"
        stats = stream.stats
        assert stats.pings_sent == 1
        assert stats.pongs_received == 1
        assert stats.bytes_received == 5 + 15
        assert stats.bytes_sent == 15
        assert stream.rtt is not None
        assert 0 <= stream.rtt < 1.0
        assert stream.srtt == stream.rtt
        await stream.aclose()

    run(main)


def test_a_write_only_application_lives_on_and_still_gets_its_verdict(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)

    async def main() -> None:
        stream = await open_connection(*proxy.address, heartbeat=FAST)
        start = trio.current_time()
        while trio.current_time() - start < FAST.detection_bound * 3:
            await stream.send_all(b"x\n")  # never reads: pongs wait unread in the kernel
            await trio.sleep(0.02)
        assert not stream.dead
        assert stream.stats.unread_life >= 1
        proxy.freeze()
        frozen_at = trio.current_time()
        with pytest.raises(PeerUnresponsive):
            await write_forever(stream)
        assert trio.current_time() - frozen_at <= FAST.detection_bound + SLACK
        await stream.aclose()

    run(main)


def test_a_writer_blocked_behind_a_frozen_proxy_is_released_within_the_bound(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    config = HeartbeatConfig(interval=0.3, timeout=0.3)

    async def main() -> None:
        stream = await open_connection(*proxy.address, heartbeat=config)
        proxy.freeze()
        frozen_at = trio.current_time()
        with pytest.raises(PeerUnresponsive):
            await stream.send_all(b"y" * (64 * 1024 * 1024))  # fills every buffer, then blocks
        assert trio.current_time() - frozen_at <= config.detection_bound + SLACK
        assert stream.stats.blocked_pings >= 1
        await stream.aclose()

    run(main)


def test_a_blocked_trio_run_does_not_kill_a_live_connection(echo_server: EchoServer) -> None:
    async def main() -> None:
        streams = [await open_connection(*echo_server.address, heartbeat=FAST) for _ in range(5)]
        for _ in range(2):
            await trio.sleep(FAST.interval + FAST.timeout / 2)  # a ping is in flight now
            time.sleep(FAST.detection_bound * 3)  # the whole run is blocked (a CPU hog)
        await trio.sleep(FAST.detection_bound)
        assert not any(stream.dead for stream in streams)
        assert sum(stream.unread_life + stream.stalls for stream in streams) >= 1
        for stream in streams:
            await stream.aclose()

    run(main)


def test_on_dead_is_called_once_with_the_stream_and_the_error(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    calls: list[tuple[MonitoredStream, PeerUnresponsive]] = []

    async def main() -> None:
        stream = await open_connection(
            *proxy.address, heartbeat=FAST, on_dead=lambda s, e: calls.append((s, e))
        )
        proxy.freeze()
        await trio.sleep(FAST.detection_bound + SLACK)
        assert calls == [(stream, stream.error)]
        await stream.aclose()

    run(main)


def test_a_coroutine_on_dead_is_awaited_and_a_failing_one_is_logged(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = fault_proxy(echo_server.address)
    awaited: list[PeerUnresponsive] = []

    async def on_dead(_stream: MonitoredStream, error: PeerUnresponsive) -> None:
        await trio.sleep(0)
        awaited.append(error)

    def broken_on_dead(_stream: MonitoredStream, error: PeerUnresponsive) -> None:
        raise RuntimeError("on_dead bug")

    async def main() -> None:
        streams = [
            await open_connection(*proxy.address, heartbeat=FAST, on_dead=callback)
            for callback in (on_dead, broken_on_dead)
        ]
        proxy.freeze()
        await trio.sleep(FAST.detection_bound + SLACK)
        assert all(stream.dead for stream in streams)
        assert awaited == [streams[0].error]
        for stream in streams:
            await stream.aclose()

    with caplog.at_level(logging.ERROR, logger="keepalive.trio"):
        run(main)
    assert any(
        record.levelno == logging.ERROR and "on_dead" in record.getMessage()
        for record in caplog.records
    )


# ---------------------------------------------------------------------------------------------
# Pings between application writes, pongs only as whole messages


def test_pings_land_only_between_application_writes() -> None:
    record = b"R" * 200_000 + b"\n"
    count = 20

    async def main() -> None:
        server_side = await listener()
        received = bytearray()
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                peer = await server_side.accept()
                while True:
                    chunk = await peer.receive_some(8192)
                    if not chunk:
                        break
                    received.extend(chunk)
                    await trio.sleep(0.001)  # a slow reader: writes block, pings fall due
                await peer.aclose()

            nursery.start_soon(serve)
            config = HeartbeatConfig(interval=0.005, timeout=30)
            stream = await open_connection("127.0.0.1", port_of(server_side), heartbeat=config)
            for _ in range(count):
                await stream.send_all(record)
            await trio.sleep(0.05)
            stream.stop()
            await stream.aclose()
        await server_side.aclose()
        lines = bytes(received).split(b"\n")
        assert lines[-1] == b""
        assert [line for line in lines[:-1] if line != b"PING"] == [record[:-1]] * count
        assert lines.count(b"PING") >= 1  # pings did fall due meanwhile

    run(main)


def test_hold_pings_keeps_a_message_written_in_steps_together() -> None:
    async def main() -> None:
        server_side = await listener()
        received = bytearray()
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                peer = await server_side.accept()
                while chunk := await peer.receive_some():
                    received.extend(chunk)

            nursery.start_soon(serve)
            config = HeartbeatConfig(interval=0.05, timeout=30)
            stream = await open_connection("127.0.0.1", port_of(server_side), heartbeat=config)
            with stream.hold_pings():
                await stream.send_all(b"first half, ")
                await trio.sleep(0.2)  # the ping falls due here and waits
                await stream.send_all(b"second half\n")
            await trio.sleep(0.1)
            await stream.aclose()
        await server_side.aclose()
        assert bytes(received).startswith(b"first half, second half\nPING\n")

    run(main)


async def _exchange(pieces: list[bytes], pings: int) -> tuple[bytes, MonitoredStream]:
    """A server sends ``pieces`` (one segment each, a pause between them) after reading
    ``pings`` pings; the client's application bytes, and its stream."""
    server_side = await listener()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            peer = await server_side.accept()
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            got = b""
            while got.count(b"PING\n") < pings:
                got += await peer.receive_some()
            for piece in pieces:
                await peer.send_all(piece)
                await trio.sleep(0.002)
            await peer.aclose()

        nursery.start_soon(serve)
        stream = await open_connection("127.0.0.1", port_of(server_side), heartbeat=QUIET)
        for _ in range(pings):
            assert stream.send_ping()
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        await stream.aclose()
    await server_side.aclose()
    return data, stream


def test_pongs_split_across_segments_are_removed_and_lookalikes_are_not() -> None:
    app = [b"PONG and more\n", b"xPONG\n", b"PON", b"G?\n", b"ping-pong PONG\n"]
    pong_pieces = [b"PO", b"N", b"G\n"]
    pieces = [app[0], *pong_pieces, app[1], app[2], app[3], b"PONG\n", app[4]]

    async def main() -> None:
        data, stream = await _exchange(pieces, pings=2)
        assert data == b"".join(app)
        assert stream.pongs_received == 2

    run(main)


def test_max_bytes_bounds_each_read_of_application_bytes(echo_server: EchoServer) -> None:
    async def main() -> None:
        stream = await open_connection(*echo_server.address, heartbeat=QUIET)
        assert stream.send_ping()
        await stream.send_all(b"abcdefghij\n")
        chunks: list[bytes] = []
        while sum(map(len, chunks)) < 11:
            chunks.append(await stream.receive_some(4))
        assert b"".join(chunks) == b"abcdefghij\n"
        assert max(map(len, chunks)) <= 4
        assert stream.pongs_received == 1
        await stream.aclose()

    run(main)


def test_no_pong_is_removed_when_none_is_owed() -> None:
    async def main() -> None:
        data, stream = await _exchange([b"PONG\n", b"tail\n"], pings=0)
        assert data == b"PONG\ntail\n"  # an application message that only looks like a pong
        assert stream.pongs_received == 0

    run(main)


# ---------------------------------------------------------------------------------------------
# One scheduler for many connections; churn without leaks


def test_one_scheduler_task_serves_many_connections(echo_server: EchoServer) -> None:
    async def main() -> None:
        await trio.testing.wait_all_tasks_blocked()
        before = task_count()
        streams = [await open_connection(*echo_server.address, heartbeat=FAST) for _ in range(40)]
        await trio.sleep(FAST.interval * 3)
        assert task_count() == before + 1  # the scheduler, no task per connection
        assert scheduler_stats().monitors == 40
        assert all(stream.pings_sent >= 1 and not stream.dead for stream in streams)
        for stream in streams:
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before
        assert scheduler_stats().task_running is False

    run(main)


def test_churn_of_hundreds_of_connections_leaks_no_fd_and_no_task(echo_server: EchoServer) -> None:
    async def main() -> None:
        await trio.testing.wait_all_tasks_blocked()
        tasks, fds = task_count(), open_fds()
        for number in range(300):
            stream = await open_connection(
                *echo_server.address, heartbeat=FAST, keepalive=KeepaliveConfig()
            )
            if number % 3 == 0:
                await stream.send_all(b"PING\n" if number % 2 else b"data\n")
                assert await stream.receive_some()
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == tasks
        assert open_fds() <= fds + 2  # (the echo server closes its side on its own thread)
        assert scheduler_stats() == SchedulerStats(monitors=0, entries=0, task_running=False)

    run(main)


# ---------------------------------------------------------------------------------------------
# The supervisor


def test_the_supervisor_heals_after_the_proxy_thaws_with_hooks_in_order(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    events: list[object] = []

    async def on_connect(conn: SupervisedConnection) -> None:
        events.append("on_connect")
        await conn.stream.send_all(b"HELLO\n")
        assert await read_until(conn.stream, 6) == b"HELLO\n"

    async def main() -> None:
        async with Supervisor(
            proxy.address,
            heartbeat=FAST,
            retry=Backoff(initial=0.05, max_delay=0.2),
            on_connect=on_connect,
            on_disconnect=lambda reason, error: events.append(("on_disconnect", reason)),
            on_backoff=lambda delay, error: events.append("on_backoff"),
        ) as sup:
            first = await sup.wait_connected(5)
            proxy.freeze()
            frozen_at = trio.current_time()
            assert await first.wait_ended() is DisconnectReason.HEARTBEAT_TIMEOUT
            assert trio.current_time() - frozen_at <= FAST.detection_bound + SLACK
            assert isinstance(first.disconnect_error, PeerUnresponsive)
            proxy.forward()
            second = await sup.wait_connected(10)
            assert second is not first
            await second.stream.send_all(b"again\n")
            assert await read_until(second.stream, 6) == b"again\n"
            assert sup.stats.reconnects >= 1
        assert sup.state is SupervisorState.CLOSED
        assert events[:3] == [
            "on_connect",
            ("on_disconnect", DisconnectReason.HEARTBEAT_TIMEOUT),
            "on_backoff",
        ]
        assert events[-1] == ("on_disconnect", DisconnectReason.CLOSED)
        assert events.count("on_connect") >= 2

    run(main)


def test_hooks_that_raise_are_logged_and_ignored(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with Supervisor(
            echo_server.address,
            heartbeat=FAST,  # nobody reads here: a ping finds the reset
            retry=Backoff(initial=0.05, max_delay=0.2),
            on_disconnect=supervisor_checks.broken_hook,
            on_backoff=supervisor_checks.broken_async_hook,
            healthy_after=0,
        ) as sup:
            await sup.wait_connected(5)
            echo_server.kill_connections()
            with trio.fail_after(10):
                while sup.stats.connects < 2:
                    await trio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="keepalive.supervisor"):
        run(main)
    supervisor_checks.raising_hooks_were_logged(caplog.records)


def test_a_handler_serves_each_connection_and_its_return_replaces_it(
    echo_server: EchoServer,
) -> None:
    served: list[bytes] = []

    async def handler(stream: MonitoredStream) -> None:
        await stream.send_all(b"line %d\n" % len(served))
        served.append(await read_until(stream, 7))

    async def main() -> None:
        async with Supervisor(
            echo_server.address, heartbeat=FAST, handler=handler, healthy_after=0
        ) as sup:
            while len(served) < 3:
                await trio.sleep(0.01)
            assert sup.stats.connects >= 3
        assert served[:3] == [b"line 0\n", b"line 1\n", b"line 2\n"]

    run(main)


def test_an_end_the_application_reads_is_classified_and_replaced(echo_server: EchoServer) -> None:
    reasons: list[DisconnectReason] = []

    async def main() -> None:
        async with Supervisor(
            echo_server.address,
            heartbeat=None,
            healthy_after=0,
            on_disconnect=lambda reason, error: reasons.append(reason),
        ) as sup:
            first = await sup.wait_connected(5)
            assert first.monitor is None
            echo_server.kill_connections()
            with contextlib.suppress(trio.BrokenResourceError):
                assert await first.stream.receive_some() == b""  # the end, seen by the reader
            assert await first.wait_ended() in (
                DisconnectReason.PEER_CLOSED,
                DisconnectReason.RESET,
            )
            second = await sup.wait_connected(5)
            assert second is not first
        assert reasons[0] in (DisconnectReason.PEER_CLOSED, DisconnectReason.RESET)
        assert reasons[-1] is DisconnectReason.CLOSED

    run(main)


def reset_by_peer(sock: socket.socket) -> None:
    """Close ``sock`` with an RST (SO_LINGER 0), not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_reset_is_classified_through_trios_wrapper() -> None:
    """trio raises BrokenResourceError from the socket's ConnectionResetError: the core
    classifies it by its cause (RESET), and the error reported is the one trio raised."""
    ends: list[tuple[DisconnectReason, BaseException | None]] = []

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            async with Supervisor(
                listener.getsockname(),
                heartbeat=None,
                on_disconnect=lambda reason, error: ends.append((reason, error)),
            ) as sup:
                conn = await sup.wait_connected(5)
                accepted, _ = listener.accept()  # (connected: already in the accept queue)
                reset_by_peer(accepted)
                with pytest.raises(trio.BrokenResourceError) as caught:
                    await conn.stream.receive_some()
                assert isinstance(caught.value.__cause__, ConnectionResetError)
                assert await conn.wait_ended() is DisconnectReason.RESET
                assert conn.disconnect_error is caught.value
        assert ends[0] == (DisconnectReason.RESET, caught.value)

    run(main)


def test_the_supervisor_gives_up_per_its_policy() -> None:
    with socket.socket() as probe:  # a port nothing listens on: every connect is refused
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    delays: list[float] = []

    async def main() -> None:
        policy = Backoff(initial=0.01, jitter=0, max_attempts=3)
        async with Supervisor(
            address, retry=policy, on_backoff=lambda delay, error: delays.append(delay)
        ) as sup:
            with pytest.raises(ConnectFailed) as failed:
                await sup.wait_connected(5)
            assert failed.value.reason == "exhausted"
            assert sup.state is SupervisorState.FAILED
            assert sup.stats.attempts == 3
        assert len(delays) == 2

    run(main)


def test_a_cancelled_scope_stops_the_supervisor_at_once_and_leaves_no_task(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    ends: list[object] = []

    async def main() -> None:
        await trio.testing.wait_all_tasks_blocked()
        before = task_count()
        # Connected, with a handler blocked in a read:
        with trio.move_on_after(0.3) as scope:
            async with trio.open_nursery() as nursery:

                async def handler(stream: MonitoredStream) -> None:
                    await stream.receive_some()

                sup = Supervisor(
                    proxy.address,
                    heartbeat=FAST,
                    handler=handler,
                    on_disconnect=lambda reason, error: ends.append(reason),
                )
                await nursery.start(sup.run)
                await sup.wait_connected(5)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert sup.state is SupervisorState.CLOSED
        assert ends == [DisconnectReason.CLOSED]
        # Backing off against a refusing server (a long delay):
        proxy.refuse()
        cancelled_at = time.monotonic()
        with trio.move_on_after(0.3):
            async with Supervisor(proxy.address, retry=Backoff(initial=30, jitter=0)) as sup:
                await trio.sleep_forever()
        assert time.monotonic() - cancelled_at < 0.3 + SLACK
        assert sup.state is SupervisorState.CLOSED
        with pytest.raises(Exception, match="closed"):
            await sup.wait_connected(0)
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before
        assert scheduler_stats().monitors == 0

    run(main)


def test_close_from_a_hook_and_aclose_from_outside(echo_server: EchoServer) -> None:
    async def main() -> None:
        sup = Supervisor(echo_server.address, heartbeat=FAST, on_connect=lambda c: sup.close())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
        assert sup.state is SupervisorState.CLOSED
        assert sup.stats.connects == 0
        other = Supervisor(echo_server.address, heartbeat=FAST)
        async with trio.open_nursery() as nursery:
            await nursery.start(other.run)
            conn = await other.wait_connected(5)
            await other.aclose()
            assert conn.ended
        assert other.state is SupervisorState.CLOSED

    run(main)


def test_an_exception_from_the_body_comes_out_unwrapped(echo_server: EchoServer) -> None:
    async def main() -> None:
        async def body() -> None:
            async with Supervisor(echo_server.address, heartbeat=FAST) as sup:
                await sup.wait_connected(5)
                raise KeyError("mine")

        with pytest.raises(KeyError):
            await body()

    run(main)


# ---------------------------------------------------------------------------------------------
# Bad input, and imports


def test_bad_arguments_are_refused_before_connecting(echo_server: EchoServer) -> None:
    async def main() -> None:
        with pytest.raises(InvalidSettingType, match="heartbeat"):
            await open_connection(*echo_server.address, heartbeat=0.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidSetting, match="on_dead"):
            await open_connection(*echo_server.address, on_dead=print)
        with pytest.raises(InvalidSettingType, match="ssl_context"):
            await open_connection(
                *echo_server.address,
                ssl_context="yes",  # type: ignore[arg-type]
            )
        with pytest.raises(InvalidSetting, match="framing"):
            await open_connection(*echo_server.address, heartbeat=FAST, pong=b"PONG")
        with pytest.raises(InvalidSettingType, match="stream"):
            monitor(object(), heartbeat=FAST)  # type: ignore[arg-type]
        stream = await open_connection(*echo_server.address, heartbeat=FAST)
        with pytest.raises(InvalidSetting, match="max_bytes"):
            await stream.receive_some(0)
        await stream.aclose()
        with pytest.raises(InvalidSettingType, match="retry"):
            Supervisor(echo_server.address, retry=3)  # type: ignore[arg-type]
        assert echo_server.address  # nothing above connected but the one stream

    run(main)


def test_monitor_wraps_an_existing_stream_and_configures_keepalive(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        raw = await trio.open_tcp_stream(*echo_server.address)
        # Nobody reads while it sleeps: a generous timeout, so a loaded machine that delays the
        # pong past 0.2 s cannot end the connection (this test is about wrapping, not timing).
        beat = HeartbeatConfig(interval=FAST.interval, timeout=2.0)
        stream = monitor(raw, heartbeat=beat, keepalive=KeepaliveConfig(idle=11))
        assert stream.stream is raw
        if sys.platform == "linux":
            assert raw.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
        await trio.sleep(beat.interval * 2)
        await stream.send_all(b"abc\n")
        assert await read_until(stream, 4) == b"abc\n"
        assert stream.pongs_received >= 1
        stream.stop()
        assert not stream.active
        await stream.aclose()

    run(main)


def test_importing_keepalive_does_not_import_trio() -> None:
    code = "import sys, keepalive; keepalive.configure; print('trio' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Property: byte-exact streams whatever the segments and wherever the pongs fall

_LINE = st.lists(st.sampled_from([b"PONG", b"PING", b"x", b" ", b"PO", b"NG"]), max_size=4).map(
    lambda parts: b"".join(parts) + b"\n"
)


@settings(max_examples=25, deadline=None, database=None)
@given(
    lines=st.lists(_LINE.filter(lambda line: line != b"PONG\n"), max_size=8),
    tail=st.sampled_from([b"", b"PON", b"PONG", b"tail"]),
    pongs=st.integers(min_value=0, max_value=3),
    data=st.data(),
)
def test_application_bytes_arrive_exactly_whatever_the_segments(
    lines: list[bytes], tail: bytes, pongs: int, data: st.DataObject
) -> None:
    slots = [data.draw(st.integers(min_value=0, max_value=len(lines))) for _ in range(pongs)]
    wire = b""
    for index, line in enumerate([*lines, b""]):
        wire += b"PONG\n" * slots.count(index) + line
    wire += tail
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(wire) - 1)))))
    bounds = [0, *(cut for cut in cuts if cut < len(wire)), len(wire)]
    pieces = [wire[start:end] for start, end in itertools.pairwise(bounds) if end > start]

    async def main() -> None:
        received, stream = await _exchange(pieces, pings=pongs)
        assert received == b"".join(lines) + tail
        assert stream.pongs_received == pongs

    run(main)


# ---------------------------------------------------------------------------------------------
# The contract benchmarks/heartbeat.py relies on


def test_the_trio_benchmark_contenders_measure_beats_and_cpu(echo_server: EchoServer) -> None:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "_trio_contenders.py"
    spec = importlib.util.spec_from_file_location("_trio_contenders", path)
    assert spec is not None
    assert spec.loader is not None
    contenders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(contenders)
    for kind in ("floor", "keepalive"):
        measured = contenders.measure(kind, 4, 0.05, 0.5, echo_server.address)
        assert set(measured) == {"cpu_s", "beats"}
        # 4 connections at 20 Hz for 0.5 s: about 40 beats (keepalive pings after a full
        # interval of silence, so a little fewer), and some CPU.
        assert 15 <= measured["beats"] <= 50, (kind, measured)
        assert measured["cpu_s"] > 0
    with pytest.raises(ValueError, match="kind"):
        contenders.measure("both", 4, 0.05, 0.5, echo_server.address)
