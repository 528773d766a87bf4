"""Shared pytest configuration.

The fault proxy and echo server fixtures come from keepalive's own pytest plugin (registered
as a ``pytest11`` entry point when the package is installed); the network-namespace fixture
from tests/netns.py; the event loop parameter of the asyncio tests (asyncio, uvloop) from
tests/loops.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import AmqpServer, rabbitmq_server

pytest_plugins = ["netns", "loops"]


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[AmqpServer]:
    """One RabbitMQ per test process: the tests using it carry ``servers.RABBITMQ_GROUP``, so
    pytest-xdist runs them on one worker and the broker starts once per run (a start costs
    about 10 s of CPU and 14 s)."""
    with rabbitmq_server() as server:
        yield server
