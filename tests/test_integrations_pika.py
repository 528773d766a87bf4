"""keepalive.integrations.pika: pika's ``tcp_options`` and AMQP heartbeat, against RabbitMQ.

The options are read back from pika's live socket with getsockopt; the heartbeat's verdict is
measured through a frozen :class:`~keepalive.testing.FaultProxy` (a userspace NAT that lost the
broker: the client's kernel still sees every byte acknowledged). What pika applies on macOS is
checked against pika's own ``tcp_socket_opts`` module, loaded with macOS' socket names.
"""

from __future__ import annotations

import importlib
import socket
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from servers import RABBITMQ_GROUP, AmqpServer, client_sockets_to, require_module

from keepalive import HeartbeatConfig, InvalidSetting, KeepaliveConfig, UnsupportedOption
from keepalive.integrations.pika import (
    MIN_DETECTION_BOUND,
    connection_parameters_kwargs,
    detection_bound,
    heartbeat_timeout,
    tcp_options,
)
from keepalive.platforms import Platform, catalog, detect
from keepalive.testing import FaultProxy

CFG = KeepaliveConfig(idle=7, interval=3, count=4, user_timeout=25.0001)
TOLERANCE = 3.0  # seconds past a bound, for a loaded 2-core machine
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux socket options")
pytestmark = RABBITMQ_GROUP  # one broker for every test that needs it (tests/conftest.py)


def _platform(label: str) -> Platform:
    variant = catalog.variant(label)
    return detect(variant.sys_platform, variant.namespace, variant.release)


# -- tcp_options per platform ------------------------------------------------------------------


def test_linux_options_carry_every_setting_in_native_units() -> None:
    assert tcp_options(CFG, platform=_platform("Linux")) == {
        "TCP_KEEPIDLE": 7,
        "TCP_KEEPINTVL": 3,
        "TCP_KEEPCNT": 4,
        "TCP_USER_TIMEOUT": 25001,  # milliseconds, rounded up as configure() rounds
    }
    assert "TCP_USER_TIMEOUT" not in tcp_options(KeepaliveConfig(), platform=_platform("Linux"))


@pytest.mark.parametrize("label", ["macOS, Python 3.10+", "macOS, Python before 3.10"])
def test_macos_is_refused_under_strict_and_empty_otherwise(label: str) -> None:
    with pytest.raises(UnsupportedOption, match=r"macOS.*TCP_KEEPALIVE.*pika"):
        tcp_options(KeepaliveConfig(), platform=_platform(label))
    assert tcp_options(KeepaliveConfig(), strict=False, platform=_platform(label)) == {}


@pytest.mark.parametrize(
    ("label", "setting"),
    [
        ("Windows 10 1709+", "user_timeout"),  # TCP_MAXRT: no pika key
        ("Windows 10 1703-1708", "idle"),  # SIO_KEEPALIVE_VALS: an ioctl
        ("FreeBSD 14+", "user_timeout"),  # TCP_MAXUNACKTIME
        ("illumos", "user_timeout"),  # TCP_ABORT_THRESHOLD
    ],
)
def test_settings_pika_cannot_apply_are_refused(label: str, setting: str) -> None:
    with pytest.raises(UnsupportedOption) as caught:
        tcp_options(CFG, platform=_platform(label))
    assert caught.value.setting == setting
    kept = tcp_options(CFG, strict=False, platform=_platform(label))
    assert "TCP_USER_TIMEOUT" not in kept


def test_windows_1709_keepalive_keys_are_seconds() -> None:
    assert tcp_options(
        KeepaliveConfig(idle=7, interval=3, count=4), platform=_platform("Windows 10 1709+")
    ) == {"TCP_KEEPIDLE": 7, "TCP_KEEPINTVL": 3, "TCP_KEEPCNT": 4}


def test_bad_values_raise_before_anything() -> None:
    with pytest.raises(InvalidSetting, match="idle"):
        tcp_options(KeepaliveConfig(idle=10**9), platform=_platform("Linux"))
    with pytest.raises(TypeError, match="cfg"):
        tcp_options({"idle": 5})  # type: ignore[arg-type]


class _RecordingSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, optname: int, value: int) -> None:
        self.calls.append((level, optname, value))


