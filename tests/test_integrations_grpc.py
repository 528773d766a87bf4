"""keepalive.integrations.grpc against a real grpcio server on loopback, behind a FaultProxy.

The proxy stands in for a userspace NAT: after ``freeze()`` it acknowledges everything and
forwards nothing, so only the HTTP/2 keepalive ping (a heartbeat) can tell the server is gone.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

from keepalive import HeartbeatConfig, InvalidSetting
from keepalive.integrations.grpc import (
    IDLE_PING_INTERVAL,
    ServerPolicy,
    channel_options,
    check_channel_options,
    server_options,
)
from keepalive.testing import FaultProxy

grpc = pytest.importorskip("grpc")

TOLERANCE = 2.0  # seconds past the bound, for a loaded 2-core machine


def _echo(request: bytes, context: Any) -> bytes:
    return request


@pytest.fixture
def server_port() -> Iterator[tuple[int, HeartbeatConfig]]:
    heartbeat = HeartbeatConfig(interval=1, timeout=1)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=server_options(ServerPolicy.admitting(heartbeat)),
    )
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, heartbeat
    finally:
        server.stop(None)


def test_options_map_the_heartbeat() -> None:
    heartbeat = HeartbeatConfig(interval=30, timeout=4.0001, misses=3)
    options = dict(channel_options(heartbeat, server=ServerPolicy.admitting(heartbeat)))
    assert options == {
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 12_001,  # timeout * misses, rounded up to whole ms
        "grpc.http2.ping_timeout_ms": 12_001,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.max_pings_without_data": 0,
    }
    assert dict(server_options()) == {  # grpc-core's defaults
        "grpc.http2.min_ping_interval_without_data_ms": 300_000,
        "grpc.http2.max_ping_strikes": 2,
        "grpc.keepalive_permit_without_calls": 0,
    }
    served = dict(server_options(ServerPolicy(60, True, 0), heartbeat=HeartbeatConfig(7200, 20)))
    assert served["grpc.keepalive_time_ms"] == 7_200_000
    assert served["grpc.http2.max_ping_strikes"] == 0


def test_policy_refusals() -> None:
    every_10s = HeartbeatConfig(interval=10, timeout=5)
    # grpc-core's default server: pings without calls only every 2 h, others every 5 min.
    with pytest.raises(InvalidSetting, match="too_many_pings") as refused:
        channel_options(every_10s)
    assert refused.value.field == "grpc.keepalive_time_ms"
    assert f"{int(IDLE_PING_INTERVAL * 1000)} ms" in str(refused.value)
    with pytest.raises(InvalidSetting, match="min_ping_interval_without_data"):
        channel_options(every_10s, permit_without_calls=False)
    assert channel_options(HeartbeatConfig(300, 20), permit_without_calls=False)
    permissive = ServerPolicy(min_ping_interval_without_data=10, permit_without_calls=True)
    assert channel_options(every_10s, server=permissive)
    assert channel_options(every_10s, server=ServerPolicy(max_ping_strikes=0))  # never strikes
    # Options written by hand are checked the same way; without keepalive nothing to check.
    with pytest.raises(InvalidSetting):
        check_channel_options([("grpc.keepalive_time_ms", 9_999)], permissive)
    check_channel_options([("grpc.keepalive_time_ms", 10_000)], permissive)
    check_channel_options([("grpc.max_receive_message_length", 1)])
    with pytest.raises(InvalidSetting):
        ServerPolicy(max_ping_strikes=-1)
    with pytest.raises(InvalidSetting, match="at most once a second"):  # grpc-core's floor
        channel_options(HeartbeatConfig(0.5, 1), server=ServerPolicy(max_ping_strikes=0))


def test_refused_combination_never_makes_a_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    monkeypatch.setattr(grpc, "insecure_channel", lambda *a, **k: made.append(a))
    with pytest.raises(InvalidSetting, match="too_many_pings"):
        grpc.insecure_channel("127.0.0.1:1", options=channel_options(HeartbeatConfig(1, 1)))
    assert made == []


@pytest.mark.integration
@pytest.mark.skipif(sys.platform == "win32", reason="timing on loopback measured on POSIX")
def test_idle_channel_detects_a_frozen_peer(server_port: tuple[int, HeartbeatConfig]) -> None:
    port, heartbeat = server_port
    policy = ServerPolicy.admitting(heartbeat)
    with FaultProxy(("127.0.0.1", port)) as proxy:
        host, proxy_port = proxy.address
        channel = grpc.insecure_channel(
            f"{host}:{proxy_port}", options=channel_options(heartbeat, server=policy)
        )
        try:
            echo = channel.unary_unary("/test.Echo/Echo")
            assert echo(b"hi", timeout=5) == b"hi"
            states: list[Any] = []
            changed = threading.Event()

            def on_state(state: Any) -> None:
                states.append(state)
                changed.set()

            channel.subscribe(on_state)
            # Idle, pinged every second and answered through the proxy: the server admits it.
            time.sleep(2.5)
            assert states[-1] == grpc.ChannelConnectivity.READY
            assert proxy.bytes_to_client > 0

            frozen_at = time.monotonic()
            proxy.freeze()
            ready = grpc.ChannelConnectivity.READY
            deadline = frozen_at + heartbeat.detection_bound + TOLERANCE
            while states[-1] == ready and time.monotonic() < deadline:
                changed.wait(deadline - time.monotonic())
                changed.clear()
            detected = time.monotonic() - frozen_at
            assert states[-1] != ready, f"still READY {detected:.2f} s after the freeze"
            assert detected <= heartbeat.detection_bound + TOLERANCE
            print(f"grpc: frozen peer detected in {detected:.2f} s")  # shown with pytest -s
            # The dead transport was dropped: once the path is back, a new one serves RPCs.
            proxy.forward()
            assert echo(b"again", timeout=5, wait_for_ready=True) == b"again"
        finally:
            channel.close()


@pytest.mark.integration
def test_what_the_check_refuses_the_server_punishes(capfd: pytest.CaptureFixture[str]) -> None:
    """The policy model against grpc-core itself: options check_channel_options refuses (pings
    every second, the server admitting one per 2 s) end in GOAWAY too_many_pings."""
    policy = ServerPolicy(2, permit_without_calls=True, max_ping_strikes=1)
    pinging = [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with pytest.raises(InvalidSetting, match="too_many_pings"):
        check_channel_options(pinging, policy)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=server_options(policy))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=pinging)  # unchecked
    try:
        assert channel.unary_unary("/test.Echo/Echo")(b"hi", timeout=5) == b"hi"
        states: list[Any] = []
        left = threading.Event()

        def on_state(state: Any) -> None:
            states.append(state)
            if state != grpc.ChannelConnectivity.READY:
                left.set()

        channel.subscribe(on_state)
        assert left.wait(8), f"no GOAWAY: {states}"
    finally:
        channel.close()
        server.stop(None)
    assert "too_many_pings" in capfd.readouterr().err  # grpc-core logs the GOAWAY it got


def test_importing_the_module_does_not_import_grpc() -> None:
    code = (
        "import sys, keepalive.integrations.grpc; "
        "assert 'grpc' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
