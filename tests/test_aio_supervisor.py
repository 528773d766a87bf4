"""The asyncio supervised connection, :class:`keepalive.aio.Supervisor`, and the ``retry=`` and
``connect_timeout=`` parameters of :func:`keepalive.aio.open_connection`, on real sockets.

Peers: the in-process :class:`EchoServer` (answers ``PING\\n`` with ``PONG\\n``, echoes the
rest; ``kill_connections`` resets like a crashed server), a :class:`FaultProxy` in front of it
to freeze the path, plain listening sockets where the test must control accepting and closing
(a bound socket that does not listen refuses; a listener with a full backlog is a loopback
black hole: the kernel drops further SYNs). Each test runs its own event loop under an
overall timeout, so that a broken supervisor fails instead of hanging.
"""

# The fixtures are imported by name so that this file works without the plugin being
# registered; pytest then passes them in as arguments of the same name (F811).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import loops
import pytest
import supervisor_checks as checks
import tls_certs
from loopback_peers import black_hole, down_server, open_fds, sockets_connected_to
from loops import wait_until
from netns import Namespace
from servers import free_port
from supervisor_checks import BAD_ARGUMENTS, FAST, QUICK, SLACK, WAIT, HookRecords
from tls_certs import CertificateFiles, tls_contexts

import keepalive
from keepalive import aio
from keepalive.aio.supervisor import SupervisedConnection, Supervisor
from keepalive.config import KeepaliveConfig
from keepalive.dial import AttemptFailure, _Dialer
from keepalive.errors import ConnectFailed, InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory, echo_server, fault_proxy  # noqa: F401
from keepalive.reconnect import Backoff, StopReason
from keepalive.supervision import DisconnectReason, SupervisorState
from keepalive.testing import EchoServer

# ---------------------------------------------------------------------------------------------
# Helpers


pytestmark = pytest.mark.usefixtures("event_loop_kind")


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return loops.run(asyncio.wait_for(coroutine, timeout))


class Events(HookRecords[SupervisedConnection]):
    """Records the hooks' calls, in order (the hooks are coroutine functions, on purpose)."""

    async def on_disconnect(self, reason: DisconnectReason, error: BaseException | None) -> None:
        self.record_disconnect(reason, error)

    async def on_backoff(self, delay: float, error: BaseException | None) -> None:
        self.record_backoff(delay, error)

    async def on_connect(self, conn: SupervisedConnection) -> None:
        self.record_connect(conn)

    def supervisor(self, address: tuple[str, int], **kwargs: Any) -> Supervisor:
        """A supervisor reporting to these records."""
        return Supervisor(
            address,
            on_disconnect=self.on_disconnect,
            on_backoff=self.on_backoff,
            on_connect=self.on_connect,
            **kwargs,
        )

    async def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        try:
            await wait_until(predicate, timeout)
        except AssertionError:
            raise self.timed_out() from None


async def echo(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], line: bytes) -> bytes:
    """Write ``line`` and read one line back."""
    reader, writer = conn
    writer.write(line)
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), WAIT)


def socket_of(conn: SupervisedConnection) -> socket.socket:
    sock = conn.writer.get_extra_info("socket")
    assert sock is not None
    return sock  # type: ignore[no-any-return]


def resolve_locally(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[Any]]) -> None:
    """The running loop resolves the names of ``answers`` to their addresses, so that no
    DNS query leaves the machine (dial asks the loop: uvloop resolves without
    socket.getaddrinfo)."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return await real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if len(a) == 4 else socket.AF_INET, socket.SOCK_STREAM, 6, "", a)
            for a in answers[host]
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


def closed(writer: asyncio.StreamWriter) -> bool:
    """Whether the connection's socket is closed: asyncio's transport socket then reads
    fileno -1, uvloop's transport no longer has one."""
    sock = writer.get_extra_info("socket")
    return writer.transport.is_closing() and (sock is None or sock.fileno() == -1)


def cut_under_tls(conn: SupervisedConnection) -> None:
    """Shut the TCP connection down beneath its TLS layer (through a duplicate descriptor:
    uvloop's transport socket has no shutdown())."""
    with socket.socket(fileno=os.dup(socket_of(conn).fileno())) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)


certificate = tls_certs.certificate  # the module-scoped fixture


