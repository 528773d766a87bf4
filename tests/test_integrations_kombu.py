"""keepalive.integrations.kombu: kombu (py-amqp and Redis transports) and celery settings.

Against RabbitMQ and Redis: the options are read back with getsockopt from the socket the
library opened, and py-amqp's heartbeat verdict is measured through a frozen
:class:`~keepalive.testing.FaultProxy` (a userspace NAT that lost the broker).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from servers import (
    RABBITMQ_GROUP,
    AmqpServer,
    RedisServer,
    client_sockets_to,
    redis_server,
    require_module,
)

from keepalive import HeartbeatConfig, InvalidSetting, KeepaliveConfig, UnsupportedOption
from keepalive.integrations.kombu import (
    celery_settings,
    connection_kwargs,
    detection_bound,
    heartbeat_timeout,
    socket_settings,
)
from keepalive.platforms import Platform, catalog, detect
from keepalive.testing import FaultProxy

CFG = KeepaliveConfig(idle=7, interval=3, count=4, user_timeout=25.0001)
TOLERANCE = 2.0  # seconds past a bound, for a loaded 2-core machine
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux socket options")
pytestmark = RABBITMQ_GROUP  # one broker for every test that needs it (tests/conftest.py)

# Linux's numbers (include/uapi/linux/tcp.h): TCP_KEEPIDLE 4, TCP_KEEPINTVL 5, TCP_KEEPCNT 6,
# TCP_USER_TIMEOUT 18.
LINUX_SETTINGS = {4: 7, 5: 3, 6: 4, 18: 25001}


def _platform(label: str) -> Platform:
    variant = catalog.variant(label)
    return detect(variant.sys_platform, variant.namespace, variant.release)


# -- socket_settings and the heartbeat mapping -------------------------------------------------


def test_socket_settings_are_option_numbers_in_native_units() -> None:
    assert socket_settings(CFG, platform=_platform("Linux")) == LINUX_SETTINGS


def test_without_a_user_timeout_py_amqps_one_second_default_is_undone_on_linux() -> None:
    settings = socket_settings(
        KeepaliveConfig(idle=7, interval=3, count=4), platform=_platform("Linux")
    )
    assert settings == {4: 7, 5: 3, 6: 4, 18: 0}
    # py-amqp sets no TCP_USER_TIMEOUT on macOS: nothing to undo there.
    darwin = socket_settings(
        KeepaliveConfig(idle=7, interval=3, count=4), platform=_platform("macOS, Python 3.10+")
    )
    assert darwin == {0x10: 7, 0x101: 3, 0x102: 4}  # TCP_KEEPALIVE is macOS' idle option


def test_what_no_setsockopt_can_carry_is_refused() -> None:
    with pytest.raises(UnsupportedOption):
        socket_settings(KeepaliveConfig(), platform=_platform("Windows before 10 1703"))
    with pytest.raises(UnsupportedOption, match="user_timeout"):
        socket_settings(CFG, platform=_platform("NetBSD"))


def test_detection_bound_and_timeout() -> None:
    assert detection_bound(1) == 3.0
    assert detection_bound(10, check_rate=3.0) == pytest.approx(26.6667, abs=1e-3)
    assert heartbeat_timeout(HeartbeatConfig(interval=1, timeout=2)) == 1  # bound 3 s
    assert heartbeat_timeout(HeartbeatConfig(interval=30, timeout=10, misses=3)) == 20
    with pytest.raises(InvalidSetting, match=r"at least 3 s.*this one is 2.9 s"):
        heartbeat_timeout(HeartbeatConfig(interval=1, timeout=1.9))
    with pytest.raises(InvalidSetting, match=r"check_rate=0 .*checks per heartbeat timeout"):
        heartbeat_timeout(HeartbeatConfig(interval=30, timeout=10), check_rate=0)
    rate: Any = "2"
    with pytest.raises(TypeError, match="check_rate"):
        heartbeat_timeout(HeartbeatConfig(interval=30, timeout=10), check_rate=rate)
    week = 7 * 86400.0
    assert heartbeat_timeout(HeartbeatConfig(interval=week, timeout=week)) == 65535  # 16 bits


def test_kwargs_by_transport() -> None:
    linux = _platform("Linux")
    heartbeat = HeartbeatConfig(interval=30, timeout=10, misses=3)
    assert connection_kwargs(CFG, heartbeat=heartbeat, platform=linux) == {
        "transport_options": {"socket_settings": LINUX_SETTINGS},
        "heartbeat": 20,
    }
    assert celery_settings(CFG, heartbeat=heartbeat, platform=linux) == {
        "broker_transport_options": {"socket_settings": LINUX_SETTINGS},
        "broker_heartbeat": 20,
        "broker_heartbeat_checkrate": 2.0,
    }
    assert celery_settings(CFG, transport="redis", platform=linux) == {
        "broker_transport_options": {
            "socket_keepalive": True,
            "socket_keepalive_options": LINUX_SETTINGS,
        }
    }
    with pytest.raises(InvalidSetting, match="health_check_interval"):
        celery_settings(CFG, heartbeat=heartbeat, transport="redis")
    with pytest.raises(InvalidSetting, match="transport"):
        connection_kwargs(CFG, transport="sqs")


# -- against RabbitMQ and Redis ----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _read_back(port: int) -> dict[int, int]:
    """TCP_KEEP* and TCP_USER_TIMEOUT of this process's one connection to ``port``."""
    found = client_sockets_to(port)
    assert len(found) == 1, found
    with found[0] as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        return {
            optname: sock.getsockopt(socket.IPPROTO_TCP, optname)
            for optname in (
                socket.TCP_KEEPIDLE,
                socket.TCP_KEEPINTVL,
                socket.TCP_KEEPCNT,
                socket.TCP_USER_TIMEOUT,
            )
        }


