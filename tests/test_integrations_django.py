"""Django's PostgreSQL backend with ``DATABASES[...]["OPTIONS"] = libpq_params(cfg)``, against a
real PostgreSQL on 127.0.0.1.

Django is configured in this process (``settings.configure``); the connections are made from
a ``DATABASES``-shaped dict through Django's own ``ConnectionHandler``, so the test does not
depend on which ``DATABASES`` another test configured first. The options are read back with
``getsockopt`` from the socket Django's connection opened (found through psutil by remote port).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from servers import PostgresServer, postgres_server, require_module
from sockets_seen import CFG, WANTED, configured_sockets, server_fixture

from keepalive.integrations import libpq_params

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers"),
]


def set_up_django() -> None:
    django = require_module("django")
    require_module("psycopg")
    settings = require_module("django.conf").settings  # django ships no type information
    if not settings.configured:
        settings.configure(USE_TZ=True, DATABASES={})
    django.setup()


pg = server_fixture(postgres_server, before=set_up_django)


def database(pg: PostgresServer, **extra: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": pg.dbname,
        "USER": pg.user,
        "HOST": pg.host,
        "PORT": str(pg.port),
        **extra,
    }


def connection_for(settings_dict: dict[str, Any]) -> Any:
    handler = require_module("django.db.utils").ConnectionHandler({"default": settings_dict})
    return handler["default"]


def test_options_reach_the_socket_django_opens(pg: PostgresServer) -> None:
    connection = connection_for(database(pg, OPTIONS=libpq_params(CFG)))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        assert connection.vendor == "postgresql"
        assert connection.Database.__name__ == "psycopg"  # the psycopg 3 path of the backend
        assert configured_sockets(pg.port) == [WANTED]
    finally:
        connection.close()
    assert configured_sockets(pg.port) == []  # the socket read above was Django's


def test_options_live_next_to_djangos_own_keys(pg: PostgresServer) -> None:
    """Django takes some OPTIONS keys itself (isolation_level, server_side_binding, ...) and
    passes the rest to psycopg.connect: the keepalive keys go through beside them."""
    from psycopg import IsolationLevel

    settings_dict = database(
        pg,
        OPTIONS={**libpq_params(CFG), "isolation_level": IsolationLevel.SERIALIZABLE},
        CONN_HEALTH_CHECKS=True,
        CONN_MAX_AGE=60,
    )
    connection = connection_for(settings_dict)
    try:
        connection.ensure_connection()
        assert connection.is_usable()  # what CONN_HEALTH_CHECKS runs before reusing it
        # Django applied its own key to the psycopg connection (for transactions it opens).
        assert connection.connection.isolation_level == IsolationLevel.SERIALIZABLE
        assert configured_sockets(pg.port) == [WANTED]
    finally:
        connection.close()


def test_without_options_the_socket_has_no_user_timeout(pg: PostgresServer) -> None:
    """The control: the values above come from OPTIONS, not from libpq's defaults."""
    connection = connection_for(database(pg))
    try:
        connection.ensure_connection()
        [found] = configured_sockets(pg.port)
    finally:
        connection.close()
    assert found["TCP_USER_TIMEOUT"] == 0
    assert (found["TCP_KEEPIDLE"], found["TCP_KEEPCNT"]) != (37, 4)
