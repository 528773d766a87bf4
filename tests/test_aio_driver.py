"""The asyncio heartbeat driver (keepalive.aio) on real loopback sockets.

Each test runs its own event loop with ``loops.run`` under an overall ``wait_for`` so that a
broken driver fails instead of hanging, once on asyncio's loop and once on uvloop's
(tests/loops.py).
"""

# The fixtures are imported by name so that this file works without the plugin being
# registered; pytest then passes them in as arguments of the same name (F811).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
import weakref
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import loops
import pytest
from loops import on_uvloop, wait_until

from keepalive import aio
from keepalive.config import KeepaliveConfig
from keepalive.errors import InvalidSetting, InvalidSettingType, PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory, echo_server, fault_proxy  # noqa: F401
from keepalive.testing import EchoServer

TCP_ESTABLISHED = 1  # include/net/tcp_states.h
# Timer callbacks may run a little early or late on a busy 2-core machine.
EARLY = 0.02
LATE = 0.5


pytestmark = pytest.mark.usefixtures("event_loop_kind")


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return loops.run(asyncio.wait_for(coroutine, timeout))


def monitor(writer: asyncio.StreamWriter) -> aio.HeartbeatProtocol:
    found = aio.monitor_of(writer)
    assert found is not None
    return found


async def echo_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes = b"hello\n"
) -> None:
    writer.write(line)
    assert await asyncio.wait_for(reader.readline(), 3) == line


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, PeerUnresponsive):
        await writer.wait_closed()


class Ticker:
    """A peer that writes ``tick\\n`` (``burst`` times) every ``period`` seconds and never
    answers a ping."""

    def __init__(self, period: float, burst: int = 1) -> None:
        self.period = period
        self.payload = b"tick\n" * burst
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                writer.write(self.payload)
                await writer.drain()
                await asyncio.sleep(self.period)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Import hygiene