@contextlib.asynccontextmanager
async def tls_echo_server(context: ssl.SSLContext) -> AsyncIterator[tuple[str, int]]:
    """An asyncio TLS server that answers ``PING\\n`` with ``PONG\\n`` and echoes lines, for
    the block's duration: yields its address."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while line := await reader.readline():
                writer.write(b"PONG\n" if line == b"PING\n" else line)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield host, port
    finally:
        server.close()


@contextlib.asynccontextmanager
async def supervised_over_tls(
    events: Events,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    heartbeat: HeartbeatConfig | None,
) -> AsyncIterator[Supervisor]:
    """A supervisor reporting to ``events``, of TLS connections to a :func:`tls_echo_server`
    that lives as long as the block; each connection counts as healthy at once."""
    async with (
        tls_echo_server(server_context) as address,
        events.supervisor(
            address, heartbeat=heartbeat, retry=QUICK, ssl=client_context, healthy_after=0
        ) as sup,
    ):
        yield sup


# ---------------------------------------------------------------------------------------------
# Connecting


def test_server_down_at_start_comes_up_after_a_few_attempts() -> None:
    async def main() -> None:
        events = Events()
        loop = asyncio.get_running_loop()
        with down_server(blocking=False) as listener:
            async with events.supervisor(listener.getsockname(), retry=QUICK) as sup:
                await events.wait(lambda: len(events.backoffs) >= 3)  # 3 refused attempts
                assert sup.connection is None
                assert sup.state in (SupervisorState.BACKING_OFF, SupervisorState.CONNECTING)
                listener.listen()  # the server comes up
                conn = await sup.wait_connected(timeout=WAIT)
                peer, _ = await loop.sock_accept(listener)
                with peer:
                    await loop.sock_sendall(peer, b"hello")
                    reader, writer = conn  # unpacks like asyncio.open_connection's result
                    assert await reader.readexactly(5) == b"hello"
                    writer.write(b"back")
                    assert await loop.sock_recv(peer, 4) == b"back"
                    stats = sup.stats
                    assert sup.connection is conn
                    await sup.aclose()  # before the server side closes
        checks.came_up_after_refused_attempts(events, stats, conn)
        assert sup.state is SupervisorState.CLOSED
        assert conn.ended
        assert conn.disconnect_reason is DisconnectReason.CLOSED

    run(main())


def test_kernel_keepalive_and_the_heartbeat_are_set_on_each_connection(
    echo_server: EchoServer,
) -> None:
    cfg = KeepaliveConfig(idle=7, interval=3, count=4)

    async def main() -> None:
        async with Supervisor(
            echo_server.address, keepalive=cfg, heartbeat=FAST, retry=QUICK
        ) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            state = keepalive.inspect(socket_of(conn))
            monitor = conn.monitor
            assert monitor is not None
            assert aio.monitor_of(conn.writer) is monitor
            await wait_until(lambda: monitor.pongs_received >= 1, what="a pong")
            assert await echo(conn, b"data\n") == b"data\n"  # pongs never reach the reader
        assert state.enabled
        assert (state.idle, state.interval, state.count) == (7, 3, 4)

    run(main())


def test_on_connect_failures_count_as_failed_attempts_and_retry(echo_server: EchoServer) -> None:
    async def main() -> None:
        events = Events()
        tried: list[SupervisedConnection] = []

        async def handshake(conn: SupervisedConnection) -> None:
            tried.append(conn)
            if len(tried) < 3:
                raise ConnectionError(f"handshake {len(tried)} refused")
            assert await echo(conn, b"HELLO\n") == b"HELLO\n"  # on_connect may use it

        async with Supervisor(
            echo_server.address,
            retry=QUICK,
            on_connect=handshake,
            on_disconnect=events.on_disconnect,
            on_backoff=events.on_backoff,
        ) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            assert conn is tried[-1]
            assert await echo(conn, b"after\n") == b"after\n"
            stats = sup.stats
            # The failed connections were closed before the next attempt.
            assert all(closed(c.writer) for c in tried[:2])
            assert all(c.disconnect_reason is DisconnectReason.CLOSED for c in tried[:2])
        checks.failed_handshakes_were_retried(events, stats)

    run(main())


def test_on_connect_error_the_policy_does_not_retry_gives_up(echo_server: EchoServer) -> None:
    def handshake(conn: SupervisedConnection) -> None:  # a plain function works too
        raise ValueError("bad greeting")

    async def main() -> None:
        async with Supervisor(echo_server.address, retry=QUICK, on_connect=handshake) as sup:
            with pytest.raises(ConnectFailed) as caught:
                await sup.wait_connected(timeout=WAIT)
            assert sup.state is SupervisorState.FAILED
            assert sup.stop_reason is StopReason.NOT_RETRYABLE
        assert caught.value.reason == "not retryable"
        assert isinstance(caught.value.__cause__, ValueError)
        assert sup.stats.attempts == 1

    run(main())


def test_policy_exhausted_gives_up_with_every_attempts_cause() -> None:
    policy = Backoff(initial=0.01, jitter="none", max_attempts=3)

    async def main() -> None:
        with down_server() as server:
            sup = Supervisor(server.getsockname(), retry=policy).start()
            try:
                with pytest.raises(ConnectFailed) as caught:
                    await sup.wait_connected(timeout=WAIT)
                await wait_until(lambda: sup._task is not None and sup._task.done())
                stats = sup.stats
                assert sup.state is SupervisorState.FAILED
                assert sup.stop_reason is StopReason.EXHAUSTED
                with pytest.raises(ConnectFailed):  # and keeps raising
                    await sup.wait_connected(timeout=0)
            finally:
                await sup.aclose()
        checks.exhausted_by_refusals(caught.value, stats)
        assert all(isinstance(failure, AttemptFailure) for failure in caught.value.attempts)
        assert sup.stats.state is SupervisorState.CLOSED  # aclose() after giving up

    run(main())


def test_the_supervisor_dials_through_keepalive_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """One dial for everything: each attempt is one attempt of the dialer connect_async()
    uses, numbered as the supervisor counts, every address's failure in ConnectFailed."""
    calls: list[int] = []
    real = _Dialer.attempt_async

    async def recording(dialer: _Dialer, attempt: int) -> socket.socket:
        calls.append(attempt)
        return await real(dialer, attempt)

    monkeypatch.setattr(_Dialer, "attempt_async", recording)

    async def main() -> None:
        with down_server() as refusing, down_server() as also_refusing:
            addresses = [refusing.getsockname(), also_refusing.getsockname()]
            resolve_locally(monkeypatch, {"dual.test": addresses})
            policy = Backoff.constant(0.01, max_attempts=2)
            async with Supervisor(("dual.test", 1), retry=policy) as sup:
                with pytest.raises(ConnectFailed) as caught:
                    await sup.wait_connected(timeout=WAIT)
        assert calls == [0, 1]
        assert [(f.attempt, f.address) for f in caught.value.attempts] == [  # type: ignore[attr-defined]
            (0, addresses[0]),
            (0, addresses[1]),
            (1, addresses[0]),
            (1, addresses[1]),
        ]

    run(main())


