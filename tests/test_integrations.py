"""keepalive.integrations against the real libraries and real servers on 127.0.0.1.

Each library test makes a real request (HTTP, Redis PING, a PostgreSQL query) through the
library configured by our helper, then reads the options back from the very socket the library
connected, with raw ``getsockopt``. The recipes in docs/recipes/ are these tests' code.

Redis and PostgreSQL start once per module (per xdist worker), the HTTP server once per test,
each on a random port of 127.0.0.1 (tests/servers.py), so ``pytest -n 4`` works.
A missing library or server skips, or fails under ``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from servers import (
    HttpServer,
    PostgresServer,
    RedisServer,
    http_server,
    postgres_server,
    redis_server,
    require_module,
)
from sockets_seen import (
    CFG,
    assert_keepalive,
    assert_nodelay,
    assert_sockets_to,
    only_socket_to,
    server_fixture,
)

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig, UnsupportedOption
from keepalive import integrations as ki
from keepalive.dial import connect_async
from keepalive.platforms import Platform, catalog, detect
from keepalive.sockets import configure, socket_options


def platform_named(label: str) -> Platform:
    variant = catalog.variant(label)
    return detect(variant.sys_platform, variant.namespace, variant.release)


# A fresh server per test (it starts in milliseconds): the only client sockets connected to its
# port are the test's own.
http = server_fixture(http_server, scope="function")
redis_srv = server_fixture(redis_server)
postgres = server_fixture(postgres_server)


# -- import hygiene ---------------------------------------------------------------------------


def test_importing_the_module_imports_no_client_library() -> None:
    code = (
        "import sys, keepalive, keepalive.integrations\n"
        "heavy = ['asyncio', 'psutil', 'urllib3', 'requests', 'httpx', 'httpcore', 'aiohttp',\n"
        "         'aiohappyeyeballs', 'redis', 'psycopg', 'psycopg2']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "submodule", "call"),
    [
        ("urllib3", "urllib3.connection", lambda: ki.urllib3_socket_options(CFG)),
        ("requests", "requests.adapters", lambda: ki.keepalive_adapter(CFG)),
        ("httpx", "httpx", lambda: ki.httpx_transport(CFG)),
        ("httpx", "httpx", lambda: ki.httpx_async_transport(CFG)),
        ("aiohttp", "aiohttp", lambda: ki.aiohttp_socket_factory(CFG)),
    ],
)
def test_a_missing_library_raises_import_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, module: str, submodule: str, call: Any
) -> None:
    # A None entry in sys.modules makes `import name` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, submodule, None)
    ki._adapter_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=rf"pip install '{module}") as info:
            call()
    finally:
        ki._adapter_class.cache_clear()
    assert info.value.name == module


def _old_module(name: str, version: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in {"__version__": version, **attributes}.items():
        setattr(module, key, value)
    return module


class _OldHttpxTransport:  # httpx < 0.25: no socket_options
    def __init__(self, verify: bool = True) -> None:
        self.verify = verify


class _OldTcpConnector:  # aiohttp < 3.12: no socket_factory
    def __init__(self, limit: int = 100) -> None:
        self.limit = limit


@pytest.mark.parametrize(
    ("module", "call", "message"),
    [
        (
            _old_module("httpx", "0.24.1", HTTPTransport=_OldHttpxTransport),
            lambda: ki.httpx_transport(CFG),
            r"needs httpx>=0\.25 \(socket_options\); httpx 0\.24\.1 is installed",
        ),
        (
            _old_module("aiohttp", "3.11.18", TCPConnector=_OldTcpConnector),
            lambda: ki.aiohttp_socket_factory(CFG),
            r"needs aiohttp>=3\.12 .*aiohttp 3\.11\.18 is installed",
        ),
    ],
)
def test_a_library_without_the_hook_is_reported_as_too_old(
    monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, call: Any, message: str
) -> None:
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(ImportError, match=message):
        call()


def test_every_python_block_in_the_recipes_compiles() -> None:
    pages = sorted((Path(__file__).parent.parent / "docs" / "recipes").glob("*.md"))
    text = "".join(page.read_text() for page in pages)
    for page in pages:
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
        for number, block in enumerate(blocks):
            compile(block, f"docs/recipes/{page.name} block {number}", "exec")
    assert text.count("```python\n") >= 9
    for helper in ki.__all__:  # every public helper has a recipe
        assert helper in text or helper in {"KeepaliveSocketFactory", "RedisKeepaliveKwargs"}


# -- pure shaping -----------------------------------------------------------------------------


def test_urllib3_options_keep_its_defaults_then_add_ours() -> None:
    urllib3 = require_module("urllib3.connection")
    options = ki.urllib3_socket_options(CFG)
    assert options == [*urllib3.HTTPConnection.default_socket_options, *socket_options(CFG)]
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options


def test_redis_kwargs_carry_only_tcp_level_options() -> None:
    kwargs = ki.redis_kwargs(CFG)
    assert kwargs["socket_keepalive"] is True
    expected = {
        optname: value
        for level, optname, value in socket_options(CFG)
        if level == socket.IPPROTO_TCP
    }
    assert kwargs["socket_keepalive_options"] == expected  # SO_KEEPALIVE is socket_keepalive
    if sys.platform.startswith("linux"):
        assert kwargs["socket_keepalive_options"] == {4: 37, 5: 7, 6: 4, 18: 23500}


def test_redis_kwargs_use_the_platforms_option_numbers() -> None:
    macos = platform_named("macOS, Python 3.10+")
    options = ki.redis_kwargs(KeepaliveConfig(idle=60, interval=10, count=5), platform=macos)
    # xnu netinet/tcp.h: TCP_KEEPALIVE 0x10 (the idle time), TCP_KEEPINTVL 0x101, TCP_KEEPCNT 0x102
    assert options["socket_keepalive_options"] == {0x10: 60, 0x101: 10, 0x102: 5}


def test_option_lists_refuse_a_platform_that_needs_an_ioctl() -> None:
    old_windows = platform_named("Windows before 10 1703")
    cfg = KeepaliveConfig(idle=60, interval=10, count=10)
    with pytest.raises(UnsupportedOption, match="SIO_KEEPALIVE_VALS"):
        ki.redis_kwargs(cfg, platform=old_windows)
    with pytest.raises(UnsupportedOption, match="SIO_KEEPALIVE_VALS"):
        ki.urllib3_socket_options(cfg, platform=old_windows)


@pytest.mark.parametrize(
    ("call", "library"),
    [
        (ki.urllib3_socket_options, "urllib3"),
        (ki.redis_kwargs, None),
        (ki.libpq_params, None),
        (ki.libpq_conninfo, None),
        (ki.keepalive_adapter, "requests"),
        (ki.httpx_transport, "httpx"),
        (ki.httpx_async_transport, "httpx"),
        (ki.aiohttp_socket_factory, "aiohttp"),
    ],
)
def test_every_helper_checks_ranges_like_configure(call: Any, library: str | None) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the range is Linux's")
    if library is not None:
        require_module(library)
    too_long = KeepaliveConfig(idle=40000)  # Linux TCP_KEEPIDLE stops at 32767 s
    with pytest.raises(
        InvalidSetting, match=r"idle=40000\.0 is not allowed on Linux: expected 1\.\.32767"
    ):
        call(too_long)
    with pytest.raises(InvalidSettingType, match="cfg"):
        call({"idle": 60})


def test_libpq_params_round_up_to_whole_seconds_never_zero() -> None:
    cfg = KeepaliveConfig(idle=0.2, interval=1.5, count=3, user_timeout=0.0004)
    linux = platform_named("Linux")
    assert ki.libpq_params(cfg, platform=linux) == {
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 1,
    }
    assert (
        ki.libpq_params(KeepaliveConfig(user_timeout=0.1), platform=linux)["tcp_user_timeout"]
        == 100
    )


def test_libpq_params_leave_out_an_unset_user_timeout() -> None:
    assert ki.libpq_params(platform=platform_named("Linux")) == {
        "keepalives": 1,
        "keepalives_idle": 60,
        "keepalives_interval": 10,
        "keepalives_count": 5,
    }


def test_libpq_conninfo_is_the_params_as_key_value_pairs() -> None:
    assert ki.libpq_conninfo(CFG, platform=platform_named("Linux")) == (
        "keepalives=1 keepalives_idle=37 keepalives_interval=7 keepalives_count=4 "
        "tcp_user_timeout=23500"
    )


NO_USER_TIMEOUT = KeepaliveConfig(idle=36.2, interval=7, count=4)


@pytest.mark.parametrize(
    ("label", "cfg", "setting", "reason"),
    [
        # libpq sets tcp_user_timeout only through TCP_USER_TIMEOUT (Linux).
        ("macOS, Python 3.10+", CFG, "user_timeout", "TCP_RXT_CONNDROPTIME"),
        ("FreeBSD 14+", CFG, "user_timeout", "TCP_MAXUNACKTIME"),
        # libpq on Windows sets idle and interval with SIO_KEEPALIVE_VALS, never the count.
        ("Windows 10 1709+", NO_USER_TIMEOUT, "count", "on Windows does not set keepalives_count"),
        # NetBSD's TCP_KEEPIDLE counts half-seconds; libpq would pass it whole seconds.
        ("NetBSD", NO_USER_TIMEOUT, "idle", "TCP_KEEPIDLE is in 1/2 s here"),
    ],
)
def test_libpq_params_refuse_what_libpq_would_not_apply_as_configure_does(
    label: str, cfg: KeepaliveConfig, setting: str, reason: str
) -> None:
    target = platform_named(label)
    with pytest.raises(UnsupportedOption, match=reason) as info:
        ki.libpq_params(cfg, platform=target)
    assert info.value.setting == setting
    assert "keepalive.configure(conn.pgconn.socket, cfg)" in str(info.value)
    lenient = ki.libpq_params(cfg, platform=target, strict=False)
    keyword = {
        "idle": "keepalives_idle",
        "count": "keepalives_count",
        "user_timeout": "tcp_user_timeout",
    }[setting]
    assert keyword not in lenient
    assert lenient["keepalives"] == 1
    assert len(lenient) >= 2  # the settings libpq can apply are still there


def test_libpq_params_on_macos_and_windows_without_the_unsupported_settings() -> None:
    cfg = KeepaliveConfig(idle=36.2, interval=7, count=4)
    assert ki.libpq_params(cfg, platform=platform_named("macOS, Python 3.10+")) == {
        "keepalives": 1,
        "keepalives_idle": 37,
        "keepalives_interval": 7,
        "keepalives_count": 4,
    }
    # Windows before 1703: the probe count is fixed at 10, which libpq cannot change either.
    old_windows = platform_named("Windows before 10 1703")
    assert ki.libpq_params(
        KeepaliveConfig(idle=36.2, interval=7, count=10), platform=old_windows
    ) == {
        "keepalives": 1,
        "keepalives_idle": 37,
        "keepalives_interval": 7,
    }


def test_httpx_transport_keeps_extra_socket_options_and_refuses_clashes() -> None:
    httpx = require_module("httpx")
    extra = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]
    transport = ki.httpx_transport(CFG, socket_options=extra, retries=2)
    assert isinstance(transport, httpx.HTTPTransport)
    with pytest.raises(InvalidSetting, match="socket_options"):
        ki.httpx_transport(CFG, socket_options=[(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)])


def test_the_requests_adapter_survives_pickling() -> None:
    require_module("requests")
    adapter = ki.keepalive_adapter(CFG, pool_maxsize=3)
    copy = pickle.loads(pickle.dumps(adapter))
    assert type(copy) is type(adapter)
    assert copy.poolmanager.connection_pool_kw["socket_options"] == ki.urllib3_socket_options(CFG)
    assert copy.poolmanager.connection_pool_kw["maxsize"] == 3


# -- real connections -------------------------------------------------------------------------


def test_urllib3_pool_sets_our_options_and_keeps_nodelay(http: HttpServer) -> None:
    urllib3 = require_module("urllib3")
    with urllib3.PoolManager(socket_options=ki.urllib3_socket_options(CFG)) as pool:
        response = pool.request("GET", http.url, preload_content=False)
        sock = response.connection.sock
        assert_keepalive(sock)
        assert_nodelay(sock)
        assert response.read() == b"ok\n"
        response.release_conn()


def test_requests_adapter_sets_our_options_and_keeps_nodelay(http: HttpServer) -> None:
    requests = require_module("requests")
    with requests.Session() as session:
        adapter = ki.keepalive_adapter(CFG)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.get(http.url, stream=True, timeout=10) as response:
            sock = response.raw.connection.sock
            assert_keepalive(sock)
            assert_nodelay(sock)
            assert response.text == "ok\n"


def test_requests_adapter_sets_our_options_through_a_proxy(http: HttpServer) -> None:
    requests = require_module("requests")
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: only ours, on loopback
        session.mount("http://", ki.keepalive_adapter(CFG))
        # The local server answers absolute-form requests too, so it serves as the proxy.
        proxies = {"http": http.url}
        with session.get(http.url, proxies=proxies, stream=True, timeout=10) as response:
            assert_keepalive(response.raw.connection.sock)
            assert response.text == "ok\n"


def test_httpx_transport_sets_our_options(http: HttpServer) -> None:
    httpx = require_module("httpx")
    with httpx.Client(transport=ki.httpx_transport(CFG), trust_env=False) as client:
        response = client.get(http.url)
        assert response.text == "ok\n"
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert_keepalive(sock)
        assert_nodelay(sock)


def test_httpx_transport_sets_our_options_through_a_proxy(http: HttpServer) -> None:
    """httpcore drops socket_options on connections to a proxy; the transport's network backend
    configures them anyway (tinyproxy, SOCKS5 and TLS: tests/test_integrations_httpx.py)."""
    httpx = require_module("httpx")
    transport = ki.httpx_transport(CFG, proxy=http.url)
    with httpx.Client(transport=transport, trust_env=False) as client:
        # The local server answers absolute-form requests too, so it serves as the proxy.
        response = client.get(f"http://localhost.invalid:{http.port}/")  # only the proxy resolves
        assert response.text == "ok\n"
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert sock.getpeername()[1] == http.port
        assert_keepalive(sock)


def test_httpx_async_transport_sets_our_options(http: HttpServer) -> None:
    httpx = require_module("httpx")

    async def main() -> None:
        transport = ki.httpx_async_transport(CFG)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            response = await client.get(http.url)
            assert response.text == "ok\n"
            sock = response.extensions["network_stream"].get_extra_info("socket")
            assert_keepalive(sock)
            assert_nodelay(sock)

    asyncio.run(main())


def test_aiohttp_connector_sets_our_options(http: HttpServer) -> None:
    aiohttp = require_module("aiohttp")

    async def main() -> None:
        connector = ki.aiohttp_connector(CFG)
        async with (
            aiohttp.ClientSession(connector=connector, trust_env=False) as session,
            session.get(http.url) as response,
        ):
            assert await response.text() == "ok\n"
            # The body is read, so aiohttp has pooled the connection: find it by port.
            with only_socket_to(http.port) as sock:
                assert_keepalive(sock)
                assert_nodelay(sock)

    asyncio.run(main())


def test_aiohttp_socket_factory_configures_before_connecting(http: HttpServer) -> None:
    aiohttp = require_module("aiohttp")
    factory = ki.aiohttp_socket_factory(CFG)
    made: list[socket.socket] = []

    def recording_factory(addr_info: Any) -> socket.socket:
        sock = factory(addr_info)
        # Not connected yet (ENOTCONN): keepalive is on from the first segment.
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()
        assert_keepalive(sock)
        made.append(sock)
        return sock

    async def main() -> None:
        connector = aiohttp.TCPConnector(socket_factory=recording_factory)
        async with (
            aiohttp.ClientSession(connector=connector, trust_env=False) as session,
            session.get(http.url) as response,
        ):
            assert await response.text() == "ok\n"
            # The connection aiohttp used is the factory's socket.
            with only_socket_to(http.port) as sock:
                assert sock.getsockname() == made[0].getsockname()

    asyncio.run(main())
    assert len(made) == 1


def test_redis_client_sets_our_options(redis_srv: RedisServer) -> None:
    redis = require_module("redis")
    client = redis.Redis(host="127.0.0.1", port=redis_srv.port, **ki.redis_kwargs(CFG))
    try:
        assert client.ping() is True
        assert_sockets_to(redis_srv.port)  # the client's connection(s) to redis-server
    finally:
        client.close()


def test_redis_asyncio_client_sets_our_options(redis_srv: RedisServer) -> None:
    redis_asyncio = require_module("redis.asyncio")

    async def main() -> None:
        client = redis_asyncio.Redis(host="127.0.0.1", port=redis_srv.port, **ki.redis_kwargs(CFG))
        try:
            assert await client.ping() is True
            assert_sockets_to(redis_srv.port)  # the client's connection(s) to redis-server
        finally:
            await client.aclose()

    asyncio.run(main())


def _assert_pg_socket(conn: Any) -> None:
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"
        assert_keepalive(sock)


def test_psycopg_with_libpq_params_sets_our_options(postgres: PostgresServer) -> None:
    psycopg = require_module("psycopg")
    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        dbname=postgres.dbname,
        connect_timeout=10,
        **ki.libpq_params(CFG),
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        _assert_pg_socket(conn)


def test_psycopg_with_libpq_conninfo_sets_our_options(postgres: PostgresServer) -> None:
    psycopg = require_module("psycopg")
    dsn = f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={postgres.dbname}"
    with psycopg.connect(f"{dsn} {ki.libpq_conninfo(CFG)}", connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        _assert_pg_socket(conn)


def test_psycopg_uri_with_make_conninfo_sets_our_options(postgres: PostgresServer) -> None:
    psycopg = require_module("psycopg")
    conninfo = require_module("psycopg.conninfo")
    uri = f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/{postgres.dbname}"
    with psycopg.connect(conninfo.make_conninfo(uri, **ki.libpq_params(CFG))) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        _assert_pg_socket(conn)


def test_configuring_libpqs_socket_after_connecting(postgres: PostgresServer) -> None:
    psycopg = require_module("psycopg")
    dsn = f"host={postgres.host} port={postgres.port} user={postgres.user} dbname={postgres.dbname}"
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        configure(conn.pgconn.socket, CFG)  # the recipe for what libpq cannot set itself
        _assert_pg_socket(conn)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncio_open_connection_with_a_configured_socket(http: HttpServer) -> None:
    async def main() -> None:
        sock = await connect_async(("127.0.0.1", http.port), keepalive=CFG)
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            assert_keepalive(writer.get_extra_info("socket"))
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 10)
            assert reply.startswith(b"HTTP/1.1 200")
            assert reply.endswith(b"ok\n")
        finally:
            writer.close()
            await writer.wait_closed()

    asyncio.run(main())
