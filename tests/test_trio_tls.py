"""keepalive.trio over TLS: a trio.SSLStream client against a trio TLS server in the same run
(a self-signed certificate made here with the openssl tool), through a FaultProxy, so that
pings and pongs cross the proxy inside TLS records."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psutil
import pytest
import tls_certs
import trio
from tls_certs import CertificateFiles, tls_contexts
from trio_streams import echo, read_until

from keepalive.errors import PeerUnresponsive
from keepalive.heartbeat import HeartbeatConfig
from keepalive.pytest_plugin import FaultProxyFactory
from keepalive.reconnect import Backoff
from keepalive.supervision import DisconnectReason
from keepalive.testing import FaultProxy
from keepalive.trio import Supervisor, open_connection

SLACK = 0.5
FAST = HeartbeatConfig(interval=0.2, timeout=0.3)

certificate = tls_certs.certificate  # the module-scoped fixture


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


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[int]:
    """:func:`serve_tls` on a loopback port for the block's duration: yields the port."""
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_tls, context)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def tls_server_behind_a_proxy(
    certificate: CertificateFiles, fault_proxy: FaultProxyFactory
) -> AsyncIterator[FaultProxy]:
    """A TLS server presenting ``certificate`` with a FaultProxy in front: yields the proxy."""
    server_context, _ = tls_contexts(certificate)
    async with tls_server(server_context) as port:
        yield fault_proxy(("127.0.0.1", port))


def supervise_over_tls(
    certificate: CertificateFiles, address: tuple[str, int], **options: Any
) -> Supervisor:
    """A supervisor of TLS connections to ``address`` that trusts ``certificate`` alone."""
    _, client_context = tls_contexts(certificate)
    return Supervisor(address, ssl_context=client_context, server_hostname="127.0.0.1", **options)


def test_tls_stream_pings_inside_tls_and_a_freeze_is_detected(
    certificate: CertificateFiles, fault_proxy: FaultProxyFactory
) -> None:
    _, client_context = tls_contexts(certificate)

    async def main() -> None:
        async with tls_server_behind_a_proxy(certificate, fault_proxy) as proxy:
            stream = await open_connection(
                *proxy.address,
                heartbeat=FAST,
                ssl_context=client_context,
                server_hostname="127.0.0.1",
            )
            assert isinstance(stream.stream, trio.SSLStream)
            payload = b"".join(b"line %d PONG PING\n" % n for n in range(2000))
            assert await echo(stream, payload) == payload  # byte-exact
            await trio.sleep(FAST.interval * 3)
            assert await echo(stream, b"x\n") == b"x\n"
            assert stream.pongs_received >= 1
            assert stream.rtt is not None
            proxy.freeze()
            frozen_at = trio.current_time()
            with pytest.raises(PeerUnresponsive):
                await stream.receive_some()
            assert trio.current_time() - frozen_at <= FAST.detection_bound + SLACK
            await stream.aclose()

    trio.run(main)


def test_a_wrong_certificate_fails_the_handshake_in_open_connection(
    certificate: CertificateFiles,
) -> None:
    server_context, _ = tls_contexts(certificate)

    async def main() -> None:
        async with tls_server(server_context) as port:
            with pytest.raises(trio.BrokenResourceError):
                await open_connection(
                    "127.0.0.1", port, heartbeat=FAST, ssl_context=ssl.create_default_context()
                )

    trio.run(main)


def test_supervised_tls_heals_after_the_proxy_thaws(
    certificate: CertificateFiles, fault_proxy: FaultProxyFactory
) -> None:
    async def main() -> None:
        async with (
            tls_server_behind_a_proxy(certificate, fault_proxy) as proxy,
            supervise_over_tls(
                certificate,
                proxy.address,
                heartbeat=FAST,
                retry=Backoff(initial=0.05, max_delay=0.2),
                connect_timeout=0.5,
            ) as sup,
        ):
            first = await sup.wait_connected(5)
            assert await echo(first.stream, b"hello\n") == b"hello\n"
            proxy.freeze()
            assert await first.wait_ended() is DisconnectReason.HEARTBEAT_TIMEOUT
            proxy.forward()
            with trio.fail_after(10):
                while True:
                    second = await sup.wait_connected(10)
                    try:
                        assert await echo(second.stream, b"again\n") == b"again\n"
                        break
                    except (trio.BrokenResourceError, PeerUnresponsive):
                        await second.wait_ended()  # made during the freeze: replaced

    trio.run(main)


def test_a_reset_under_tls_is_classified_through_trios_wrapper(
    certificate: CertificateFiles, fault_proxy: FaultProxyFactory
) -> None:
    """The SSLStream passes on the TCP stream's BrokenResourceError (from the socket's
    ConnectionResetError): the core classifies the end by that cause, RESET."""
    ends: list[tuple[DisconnectReason, BaseException | None]] = []

    async def main() -> None:
        async with (
            tls_server_behind_a_proxy(certificate, fault_proxy) as proxy,
            supervise_over_tls(
                certificate,
                proxy.address,
                heartbeat=None,
                on_disconnect=lambda reason, error: ends.append((reason, error)),
            ) as sup,
        ):
            conn = await sup.wait_connected(5)
            assert await echo(conn.stream, b"hello\n") == b"hello\n"
            assert proxy.reset() == 1
            with pytest.raises(trio.BrokenResourceError) as caught:
                await read_until(conn.stream, 1)
            assert isinstance(caught.value.__cause__, ConnectionResetError)
            assert await conn.wait_ended() is DisconnectReason.RESET
        assert ends[0] == (DisconnectReason.RESET, caught.value)

    trio.run(main)


def test_cancelling_during_a_tls_handshake_stops_at_once(
    certificate: CertificateFiles, fault_proxy: FaultProxyFactory
) -> None:
    async def main() -> None:
        async with tls_server_behind_a_proxy(certificate, fault_proxy) as proxy:
            proxy.freeze()  # the TCP connect succeeds, the handshake never completes
            started = trio.current_time()
            with trio.move_on_after(0.3) as scope:
                async with supervise_over_tls(
                    certificate, proxy.address, heartbeat=FAST, connect_timeout=30
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

    trio.run(main)