@pytest.mark.no_event_loop
def test_a_keepalive_setting_this_platform_refuses_is_refused_at_construction() -> None:
    with pytest.raises(InvalidSetting, match="count"):
        Supervisor(("127.0.0.1", 9), keepalive=KeepaliveConfig(count=1000))


def test_connect_timeout_to_a_black_hole_counts_as_a_failed_attempt() -> None:
    async def main() -> None:
        events = Events()
        with black_hole() as address:
            policy = Backoff.constant(0.01, connect_timeout=0.2)
            async with Supervisor(address, retry=policy, on_backoff=events.on_backoff) as sup:
                started = time.monotonic()
                await events.wait(lambda: len(events.backoffs) >= 2)
                elapsed = time.monotonic() - started
        _delay, error = events.backoffs[0]
        assert isinstance(error, TimeoutError)
        assert sup.stats.attempts >= 2
        assert 0.4 - 0.05 <= elapsed <= 0.4 + SLACK  # two attempts of 0.2 s each

    run(main())


# ---------------------------------------------------------------------------------------------
# Closing promptly


def test_close_during_backoff_returns_within_100_ms() -> None:
    async def main() -> None:
        with down_server() as server:
            sup = Supervisor(server.getsockname(), retry=Backoff.constant(30)).start()
            await wait_until(lambda: sup.state is SupervisorState.BACKING_OFF, what="backoff")
            await asyncio.sleep(0.05)  # well inside the 30 s wait
            started = time.perf_counter()
            await sup.aclose()
            elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"aclose() took {elapsed * 1000:.1f} ms during a backoff wait"
        assert sup.state is SupervisorState.CLOSED
        with pytest.raises(ConnectFailed) as caught:
            await sup.wait_connected()
        assert caught.value.reason == "closed"

    run(main())


def test_close_during_a_connect_to_a_black_hole_returns_within_100_ms() -> None:
    async def main() -> None:
        with black_hole() as address:
            sup = Supervisor(address, retry=Backoff(connect_timeout=30)).start()
            await wait_until(lambda: sup.state is SupervisorState.CONNECTING, what="connect")
            await asyncio.sleep(0.2)  # the SYN is unanswered: the connect is waiting
            assert sup.state is SupervisorState.CONNECTING
            started = time.perf_counter()
            await sup.aclose()
            elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"aclose() took {elapsed * 1000:.1f} ms during a connect"
        assert sup.stats.attempts == 1

    run(main())


def test_close_during_on_connect_returns_within_100_ms(echo_server: EchoServer) -> None:
    async def main() -> None:
        entered = asyncio.Event()
        outcome: list[BaseException | bytes] = []

        async def handshake(conn: SupervisedConnection) -> None:
            entered.set()
            try:
                outcome.append(await conn.reader.read(10))  # the server says nothing: waits
            except BaseException as exc:
                outcome.append(exc)
                raise

        sup = Supervisor(echo_server.address, retry=QUICK, on_connect=handshake).start()
        await asyncio.wait_for(entered.wait(), WAIT)
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await sup.aclose()
        elapsed = time.perf_counter() - started
        assert elapsed < 0.1, f"aclose() took {elapsed * 1000:.1f} ms during on_connect"
        assert len(outcome) == 1
        assert isinstance(outcome[0], asyncio.CancelledError)
        stats = sup.stats
        assert (stats.attempts, stats.connects, stats.disconnects) == (1, 0, 0)
        await wait_until(lambda: echo_server.connections == 0, what="the server to see the end")

    run(main())


def test_close_while_connected_ends_a_waiting_reader(echo_server: EchoServer) -> None:
    async def main() -> None:
        events = Events()
        async with events.supervisor(echo_server.address, retry=QUICK) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            reading = asyncio.ensure_future(conn.reader.read(10))
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await sup.aclose()
            elapsed = time.perf_counter() - started
            assert await asyncio.wait_for(reading, WAIT) == b""  # ended on this side: EOF
        assert elapsed < 0.1
        assert events.disconnects == [(DisconnectReason.CLOSED, None)]
        assert sup.stats.disconnects == 1
        assert closed(conn.writer)

    run(main())


