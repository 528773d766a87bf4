"""The check probe (keepalive.diagnostics.check) on its own: it reports its stages, in order,
to a callback, renders nothing, and leaves exit statuses to the command line. Loopback only."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepalive.config import KeepaliveConfig
from keepalive.diagnostics import check as probe
from keepalive.heartbeat import HeartbeatConfig
from keepalive.testing import EchoServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def _options(
    host: str,
    port: int,
    *,
    heartbeat: HeartbeatConfig | None = None,
    duration: float | None = None,
    retries: int = 0,
) -> probe.CheckOptions:
    ping = b"PING\n" if heartbeat is not None else None
    return probe.CheckOptions(
        host=host,
        port=port,
        config=KeepaliveConfig(idle=7),
        given=frozenset({"idle"}),
        heartbeat=heartbeat,
        ping=ping,
        pong=b"PONG\n" if ping is not None else None,
        duration=duration,
        retries=retries,
        connect_timeout=2.0,
    )


def _kinds(events: list[probe.CheckEvent]) -> list[str]:
    """Event class names in order, each run of progress ticks collapsed into one."""
    kinds: list[str] = []
    for event in events:
        name = type(event).__name__
        if not (kinds and kinds[-1] == name and name.endswith("Progress")):
            kinds.append(name)
    return kinds


def _free_port() -> int:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port: int = spare.getsockname()[1]
    return port


def test_heartbeat_stages_come_in_order_and_nothing_is_rendered(
    echo_server: EchoServer, capfd: pytest.CaptureFixture[str]
) -> None:
    host, port = echo_server.address
    events: list[probe.CheckEvent] = []
    heartbeat = HeartbeatConfig(interval=0.1, timeout=5)
    result = probe.run_check(_options(host, port, heartbeat=heartbeat, duration=0.8), events.append)

    assert _kinds(events) == ["Connecting", "Connected", "HeartbeatStarted", "HeartbeatProgress"]
    connecting, connected, started = events[:3]
    assert connecting == probe.Connecting(host, port, None)
    assert isinstance(connected, probe.Connected)
    assert connected.result is result
    assert isinstance(started, probe.HeartbeatStarted)
    assert started.run is result.heartbeat
    ticks = [event for event in events if isinstance(event, probe.HeartbeatProgress)]
    assert [tick.elapsed for tick in ticks] == sorted(tick.elapsed for tick in ticks)
    assert all(tick.duration == 0.8 for tick in ticks)
    assert [tick.pings_sent for tick in ticks] == sorted(tick.pings_sent for tick in ticks)

    assert (result.healthy, result.interrupted, result.error) == (True, False, None)
    assert result.remote == f"{host}:{port}"
    idle = next(item for item in result.settings if item.setting == "idle")
    assert (idle.requested, idle.given, idle.matches) == (7, True, True)
    assert result.heartbeat is not None
    assert result.heartbeat.pongs_received
    summary = result.heartbeat.rtt.summary()
    assert summary is not None
    assert 0 < summary.min <= summary.avg <= summary.max
    assert capfd.readouterr() == ("", "")  # the probe renders nothing; the CLI does


def test_watch_stages(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    events: list[probe.CheckEvent] = []
    result = probe.run_check(_options(host, port, duration=0.3), events.append)
    assert _kinds(events) == ["Connecting", "Connected", "WatchStarted", "WatchProgress"]
    assert events[2] == probe.WatchStarted(0.3)
    assert result.healthy
    assert result.watch is not None
    assert result.watch.outcome == "alive"


def test_a_refused_connection_reports_each_retry_then_stops() -> None:
    port = _free_port()
    events: list[probe.CheckEvent] = []
    result = probe.run_check(_options("127.0.0.1", port, retries=1), events.append)
    assert _kinds(events) == ["Connecting", "ConnectRetry"]
    (retry,) = [event for event in events if isinstance(event, probe.ConnectRetry)]
    assert retry == probe.ConnectRetry(1, "connection refused")
    assert not result.healthy
    assert result.error_kind == "connect"
    assert result.error is not None
    assert "2 attempts" in result.error
    assert (result.local, result.settings) == (None, [])


def test_a_name_that_cannot_be_a_host_is_refused_before_any_resolver() -> None:
    events: list[probe.CheckEvent] = []
    result = probe.run_check(_options("bad host", 80), events.append)
    (connecting,) = events
    assert isinstance(connecting, probe.Connecting)
    assert connecting.host_problem is not None
    assert "not a valid host name" in connecting.host_problem
    assert (result.error_kind, result.attempts) == ("resolve", 0)


def test_without_a_callback(echo_server: EchoServer) -> None:
    host, port = echo_server.address
    assert probe.run_check(_options(host, port)).healthy


def test_the_probe_imports_no_command_line_code() -> None:
    code = (
        "import sys, keepalive.diagnostics.check; "
        "print(sorted(m for m in sys.modules if m.startswith('keepalive.cli')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"
