"""SQLAlchemy with ``connect_args=libpq_params(cfg)`` against a real PostgreSQL, and what
``pool_pre_ping`` does on a dead connection with and without the kernel options.

The recipe test reads the options back from the socket libpq connected for the engine. The
pre-ping tests time a checkout (``engine.connect()``) of a pooled connection after a fault:

- a frozen :class:`keepalive.testing.FaultProxy` (a userspace relay whose kernel still ACKs
  every byte): the ping blocks with or without ``tcp_user_timeout``, since no byte is ever
  left unacknowledged and every keepalive probe is answered;
- a black hole in a private network namespace (nftables drops the segments, so the ping goes
  unacknowledged): without options the ping blocks; ``tcp_user_timeout`` fails it after the
  timeout and the pool replaces the connection in the same checkout; kernel keepalive kills a
  connection that went dead while idle in the pool, so the ping fails at once.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from netns import Namespace, netns_fixture  # noqa: F401 - fixture `netns`
from servers import PostgresServer, postgres_server, require_module
from sockets_seen import CFG, WANTED, configured_sockets, server_fixture

from keepalive import KeepaliveConfig
from keepalive.integrations import libpq_params
from keepalive.testing import FaultProxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers"),
]

USER_TIMEOUT = 2.0
WITH_USER_TIMEOUT = KeepaliveConfig(idle=60, interval=10, count=5, user_timeout=USER_TIMEOUT)
BLOCKED_FOR = 5.0  # well past the user timeout: a checkout still running then is blocked
TOLERANCE = 2.5  # scheduling noise on a loaded 2-core machine, plus a reconnect and a query


pg = server_fixture(postgres_server, before=lambda: require_module("sqlalchemy"))


def engine_for(port: int, connect_args: dict[str, Any], **engine_kwargs: Any) -> Any:
    sqlalchemy = require_module("sqlalchemy")
    url = sqlalchemy.URL.create(
        "postgresql+psycopg", username="postgres", host="127.0.0.1", port=port, database="postgres"
    )
    return sqlalchemy.create_engine(url, connect_args=connect_args, **engine_kwargs)


def pooled_engine(port: int, cfg: KeepaliveConfig | None, **connect_args: Any) -> Any:
    """One pooled connection, pinged on every checkout."""
    args = {**(libpq_params(cfg) if cfg is not None else {}), **connect_args}
    return engine_for(port, args, pool_size=1, max_overflow=0, pool_pre_ping=True)


def backend_pid(engine: Any) -> int:
    """Check a connection out (pre-ping included) and ask which server process serves it."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())


def local_port(engine: Any) -> int:
    """The client port of the engine's pooled connection (libpq's socket, via psycopg)."""
    with engine.connect() as conn:
        fd = conn.connection.dbapi_connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            return int(sock.getsockname()[1])


