"""keepalive.integrations.paramiko against OpenSSH's sshd on 127.0.0.1, through a FaultProxy.

The proxy stands in for a userspace NAT: after ``freeze()`` both kernels keep answering
keepalive probes, so only the keepalive requests sshd must answer can tell that it is gone.
A missing sshd or paramiko skips, or fails under ``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI).
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from servers import SshServer, require_module, sshd_server

import keepalive
from keepalive import HeartbeatConfig, KeepaliveConfig, PeerUnresponsive
from keepalive.integrations.paramiko import ServerAlive, server_alive
from keepalive.testing import FaultProxy

pytestmark = pytest.mark.integration

CFG = KeepaliveConfig(idle=37, interval=7, count=4, user_timeout=23.5)
TOLERANCE = 1.0  # scheduling slack on a shared 2-core machine


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with sshd_server() as server:
        yield server


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", sshd.port)) as relay:
        yield relay


@pytest.fixture
def client(sshd: SshServer, proxy: FaultProxy) -> Iterator[Any]:
    """An SSHClient connected through the proxy on a socket with kernel keepalive."""
    paramiko = require_module("paramiko")
    ssh = paramiko.SSHClient()
    ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    sock = keepalive.connect(proxy.address, keepalive=CFG)
    ssh.connect(
        "127.0.0.1",
        port=proxy.address[1],
        sock=sock,
        username=sshd.user,
        pkey=paramiko.Ed25519Key.from_private_key_file(sshd.key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        yield ssh
    finally:
        ssh.close()


def run(ssh: Any, command: str) -> bytes:
    _stdin, stdout, _stderr = ssh.exec_command(command, timeout=5)
    return bytes(stdout.read())


def test_healthy_idle_session_stays_up_and_answers_are_counted(client: Any) -> None:
    config = HeartbeatConfig(interval=0.2, timeout=1.0, misses=2)
    with server_alive(client, config) as alive:
        time.sleep(1.5)
        # Idle: a request every interval, each answered (OpenSSH: REQUEST_FAILURE).
        assert alive.pings_sent >= 4
        assert alive.replies >= alive.pings_sent - 1
        assert alive.rtt is not None
        assert alive.rtt < 0.5
        assert not alive.dead
        assert alive.running
        assert client.get_transport().is_active()
        assert run(client, "echo ok") == b"ok\n"


def test_replies_to_the_applications_global_requests_reach_it(
    client: Any, proxy: FaultProxy
) -> None:
    """Our requests and the application's interleave; each reply goes to its owner (a reply
    taken by the wrong one would leave paramiko's global_request() waiting forever)."""
    transport = client.get_transport()
    results: list[object] = []
    # Each round trip takes 30 ms through the proxy, three times the interval: every request of
    # the application has one of ours in flight beside it, sent before or after it (the timing
    # of the machine cannot make them take turns instead).
    proxy.delay(0.015)

    def application() -> None:
        for _ in range(10):
            port = transport.request_port_forward("127.0.0.1", 0)  # SUCCESS carries the port
            results.append(port)
            transport.cancel_port_forward("127.0.0.1", port)
            # Unknown to sshd: FAILURE, which paramiko's global_request returns as None.
            results.append(transport.global_request("no-such-request@keepalive", wait=True))

    with server_alive(transport, HeartbeatConfig(interval=0.01, timeout=2)) as alive:
        worker = threading.Thread(target=application, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "a reply to the application was lost"
        assert len(results) == 20
        assert all(isinstance(port, int) and port > 0 for port in results[::2])
        assert results[1::2] == [None] * 10
        assert alive.replies >= 10  # our requests were really in flight meanwhile
        assert not alive.dead


def test_frozen_proxy_is_detected_within_the_bound(client: Any, proxy: FaultProxy) -> None:
    config = HeartbeatConfig(interval=0.5, timeout=0.5, misses=2)  # ServerAliveCountMax 2
    transport = client.get_transport()
    verdicts: list[tuple[float, PeerUnresponsive]] = []
    called = threading.Event()

    def on_dead(error: PeerUnresponsive) -> None:
        verdicts.append((time.monotonic(), error))
        called.set()

    alive = server_alive(transport, config, on_dead=on_dead)
    time.sleep(0.7)
    assert alive.replies >= 1
    proxy.freeze()
    frozen = time.monotonic()
    assert called.wait(config.detection_bound + 5)
    elapsed = verdicts[0][0] - frozen
    # At most the bound after the last packet (which came before the freeze); never before
    # the misses' windows ran out.
    assert config.timeout * config.misses <= elapsed <= config.detection_bound + TOLERANCE
    assert isinstance(alive.error, PeerUnresponsive)
    assert verdicts[0][1] is alive.error
    assert "no reply to 2 heartbeat pings" in str(alive.error)
    # Measured from the last packet, the verdict comes at the bound, never before it.
    found = re.search(r"nothing received for ([0-9.]+) s", str(alive.error))
    assert found is not None
    silent = float(found.group(1))
    assert config.detection_bound <= silent <= config.detection_bound + TOLERANCE
    assert alive.wait(5)
    assert not transport.is_active()
    with pytest.raises(PeerUnresponsive):
        alive.check()
    print(f"verdict {elapsed:.3f} s after the freeze, {silent:.3f} s after the last packet")


def test_paramikos_own_keepalive_never_declares_the_frozen_server_dead(
    client: Any, proxy: FaultProxy
) -> None:
    """The gap this integration fills: set_keepalive's requests want no reply."""
    transport = client.get_transport()
    transport.set_keepalive(1)
    proxy.freeze()
    time.sleep(2.5)  # longer than our test's whole detection bound
    assert transport.is_active()


def test_one_monitor_per_transport(client: Any) -> None:
    alive = server_alive(client, HeartbeatConfig(interval=30, timeout=5))
    with pytest.raises(ValueError, match="already watched"):
        server_alive(client, HeartbeatConfig(interval=30, timeout=5))
    alive.stop()


def test_monitor_ends_when_the_transport_closes(client: Any) -> None:
    alive = server_alive(client, HeartbeatConfig(interval=30, timeout=5))
    assert alive.running
    started = time.monotonic()
    client.close()
    assert alive.wait(3)
    assert time.monotonic() - started < 2  # not after the 30 s interval
    assert alive.error is None


def test_stop_leaves_the_transport_open(client: Any) -> None:
    alive = server_alive(client, HeartbeatConfig(interval=0.05, timeout=1))
    time.sleep(0.3)
    alive.stop()
    assert not alive.running
    sent = alive.pings_sent
    time.sleep(0.2)
    assert alive.pings_sent == sent
    assert run(client, "echo still") == b"still\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers")
def test_kernel_keepalive_on_the_transport_socket(client: Any) -> None:
    sock = client.get_transport().sock
    assert isinstance(sock, socket.socket)
    read = {
        name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
        for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
    }
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert read == {
        "TCP_KEEPIDLE": 37,
        "TCP_KEEPINTVL": 7,
        "TCP_KEEPCNT": 4,
        "TCP_USER_TIMEOUT": 23500,
    }


def test_refuses_what_it_cannot_watch(client: Any) -> None:
    with pytest.raises(keepalive.InvalidSettingType):
        ServerAlive(client.get_transport(), 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ServerAlive(object(), HeartbeatConfig(interval=1, timeout=1))
    paramiko = require_module("paramiko")
    with pytest.raises(ValueError, match="not connected"):
        server_alive(paramiko.SSHClient(), HeartbeatConfig(interval=1, timeout=1))