def test_a_supervisor_left_running_is_closed_when_its_loop_ends(echo_server: EchoServer) -> None:
    events = Events()

    async def main() -> Supervisor:
        sup = events.supervisor(echo_server.address, retry=QUICK).start()
        await sup.wait_connected(timeout=WAIT)
        assert sockets_connected_to(echo_server.address) == 1
        return sup  # no aclose(): asyncio.run cancels the task

    sup = loops.run(main())
    assert sup.state is SupervisorState.CLOSED
    assert events.disconnects == [(DisconnectReason.CLOSED, None)]
    # The supervisor's socket is closed: counted by its peer address, not by a count of the
    # process's descriptors, which other threads of a test worker may open or close meanwhile.
    gc.collect()
    assert sockets_connected_to(echo_server.address) == 0


# ---------------------------------------------------------------------------------------------
# Detecting the end of a connection


def test_server_killed_mid_session_is_detected_and_the_client_reconnects(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        events = Events()
        async with events.supervisor(echo_server.address, heartbeat=FAST, retry=QUICK) as sup:
            first = await sup.wait_connected(timeout=WAIT)
            assert await echo(first, b"one\n") == b"one\n"
            reading = asyncio.ensure_future(first.reader.read(10))  # blocked in read
            await asyncio.sleep(0.05)
            killed = time.monotonic()
            assert echo_server.kill_connections() == 1
            await events.wait(lambda: len(events.connects) == 2)
            second = await sup.wait_connected(timeout=WAIT)
            assert second is events.connects[1] is not first
            assert await echo(second, b"two\n") == b"two\n"
            with pytest.raises(ConnectionResetError):  # the blocked reader hears of it too
                await asyncio.wait_for(reading, WAIT)
            stats = sup.stats
        checks.reset_seen_at_once_and_reconnected(events, stats, killed)
        assert first.disconnect_reason is DisconnectReason.RESET
        assert first.disconnect_error is events.disconnects[0][1]
        assert closed(first.writer)

    run(main())


def test_server_closing_is_noticed_without_reading_and_buffered_bytes_survive() -> None:
    async def main() -> None:
        events = Events()
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.setblocking(False)
            async with events.supervisor(listener.getsockname(), retry=QUICK) as sup:
                first = await sup.wait_connected(timeout=WAIT)
                peer, _ = await loop.sock_accept(listener)
                await loop.sock_sendall(peer, b"last words")
                peer.close()  # FIN, while the application reads nothing
                await events.wait(lambda: len(events.connects) == 2)  # noticed, reconnected
                second = await sup.wait_connected(timeout=WAIT)
                assert await first.wait_ended() is DisconnectReason.PEER_CLOSED
                # The old reader still yields what arrived before the end, then end of stream.
                assert await first.reader.read(100) == b"last words"
                assert await first.reader.read(100) == b""
                peer2, _ = await loop.sock_accept(listener)
                with peer2:
                    await loop.sock_sendall(peer2, b"new")
                    assert await second.reader.readexactly(3) == b"new"
        assert events.disconnects[0] == (DisconnectReason.PEER_CLOSED, None)

    run(main())


def test_frozen_proxy_is_detected_by_the_heartbeat_and_healed_by_forwarding(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)

    async def main() -> None:
        events = Events()
        async with events.supervisor(proxy.address, heartbeat=FAST, retry=QUICK) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            assert await echo(conn, b"before\n") == b"before\n"
            await asyncio.sleep(0.3)  # idle: only the heartbeat talks
            proxy.freeze()  # the server is unreachable; TCP to the proxy stays up
            frozen = time.monotonic()
            await events.wait(lambda: len(events.disconnects) >= 1)
            checks.heartbeat_verdict_in_time(events, frozen)
            assert sup.connection is not conn
            with pytest.raises(PeerUnresponsive):
                await conn.reader.read(10)

            proxy.forward()
            deadline = time.monotonic() + WAIT
            while True:  # connections made while frozen die too; wait for one that answers
                current = await sup.wait_connected(timeout=WAIT)
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    if await echo(current, b"after\n") == b"after\n":
                        break
                assert time.monotonic() < deadline, "no working connection after forward()"
            await asyncio.sleep(FAST.detection_bound + 0.3)  # it stays up past the bound
            assert sup.connection is current
            assert sup.state is SupervisorState.CONNECTED
        checks.heartbeat_timeouts_until_closed(events)

    run(main())


@pytest.mark.netns
def test_black_hole_is_detected_by_kernel_keepalive(netns: Namespace) -> None:
    cfg = KeepaliveConfig(idle=1, interval=1, count=1)  # dead after 2 s of silence

    async def main() -> None:
        events = Events()
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:  # in the private namespace
            listener.setblocking(False)
            address = listener.getsockname()
            policy = Backoff.constant(0.05, connect_timeout=0.3)
            async with events.supervisor(address, keepalive=cfg, retry=policy) as sup:
                await sup.wait_connected(timeout=WAIT)
                peer, _ = await loop.sock_accept(listener)
                hole = netns.black_hole(address[1])
                holed = time.monotonic()
                await events.wait(
                    lambda: len(events.disconnects) >= 1, timeout=cfg.detection_bound + 3
                )
                detected = events.times["disconnect"][0] - holed
                hole.remove()
                await events.wait(lambda: len(events.connects) >= 2)
                peer.close()
        checks.kernel_verdict_in_time(events, cfg, detected)

    run(main())


@pytest.mark.parametrize("how", ["conn.close()", "writer.close()"])
def test_application_closing_its_connection_asks_for_a_new_one(
    echo_server: EchoServer, how: str
) -> None:
    async def main() -> None:
        events = Events()
        async with events.supervisor(echo_server.address, retry=QUICK) as sup:
            first = await sup.wait_connected(timeout=WAIT)
            if how == "conn.close()":
                first.close()
            else:
                first.writer.close()
            await events.wait(lambda: len(events.connects) == 2)
            second = await sup.wait_connected(timeout=WAIT)
            assert await echo(second, b"x\n") == b"x\n"
            assert await first.reader.read(1) == b""
        assert events.disconnects[0] == (DisconnectReason.CLOSED, None)

    run(main())


def test_over_tls_a_close_is_closed_and_a_cut_is_the_peers_end(
    certificate: CertificateFiles,
) -> None:
    """TLS ends reach the protocol differently: closing answers our close_notify with the
    peer's (an end of stream, yet this side's close), and uvloop reports a stream cut without
    close_notify as a loss with no error and no end of stream (once taken for CLOSED)."""
    server_context, client_context = tls_contexts(certificate)

    async def main() -> None:
        events = Events()
        async with supervised_over_tls(events, server_context, client_context, None) as sup:
            first = await sup.wait_connected(timeout=WAIT)
            assert await echo(first, b"one\n") == b"one\n"
            first.writer.close()
            await events.wait(lambda: len(events.connects) == 2)
            second = await sup.wait_connected(timeout=WAIT)
            assert await echo(second, b"two\n") == b"two\n"
            cut_under_tls(second)  # nothing is written: the end of stream comes first
            await events.wait(lambda: len(events.connects) == 3)
        assert events.disconnects[:2] == [
            (DisconnectReason.CLOSED, None),
            (DisconnectReason.PEER_CLOSED, None),
        ]

    run(main())


def test_application_write_failure_ends_the_connection(echo_server: EchoServer) -> None:
    async def main() -> None:
        events = Events()
        async with events.supervisor(echo_server.address, heartbeat=None, retry=QUICK) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            echo_server.pause()  # the server stops reading: our writes pile up
            conn.writer.write(b"x" * 8_000_000)
            await asyncio.sleep(0.1)
            assert conn.writer.transport.get_write_buffer_size() > 0
            assert sup.connection is conn
            assert echo_server.kill_connections() == 1
            await events.wait(lambda: len(events.disconnects) == 1)
            echo_server.resume()
            await events.wait(lambda: len(events.connects) == 2)
        reason, error = events.disconnects[0]
        assert reason is DisconnectReason.RESET
        assert isinstance(error, (ConnectionResetError, BrokenPipeError))

    run(main())


# ---------------------------------------------------------------------------------------------
# Backoff across outages


def test_backoff_continues_after_short_connections_and_resets_after_healthy_ones(
    echo_server: EchoServer,
) -> None:
    policy = Backoff(initial=0.05, multiplier=2, max_delay=10, jitter="none")

    async def main() -> None:
        events = Events()
        # Room for a loaded machine: a "short" connection lives from on_connect to the kill.
        async with events.supervisor(echo_server.address, retry=policy, healthy_after=2.0) as sup:

            async def kill_connection(number: int) -> None:
                await events.wait(lambda: len(events.connects) == number)
                assert await echo(events.connects[-1], b"x\n") == b"x\n"  # the server has it
                assert echo_server.kill_connections() == 1
                await events.wait(lambda: len(events.backoffs) == number)

            for number in (1, 2, 3):  # short-lived: the sequence goes on
                await kill_connection(number)
            await events.wait(lambda: len(events.connects) == 4)
            await asyncio.sleep(2.1)  # healthy
            await kill_connection(4)  # reconnect at once, and start the sequence over
            await kill_connection(5)
            await events.wait(lambda: len(events.connects) == 6)
            stats = sup.stats
        checks.backoff_went_on_then_started_over(events, stats)

    run(main())


def test_short_connections_exhaust_a_bounded_policy(echo_server: EchoServer) -> None:
    async def main() -> None:
        events = Events()
        policy = Backoff.constant(0.01, max_attempts=3)
        async with events.supervisor(echo_server.address, retry=policy) as sup:
            for number in (1, 2, 3):
                await events.wait(lambda n=number: len(events.connects) == n)  # type: ignore[misc]
                assert await echo(events.connects[-1], b"x\n") == b"x\n"
                echo_server.kill_connections()
            await wait_until(lambda: sup.state is SupervisorState.FAILED, what="giving up")
            with pytest.raises(ConnectFailed) as caught:
                await sup.wait_connected(timeout=WAIT)
        checks.exhausted_by_short_connections(events, caught.value, sup.stats.attempts)

    run(main())


# ---------------------------------------------------------------------------------------------
# The connection as the application sees it


def test_no_heartbeat_leaves_pongs_alone(echo_server: EchoServer) -> None:
    async def main() -> None:
        async with Supervisor(echo_server.address, heartbeat=None, retry=QUICK) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            assert conn.monitor is None
            assert aio.scheduler_stats().monitors == 0  # nothing scheduled
            assert await echo(conn, b"PING\n") == b"PONG\n"  # the application's own

    run(main())


def test_pong_matcher_factory_gives_each_connection_its_own(echo_server: EchoServer) -> None:
    matcher = checks.PongMatchers()

    async def main() -> None:
        async with Supervisor(
            echo_server.address, heartbeat=FAST, pong_matcher=matcher, retry=QUICK
        ) as sup:
            await sup.wait_connected(timeout=WAIT)
            echo_server.kill_connections()
            await wait_until(lambda: len(matcher.made) == 2 and sup.connection is not None)
            conn = await sup.wait_connected(timeout=WAIT)
            monitor = conn.monitor
            assert monitor is not None
            await wait_until(lambda: monitor.pongs_received >= 1, what="a pong")
            assert await echo(conn, b"data\n") == b"data\n"
        assert matcher.made[0] is not matcher.made[1]

    run(main())


def test_tls_connections_are_supervised(certificate: CertificateFiles) -> None:
    server_context, client_context = tls_contexts(certificate)

    async def main() -> None:
        events = Events()
        async with supervised_over_tls(events, server_context, client_context, FAST) as sup:
            conn = await sup.wait_connected(timeout=WAIT)
            assert conn.writer.get_extra_info("sslcontext") is client_context
            monitor = conn.monitor
            assert monitor is not None
            await wait_until(lambda: monitor.pongs_received >= 1, what="a pong over TLS")
            assert await echo(conn, b"secret\n") == b"secret\n"
            cut_under_tls(conn)
            await events.wait(lambda: len(events.connects) == 2)
            assert await echo(await sup.wait_connected(timeout=WAIT), b"x\n") == b"x\n"
        # The peer's end of stream (a write may meet the cut first): never CLOSED, which
        # uvloop's TLS transport once caused by reporting the end without eof_received().
        assert events.disconnects[0][0] in {DisconnectReason.PEER_CLOSED, DisconnectReason.RESET}

    run(main())


# ---------------------------------------------------------------------------------------------
# Handler mode


def test_handler_runs_once_per_connection_and_returning_reconnects(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        events = Events()
        served: list[asyncio.StreamWriter] = []
        sup: Supervisor

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The previous connection is gone before the next one is handed out.
            assert all(closed(old) for old in served)
            task = asyncio.current_task()
            assert task is not None
            assert task.get_name().startswith("keepalive-handler")
            served.append(writer)
            line = b"hi %d\n" % len(served)
            assert await echo((reader, writer), line) == line
            if len(served) == 3:
                await sup.aclose()  # from the handler: returns at once, no deadlock

        sup = events.supervisor(echo_server.address, retry=QUICK, handler=handler)
        async with sup:
            await events.wait(lambda: len(events.disconnects) == 3)
            await wait_until(lambda: sup.state is SupervisorState.CLOSED)
        assert len(served) == 3
        assert [conn.writer for conn in events.connects] == served
        checks.three_handlers_then_closed(events, sup.stats)

    run(main())


def test_handler_sees_the_death_and_its_exception_ends_the_connection(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        events = Events()
        calls = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                await reader.read(10)  # waits until the server is killed: ConnectionResetError
            if calls == 2:
                raise RuntimeError("protocol error")
            await reader.read(10)

        async with events.supervisor(
            echo_server.address, retry=QUICK, handler=handler, healthy_after=0
        ) as sup:
            await events.wait(lambda: len(events.connects) == 1)
            await wait_until(lambda: echo_server.connections == 1)
            echo_server.kill_connections()
            await events.wait(lambda: len(events.connects) == 3)
        checks.handler_ends(events, sup.stats.reconnects)

    run(main())


def test_a_handler_waiting_on_something_else_is_cancelled_by_aclose(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        cancelled = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                cancelled.set()
                raise

        sup = Supervisor(echo_server.address, retry=QUICK, handler=handler).start()
        await wait_until(lambda: sup.connection is not None)
        started = time.perf_counter()
        await sup.aclose()
        assert time.perf_counter() - started < 0.1
        assert cancelled.is_set()
        assert sup._handler_task is None

    run(main())


def test_hooks_that_raise_are_logged_and_ignored(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with Supervisor(
            echo_server.address,
            retry=QUICK,
            on_disconnect=checks.broken_hook,
            on_backoff=checks.broken_async_hook,
            healthy_after=0,
        ) as sup:
            await sup.wait_connected(timeout=WAIT)
            echo_server.kill_connections()
            await wait_until(lambda: sup.stats.connects == 2)

    with caplog.at_level(logging.ERROR, logger="keepalive.supervisor"):
        run(main())
    checks.raising_hooks_were_logged(caplog.records)


# ---------------------------------------------------------------------------------------------
# Resources


def _live_threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
def test_200_forced_reconnect_cycles_leak_no_tasks_fds_or_threads(
    echo_server: EchoServer,
) -> None:
    async def main() -> None:
        # Names are resolved in the loop's default executor, a pool that may add a worker
        # whenever a lookup is queued before the previous worker reported idle (it does on a
        # loaded machine, up to its max_workers): one worker, so that only our threads count.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        # A first supervisor warms up what persists by design (that worker thread).
        async with Supervisor(echo_server.address, retry=QUICK) as warm:
            await warm.wait_connected(timeout=WAIT)
        await wait_until(lambda: echo_server.connections == 0, what="the server's side closed")
        gc.collect()
        tasks = asyncio.all_tasks()
        fds = open_fds()
        threads = _live_threads()

        conns: asyncio.Queue[SupervisedConnection] = asyncio.Queue()
        previous: list[SupervisedConnection] = []

        async def ready(conn: SupervisedConnection) -> None:
            # Never two live connections: the previous one is closed before the next exists.
            assert all(closed(old.writer) for old in previous[-1:])
            previous.append(conn)
            assert await echo(conn, b"hello\n") == b"hello\n"  # accepted by the server
            conns.put_nowait(conn)

        async with Supervisor(
            echo_server.address, heartbeat=FAST, retry=QUICK, healthy_after=0, on_connect=ready
        ) as sup:
            for _ in range(200):
                conn = await asyncio.wait_for(conns.get(), WAIT)
                assert echo_server.kill_connections() == 1
            await asyncio.wait_for(conns.get(), WAIT)
            stats = sup.stats
            assert closed(conn.writer)
        assert (stats.connects, stats.disconnects) == (201, 200)
        assert len({id(c) for c in previous}) == len(previous) == 201
        assert all(closed(c.writer) for c in previous)
        assert aio.scheduler_stats() == aio.SchedulerStats(0, 0, False, 0)
        assert asyncio.all_tasks() == tasks
        assert _live_threads() <= threads
        del previous[:], conn
        # The echo server is a thread of this process: its side of the last connection
        # closes once it has read our end.
        await wait_until(lambda: echo_server.connections == 0, what="the server's side closed")
        gc.collect()
        assert open_fds() <= fds

    run(main(), timeout=60)


def test_200_handler_cycles_leak_no_tasks(echo_server: EchoServer) -> None:
    async def main() -> None:
        tasks = asyncio.all_tasks()
        done = asyncio.Event()
        count = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            count += 1
            if count == 200:
                done.set()

        async with Supervisor(
            echo_server.address, retry=QUICK, healthy_after=0, handler=handler
        ) as sup:
            await asyncio.wait_for(done.wait(), WAIT * 2)
        assert sup.stats.connects >= 200
        assert asyncio.all_tasks() == tasks
        assert aio.scheduler_stats() == aio.SchedulerStats(0, 0, False, 0)

    run(main(), timeout=60)


# ---------------------------------------------------------------------------------------------
# API details


@pytest.mark.no_event_loop
def test_exported_from_keepalive_aio() -> None:
    assert aio.Supervisor is Supervisor
    assert "Supervisor" in aio.__all__
    with pytest.raises(AttributeError):
        aio.NoSuchName  # type: ignore[attr-defined]  # noqa: B018


def test_wait_connected_before_start_and_timeout() -> None:
    async def main() -> None:
        with down_server() as server:
            sup = Supervisor(server.getsockname(), retry=Backoff.constant(30))
            with pytest.raises(RuntimeError, match="not started"):
                await sup.wait_connected(timeout=0)
            assert sup.state is SupervisorState.IDLE
            async with sup:
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await sup.wait_connected(timeout=0.05)
                assert time.monotonic() - started < 0.05 + SLACK
                with pytest.raises(RuntimeError, match="already started"):
                    sup.start()
            with pytest.raises(RuntimeError, match="closed"):
                sup.start()
            await sup.aclose()  # idempotent
            sup.close()

    run(main())


def test_waiters_are_woken_by_close() -> None:
    async def main() -> None:
        with down_server() as server:
            sup = Supervisor(server.getsockname(), retry=Backoff.constant(30)).start()
            waiting = asyncio.ensure_future(sup.wait_connected())
            await asyncio.sleep(0.05)
            sup.close()  # the non-waiting variant
            with pytest.raises(ConnectFailed, match="closed"):
                await asyncio.wait_for(waiting, WAIT)
            await sup.aclose()

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "field", "error"),
    [
        *BAD_ARGUMENTS,
        ({"ssl": True}, "ssl", InvalidSettingType),
        ({"limit": 0}, "limit", InvalidSetting),
    ],
)
@pytest.mark.no_event_loop
def test_bad_arguments_are_refused_with_the_field_named(
    kwargs: dict[str, object], field: str, error: type[Exception]
) -> None:
    checks.refused_at_construction(Supervisor, kwargs, field, error)


# ---------------------------------------------------------------------------------------------
# keepalive.aio.open_connection(retry=..., connect_timeout=...)


def test_open_connection_retries_until_the_server_comes_up() -> None:
    cfg = KeepaliveConfig(idle=7, interval=3, count=4)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with down_server(blocking=False) as listener:
            loop.call_later(0.25, listener.listen)  # up after about five refused attempts
            started = time.monotonic()
            reader, writer = await aio.open_connection(
                *listener.getsockname(), keepalive=cfg, heartbeat=FAST, retry=QUICK
            )
            elapsed = time.monotonic() - started
            peer, _ = await loop.sock_accept(listener)
            with peer:
                await loop.sock_sendall(peer, b"hi")
                assert await reader.readexactly(2) == b"hi"
                state = keepalive.inspect(writer.get_extra_info("socket"))
                assert aio.monitor_of(writer) is not None
                writer.close()
        assert 0.25 <= elapsed <= 0.25 + SLACK
        assert (state.idle, state.interval, state.count) == (7, 3, 4)

    run(main())


def test_open_connection_connect_timeout_applies_to_each_attempt() -> None:
    async def main() -> None:
        with black_hole() as address:
            policy = Backoff.constant(0.01, max_attempts=2)
            started = time.monotonic()
            with pytest.raises(ConnectFailed) as caught:
                await aio.open_connection(*address, retry=policy, connect_timeout=0.2)
            elapsed = time.monotonic() - started
        error = caught.value
        assert error.reason == "exhausted"
        assert [failure.attempt for failure in error.attempts] == [0, 1]  # type: ignore[attr-defined]
        assert all(isinstance(f.error, TimeoutError) for f in error.attempts)  # type: ignore[attr-defined]
        assert 0.4 - 0.05 <= elapsed <= 0.4 + SLACK

    run(main())


def test_open_connection_tries_every_address_and_reports_every_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as live:
        live_port = live.getsockname()[1]
        refused_v6 = ("::1", free_port(), 0, 0)
        refused_v4 = ("127.0.0.1", free_port())
        answers = {
            "dual.test": [refused_v6, ("127.0.0.1", live_port)],
            "down.test": [refused_v6, refused_v4],
        }

        async def main() -> None:
            resolve_locally(monkeypatch, answers)
            _reader, writer = await aio.open_connection("dual.test", 1, connect_timeout=1)
            assert writer.get_extra_info("peername") == ("127.0.0.1", live_port)
            writer.close()
            policy = Backoff.constant(0.01, max_attempts=2)
            with pytest.raises(ConnectFailed) as caught:
                await aio.open_connection("down.test", 1, retry=policy)
            failures = caught.value.attempts
            assert [(f.attempt, f.address[0]) for f in failures] == [  # type: ignore[attr-defined]
                (0, "::1"),
                (0, "127.0.0.1"),
                (1, "::1"),
                (1, "127.0.0.1"),
            ]
            assert all(isinstance(f.error, ConnectionRefusedError) for f in failures)  # type: ignore[attr-defined]

        run(main())


def test_open_connection_starts_tls_on_the_dialed_socket(certificate: CertificateFiles) -> None:
    server_context, client_context = tls_contexts(certificate)

    async def main() -> None:
        async with tls_echo_server(server_context) as (host, port):
            # server_hostname defaults to the host: the certificate is checked against it.
            reader, writer = await aio.open_connection(
                host, port, ssl=client_context, heartbeat=FAST, retry=QUICK, connect_timeout=1
            )
            assert writer.get_extra_info("sslcontext") is client_context
            assert await echo((reader, writer), b"tls\n") == b"tls\n"
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    run(main())


def test_open_connection_cancelled_during_backoff_returns_promptly() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(
            aio.open_connection("127.0.0.1", free_port(), retry=Backoff.constant(30))
        )
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - started < 0.1

    run(main())


def test_open_connection_with_keepalive_alone_reports_the_attempt() -> None:
    async def main() -> None:
        with pytest.raises(ConnectFailed) as caught:
            await aio.open_connection("127.0.0.1", free_port(), keepalive=KeepaliveConfig())
        assert caught.value.reason == "no retry"
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)
        # Arguments only asyncio's own connect understands: asyncio connects, as before.
        with socket.create_server(("127.0.0.1", 0)) as listener:
            _reader, writer = await aio.open_connection(
                *listener.getsockname(), keepalive=KeepaliveConfig(idle=9), family=socket.AF_INET
            )
            assert keepalive.inspect(writer.get_extra_info("socket")).idle == 9
            writer.close()

    run(main())


def test_open_connection_refuses_retry_options_it_cannot_honour() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            with pytest.raises(InvalidSetting, match="retry"):
                await aio.open_connection(sock=ours, retry=QUICK)
            with pytest.raises(InvalidSetting, match="connect_timeout"):
                await aio.open_connection(sock=ours, connect_timeout=1)
        with pytest.raises(InvalidSetting, match="family"):
            await aio.open_connection("127.0.0.1", 9, retry=QUICK, family=socket.AF_INET)
        with pytest.raises(InvalidSetting, match="connect_timeout"):
            await aio.open_connection("127.0.0.1", 9, connect_timeout=0)
        with pytest.raises(InvalidSettingType, match="retry"):
            await aio.open_connection("127.0.0.1", 9, retry=3)  # type: ignore[arg-type]
        with pytest.raises(InvalidSettingType, match="port"):
            await aio.open_connection("127.0.0.1", "http", retry=QUICK)

    run(main())