@dataclass
class Checkout:
    """A checkout running in a thread, so that a blocked one cannot hang the test."""

    thread: threading.Thread
    started: float
    pid: int | None = None
    error: BaseException | None = None
    seconds: float | None = None

    def wait(self, timeout: float) -> bool:
        """True once the checkout has finished."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


def start_checkout(engine: Any) -> Checkout:
    checkout = Checkout(threading.Thread(daemon=True), time.monotonic())

    def run() -> None:
        try:
            checkout.pid = backend_pid(engine)
        except Exception as exc:  # the outcome under test, reported to the test thread
            checkout.error = exc
        finally:
            checkout.seconds = time.monotonic() - checkout.started

    checkout.thread = threading.Thread(target=run, name="checkout", daemon=True)
    checkout.thread.start()
    return checkout


# -- the recipe ---------------------------------------------------------------------------------


def test_connect_args_reach_the_engines_socket(pg: PostgresServer) -> None:
    engine = engine_for(pg.port, libpq_params(CFG))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            assert configured_sockets(pg.port) == [WANTED]
    finally:
        engine.dispose()


def test_the_keywords_also_work_in_the_url_query(pg: PostgresServer) -> None:
    sqlalchemy = require_module("sqlalchemy")
    query = {key: str(value) for key, value in libpq_params(CFG).items()}
    url = sqlalchemy.URL.create(
        "postgresql+psycopg",
        username="postgres",
        host="127.0.0.1",
        port=pg.port,
        database="postgres",
        query=query,
    )
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            assert configured_sockets(pg.port) == [WANTED]
    finally:
        engine.dispose()


def test_without_connect_args_the_socket_has_no_keepalive(pg: PostgresServer) -> None:
    """The control: the options above come from connect_args, not from libpq's defaults
    (libpq turns SO_KEEPALIVE on by itself, with the system's timings)."""
    engine = engine_for(pg.port, {})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            [found] = configured_sockets(pg.port)
    finally:
        engine.dispose()
    assert found["TCP_USER_TIMEOUT"] == 0
    assert (found["TCP_KEEPIDLE"], found["TCP_KEEPCNT"]) != (37, 4)


# -- pool_pre_ping through a proxy that keeps ACKing ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [None, WITH_USER_TIMEOUT], ids=["no-options", "user-timeout"])
def test_pre_ping_through_a_frozen_proxy_blocks_even_with_the_user_timeout(
    pg: PostgresServer, cfg: KeepaliveConfig | None
) -> None:
    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        engine = pooled_engine(proxy.address[1], cfg)
        try:
            first = backend_pid(engine)
            proxy.freeze()
            checkout = start_checkout(engine)
            assert not checkout.wait(BLOCKED_FOR), (
                f"the pre-ping returned through a frozen proxy: {checkout}"
            )
            # The relay's kernel ACKed the ping, so the user timeout never started counting.
            # Reset while still frozen (forwarding first could deliver the held ping): the
            # flow dies, the blocked ping fails, and the pool's new connection, frozen or
            # not yet made, goes through once the proxy forwards again.
            proxy.reset()
            proxy.forward()
            assert checkout.wait(10), "the checkout did not end after the proxy reset the flow"
            assert checkout.error is None, checkout.error
            assert checkout.pid is not None
            assert checkout.pid != first
        finally:
            engine.dispose()


# -- pool_pre_ping on a black hole (bytes unacknowledged) ---------------------------------------


@pytest.fixture
def netns_pg(netns: Namespace) -> Iterator[tuple[Namespace, PostgresServer]]:
    """PostgreSQL started inside the test's private namespace (pg_ctl inherits it)."""
    require_module("sqlalchemy")
    with postgres_server() as server:
        yield netns, server


@pytest.mark.netns
@pytest.mark.slow
def test_pre_ping_on_a_black_hole_blocks_without_options(
    netns_pg: tuple[Namespace, PostgresServer],
) -> None:
    netns, pg = netns_pg
    engine = pooled_engine(pg.port, None)
    try:
        first = backend_pid(engine)
        fault = netns.black_hole(local_port(engine))  # this flow only
        checkout = start_checkout(engine)
        assert not checkout.wait(BLOCKED_FOR), f"the pre-ping returned: {checkout}"
        assert fault.packets > 0  # the ping was sent and dropped, again and again
        fault.remove()
        # The next retransmission gets through and the ping completes on the same connection.
        assert checkout.wait(30), "the ping did not complete after the path healed"
        assert checkout.error is None, checkout.error
        assert checkout.pid == first
    finally:
        engine.dispose()


@pytest.mark.netns
@pytest.mark.slow
def test_pre_ping_on_a_black_hole_fails_after_the_user_timeout_and_the_pool_reconnects(
    netns_pg: tuple[Namespace, PostgresServer],
) -> None:
    netns, pg = netns_pg
    engine = pooled_engine(pg.port, WITH_USER_TIMEOUT)
    try:
        first = backend_pid(engine)
        fault = netns.black_hole(local_port(engine))  # this flow only: a new one works
        checkout = start_checkout(engine)
        assert checkout.wait(USER_TIMEOUT + TOLERANCE), "the user timeout did not bound the ping"
        assert checkout.error is None, checkout.error
        assert checkout.seconds is not None
        assert checkout.seconds >= USER_TIMEOUT - 0.3, checkout.seconds
        assert checkout.pid not in (None, first)  # replaced within the same checkout
        assert fault.packets > 0
    finally:
        engine.dispose()


@pytest.mark.netns
@pytest.mark.slow
def test_a_vanished_server_fails_the_checkout_within_user_and_connect_timeout(
    netns_pg: tuple[Namespace, PostgresServer],
) -> None:
    """The whole server unreachable (its port black-holed): the ping fails after the user
    timeout, the reconnect after libpq's connect_timeout, and the checkout raises. Once the
    path heals, the next checkout gets a new connection."""
    sqlalchemy = require_module("sqlalchemy")
    netns, pg = netns_pg
    connect_timeout = 2
    engine = pooled_engine(pg.port, WITH_USER_TIMEOUT, connect_timeout=connect_timeout)
    try:
        first = backend_pid(engine)
        fault = netns.black_hole(pg.port)
        checkout = start_checkout(engine)
        bound = USER_TIMEOUT + connect_timeout
        assert checkout.wait(bound + TOLERANCE), "the checkout was not bounded"
        assert isinstance(checkout.error, sqlalchemy.exc.OperationalError), checkout.error
        assert checkout.seconds is not None
        assert checkout.seconds >= bound - 0.5, checkout.seconds
        fault.remove()
        assert backend_pid(engine) != first
    finally:
        engine.dispose()


@pytest.mark.netns
@pytest.mark.slow
def test_kernel_keepalive_retires_a_connection_that_died_idle_in_the_pool(
    netns_pg: tuple[Namespace, PostgresServer],
) -> None:
    """No user timeout: keepalive (1 s idle, 2 probes 1 s apart) declares the idle pooled
    connection dead before the checkout, so the ping fails at once and the pool reconnects."""
    netns, pg = netns_pg
    idle_keepalive = KeepaliveConfig(idle=1, interval=1, count=2)
    engine = pooled_engine(pg.port, idle_keepalive)
    try:
        first = backend_pid(engine)
        netns.black_hole(local_port(engine))
        time.sleep(idle_keepalive.detection_bound + 1.5)
        checkout = start_checkout(engine)
        assert checkout.wait(TOLERANCE), "the dead pooled connection was not retired at once"
        assert checkout.error is None, checkout.error
        assert checkout.pid not in (None, first)
    finally:
        engine.dispose()