def _amqp_url(port: int) -> str:
    return f"pyamqp://guest:guest@127.0.0.1:{port}//"


@linux_only
def test_kombu_amqp_connection(rabbitmq: AmqpServer) -> None:
    kombu = require_module("kombu")
    heartbeat = HeartbeatConfig(interval=10, timeout=10, misses=2)  # bound 30 s -> T = 10
    with kombu.Connection(
        _amqp_url(rabbitmq.port), **connection_kwargs(CFG, heartbeat=heartbeat)
    ) as connection:
        connection.ensure_connection(max_retries=1)
        assert _read_back(rabbitmq.port) == LINUX_SETTINGS
        assert connection.get_heartbeat_interval() == 10  # negotiated with the broker


@linux_only
def test_py_amqp_default_user_timeout_is_undone(rabbitmq: AmqpServer) -> None:
    kombu = require_module("kombu")
    with kombu.Connection(_amqp_url(rabbitmq.port)) as plain:
        plain.ensure_connection(max_retries=1)
        assert _read_back(rabbitmq.port)[socket.TCP_USER_TIMEOUT] == 1000  # py-amqp's own
    no_user_timeout = KeepaliveConfig(idle=7, interval=3, count=4)
    with kombu.Connection(
        _amqp_url(rabbitmq.port), **connection_kwargs(no_user_timeout)
    ) as connection:
        connection.ensure_connection(max_retries=1)
        assert _read_back(rabbitmq.port)[socket.TCP_USER_TIMEOUT] == 0


@linux_only
def test_kombu_heartbeat_detects_a_frozen_broker_within_the_bound(rabbitmq: AmqpServer) -> None:
    kombu = require_module("kombu")
    # T = 2: RabbitMQ drops a client silent for about 2 T, and at T = 1 a loaded machine
    # delayed the client's heartbeats that long.
    kwargs = connection_kwargs(heartbeat=HeartbeatConfig(interval=2, timeout=4))
    bound = detection_bound(kwargs["heartbeat"])  # 6 s at rate 2
    with FaultProxy(("127.0.0.1", rabbitmq.port)) as proxy:
        host, port = proxy.address
        connection = kombu.Connection(f"pyamqp://guest:guest@{host}:{port}//", **kwargs)
        try:
            connection.ensure_connection(max_retries=1)
            assert connection.get_heartbeat_interval() == 2
            period = 2 / 2  # heartbeat / rate, as celery's worker calls it

            def check_for(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    connection.heartbeat_check(rate=2)
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=period)

            check_for(3.0)  # healthy: heartbeats flow both ways, no verdict
            proxy.freeze()
            frozen_at = time.monotonic()
            with pytest.raises(connection.connection_errors) as caught:
                check_for(bound + TOLERANCE + 5)
            detected_after = time.monotonic() - frozen_at
        finally:
            # Not release(): its Connection.Close waits for the broker's reply, forever on a
            # frozen path. collect() drops the connection without I/O.
            connection.collect()
    assert "heartbeats missed" in str(caught.value)
    # The last byte came at most T / 2 before the freeze, the verdict 2 T after a check.
    assert 2 * 2 - 1 - 0.5 <= detected_after <= bound + TOLERANCE, detected_after


def _celery_app(broker: str, settings: dict[str, Any]) -> Any:
    celery = require_module("celery")
    app = celery.Celery("keepalive-test", broker=broker, set_as_current=False)
    app.conf.update(settings)
    return app


@linux_only
def test_celery_amqp_broker_connection(rabbitmq: AmqpServer) -> None:
    heartbeat = HeartbeatConfig(interval=10, timeout=10, misses=2)  # bound 30 s -> T = 10
    app = _celery_app(_amqp_url(rabbitmq.port), celery_settings(CFG, heartbeat=heartbeat))
    # As celery's worker opens its consumer connection (Consumer.connect).
    with app.connection_for_read(heartbeat=app.conf.broker_heartbeat) as connection:
        connection.ensure_connection(max_retries=1)
        assert _read_back(rabbitmq.port) == LINUX_SETTINGS
        assert connection.get_heartbeat_interval() == 10
    assert app.conf.broker_heartbeat_checkrate == 2.0


@linux_only
def test_celery_redis_broker_connection(redis: RedisServer) -> None:
    app = _celery_app(f"redis://127.0.0.1:{redis.port}/0", celery_settings(CFG, transport="redis"))
    with app.connection_for_write() as connection:
        connection.default_channel.client.ping()
        assert _read_back(redis.port) == LINUX_SETTINGS
