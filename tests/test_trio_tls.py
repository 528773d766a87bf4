"""keepalive.trio over TLS: a trio.SSLStream client against a trio TLS server in the same run
(a self-signed certificate made here with the openssl tool), through a FaultProxy, so that
pings and pongs cross the proxy inside TLS records."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

import psutil
import pytest
import trio

from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.reconnect import Backoff
from keepalive.supervision import DisconnectReason
from keepalive.trio import MonitoredStream, Supervisor, open_connection

SLACK = 0.5
FAST = HeartbeatConfig(interval=0.2, timeout=0.3)
REQUIRED = os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tool = shutil.which("openssl")
    if tool is None:
        if REQUIRED:
            pytest.fail("the openssl tool is not installed")
        pytest.skip("no openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [tool, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


def contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(certificate[0]), str(certificate[1]))
    client = ssl.create_default_context(cafile=str(certificate[0]))
    return server, client


async def serve_tls(
    context: ssl.SSLContext, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A TLS line server: answers PING lines with PONG, echoes every other byte."""

    async def handle(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True)
        pending = b""
        try:
            while data := await stream.receive_some():
                pending += data
                out = b""
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    out += b"PONG\n" if line == b"PING" else line + b"\n"
                if out:
                    await stream.send_all(out)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(handle, listeners)


async def read_until(stream: MonitoredStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


def test_tls_stream_pings_inside_tls_and_a_freeze_is_detected(
    certificate: tuple[Path, Path], fault_proxy: FaultProxyFactory
) -> None:
    server_context, client_context = contexts(certificate)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tls, server_context)
            proxy = fault_proxy(("127.0.0.1", port))
            stream = await open_connection(
                *proxy.address,
                heartbeat=FAST,
                ssl_context=client_context,
                server_hostname="127.0.0.1",
            )
            assert isinstance(stream.stream, trio.SSLStream)
            payload = b"".join(b"line %d PONG PING\n" % n for n in range(2000))
            await stream.send_all(payload)
            assert await read_until(stream, len(payload)) == payload  # byte-exact
            await trio.sleep(FAST.interval * 3)
            await stream.send_all(b"x\n")
            assert await read_until(stream, 2) == b"x\n"
            assert stream.pongs_received >= 1
            assert stream.rtt is not None
            proxy.freeze()
            frozen_at = trio.current_time()
            with pytest.raises(PeerUnresponsive):
                await stream.receive_some()
            assert trio.current_time() - frozen_at <= FAST.detection_bound + SLACK
            await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_wrong_certificate_fails_the_handshake_in_open_connection(
    certificate: tuple[Path, Path],
) -> None:
    server_context, _ = contexts(certificate)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tls, server_context)
            with pytest.raises(trio.BrokenResourceError):
                await open_connection(
                    "127.0.0.1", port, heartbeat=FAST, ssl_context=ssl.create_default_context()
                )
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_supervised_tls_heals_after_the_proxy_thaws(
    certificate: tuple[Path, Path], fault_proxy: FaultProxyFactory
) -> None:
    server_context, client_context = contexts(certificate)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tls, server_context)
            proxy = fault_proxy(("127.0.0.1", port))
            async with Supervisor(
                proxy.address,
                heartbeat=FAST,
                retry=Backoff(initial=0.05, max_delay=0.2),
                connect_timeout=0.5,
                ssl_context=client_context,
                server_hostname="127.0.0.1",
            ) as sup:
                first = await sup.wait_connected(5)
                await first.stream.send_all(b"hello\n")
                assert await read_until(first.stream, 6) == b"hello\n"
                proxy.freeze()
                assert await first.wait_ended() is DisconnectReason.HEARTBEAT_TIMEOUT
                proxy.forward()
                with trio.fail_after(10):
                    while True:
                        second = await sup.wait_connected(10)
                        try:
                            await second.stream.send_all(b"again\n")
                            assert await read_until(second.stream, 6) == b"again\n"
                            break
                        except (trio.BrokenResourceError, PeerUnresponsive):
                            await second.wait_ended()  # made during the freeze: replaced
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_reset_under_tls_is_classified_through_trios_wrapper(
    certificate: tuple[Path, Path], fault_proxy: FaultProxyFactory
) -> None:
    """The SSLStream passes on the TCP stream's BrokenResourceError (from the socket's
    ConnectionResetError): the core classifies the end by that cause, RESET."""
    server_context, client_context = contexts(certificate)
    ends: list[tuple[DisconnectReason, BaseException | None]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tls, server_context)
            proxy = fault_proxy(("127.0.0.1", port))
            async with Supervisor(
                proxy.address,
                heartbeat=None,
                ssl_context=client_context,
                server_hostname="127.0.0.1",
                on_disconnect=lambda reason, error: ends.append((reason, error)),
            ) as sup:
                conn = await sup.wait_connected(5)
                await conn.stream.send_all(b"hello\n")
                assert await read_until(conn.stream, 6) == b"hello\n"
                assert proxy.reset() == 1
                with pytest.raises(trio.BrokenResourceError) as caught:
                    await read_until(conn.stream, 1)
                assert isinstance(caught.value.__cause__, ConnectionResetError)
                assert await conn.wait_ended() is DisconnectReason.RESET
            nursery.cancel_scope.cancel()
        assert ends[0] == (DisconnectReason.RESET, caught.value)

    trio.run(main)


def test_cancelling_during_a_tls_handshake_stops_at_once(
    certificate: tuple[Path, Path], fault_proxy: FaultProxyFactory
) -> None:
    server_context, client_context = contexts(certificate)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_tls, server_context)
            proxy = fault_proxy(("127.0.0.1", port))
            proxy.freeze()  # the TCP connect succeeds, the handshake never completes
            started = trio.current_time()
            with trio.move_on_after(0.3) as scope:
                async with Supervisor(
                    proxy.address,
                    heartbeat=FAST,
                    connect_timeout=30,
                    ssl_context=client_context,
                    server_hostname="127.0.0.1",
                ) as sup:
                    await sup.wait_connected()
            assert scope.cancelled_caught
            assert trio.current_time() - started < 0.3 + SLACK
            assert sup.stats.connects == 0
            assert sup.stats.attempts == 1
            ours = [
                conn
                for conn in psutil.Process().net_connections(kind="tcp")
                if conn.raddr and tuple(conn.raddr) == proxy.address
            ]
            assert ours == []  # the attempt's socket was closed
            nursery.cancel_scope.cancel()

    trio.run(main)
