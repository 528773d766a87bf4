"""pytest fixtures for :mod:`keepalive.testing`: a fault-injecting proxy and an echo server.

Registered as a ``pytest11`` entry point, so with ``tcp-keepalive`` installed the fixtures are
available in every test session::

    def test_heartbeat_sees_past_the_nat(echo_server, fault_proxy):
        proxy = fault_proxy(echo_server.address)
        sock = socket.create_connection(proxy.address)
        proxy.freeze()
        ...

Both fixtures close what they started at teardown and fail the test if a background thread
died of an unexpected error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import pytest

from keepalive.testing import EchoServer, FaultProxy

__all__ = ["FaultProxyFactory", "echo_server", "fault_proxy"]


class FaultProxyFactory(Protocol):
    """The ``fault_proxy`` fixture: call it to get a started :class:`FaultProxy`."""

    def __call__(
        self, upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> FaultProxy: ...


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxyFactory]:
    """A factory: ``fault_proxy(upstream, listen=...)`` returns a started :class:`FaultProxy`.

    Every proxy it made is closed at teardown.
    """
    proxies: list[FaultProxy] = []

    def make(
        upstream: tuple[str, int], *, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> FaultProxy:
        proxy = FaultProxy(upstream, listen=listen)
        proxies.append(proxy)
        return proxy.start()

    yield make
    failures: list[BaseException] = []
    for proxy in proxies:
        try:
            proxy.close()
        except RuntimeError as exc:  # the proxy thread died: report it after closing the rest
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    """A started :class:`EchoServer` on 127.0.0.1 answering ``PING\\n`` with ``PONG\\n``."""
    with EchoServer() as server:
        yield server
