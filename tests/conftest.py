"""Shared pytest configuration.

The fault proxy and echo server fixtures come from keepalive's own pytest plugin (registered
as a ``pytest11`` entry point when the package is installed); the network-namespace fixture
from tests/netns.py; the event loop parameter of the asyncio tests (asyncio, uvloop) from
tests/loops.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Shared check modules: their asserts report values, as the test modules' own do.
pytest.register_assert_rewrite(
    "loopback_peers", "sockets_seen", "supervisor_checks", "tls_certs", "trio_streams"
)

from servers import AmqpServer, rabbitmq_server  # noqa: E402 - after the rewrite hook

pytest_plugins = ["netns", "loops"]


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[AmqpServer]:
    """One RabbitMQ per test process: the tests using it carry ``servers.RABBITMQ_GROUP``, so
    pytest-xdist runs them on one worker and the broker starts once per run (a start costs
    about 10 s of CPU and 14 s)."""
    with rabbitmq_server() as server:
        yield server
