"""keepalive.integrations.websockets against a real websockets server on loopback, behind a
FaultProxy: kernel options read back from the client's live socket, and websockets' own
heartbeat (configured from a HeartbeatConfig) detecting a frozen proxy within the bound."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from keepalive import HeartbeatConfig, InvalidSetting, KeepaliveConfig, inspect
from keepalive.integrations.websockets import (
    connect_socket,
    connect_socket_async,
    ping_kwargs,
    uri_address,
)
from keepalive.testing import FaultProxy

websockets = pytest.importorskip("websockets")
pytest.importorskip("websockets.asyncio.client")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="loopback timing on POSIX")

TOLERANCE = 2.0  # seconds past the bound, for a loaded 2-core machine
# After "keepalive ping timeout" websockets still waits this long for a closing handshake
# (default 10 s) before the connection ends and recv() raises.
CLOSE_TIMEOUT = 0.5
CFG = KeepaliveConfig(idle=7, interval=3, count=4)


def test_kwargs_and_addresses() -> None:
    assert ping_kwargs(HeartbeatConfig(interval=20, timeout=5, misses=3)) == {
        "ping_interval": 20.0,
        "ping_timeout": 15.0,
    }
    assert uri_address("wss://example.com/ws") == ("example.com", 443)
    assert uri_address("ws://[::1]:8765/x?y") == ("::1", 8765)
    assert uri_address("WS://h") == ("h", 80)
    for bad in ("http://example.com/", "ws:///path", "ws://h:99999/"):
        with pytest.raises(InvalidSetting):
            uri_address(bad)


def _assert_kernel_options(sock: socket.socket) -> None:
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    read = inspect(sock)
    assert (read.idle, read.interval, read.count) == (7, 3, 4)
    if sys.platform == "linux":
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4


async def _echo(connection: Any) -> None:
    async for message in connection:
        await connection.send(message)


@pytest.mark.integration
def test_asyncio_client_detects_a_frozen_proxy() -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosedError

    heartbeat = HeartbeatConfig(interval=1, timeout=1)

    async def main() -> float:
        # The server's own pings off: only the client's heartbeat is measured.
        async with serve(_echo, "127.0.0.1", 0, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            with FaultProxy(("127.0.0.1", port)) as proxy:
                uri = "ws://{}:{}/".format(*proxy.address)
                sock = await connect_socket_async(uri, keepalive=CFG)
                async with connect(
                    uri, sock=sock, close_timeout=CLOSE_TIMEOUT, **ping_kwargs(heartbeat)
                ) as ws:
                    live = ws.transport.get_extra_info("socket")
                    assert live.fileno() == sock.fileno()
                    _assert_kernel_options(sock)
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                    await asyncio.sleep(2.5)  # idle, pinged and answered: still open
                    assert ws.state.name == "OPEN"

                    frozen_at = time.monotonic()
                    proxy.freeze()
                    bound = heartbeat.detection_bound + CLOSE_TIMEOUT + TOLERANCE
                    with pytest.raises(ConnectionClosedError, match="keepalive ping timeout"):
                        await asyncio.wait_for(ws.recv(), bound)
                    return time.monotonic() - frozen_at

    detected = asyncio.run(main())
    assert detected <= heartbeat.detection_bound + CLOSE_TIMEOUT + TOLERANCE
    print(f"websockets asyncio: frozen peer detected in {detected:.2f} s")  # pytest -s


@pytest.mark.integration
def test_sync_client_detects_a_frozen_proxy() -> None:
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    if "ping_interval" not in __import__("inspect").signature(connect).parameters:
        pytest.skip("this websockets' sync client has no heartbeat (websockets < 15)")
    from websockets.exceptions import ConnectionClosedError

    heartbeat = HeartbeatConfig(interval=1, timeout=1)

    def echo(connection: Any) -> None:
        for message in connection:
            connection.send(message)

    with serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        try:
            with FaultProxy(("127.0.0.1", port)) as proxy:
                uri = "ws://{}:{}/".format(*proxy.address)
                sock = connect_socket(uri, keepalive=CFG)
                assert sock.getblocking()
                with connect(
                    uri, sock=sock, close_timeout=CLOSE_TIMEOUT, **ping_kwargs(heartbeat)
                ) as ws:
                    _assert_kernel_options(sock)
                    ws.send("hi")
                    assert ws.recv(timeout=5) == "hi"
                    time.sleep(2.5)
                    frozen_at = time.monotonic()
                    proxy.freeze()
                    with pytest.raises(ConnectionClosedError, match="keepalive ping timeout"):
                        ws.recv(timeout=heartbeat.detection_bound + CLOSE_TIMEOUT + TOLERANCE)
                    detected = time.monotonic() - frozen_at
        finally:
            server.shutdown()
    assert detected <= heartbeat.detection_bound + CLOSE_TIMEOUT + TOLERANCE
    print(f"websockets sync: frozen peer detected in {detected:.2f} s")  # pytest -s


def test_importing_the_module_does_not_import_websockets() -> None:
    code = (
        "import sys, keepalive.integrations.websockets; "
        "assert 'websockets' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
