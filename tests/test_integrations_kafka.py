"""keepalive.integrations.kafka: kafka-python's ``socket_options``.

No Kafka broker can run on the CI machine (no Debian package; Apache's downloads are not on a
package registry it reaches), so the real kafka-python client bootstraps from a stand-in that
answers ApiVersions and Metadata (tests/servers.py ``kafka_standin``); the options are read back
with getsockopt from the client's live connection while the stand-in holds its Metadata reply.
"""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

import pytest

from keepalive import KeepaliveConfig, UnsupportedOption
from keepalive.integrations.kafka import socket_options
from keepalive.platforms import Platform, catalog, detect
from tests.servers import client_sockets_to, kafka_standin, require_module

# kafka-python 3.0 reads its protocol schemas with importlib.resources' deprecated helpers.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated. Use files:DeprecationWarning")

CFG = KeepaliveConfig(idle=7, interval=3, count=4, user_timeout=25.0001)
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _platform(label: str) -> Platform:
    variant = catalog.variant(label)
    return detect(variant.sys_platform, variant.namespace, variant.release)


def test_kafka_pythons_default_is_kept_ahead_of_keepalives() -> None:
    require_module("kafka")
    linux = _platform("Linux")
    options = socket_options(CFG, platform=linux)
    # TCP_USER_TIMEOUT 18, TCP_KEEPIDLE 4, TCP_KEEPINTVL 5, TCP_KEEPCNT 6 (linux/tcp.h);
    # SO_KEEPALIVE (1, 9) last, in configure()'s order.
    assert options == [NODELAY, (6, 18, 25001), (6, 4, 7), (6, 5, 3), (6, 6, 4), (1, 9, 1)]


def test_windows_ioctl_and_unsupported_settings_are_refused() -> None:
    require_module("kafka")
    with pytest.raises(UnsupportedOption):
        socket_options(KeepaliveConfig(), platform=_platform("Windows before 10 1703"))
    with pytest.raises(UnsupportedOption, match="user_timeout"):
        socket_options(CFG, platform=_platform("NetBSD"))
    lenient = socket_options(CFG, strict=False, platform=_platform("NetBSD"))
    assert len(lenient) == 5  # TCP_NODELAY, idle, interval, count, SO_KEEPALIVE


@pytest.mark.skipif(sys.platform != "linux", reason="reads Linux socket options")
def test_options_reach_the_live_connection() -> None:
    kafka = require_module("kafka")
    made: list[Any] = []
    failed: list[BaseException] = []

    def bootstrap(port: int) -> None:
        try:
            made.append(
                kafka.KafkaProducer(
                    bootstrap_servers=f"127.0.0.1:{port}", socket_options=socket_options(CFG)
                )
            )
        except BaseException as exc:  # reported by the test thread
            failed.append(exc)

    with kafka_standin(hold_metadata=True) as broker:
        client = threading.Thread(target=bootstrap, args=(broker.port,), daemon=True)
        client.start()
        try:
            assert broker.metadata_requested.wait(20), (broker.requests, failed)
            found = client_sockets_to(broker.port)
            assert len(found) == 1
            with found[0] as sock:
                tcp = socket.IPPROTO_TCP
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(tcp, socket.TCP_NODELAY) == 1  # kafka-python's default
                assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == 7
                assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == 3
                assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == 4
                assert sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 25001
        finally:
            broker.release.set()
            client.join(20)
    assert not failed, failed
    assert len(made) == 1
    made[0].close(timeout=1)
    # The client asked for ApiVersions (its newest version, then v0 as told) and Metadata.
    assert [key for key, _version in broker.requests[:3]] == [18, 18, 3]
    assert broker.requests[1:3] == [(18, 0), (3, 0)]