@pytest.fixture
def pika_tcp_socket_opts_on_macos(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """pika's own tcp_socket_opts, imported with the socket names Python has on macOS."""
    require_module("pika")
    module = importlib.import_module("pika.tcp_socket_opts")
    for name in ("TCP_KEEPIDLE", "TCP_USER_TIMEOUT"):  # absent from Python on macOS
        monkeypatch.delattr(socket, name, raising=False)
    monkeypatch.setattr(socket, "TCP_KEEPALIVE", 0x10, raising=False)
    monkeypatch.setattr("pika.compat.LINUX_VERSION", None)
    try:
        yield importlib.reload(module)
    finally:
        monkeypatch.undo()
        importlib.reload(module)


def test_pika_applies_only_so_keepalive_on_macos(pika_tcp_socket_opts_on_macos: Any) -> None:
    """Why macOS is refused: given the keys that work on Linux, pika sets nothing but
    SO_KEEPALIVE there (each key is logged as unsupported)."""
    recorder = _RecordingSocket()
    pika_tcp_socket_opts_on_macos.set_sock_opts(tcp_options(CFG), recorder)
    assert recorder.calls == [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]


# -- the heartbeat mapping ---------------------------------------------------------------------


def test_detection_bound_is_two_check_periods() -> None:
    assert detection_bound(1) == MIN_DETECTION_BOUND == 12.0
    assert detection_bound(25) == 60.0
    with pytest.raises(InvalidSetting, match="timeout"):
        detection_bound(0)


@pytest.mark.parametrize(
    ("heartbeat", "timeout"),
    [
        (HeartbeatConfig(interval=6, timeout=6), 1),  # bound 12 s: the shortest pika keeps
        (HeartbeatConfig(interval=30, timeout=10, misses=3), 25),  # 60 s -> 2 * (25 + 5)
        (HeartbeatConfig(interval=30, timeout=10.9, misses=3), 26),  # 62.7 s: not 27 (64 s)
    ],
)
def test_heartbeat_timeout_keeps_the_bound(heartbeat: HeartbeatConfig, timeout: int) -> None:
    assert heartbeat_timeout(heartbeat) == timeout
    assert detection_bound(timeout) <= heartbeat.detection_bound


def test_a_bound_pika_cannot_keep_is_refused() -> None:
    with pytest.raises(InvalidSetting, match=r"at least 12 s.*this one is 11.9 s"):
        heartbeat_timeout(HeartbeatConfig(interval=6, timeout=5.9))
    with pytest.raises(InvalidSetting, match="heartbeat"):
        connection_parameters_kwargs(heartbeat=HeartbeatConfig(interval=1, timeout=1))
    with pytest.raises(TypeError, match="heartbeat"):
        heartbeat_timeout(30)  # type: ignore[arg-type]


def test_heartbeat_timeout_fits_amqps_16_bits() -> None:
    assert heartbeat_timeout(HeartbeatConfig(interval=86400, timeout=86400)) == 65535


def test_kwargs_leave_heartbeat_out_unless_given() -> None:
    assert "heartbeat" not in connection_parameters_kwargs(CFG)


# -- against RabbitMQ --------------------------------------------------------------------------


def _read_back(sock: socket.socket) -> dict[str, int]:
    tcp = socket.IPPROTO_TCP
    return {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "TCP_KEEPINTVL": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "TCP_KEEPCNT": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "TCP_USER_TIMEOUT": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }


@linux_only
def test_options_and_heartbeat_reach_the_live_connection(rabbitmq: AmqpServer) -> None:
    pika = require_module("pika")
    heartbeat = HeartbeatConfig(interval=10, timeout=10, misses=2)  # bound 30 s -> T = 10
    kwargs = connection_parameters_kwargs(CFG, heartbeat=heartbeat)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1", rabbitmq.port, connection_attempts=1, socket_timeout=10, **kwargs
        )
    )
    try:
        connection.channel().queue_declare(queue="keepalive-pika", auto_delete=True)
        found = client_sockets_to(rabbitmq.port)
        assert len(found) == 1
        with found[0] as sock:
            assert _read_back(sock) == {
                "SO_KEEPALIVE": 1,
                "TCP_KEEPIDLE": 7,
                "TCP_KEEPINTVL": 3,
                "TCP_KEEPCNT": 4,
                "TCP_USER_TIMEOUT": 25001,
            }
        # The timeout pika negotiated (and sent in Connection.TuneOk), and its checker's.
        assert connection._impl.params.heartbeat == 10
        assert connection._impl._heartbeat_checker._timeout == 10
    finally:
        connection.close()


def _process_events_for(connection: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        connection.process_data_events(time_limit=0.2)


@linux_only
def test_frozen_broker_is_detected_within_the_bound(rabbitmq: AmqpServer) -> None:
    pika = require_module("pika")
    heartbeat = HeartbeatConfig(interval=6, timeout=6)  # bound 12 s -> T = 1
    kwargs = connection_parameters_kwargs(KeepaliveConfig(), heartbeat=heartbeat)
    bound = detection_bound(kwargs["heartbeat"])
    with FaultProxy(("127.0.0.1", rabbitmq.port)) as proxy:
        host, port = proxy.address
        connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                host, port, connection_attempts=1, socket_timeout=10, **kwargs
            )
        )
        try:
            connection.process_data_events(time_limit=1.5)  # a few heartbeats both ways
            proxy.freeze()
            frozen_at = time.monotonic()
            with pytest.raises(pika.exceptions.AMQPHeartbeatTimeout):
                _process_events_for(connection, bound + TOLERANCE + 5)
            detected_after = time.monotonic() - frozen_at
        finally:
            if connection.is_open:
                connection.close()
    # No sooner than one check period (1 + 5 s) after the last byte, which came at most
    # T / 2 before the freeze; no later than the bound.
    assert 1 + 5 - 0.5 - 0.5 <= detected_after <= bound + TOLERANCE, detected_after
