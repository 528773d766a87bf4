"""keepalive.integrations.asyncpg against a real PostgreSQL on 127.0.0.1.

Each test makes a real query through asyncpg, then reads the options back from the very
socket asyncpg connected (found through psutil by remote port: nothing private of asyncpg's).
A missing asyncpg or PostgreSQL skips, or fails under ``KEEPALIVE_REQUIRE_INTEGRATIONS=1``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from servers import PostgresServer, postgres_server, require_module
from sockets_seen import CFG, WANTED, configured_sockets, server_fixture

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig
from keepalive.integrations.asyncpg import configure_connection, connection_class, pool_init

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers"),
]


pg = server_fixture(postgres_server, before=lambda: require_module("asyncpg"))


def connect_kwargs(pg: PostgresServer) -> dict[str, Any]:
    return {"host": pg.host, "port": pg.port, "user": pg.user, "database": pg.dbname}


def test_connect_with_connection_class(pg: PostgresServer) -> None:
    asyncpg = require_module("asyncpg")

    async def main() -> list[dict[str, int]]:
        conn = await asyncpg.connect(**connect_kwargs(pg), connection_class=connection_class(CFG))
        try:
            assert isinstance(conn, asyncpg.Connection)
            assert await conn.fetchval("SELECT 1") == 1
            return configured_sockets(pg.port)
        finally:
            await conn.close()

    assert asyncio.run(main()) == [WANTED]


def test_pool_with_connection_class(pg: PostgresServer) -> None:
    asyncpg = require_module("asyncpg")

    async def main() -> list[dict[str, int]]:
        async with asyncpg.create_pool(
            **connect_kwargs(pg), min_size=2, max_size=2, connection_class=connection_class(CFG)
        ) as pool:
            assert await pool.fetchval("SELECT 2") == 2
            return configured_sockets(pg.port)

    assert asyncio.run(main()) == [WANTED, WANTED]


def test_pool_init_hook_then_the_applications_init(pg: PostgresServer) -> None:
    asyncpg = require_module("asyncpg")
    initialised: list[object] = []

    async def own_init(conn: Any) -> None:
        initialised.append(conn)
        await conn.execute("SET application_name = 'keepalive-test'")

    async def main() -> list[dict[str, int]]:
        async with asyncpg.create_pool(
            **connect_kwargs(pg), min_size=2, max_size=2, init=pool_init(CFG, then=own_init)
        ) as pool:
            assert await pool.fetchval("SHOW application_name") == "keepalive-test"
            return configured_sockets(pg.port)

    assert asyncio.run(main()) == [WANTED, WANTED]
    assert len(initialised) == 2


def test_configure_an_open_connection(pg: PostgresServer) -> None:
    asyncpg = require_module("asyncpg")

    async def main() -> list[dict[str, int]]:
        conn = await asyncpg.connect(**connect_kwargs(pg))
        try:
            result = configure_connection(conn, CFG)
            assert result is not None
            assert not result.unsupported
            assert result["idle"].stored == 37  # approximated: whole seconds, rounded up
            return configured_sockets(pg.port)
        finally:
            await conn.close()

    assert asyncio.run(main()) == [WANTED]


def test_classes_are_checked_and_shared() -> None:
    asyncpg = require_module("asyncpg")
    assert connection_class(CFG) is connection_class(CFG)
    assert issubclass(connection_class(CFG), asyncpg.Connection)

    base: Any = asyncpg.Connection

    class Mine(base):  # type: ignore[misc]
        pass

    assert issubclass(connection_class(CFG, base=Mine), Mine)
    with pytest.raises(InvalidSettingType):
        connection_class(CFG, base=int)
    with pytest.raises(InvalidSettingType):
        connection_class(60)  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting):  # refused before any connection is made
        pool_init(KeepaliveConfig(idle=60, interval=10, count=10_000))
    with pytest.raises(TypeError):
        configure_connection(object(), CFG)