@pytest.mark.no_event_loop
def test_import_keepalive_does_not_import_asyncio_but_keepalive_aio_does() -> None:
    code = (
        "import sys, keepalive\n"
        "assert 'asyncio' not in sys.modules, 'import keepalive pulled in asyncio'\n"
        "import keepalive.aio\n"
        "assert 'asyncio' in sys.modules\n"
        "assert keepalive.aio.open_connection\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# The story: a userspace NAT whose server side is gone


@pytest.mark.slow
def test_heartbeat_detects_frozen_proxy_that_kernel_keepalive_never_notices(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    kernel = KeepaliveConfig(idle=1, interval=1, count=2)
    heartbeat = HeartbeatConfig(interval=1, timeout=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        host, port = proxy.address
        kernel_reader, kernel_writer = await aio.open_connection(host, port, keepalive=kernel)
        reader, writer = await aio.open_connection(
            host, port, keepalive=kernel, heartbeat=heartbeat
        )
        assert aio.monitor_of(kernel_writer) is None
        hb = monitor(writer)
        await echo_line(kernel_reader, kernel_writer)
        await echo_line(reader, writer)

        proxy.freeze()
        frozen_at = loop.time()
        last_received = hb.last_received
        assert last_received is not None
        kernel_read = asyncio.ensure_future(kernel_reader.read(100))
        with pytest.raises(PeerUnresponsive):
            await asyncio.wait_for(reader.read(100), heartbeat.detection_bound + 3)
        detected_at = loop.time()
        assert hb.dead
        assert detected_at - last_received >= heartbeat.detection_bound - EARLY
        assert detected_at - frozen_at <= heartbeat.detection_bound + LATE
        print(f"heartbeat detection after freeze: {detected_at - frozen_at:.3f} s")

        # Three times the kernel's own bound later, the kernel still sees a healthy peer.
        await asyncio.sleep(frozen_at + 3 * kernel.detection_bound - loop.time())
        sock = kernel_writer.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_ESTABLISHED
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert not kernel_read.done()
        kernel_read.cancel()
        await close(kernel_writer)
        await close(writer)

    run(main(), timeout=30)


# ---------------------------------------------------------------------------------------------
# Stream integrity and liveness


def test_stream_integrity_with_pings_every_10ms(echo_server: EchoServer) -> None:
    raw_line = 32 * 1024
    lines = 1600  # 52 MB of random bytes, 105 MB of hex on the wire each way

    async def main() -> None:
        reader, writer = await aio.open_connection(
            *echo_server.address, heartbeat=HeartbeatConfig(interval=0.01, timeout=10)
        )
        hb = monitor(writer)
        sent_hash = hashlib.sha256()
        received_hash = hashlib.sha256()
        expected = lines * (2 * raw_line + 1)

        async def send() -> None:
            for _ in range(lines):
                line = os.urandom(raw_line).hex().encode() + b"\n"
                sent_hash.update(line)
                writer.write(line)
                await writer.drain()

        async def receive() -> int:
            total = 0
            while total < expected:
                chunk = await reader.read(1 << 20)
                assert chunk, "EOF before everything was echoed"
                received_hash.update(chunk)
                total += len(chunk)
            return total

        async def ping() -> None:
            while True:
                hb.send_ping()
                await asyncio.sleep(0.01)

        pinger = asyncio.ensure_future(ping())
        _, total = await asyncio.gather(send(), receive())
        pinger.cancel()
        await wait_until(lambda: hb.heartbeat is not None and hb.heartbeat.outstanding == 0)
        assert total == expected
        assert received_hash.digest() == sent_hash.digest()
        assert hb.pings_sent >= 20  # one every 10 ms while the bytes flowed
        assert hb.pongs_received == hb.pings_sent
        assert not hb.dead
        # Nothing else arrives: every pong was removed, none was left in the stream.
        await echo_line(reader, writer, b"end\n")
        await close(writer)

    run(main(), timeout=120)


def test_busy_peer_that_never_answers_pings_is_never_declared_dead() -> None:
    heartbeat = HeartbeatConfig(interval=0.1, timeout=0.3)

    async def main() -> None:
        ticker = Ticker(0.2)
        address = await ticker.start()
        reader, writer = await aio.open_connection(*address, heartbeat=heartbeat)
        hb = monitor(writer)
        ticks = 0
        end = asyncio.get_running_loop().time() + 10 * heartbeat.detection_bound
        while asyncio.get_running_loop().time() < end:
            assert await reader.readline() == b"tick\n"
            ticks += 1
        assert not hb.dead
        assert hb.active
        assert ticks >= 15
        assert hb.pings_sent >= 10  # every silence longer than interval got a ping...
        assert hb.pongs_received == 0  # ...that was never answered: the ticks kept it alive
        await close(writer)
        await ticker.stop()

    run(main())


def test_peer_slower_than_timeout_is_declared_dead() -> None:
    heartbeat = HeartbeatConfig(interval=0.1, timeout=0.3)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ticker = Ticker(5.0)
        address = await ticker.start()
        reader, writer = await aio.open_connection(*address, heartbeat=heartbeat)
        hb = monitor(writer)
        assert await reader.readline() == b"tick\n"
        last_tick = loop.time()
        with pytest.raises(PeerUnresponsive) as caught:
            await reader.readline()
        elapsed = loop.time() - last_tick
        assert heartbeat.detection_bound - EARLY <= elapsed <= heartbeat.detection_bound + LATE
        assert hb.dead
        assert hb.error is caught.value
        assert writer.transport.is_closing()
        await close(writer)
        await ticker.stop()

    run(main())


class SlowReader:
    """A peer that reads our bytes slowly (small buffers, a pause after each chunk) and answers
    every ``PING`` line with a ``PONG`` line; it echoes nothing else."""

    def __init__(self, chunk: int, pause: float) -> None:
        self.chunk = chunk
        self.pause = pause
        self.received = 0
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # inherited
        listener.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._handle, sock=listener)
        host, port = listener.getsockname()[:2]
        return host, port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        pending = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(self.chunk):
                self.received += len(data)
                *lines, pending = (pending + data).split(b"\n")
                writer.write(b"PONG\n" * lines.count(b"PING"))
                await asyncio.sleep(self.pause)
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


def test_a_peer_reading_a_large_upload_slowly_is_not_declared_dead() -> None:
    # One write() of 4 MB: asyncio buffers it and pauses the writer. A ping queued behind it
    # would wait seconds for the peer to read that far; the driver holds the ping back while
    # our buffered bytes keep draining, and writes it once the buffer is low again.
    heartbeat = HeartbeatConfig(interval=0.2, timeout=0.6)
    upload = (b"x" * 1023 + b"\n") * 4096

    async def main() -> None:
        loop = asyncio.get_running_loop()
        peer = SlowReader(chunk=64 * 1024, pause=0.04)
        address = await peer.start()
        _, writer = await aio.open_connection(*address, heartbeat=heartbeat)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024
        )
        hb = monitor(writer)
        await wait_until(lambda: hb.pongs_received >= 1)
        started = loop.time()
        writer.write(upload)
        await writer.drain()
        assert loop.time() - started >= 3 * heartbeat.detection_bound  # really slow
        assert not hb.dead
        await wait_until(lambda: peer.received >= len(upload))
        await wait_until(lambda: hb.pongs_received >= 3)
        assert not hb.dead
        await close(writer)
        await peer.stop()

    run(main())


def test_a_writer_stuck_behind_a_frozen_proxy_is_released_within_the_bound(
    echo_server: EchoServer, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(echo_server.address)
    heartbeat = HeartbeatConfig(interval=0.3, timeout=0.5)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await aio.open_connection(*proxy.address, heartbeat=heartbeat)
        hb = monitor(writer)
        await echo_line(reader, writer)
        proxy.freeze()
        frozen_at = loop.time()
        writer.write(b"y" * (8 << 20) + b"\n")  # far more than every buffer on the way holds
        with pytest.raises(PeerUnresponsive):
            await writer.drain()
        assert loop.time() - frozen_at <= heartbeat.detection_bound + LATE
        assert hb.dead
        await close(writer)

    run(main())


# ---------------------------------------------------------------------------------------------
# Our own stalls never kill a healthy connection


def test_loop_blocked_for_three_bounds_right_after_a_ping_survives(
    echo_server: EchoServer,
) -> None:
    heartbeat = HeartbeatConfig(interval=0.3, timeout=0.3)
    block = 3 * heartbeat.detection_bound

    async def main() -> None:
        loop = asyncio.get_running_loop()
        blocked: list[asyncio.Handle] = []

        def ping() -> bytes:
            if not blocked:  # block the loop as soon as the first ping is written
                blocked.append(loop.call_soon(time.sleep, block))
            return b"PING\n"

        reader, writer = await aio.open_connection(
            *echo_server.address, heartbeat=heartbeat, ping=ping
        )
        hb = monitor(writer)
        started = loop.time()
        await wait_until(lambda: hb.pings_sent >= 1)
        await asyncio.sleep(0.05)
        assert loop.time() - started >= block  # the loop really was blocked
        assert not hb.dead
        assert hb.pongs_received >= 1
        await echo_line(reader, writer)
        await close(writer)

    run(main())


@pytest.mark.parametrize("peer_answers", [True, False])
def test_pong_waiting_in_the_kernel_counts_when_the_timer_runs_late(peer_answers: bool) -> None:
    """The timer runs in the same loop iteration as a blocking callback, after it, with the
    pong already in the socket but not yet read: the readability check must count it."""
    heartbeat = HeartbeatConfig(interval=0.5, timeout=1.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with EchoServer() as server:
            server.pause()  # accepts in the kernel only: the ping is not answered yet
            reader, writer = await aio.open_connection(*server.address, heartbeat=heartbeat)
            hb = monitor(writer)
            await wait_until(lambda: hb.pings_sent == 1)
            assert hb.heartbeat is not None
            expiry = hb.heartbeat.deadline
            assert expiry is not None

            def answer_then_block() -> None:
                if peer_answers:
                    server.resume()
                time.sleep(0.3)  # the pong arrives meanwhile; nobody reads it

            # First make the loop late past the expiry, so that the next iteration runs both
            # answer_then_block and our timer (in that order) without polling for I/O.
            loop.call_at(expiry - 0.3, time.sleep, 0.4)
            loop.call_at(expiry - 0.2, answer_then_block)
            await asyncio.sleep(expiry - loop.time() + 0.5)
            assert hb.stalls == 0  # late by less than the timeout: no stall re-arm
            if peer_answers:
                assert not hb.dead
                assert hb.unread_life == 1  # the readability check saved it
                assert hb.pongs_received == 1
                await echo_line(reader, writer)
            else:
                assert hb.dead
                with pytest.raises(PeerUnresponsive):
                    await reader.read(1)
            await close(writer)

    run(main())


def test_unread_bytes_count_as_life_while_the_application_is_not_reading() -> None:
    # The peer streams and never answers pings; the application stops reading, so the
    # StreamReader pauses the transport and nothing is delivered: the bytes waiting in the
    # kernel are what keeps the connection alive.
    heartbeat = HeartbeatConfig(interval=0.1, timeout=0.2)

    async def main() -> None:
        ticker = Ticker(0.005, burst=2000)
        address = await ticker.start()
        reader, writer = await aio.open_connection(*address, heartbeat=heartbeat, limit=1024)
        hb = monitor(writer)
        await asyncio.sleep(8 * heartbeat.detection_bound)
        assert not hb.dead
        assert hb.unread_life >= 3
        assert await reader.readline() == b"tick\n"  # everything is still there, in order
        await close(writer)
        await ticker.stop()

    run(main())


def test_timer_late_by_more_than_timeout_rearms_instead_of_killing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heartbeat = HeartbeatConfig(interval=0.3, timeout=0.3)
    caplog.set_level(logging.WARNING, logger="keepalive")

    async def main() -> None:
        with EchoServer() as server:
            server.pause()
            reader, writer = await aio.open_connection(*server.address, heartbeat=heartbeat)
            hb = monitor(writer)
            await wait_until(lambda: hb.pings_sent == 1)
            time.sleep(3 * heartbeat.detection_bound)  # the loop is stuck; so is the peer
            # The peer answers only after the loop is back: it deserves its fair chance.
            resumer = threading.Timer(0.1, server.resume)
            resumer.start()
            await wait_until(lambda: hb.pongs_received == 1, timeout=3)
            resumer.join()
            assert not hb.dead
            assert hb.stalls == 1
            await echo_line(reader, writer)
            await close(writer)

    run(main())
    stall_logs = [r for r in caplog.records if "late" in r.getMessage()]
    assert stall_logs
    assert stall_logs[0].name.startswith("keepalive")
    assert stall_logs[0].levelno == logging.WARNING


def test_bytes_during_a_ping_window_bring_the_next_ping_forward() -> None:
    # interval < timeout: after bytes arrive mid-window the next ping is due sooner than the
    # old expiry; a lazy scheduler that kept the old wake-up would send it 2 s late.
    heartbeat = HeartbeatConfig(interval=0.1, timeout=2.0)

    async def main() -> None:
        ticker = Ticker(0.5)
        address = await ticker.start()
        reader, writer = await aio.open_connection(*address, heartbeat=heartbeat)
        hb = monitor(writer)
        assert await reader.readline() == b"tick\n"
        await wait_until(lambda: hb.pings_sent == 1, timeout=1)
        assert await reader.readline() == b"tick\n"  # arrives inside the ping's window
        tick_at = asyncio.get_running_loop().time()
        await wait_until(lambda: hb.pings_sent == 2, timeout=1)
        assert asyncio.get_running_loop().time() - tick_at <= heartbeat.interval + LATE
        await close(writer)
        await ticker.stop()

    run(main())


# ---------------------------------------------------------------------------------------------
# Entry points: wrap(), the protocol hook


def test_wrap_existing_client_and_server_streams(echo_server: EchoServer) -> None:
    heartbeat = HeartbeatConfig(interval=0.05, timeout=0.2)

    async def main() -> None:
        # Client side: streams from asyncio.open_connection.
        reader, writer = await asyncio.open_connection(*echo_server.address)
        assert aio.monitor_streams(reader, writer, heartbeat=heartbeat) == (reader, writer)
        hb = monitor(writer)
        await wait_until(lambda: hb.pongs_received >= 3)
        await echo_line(reader, writer)  # the pongs never reach the application
        with pytest.raises(InvalidSetting):
            aio.monitor_streams(reader, writer, heartbeat=heartbeat)  # already monitored
        echo_server.pause()
        with pytest.raises(PeerUnresponsive):
            await reader.read(100)
        echo_server.resume()
        await close(writer)

        # Server side: a start_server callback wraps its streams and sees its client vanish.
        verdicts: list[BaseException] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            aio.monitor_streams(r, w, heartbeat=heartbeat, ping=b"ping\n", pong=b"pong\n")
            try:
                while await r.read(100):
                    pass
            except PeerUnresponsive as exc:
                verdicts.append(exc)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        try:
            await wait_until(lambda: len(verdicts) == 1)  # the client never answers
        finally:
            client.close()
            server.close()

    run(main())


class RecordingProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[Exception | None] = []
        self.made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def test_heartbeat_protocol_in_front_of_a_plain_protocol(echo_server: EchoServer) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        app = RecordingProtocol()
        deaths: list[PeerUnresponsive] = []
        transport, hb = await loop.create_connection(
            lambda: aio.HeartbeatProtocol(
                app,
                HeartbeatConfig(interval=0.05, timeout=0.2),
                on_dead=lambda _monitor, exc: deaths.append(exc),
            ),
            *echo_server.address,
        )
        assert aio.monitor_of(transport) is hb
        assert hb.protocol is app
        assert app.made == 1
        transport.write(b"one\n")
        await wait_until(lambda: hb.pongs_received >= 3 and bytes(app.data) == b"one\n")
        assert hb.rtt is not None
        assert hb.srtt is not None
        # uvloop's clock counts whole milliseconds: a loopback round trip may read as 0.
        assert hb.rtt >= 0 if on_uvloop() else hb.rtt > 0
        assert hb.rtt < 1
        echo_server.pause()
        await wait_until(lambda: bool(app.lost))
        await asyncio.sleep(0.05)
        assert len(deaths) == 1  # once
        assert app.lost == [deaths[0]]
        assert isinstance(deaths[0], PeerUnresponsive)
        assert bytes(app.data) == b"one\n"
        echo_server.resume()

    run(main())


def test_monitor_transport_on_an_existing_connection(echo_server: EchoServer) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, app = await loop.create_connection(RecordingProtocol, *echo_server.address)
        hb = aio.monitor(
            transport,
            heartbeat=HeartbeatConfig(interval=0.05, timeout=1),
            keepalive=KeepaliveConfig(idle=5, interval=2, count=3),
        )
        assert transport.get_protocol() is hb
        assert hb.protocol is app
        assert transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        transport.write(b"two\n")
        await wait_until(lambda: hb.pongs_received >= 2 and bytes(app.data) == b"two\n")
        hb.stop()
        sent = hb.pings_sent
        await asyncio.sleep(0.2)
        assert hb.pings_sent == sent  # stopped: no more pings, the connection stays open
        assert not transport.is_closing()
        transport.close()
        await wait_until(lambda: app.lost == [None])

    run(main())


class RecordingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buffer = bytearray(3)  # tiny, so one chunk takes several buffers
        self.data = bytearray()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]


def test_buffered_protocol_behind_the_monitor(echo_server: EchoServer) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        app = RecordingBufferedProtocol()
        transport, hb = await loop.create_connection(
            lambda: aio.HeartbeatProtocol(app, HeartbeatConfig(interval=0.05, timeout=1)),
            *echo_server.address,
        )
        await wait_until(lambda: hb.pongs_received >= 2)
        transport.write(b"a longer line\n")
        await wait_until(lambda: bytes(app.data) == b"a longer line\n")
        transport.close()

    run(main())


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    tool = shutil.which("openssl")
    if tool is None:
        pytest.skip("the openssl tool is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [tool, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_connection_is_monitored_through_the_ssl_layer(tmp_path: Path) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    answering = [True]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if line != b"PING\n":
                    writer.write(line)
                elif answering[0]:
                    writer.write(b"PONG\n")
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
        host, port = server.sockets[0].getsockname()[:2]
        reader, writer = await aio.open_connection(
            host, port, ssl=client_context, heartbeat=HeartbeatConfig(interval=0.05, timeout=0.3)
        )
        assert writer.get_extra_info("sslcontext") is not None
        hb = monitor(writer)
        await wait_until(lambda: hb.pongs_received >= 3)
        await echo_line(reader, writer)
        answering[0] = False
        with pytest.raises(PeerUnresponsive):
            await reader.read(100)
        await close(writer)
        server.close()

    run(main())


# ---------------------------------------------------------------------------------------------
# ping and pong variants


class LineMatcher:
    """Removes whole lines starting with ``prefix`` (one per outstanding ping)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.held = b""

    def feed(self, data: bytes, outstanding: int) -> tuple[bytes, int]:
        buffer, self.held = self.held + data, b""
        out = bytearray()
        removed = 0
        for line in buffer.splitlines(keepends=True):
            if not line.endswith(b"\n") and outstanding > removed:
                self.held = line  # may be the start of a pong line
            elif line.startswith(self.prefix) and outstanding > removed:
                removed += 1
            else:
                out += line
        return bytes(out), removed

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held


def test_callable_ping_with_a_custom_matcher() -> None:
    counter = iter(range(1_000_000))

    def ping() -> bytes:
        return b"HB %d\n" % next(counter)

    async def main() -> None:
        with EchoServer(ping=None) as server:  # a pure echo: our pings come back as pongs
            reader, writer = await aio.open_connection(
                *server.address,
                heartbeat=HeartbeatConfig(interval=0.03, timeout=1),
                ping=ping,
                pong=LineMatcher(b"HB "),
            )
            hb = monitor(writer)
            await wait_until(lambda: hb.pongs_received >= 5)
            await echo_line(reader, writer, b"application data\n")
            assert hb.pings_sent == next(counter)  # one call per ping
            assert hb.rtt is not None
            await close(writer)

    run(main())


def test_pong_none_leaves_replies_to_the_application(echo_server: EchoServer) -> None:
    async def main() -> None:
        reader, writer = await aio.open_connection(
            *echo_server.address, heartbeat=HeartbeatConfig(interval=0.05, timeout=1), pong=None
        )
        hb = monitor(writer)
        for _ in range(3):
            assert await asyncio.wait_for(reader.readline(), 3) == b"PONG\n"
        assert hb.pings_sent >= 3
        assert hb.pongs_received >= 2  # the first reply after each ping counts as its pong
        assert hb.rtt is not None
        assert not hb.dead
        await close(writer)

    run(main())


def test_hold_pings_defers_a_due_ping_until_the_block_ends(echo_server: EchoServer) -> None:
    async def main() -> None:
        reader, writer = await aio.open_connection(
            *echo_server.address, heartbeat=HeartbeatConfig(interval=0.05, timeout=0.1)
        )
        hb = monitor(writer)
        await wait_until(lambda: hb.pongs_received >= 1)
        async with hb.hold_pings():
            before = hb.pings_sent
            writer.write(b"first half, ")
            await asyncio.sleep(0.3)  # several intervals: a ping is due, none is written
            assert hb.pings_sent == before
            assert not hb.dead
            assert not hb.send_ping()
            writer.write(b"second half\n")
        assert hb.pings_sent == before + 1  # written as the hold ended
        assert await asyncio.wait_for(reader.readline(), 3) == b"first half, second half\n"
        await wait_until(lambda: hb.pongs_received == hb.pings_sent)
        await close(writer)

    run(main())


def test_coroutine_on_dead_runs_once_and_failing_callbacks_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="keepalive")

    async def main() -> None:
        calls: list[PeerUnresponsive] = []

        async def on_dead(_monitor: object, exc: PeerUnresponsive) -> None:
            await asyncio.sleep(0)
            calls.append(exc)

        def broken_on_dead(_monitor: object, exc: PeerUnresponsive) -> None:
            raise RuntimeError("broken callback")

        heartbeat = HeartbeatConfig(interval=0.05, timeout=0.05)
        pairs = [socket.socketpair() for _ in range(2)]
        _, writer = await aio.open_connection(
            sock=pairs[0][0], heartbeat=heartbeat, on_dead=on_dead
        )
        _, broken = await aio.open_connection(
            sock=pairs[1][0], heartbeat=heartbeat, on_dead=broken_on_dead
        )
        await wait_until(lambda: monitor(broken).dead if aio.monitor_of(broken) else True)
        await wait_until(lambda: len(calls) == 1)
        await asyncio.sleep(0.05)
        assert len(calls) == 1
        assert aio.scheduler_stats().callbacks_running == 0
        for a, b in pairs:
            a.close()
            b.close()
        await close(writer)
        await close(broken)

    run(main())
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert any(
        name.startswith("keepalive") and level == logging.WARNING and "declared dead" in text
        for name, level, text in messages
    )
    assert any(level == logging.ERROR and "on_dead" in text for _, level, text in messages)
    assert any(
        level == logging.DEBUG and "heartbeat started" in text for _, level, text in messages
    )


def test_failing_ping_callable_stops_the_heartbeat_not_the_connection(
    echo_server: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    def ping() -> bytes:
        raise ValueError("cannot build a ping")

    async def main() -> None:
        reader, writer = await aio.open_connection(
            *echo_server.address, heartbeat=HeartbeatConfig(interval=0.02, timeout=0.02), ping=ping
        )
        hb = monitor(writer)
        await wait_until(lambda: not hb.active)
        await asyncio.sleep(0.1)
        assert not hb.dead
        await echo_line(reader, writer)
        await close(writer)

    run(main())
    assert any("ping callable failed" in r.getMessage() for r in caplog.records)


def test_peer_eof_stops_the_heartbeat_without_a_verdict() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        reader, writer = await aio.open_connection(
            sock=ours, heartbeat=HeartbeatConfig(interval=0.02, timeout=0.02)
        )
        hb = monitor(writer)
        theirs.sendall(b"last words\n")
        theirs.shutdown(socket.SHUT_WR)
        assert await reader.read() == b"last words\n"
        await asyncio.sleep(0.2)
        assert not hb.dead
        assert not hb.active
        assert aio.scheduler_stats().monitors == 0
        theirs.close()
        await close(writer)

    run(main())


# ---------------------------------------------------------------------------------------------
# Argument checking


def test_bad_arguments_name_the_field() -> None:
    heartbeat = HeartbeatConfig(interval=1, timeout=1)
    app = asyncio.Protocol()
    with pytest.raises(InvalidSettingType, match="heartbeat"):
        aio.HeartbeatProtocol(app, 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="ping"):
        aio.HeartbeatProtocol(app, heartbeat, ping="PING\n")  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="ping"):
        aio.HeartbeatProtocol(app, heartbeat, ping=b"")
    with pytest.raises(InvalidSettingType, match="pong"):
        aio.HeartbeatProtocol(app, heartbeat, pong="PONG\n")  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="on_dead"):
        aio.HeartbeatProtocol(app, heartbeat, on_dead=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="protocol"):
        aio.HeartbeatProtocol(object(), heartbeat)  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="obj"):
        aio.monitor_of(3)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(InvalidSettingType, match="keepalive"):
            await aio.open_connection("127.0.0.1", 9, keepalive=60)  # type: ignore[arg-type]
        with pytest.raises(InvalidSetting, match="on_dead"):
            await aio.open_connection("127.0.0.1", 9, on_dead=print)
        with pytest.raises(InvalidSettingType, match="ping"):
            await aio.open_connection(
                "127.0.0.1",
                9,
                heartbeat=heartbeat,
                ping=1,  # type: ignore[arg-type]
            )

    run(main())


# ---------------------------------------------------------------------------------------------
# No leaks


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _live_timer_handles(loop: asyncio.AbstractEventLoop) -> int:
    scheduled = getattr(loop, "_scheduled", [])  # asyncio's loop; uvloop hides its timers
    return sum(1 for handle in scheduled if not handle.cancelled())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
def test_opening_and_closing_2000_monitored_connections_leaks_nothing() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        monitors: weakref.WeakSet[aio.HeartbeatProtocol] = weakref.WeakSet()

        async def batch(size: int, heartbeat: HeartbeatConfig, die: bool) -> None:
            pairs = [socket.socketpair() for _ in range(size)]
            deaths: list[PeerUnresponsive] = []
            writers = []
            for ours, _ in pairs:
                _, writer = await aio.open_connection(
                    sock=ours, heartbeat=heartbeat, on_dead=lambda _monitor, exc: deaths.append(exc)
                )
                writers.append(writer)
                monitors.add(monitor(writer))
            if die:  # the peers never answer: every connection gets its verdict
                await wait_until(lambda: len(deaths) == size, timeout=10)
            else:
                assert aio.scheduler_stats().monitors == size
            await asyncio.gather(*(close(writer) for writer in writers))
            for _, theirs in pairs:
                theirs.close()

        # libuv opens a spare descriptor (/dev/null, kept for running out of descriptors)
        # with a loop's first stream and keeps it as long as the loop: open one before counting.
        await batch(1, HeartbeatConfig(interval=60, timeout=60), die=False)
        gc.collect()  # sockets an earlier test dropped must not close during this one
        fds_before = _fd_count()
        tasks_before = asyncio.all_tasks()
        handles_before = _live_timer_handles(loop)  # run()'s own wait_for timeout

        for _ in range(9):
            await batch(200, HeartbeatConfig(interval=60, timeout=60), die=False)
        await batch(200, HeartbeatConfig(interval=0.05, timeout=0.05), die=True)
        await asyncio.sleep(0)

        stats = aio.scheduler_stats()
        assert stats == aio.SchedulerStats(0, 0, False, 0)
        assert _live_timer_handles(loop) == handles_before
        assert asyncio.all_tasks() == tasks_before
        gc.collect()
        assert len(monitors) == 0
        assert _fd_count() == fds_before

    run(main(), timeout=60)


# Issue 14's goal is 512 B per asyncio monitor, all allocations counted. Of those, asyncio
# allocates 64 B (a bound method when a transport switches to a buffered protocol) and 24 B
# (the float of loop.time() the heartbeat starts from), and the caller's list 8 B: keepalive's
# own objects must fit in the rest, on every loop.
KEEPALIVE_BYTES_PER_MONITOR = 512 - 64 - 24 - 8


def test_keepalives_own_memory_per_monitor_stays_within_issue_14s_goal() -> None:
    loops.skip_on_uvloop(
        "its transports allocate from C, so tracemalloc charges their bytes to keepalive's"
        " frames and cannot tell keepalive's own"
    )

    async def main() -> float:
        loop = asyncio.get_running_loop()
        count = 500
        pairs = [socket.socketpair() for _ in range(count + 1)]
        transports = [
            (await loop.create_connection(asyncio.Protocol, sock=ours))[0] for ours, _ in pairs
        ]
        beat = HeartbeatConfig(interval=60, timeout=60)
        aio.monitor(transports[0], heartbeat=beat)  # the loop's scheduler and shared buffer
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            monitors = [aio.monitor(t, heartbeat=beat) for t in transports[1:]]
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        package = os.path.dirname(os.path.dirname(os.path.abspath(aio.__file__)))
        ours = [tracemalloc.Filter(True, os.path.join(package, "*"))]
        grown = sum(
            diff.size_diff
            for diff in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
        )
        assert all(m.active for m in monitors)
        for transport in transports:
            transport.close()
        for _, theirs in pairs:
            theirs.close()
        return grown / count

    per_monitor = run(main())
    print(f"keepalive's own bytes per monitor: {per_monitor:.0f}")
    assert 0 < per_monitor <= KEEPALIVE_BYTES_PER_MONITOR


def test_schedulers_do_not_keep_closed_loops_alive() -> None:
    async def use_one() -> weakref.ref[asyncio.AbstractEventLoop]:
        ours, theirs = socket.socketpair()
        _, writer = await aio.open_connection(sock=ours, heartbeat=HeartbeatConfig(1, 1))
        await close(writer)
        theirs.close()
        return weakref.ref(asyncio.get_running_loop())

    loop_ref = run(use_one())
    gc.collect()
    assert loop_ref() is None
