"""kafka-python: kernel keepalive through ``socket_options``, urllib3's shape.

``KafkaProducer(bootstrap_servers=..., socket_options=socket_options(cfg))``, and likewise
``KafkaConsumer`` and ``KafkaAdminClient``: kafka-python calls ``sock.setsockopt(*option)``
for each ``(level, option, value)`` before connecting, on every broker connection (bootstrap
and per node). Passing ``socket_options`` replaces kafka-python's default
(``[(IPPROTO_TCP, TCP_NODELAY, 1)]``), so the default is kept here, as
:func:`keepalive.integrations.urllib3_socket_options` keeps urllib3's.

Kafka has no heartbeat that proves the broker alive to the client: the consumer group's
heartbeats go to the group coordinator and only tell the *broker* the consumer is alive, and a
request waits up to ``request_timeout_ms`` (30 s by default) for its reply. Kernel keepalive
and the user timeout bound the silent death of an idle broker connection.

kafka-python is imported only to read its default options. Tested with kafka-python 3.0.12
against a local stand-in broker (ApiVersions and Metadata): no Kafka broker can run on the CI
machine (no Debian package; Apache's downloads are not on a package registry it reaches).
"""

from __future__ import annotations

import importlib

from keepalive.config import KeepaliveConfig
from keepalive.integrations._common import _checked, _missing, _platform
from keepalive.platforms import Platform
from keepalive.sockets import socket_options as _keepalive_options

__all__ = ["socket_options"]


def socket_options(
    cfg: KeepaliveConfig | None = None,
    *,
    strict: bool = True,
    platform: Platform | None = None,
) -> list[tuple[int, int, int]]:
    """kafka-python's default ``socket_options`` (TCP_NODELAY) plus keepalive's, for the
    ``socket_options=`` of ``KafkaProducer``, ``KafkaConsumer`` and ``KafkaAdminClient``.

    Rounded as :func:`keepalive.configure` rounds on this platform. Raises
    :class:`~keepalive.UnsupportedOption` under ``strict`` where a setting cannot be honoured,
    and wherever the platform needs an ioctl (Windows before 10 1709).
    """
    config, strict = _checked(cfg, strict)
    target = _platform(platform)
    try:
        kafka = importlib.import_module("kafka")  # untyped: its defaults are read as Any
    except ImportError as exc:
        raise _missing("kafka", "kafka.socket_options", "kafka-python") from exc
    ours = _keepalive_options(config, strict=strict, platform=target)
    ours_keys = {(level, optname) for level, optname, _value in ours}
    defaults: list[tuple[int, int, int]] = [
        (level, optname, value)
        for level, optname, value in kafka.KafkaProducer.DEFAULT_CONFIG["socket_options"]
        if (level, optname) not in ours_keys
    ]
    return [*defaults, *ours]
