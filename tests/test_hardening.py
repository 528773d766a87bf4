"""Hardening: a public function that turned into a module, ports that wrapped around, a test
proxy that died of a stale selector event, and arguments that escaped as raw built-in errors.

Each regression test below failed before its fix. The fuzz tests at the end throw arbitrary
values at every entry point that takes settings and accept only the documented exceptions:
:class:`~keepalive.KeepaliveError` subclasses (``ConnectFailed`` included) and, for
``connect()``, an ``OSError`` from the network. A refused call creates no socket, and leaves
a socket it was handed exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keepalive
from keepalive import (
    Backoff,
    ConnectFailed,
    InvalidSetting,
    InvalidSettingType,
    KeepaliveConfig,
    KeepaliveError,
)
from keepalive import integrations as integ
from keepalive.testing import EchoServer, FaultProxy

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail instead of hanging (where SIGALRM exists and this is the main thread)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise AssertionError(f"the call took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _SocketCount:
    """Counts the TCP (AF_INET / AF_INET6) sockets created while it is installed."""

    def __init__(self) -> None:
        self.created = 0


@pytest.fixture
def inet_sockets(monkeypatch: pytest.MonkeyPatch) -> _SocketCount:
    count = _SocketCount()
    real = socket.socket

    class Counting(real):  # type: ignore[valid-type, misc]
        def __init__(self, family: Any = -1, *args: Any, **kwargs: Any) -> None:
            if family in (socket.AF_INET, socket.AF_INET6) and kwargs.get("fileno") is None:
                count.created += 1
            super().__init__(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", Counting)
    return count


def closed_port() -> int:
    """A loopback port nothing listens on (bound and closed again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# -- 1. keepalive.connect stays a function ---------------------------------------------------------

_IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, pkgutil, types
    import keepalive
    from keepalive.sync import Supervisor
    import keepalive.aio
    for info in pkgutil.walk_packages(keepalive.__path__, "keepalive."):
        if info.name != "keepalive.__main__":  # a script: importing it runs the CLI
            importlib.import_module(info.name)
    import keepalive.dial
    assert callable(keepalive.connect), keepalive.connect
    assert keepalive.connect is keepalive.dial.connect
    assert keepalive.connect_async is keepalive.dial.connect_async
    shadowed = [
        name for name in keepalive.__all__
        if isinstance(getattr(keepalive, name), types.ModuleType)
    ]
    assert not shadowed, f"submodules shadow public names: {shadowed}"
    try:
        keepalive.connect(("127.0.0.1", 1), connect_timeout=1)
    except (keepalive.ConnectFailed, OSError):
        pass
    print("ok")
    """
)


def test_connect_stays_a_function_when_every_submodule_is_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_there_is_no_module_named_keepalive_connect() -> None:
    assert not (ROOT / "keepalive" / "connect.py").exists()
    assert not (ROOT / "keepalive" / "connect").exists()
    assert "connect_async" in keepalive.__all__
    assert "connect_async" in dir(keepalive)


# -- 2. one address check; ports never wrap ------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def test_a_port_beyond_65535_does_not_wrap_around(
    listener: socket.socket, inet_sockets: _SocketCount
) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(InvalidSetting) as caught:
        keepalive.connect(("127.0.0.1", port + 65536), connect_timeout=TIMEOUT).close()
    assert caught.value.field == "port"
    assert caught.value.value == port + 65536
    assert "65535" in str(caught.value)
    assert inet_sockets.created == 0


def test_async_port_beyond_65535_does_not_wrap_around(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    async def main() -> None:
        sock = await keepalive.connect_async(("127.0.0.1", port + 65536), connect_timeout=TIMEOUT)
        sock.close()

    with pytest.raises(InvalidSetting) as caught:
        asyncio.run(main())
    assert caught.value.field == "port"


@pytest.mark.parametrize("port", [-1, 0, 65536, 2**16 + 80, 2**32 + 80, 2**64, -(2**64)])
def test_out_of_range_ports_are_refused_before_any_socket(
    port: int, inet_sockets: _SocketCount
) -> None:
    with pytest.raises(InvalidSetting) as caught:
        keepalive.connect(("127.0.0.1", port), connect_timeout=TIMEOUT).close()
    assert caught.value.field == "port"
    assert not isinstance(caught.value, InvalidSettingType)
    assert inet_sockets.created == 0


@pytest.mark.parametrize("port", ["80", 80.0, True, None, b"80"])
def test_ports_of_other_types_are_refused(port: object, inet_sockets: _SocketCount) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        keepalive.connect(("127.0.0.1", port), connect_timeout=TIMEOUT)  # type: ignore[arg-type]
    assert caught.value.field == "port"
    assert inet_sockets.created == 0


def test_the_address_check_is_one_function_with_one_port_range() -> None:
    from keepalive import dial, supervision, testing
    from keepalive._validate import check_address

    assert dial.check_address is check_address
    assert supervision.check_address is check_address
    assert "check_address" in dial.__all__
    assert check_address(("example.com", 443)) == ("example.com", 443)
    for port in (0, 65536, 70000):
        with pytest.raises(InvalidSetting, match="port"):
            check_address(("127.0.0.1", port))
    assert check_address(("", 0), field="source_address", allow_port_zero=True) == ("", 0)
    with pytest.raises(InvalidSetting) as caught:
        check_address(("127.0.0.1", 65536), field="source_address", allow_port_zero=True)
    assert caught.value.field == "source_address.port"
    # The test proxy uses it too: same types, same range.
    with pytest.raises(InvalidSetting) as caught:
        testing.FaultProxy(("127.0.0.1", 65536 + 80))
    assert caught.value.field == "upstream.port"


def test_a_host_with_a_nul_is_not_cut_short(
    listener: socket.socket, inet_sockets: _SocketCount
) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(InvalidSetting) as caught:
        keepalive.connect(("127.0.0.1\x00junk", port), connect_timeout=TIMEOUT).close()
    assert caught.value.field == "host"
    with pytest.raises(InvalidSetting) as caught:
        keepalive.connect(("127.0.0.1", port), source_address=("127.0.0.1\x00", 0)).close()
    assert caught.value.field == "source_address.host"
    assert inet_sockets.created == 0


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example", "\udcff", "\udcff.example"])
def test_hosts_no_resolver_accepts_fail_to_resolve(host: str, inet_sockets: _SocketCount) -> None:
    """Python's IDNA codec refuses these before any resolver is asked (UnicodeError): a
    failed resolution, like a name that does not exist, and not a raw codec error."""
    with pytest.raises(ConnectFailed) as caught:
        keepalive.connect((host, 80), connect_timeout=TIMEOUT)
    assert isinstance(caught.value.__cause__, socket.gaierror)
    assert caught.value.attempts[0].address is None  # type: ignore[attr-defined]
    retry = Backoff.constant(0.001, max_attempts=3)
    with pytest.raises(socket.gaierror):  # not retryable: propagates as it is
        keepalive.connect((host, 80), connect_timeout=TIMEOUT, retry=retry)

    async def main() -> None:
        await keepalive.connect_async((host, 80), connect_timeout=TIMEOUT)

    with pytest.raises(ConnectFailed) as caught:
        asyncio.run(main())
    assert isinstance(caught.value.__cause__, socket.gaierror)
    assert inet_sockets.created == 0


# -- 3. FaultProxy.reset() right after a connect -----------------------------------------------


def test_fault_proxy_reset_right_after_a_connect_keeps_serving() -> None:
    with EchoServer(ping=None) as server:
        proxy = FaultProxy(server.address).start()
        try:
            for _ in range(200):
                with socket.create_connection(proxy.address, timeout=TIMEOUT):
                    proxy.reset()
            with socket.create_connection(proxy.address, timeout=TIMEOUT) as client:
                client.sendall(b"still there?\n")
                assert recv_exactly(client, 13) == b"still there?\n"
            assert proxy.flows <= 1
        finally:
            proxy.close()  # raises RuntimeError if the proxy thread died


def test_echo_server_kill_right_after_a_connect_keeps_serving() -> None:
    server = EchoServer(ping=None).start()
    try:
        for _ in range(100):
            with socket.create_connection(server.address, timeout=TIMEOUT) as client:
                client.sendall(b"x")
                server.kill_connections()
        with socket.create_connection(server.address, timeout=TIMEOUT) as client:
            client.sendall(b"echo\n")
            assert recv_exactly(client, 5) == b"echo\n"
    finally:
        server.close()


# -- 4. validation gaps --------------------------------------------------------------------------

CONNECT_JUNK: list[tuple[dict[str, Any], str, type[Exception]]] = [
    ({"retry": 3}, "retry", InvalidSettingType),
    ({"retry": Backoff}, "retry", InvalidSettingType),
    ({"source_address": "x"}, "source_address", InvalidSettingType),
    ({"source_address": ("127.0.0.1", 65536)}, "source_address.port", InvalidSetting),
    ({"source_address": ("127.0.0.1", "0")}, "source_address.port", InvalidSettingType),
    ({"source_address": (0, 0)}, "source_address", InvalidSettingType),
    ({"connect_timeout": "1"}, "connect_timeout", InvalidSettingType),
    ({"connect_timeout": True}, "connect_timeout", InvalidSettingType),
    ({"connect_timeout": math.nan}, "connect_timeout", InvalidSetting),
    ({"connect_timeout": math.inf}, "connect_timeout", InvalidSetting),
    ({"connect_timeout": -1}, "connect_timeout", InvalidSetting),
    ({"connect_timeout": 10**400}, "connect_timeout", InvalidSetting),
    ({"strict": "no"}, "strict", InvalidSettingType),
    ({"strict": []}, "strict", InvalidSettingType),
    ({"rng": 42}, "rng", InvalidSettingType),
    ({"keepalive": KeepaliveConfig(count=10**6)}, "count", InvalidSetting),
    ({"keepalive": {"idle": 1}}, "keepalive", InvalidSettingType),
]


@pytest.mark.parametrize(("kwargs", "field", "error"), CONNECT_JUNK, ids=repr)
def test_connect_refuses_bad_arguments_before_any_socket(
    kwargs: dict[str, Any], field: str, error: type[Exception], inet_sockets: _SocketCount
) -> None:
    with pytest.raises(error) as caught:
        keepalive.connect(("127.0.0.1", closed_port()), **kwargs)
    assert isinstance(caught.value, InvalidSetting)
    assert caught.value.field == field
    assert inet_sockets.created == 0


@pytest.mark.parametrize(("kwargs", "field", "error"), CONNECT_JUNK, ids=repr)
def test_connect_async_refuses_bad_arguments(
    kwargs: dict[str, Any], field: str, error: type[Exception]
) -> None:
    async def main() -> None:
        await keepalive.connect_async(("127.0.0.1", closed_port()), **kwargs)

    with pytest.raises(error) as caught:
        asyncio.run(main())
    assert isinstance(caught.value, InvalidSetting)
    assert caught.value.field == field


def test_connect_refuses_a_cancel_that_is_not_an_event(inet_sockets: _SocketCount) -> None:
    with pytest.raises(InvalidSettingType, match="cancel"):
        keepalive.connect(("127.0.0.1", 1), cancel=42)  # type: ignore[arg-type]
    assert inet_sockets.created == 0


def test_huge_timeouts_and_delays_do_not_overflow() -> None:
    port = closed_port()
    with time_limit(TIMEOUT), pytest.raises(ConnectFailed):
        keepalive.connect(("127.0.0.1", port), connect_timeout=1e300)
    with time_limit(TIMEOUT), pytest.raises(ConnectFailed):
        keepalive.connect(("127.0.0.1", port), retry=Backoff(connect_timeout=1e300, max_attempts=1))
    cancel = threading.Event()
    cancel.set()  # the backoff wait ends at once: what matters is that it can start
    policy = Backoff.constant(1e300, max_attempts=3)
    with time_limit(TIMEOUT), pytest.raises(ConnectFailed) as caught:
        keepalive.connect(("127.0.0.1", port), retry=policy, cancel=cancel, connect_timeout=1)
    assert caught.value.reason == "cancelled"


@pytest.mark.parametrize("platform", [0, "Linux", object(), True])
def test_system_defaults_refuses_a_platform_that_is_not_one(platform: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        keepalive.system_defaults(platform=platform)  # type: ignore[arg-type]
    assert caught.value.field == "platform"


@pytest.mark.parametrize(
    "helper",
    [
        integ.libpq_params,
        integ.libpq_conninfo,
        integ.redis_kwargs,
        integ.urllib3_socket_options,
    ],
)
@pytest.mark.parametrize(
    ("kwargs", "field"), [({"platform": 0}, "platform"), ({"strict": "no"}, "strict")]
)
def test_integration_helpers_refuse_bad_platform_and_strict(
    helper: Callable[..., object], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        helper(KeepaliveConfig(), **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "helper",
    [
        integ.aiohttp_socket_factory,
        integ.keepalive_adapter,
        integ.httpx_transport,
        integ.httpx_async_transport,
    ],
)
def test_integration_helpers_refuse_truthy_junk_for_strict(helper: Callable[..., object]) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        helper(KeepaliveConfig(), strict="no")
    assert caught.value.field == "strict"


@pytest.mark.parametrize("extra", [3, "abc", [(1,)], [1, 2], [("a", 1, 1)], [(1, 2, 3, 4, 5)]])
def test_httpx_extra_socket_options_junk_is_named(extra: object) -> None:
    with pytest.raises(InvalidSettingType) as caught:
        integ.httpx_transport(KeepaliveConfig(), socket_options=extra)
    assert caught.value.field == "socket_options"


def test_socket_factory_checks_its_arguments() -> None:
    with pytest.raises(InvalidSettingType, match="strict"):
        integ.KeepaliveSocketFactory(KeepaliveConfig(), "no")  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="cfg"):
        integ.KeepaliveSocketFactory(None, True)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["multiplier", "jitter", "initial", "max_delay"])
def test_backoff_numbers_beyond_float_range_are_invalid_settings(field: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        Backoff(**{field: 10**400})
    assert caught.value.field == field


# -- 5. fuzz: only documented exceptions, no hang, a refused call changes nothing ----------------


class Opaque:
    """An object of a type nobody expects."""


FLOAT_MAX = sys.float_info.max
junk: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.floats(),  # nan, +-inf, negative, zero, subnormal, huge
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**64),
    st.integers(max_value=0),
    st.sampled_from([10**400, -(10**400), 2**63, 65536, FLOAT_MAX, 5e-324, -0.0, 1e300]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers(), st.integers()),
    st.fractions(),
    st.builds(Opaque),
    st.sampled_from([KeepaliveConfig, keepalive, str, Ellipsis, print, threading.Event]),
)
# Hosts that never reach a DNS server: loopback literals, names from /etc/hosts, and names the
# resolver could not be asked about at all.
hosts = st.sampled_from(["127.0.0.1", "::1", "localhost", "", "a..b", "x" * 70, "\udcff", "\x00"])
addresses = st.one_of(junk, st.tuples(hosts, st.one_of(junk, st.integers(-(2**17), 2**17))))
fuzz = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def documented(call: Callable[[], object], *also: type[BaseException]) -> object:
    """Run ``call``: its result, or the KeepaliveError (or one of ``also``) it raised."""
    error: BaseException
    try:
        with time_limit(TIMEOUT):
            return call()
    except KeepaliveError as exc:
        error = exc
    except also as exc:
        return exc
    assert isinstance(error, (ValueError, TypeError, OSError, ConnectionError)), type(error)
    assert str(error), "an error explains itself"
    return error


CONNECT_KEYWORDS = ["keepalive", "retry", "connect_timeout", "source_address", "strict", "rng"]
policies = st.sampled_from(
    [None, Backoff.constant(0.001, max_attempts=2), Backoff(initial=0.001, max_attempts=2)]
)


@fuzz
@given(
    address=addresses,
    keyword=st.sampled_from([*CONNECT_KEYWORDS, "cancel"]),
    value=junk,
    retry=policies,
)
def test_fuzz_connect(
    address: Any, keyword: str, value: Any, retry: Backoff | None, inet_sockets: _SocketCount
) -> None:
    kwargs: dict[str, Any] = {"connect_timeout": 0.5, "retry": retry, keyword: value}
    for target in (address, ("127.0.0.1", closed_port())):
        before = inet_sockets.created
        outcome = documented(lambda t=target: keepalive.connect(t, **kwargs), OSError)
        if isinstance(outcome, socket.socket):
            outcome.close()
        if isinstance(outcome, InvalidSetting):
            assert inet_sockets.created == before, "a refused call created a socket"


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(address=addresses, keyword=st.sampled_from(CONNECT_KEYWORDS), value=junk)
def test_fuzz_connect_async(address: Any, keyword: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"connect_timeout": 0.5, keyword: value}

    async def main() -> None:
        for target in (address, ("127.0.0.1", closed_port())):
            with contextlib.suppress(KeepaliveError, OSError):
                sock = await asyncio.wait_for(keepalive.connect_async(target, **kwargs), TIMEOUT)
                sock.close()

    with time_limit(2 * TIMEOUT):
        asyncio.run(main())


@fuzz
@given(platform=junk)
def test_fuzz_system_defaults(platform: Any) -> None:
    outcome = documented(lambda: keepalive.system_defaults(platform=platform))
    if platform is None:
        assert isinstance(outcome, keepalive.SystemDefaults)


SETTING_KEYWORDS = ["idle", "interval", "count", "user_timeout"]


@fuzz
@given(
    cfg=st.one_of(junk, st.just(KeepaliveConfig())),
    keyword=st.sampled_from([*SETTING_KEYWORDS, "strict", "platform"]),
    value=junk,
)
def test_fuzz_socket_options(cfg: Any, keyword: str, value: Any) -> None:
    documented(lambda: keepalive.socket_options(cfg, **{keyword: value}))


RAW_OPTIONS: dict[str, tuple[int, int]] = {
    "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    **{
        name: (socket.IPPROTO_TCP, getattr(socket, name))
        for name in (
            "TCP_KEEPIDLE",
            "TCP_KEEPINTVL",
            "TCP_KEEPCNT",
            "TCP_KEEPALIVE",
            "TCP_USER_TIMEOUT",
            "TCP_NODELAY",
        )
        if hasattr(socket, name)
    },
}


def socket_state(sock: socket.socket) -> dict[str, object]:
    state: dict[str, object] = {
        name: sock.getsockopt(level, option) for name, (level, option) in RAW_OPTIONS.items()
    }
    state["os blocking"] = os.get_blocking(sock.fileno())
    state["timeout"] = sock.gettimeout()
    return state


def restore(sock: socket.socket, state: dict[str, object]) -> None:
    for name, (level, option) in RAW_OPTIONS.items():
        value = state[name]
        assert isinstance(value, int)
        sock.setsockopt(level, option, value)
    timeout = state["timeout"]
    assert timeout is None or isinstance(timeout, float)
    sock.settimeout(timeout)


@pytest.fixture(scope="module")
def connected() -> Iterator[socket.socket]:
    """A connected loopback socket with its own keepalive values, shared by the examples."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=TIMEOUT)
        accepted, _ = server.accept()
    with client, accepted:
        keepalive.configure(client, KeepaliveConfig(idle=123, interval=12, count=3))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        yield client


@fuzz
@given(
    cfg=st.one_of(junk, st.just(None), st.just(KeepaliveConfig(idle=7))),
    keyword=st.sampled_from([*SETTING_KEYWORDS, "strict", "platform"]),
    value=junk,
    by_fd=st.booleans(),
    mode=st.sampled_from([None, 0.0, 2.5]),
)
def test_fuzz_configure_refused_calls_change_nothing(
    connected: socket.socket,
    cfg: Any,
    keyword: str,
    value: Any,
    by_fd: bool,
    mode: float | None,
) -> None:
    connected.settimeout(mode)
    before = socket_state(connected)
    target: object = connected.fileno() if by_fd else connected
    outcome = documented(lambda: keepalive.configure(target, cfg, **{keyword: value}))
    after = socket_state(connected)
    if isinstance(outcome, KeepaliveError):
        assert after == before, f"a refused configure() changed the socket: {outcome!r}"
    else:
        assert isinstance(outcome, keepalive.ConfigureResult)
        assert after["SO_KEEPALIVE"] == 1
        assert (after["os blocking"], after["timeout"]) == (before["os blocking"], mode)
        restore(connected, before)


CONFIG_FIELDS = ["idle", "interval", "count", "user_timeout"]


@fuzz
@given(keyword=st.sampled_from(CONFIG_FIELDS), value=junk, positional=st.lists(junk, max_size=4))
def test_fuzz_keepalive_config(keyword: str, value: Any, positional: list[Any]) -> None:
    documented(lambda: KeepaliveConfig(**{keyword: value}))
    documented(lambda: KeepaliveConfig(*positional))
    documented(lambda: KeepaliveConfig().with_user_timeout(value))
    documented(lambda: KeepaliveConfig.before_idle_timeout(value))


BACKOFF_FIELDS = [
    "initial",
    "multiplier",
    "max_delay",
    "jitter",
    "max_attempts",
    "max_elapsed",
    "connect_timeout",
    "retry_on",
]


@fuzz
@given(keyword=st.sampled_from(BACKOFF_FIELDS), value=junk, other=junk)
def test_fuzz_backoff(keyword: str, value: Any, other: Any) -> None:
    policy = documented(lambda: Backoff(**{keyword: value}))
    if isinstance(policy, Backoff):
        delays = policy.delays(random.Random(1))
        for _ in range(5):
            delay = next(delays, None)
            assert delay is None or 0 <= delay <= policy.max_delay
    documented(lambda: Backoff.constant(value, max_attempts=2))
    documented(lambda: Backoff(max_attempts=2).delays(other))


HELPERS: list[Callable[..., object]] = [
    integ.urllib3_socket_options,
    integ.keepalive_adapter,
    integ.httpx_transport,
    integ.httpx_async_transport,
    integ.aiohttp_socket_factory,
    integ.redis_kwargs,
    integ.libpq_params,
    integ.libpq_conninfo,
]
PLATFORM_HELPERS = {
    integ.urllib3_socket_options,
    integ.redis_kwargs,
    integ.libpq_params,
    integ.libpq_conninfo,
}


@fuzz
@given(
    helper=st.sampled_from(HELPERS),
    cfg=st.one_of(junk, st.just(KeepaliveConfig(idle=7))),
    keyword=st.sampled_from(["strict", "platform", "socket_options"]),
    value=junk,
)
def test_fuzz_integration_helpers(
    helper: Callable[..., object], cfg: Any, keyword: str, value: Any
) -> None:
    if keyword == "platform" and helper not in PLATFORM_HELPERS:
        keyword = "strict"
    if keyword == "socket_options" and helper not in (
        integ.httpx_transport,
        integ.httpx_async_transport,
    ):
        keyword = "strict"
    documented(lambda: helper(cfg, **{keyword: value}), ImportError)
