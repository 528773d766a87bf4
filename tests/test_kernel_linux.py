"""Kernel keepalive on real Linux sockets over loopback.

Every effect is checked by reading the options back with plain ``getsockopt`` on a duplicate of
the socket's descriptor (never through ``keepalive.inspect``), so the library's own reading
code cannot hide a mistake in its writing code. Only 127.0.0.1 and ::1 are ever addressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import ipaddress
import math
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import keepalive
from keepalive import (
    ConfigureResult,
    InvalidSetting,
    InvalidSocket,
    KeepaliveConfig,
    KeepaliveError,
    SettingStatus,
    SocketOptionError,
)
from keepalive.platforms import Platform
from keepalive.platforms import linux as linux_platform

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux kernel socket options"
)

IO_TIMEOUT = 5.0
PROC = Path("/proc/sys/net/ipv4")

# Constants from the standard library, independent of keepalive.platforms.linux.
RAW_OPTIONS: dict[str, tuple[int, int]] = {
    "SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "TCP_KEEPIDLE": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 4)),
    "TCP_KEEPINTVL": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 5)),
    "TCP_KEEPCNT": (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 6)),
    "TCP_USER_TIMEOUT": (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18)),
}
OPTION_OF = {
    "idle": "TCP_KEEPIDLE",
    "interval": "TCP_KEEPINTVL",
    "count": "TCP_KEEPCNT",
    "user_timeout": "TCP_USER_TIMEOUT",
}


def case_id(value: object) -> str:
    """A test id that is the same in every process (no memory addresses: pytest-xdist)."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


# -- helpers --------------------------------------------------------------------------------------


def raw_options(fd: int) -> dict[str, int]:
    """Every keepalive option of the socket behind ``fd``, read with plain getsockopt on a
    duplicate descriptor (same kernel socket, separate Python object)."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        return {name: probe.getsockopt(level, opt) for name, (level, opt) in RAW_OPTIONS.items()}


def raw_keepalive_flag(fd: int) -> int:
    """SO_KEEPALIVE alone: readable on any socket kind, TCP or not."""
    with socket.socket(fileno=os.dup(fd)) as probe:
        return probe.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)


def stored_seconds(value: float) -> int:
    """Linux keeps idle/interval in whole seconds: rounded up, never 0 (``value`` as typed)."""
    return max(1, math.ceil(Fraction(repr(value))))


def stored_ms(value: float) -> int:
    """Linux keeps the user timeout in whole milliseconds: rounded up, never 0."""
    return max(1, math.ceil(Fraction(repr(value)) * 1000))


def expected_native(cfg: KeepaliveConfig) -> dict[str, int]:
    expected = {
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": stored_seconds(cfg.idle),
        "TCP_KEEPINTVL": stored_seconds(cfg.interval),
        "TCP_KEEPCNT": cfg.count,
    }
    if cfg.user_timeout is not None:
        expected["TCP_USER_TIMEOUT"] = stored_ms(cfg.user_timeout)
    return expected


def assert_applied_matches_kernel(
    applied: ConfigureResult, cfg: KeepaliveConfig, raw: dict[str, int]
) -> None:
    """The result reports, per requested setting, exactly what the kernel now holds."""
    assert applied.platform == "Linux"
    requested = {
        setting: getattr(cfg, setting) for setting in OPTION_OF if getattr(cfg, setting) is not None
    }
    assert [item.setting for item in applied] == list(requested)
    for setting, value in requested.items():
        result = applied[setting]
        option = OPTION_OF[setting]
        scale = 1000 if setting == "user_timeout" else 1
        assert result.option == option
        assert result.requested == value
        assert result.stored == raw[option] / scale, (setting, result, raw)
        assert result.stored is not None
        assert result.stored > 0
        if result.stored == value:
            assert result.status is SettingStatus.HONOURED, result
        else:
            assert result.status is SettingStatus.APPROXIMATED, result
            assert result.detail, "an approximation is explained"
    assert applied.fully_honoured == all(item.stored == item.requested for item in applied)


@contextlib.contextmanager
def tcp_pair(host: str = "127.0.0.1") -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected (client, server-side) TCP pair on loopback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as listener:
        listener.settimeout(IO_TIMEOUT)
        client = socket.create_connection(listener.getsockname()[:2], timeout=IO_TIMEOUT)
        server, _ = listener.accept()
    with client, server:
        yield client, server


def assert_connection_works(client: socket.socket, server: socket.socket) -> None:
    server.settimeout(IO_TIMEOUT)
    client.sendall(b"ping")
    assert server.recv(16) == b"ping"
    server.sendall(b"pong")
    assert client.recv(16) == b"pong"


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def read_proc(name: str) -> int:
    return int((PROC / name).read_text().split()[0])


# -- strategies: configs within Linux's ranges ----------------------------------------------------


def decimal_seconds(maximum: int, max_decimals: int) -> st.SearchStrategy[float]:
    """Values a person would type: up to ``max_decimals`` decimals, at most ``maximum``."""
    return st.integers(0, max_decimals).flatmap(
        lambda k: st.integers(1, maximum * 10**k).map(lambda n: float(Fraction(n, 10**k)))
    )


linux_seconds = st.one_of(st.integers(1, 32767), decimal_seconds(32767, 6))
linux_user_timeout = st.none() | st.integers(1, 2_147_483) | decimal_seconds(2_147_483, 3)
linux_configs = st.builds(
    KeepaliveConfig,
    idle=linux_seconds,
    interval=linux_seconds,
    count=st.integers(1, 127),
    user_timeout=linux_user_timeout,
)
socket_settings = settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)


# -- configure: read back with raw getsockopt -----------------------------------------------------


@socket_settings
@given(cfg=linux_configs)
@example(cfg=KeepaliveConfig(60, 10, 5, 110))
@example(cfg=KeepaliveConfig(0.5, 1.5, 1, 0.0001))
@example(cfg=KeepaliveConfig(32767, 32767, 127, 2_147_483.647))
@example(cfg=KeepaliveConfig(1e-9, 1e-300, 1, 5e-324))
@example(cfg=KeepaliveConfig(59.000001, 9.999999, 3, 100.0005))
def test_configure_stores_exactly_what_it_reports(cfg: KeepaliveConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        applied = keepalive.configure(sock, cfg)
        raw = raw_options(sock.fileno())
    expected = expected_native(cfg)
    assert {name: raw[name] for name in expected} == expected
    if cfg.user_timeout is None:
        assert raw["TCP_USER_TIMEOUT"] == 0, "no user timeout requested: left at the default"
    assert_applied_matches_kernel(applied, cfg, raw)


@socket_settings
@given(
    idle=st.floats(min_value=0, max_value=32766, exclude_min=True),
    interval=st.floats(min_value=0, max_value=32766, exclude_min=True),
    user_timeout=st.floats(min_value=0, max_value=2_147_000, exclude_min=True),
)
def test_arbitrary_floats_round_up_to_the_unit_never_to_zero(
    idle: float, interval: float, user_timeout: float
) -> None:
    cfg = KeepaliveConfig(idle=idle, interval=interval, count=1, user_timeout=user_timeout)
    with socket.socket() as sock:
        applied = keepalive.configure(sock, cfg)
        raw = raw_options(sock.fileno())
    assert_applied_matches_kernel(applied, cfg, raw)
    for setting, scale in (("idle", 1), ("interval", 1), ("user_timeout", 1000)):
        native = raw[OPTION_OF[setting]]
        requested = getattr(cfg, setting)
        assert native >= 1
        # Rounded up by less than one unit; the library ignores float noise below 1e-6 s.
        assert native - 1 < requested * scale + 1e-6, (setting, requested, native)
        assert native >= (requested - 1e-6) * scale, (setting, requested, native)


@socket_settings
@given(cfg=linux_configs)
def test_configure_on_a_connected_ipv4_pair(cfg: KeepaliveConfig) -> None:
    with tcp_pair("127.0.0.1") as (client, server):
        applied = keepalive.configure(client, cfg)
        raw = raw_options(client.fileno())
        assert_applied_matches_kernel(applied, cfg, raw)
        assert raw_options(server.fileno())["SO_KEEPALIVE"] == 0, "the peer is not touched"
        assert_connection_works(client, server)


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")
@settings(deadline=None, max_examples=25)
@given(cfg=linux_configs)
def test_configure_on_a_connected_ipv6_pair(cfg: KeepaliveConfig) -> None:
    with tcp_pair("::1") as (client, server):
        assert client.family == socket.AF_INET6
        applied = keepalive.configure(client, cfg)
        raw = raw_options(client.fileno())
        assert_applied_matches_kernel(applied, cfg, raw)
        assert keepalive.inspect(client).idle == raw["TCP_KEEPIDLE"]
        assert_connection_works(client, server)


def test_keywords_alone_and_keywords_overriding_a_config() -> None:
    with socket.socket() as sock:
        applied = keepalive.configure(sock, idle=30, count=2)
        raw = raw_options(sock.fileno())
        # keywords not given take KeepaliveConfig's defaults
        assert raw["TCP_KEEPIDLE"] == 30
        assert raw["TCP_KEEPINTVL"] == KeepaliveConfig().interval
        assert raw["TCP_KEEPCNT"] == 2
        assert applied["idle"].requested == 30
    with socket.socket() as sock:
        base = KeepaliveConfig(idle=100, interval=20, count=4, user_timeout=50)
        keepalive.configure(sock, base, interval=7, user_timeout=1.5)
        raw = raw_options(sock.fileno())
        assert (raw["TCP_KEEPIDLE"], raw["TCP_KEEPINTVL"], raw["TCP_KEEPCNT"]) == (100, 7, 4)
        assert raw["TCP_USER_TIMEOUT"] == 1500


def test_default_configure_and_strict_false_on_linux() -> None:
    with socket.socket() as sock:
        applied = keepalive.configure(sock)
        raw = raw_options(sock.fileno())
    assert raw["SO_KEEPALIVE"] == 1
    assert (raw["TCP_KEEPIDLE"], raw["TCP_KEEPINTVL"], raw["TCP_KEEPCNT"]) == (60, 10, 5)
    assert applied.fully_honoured
    with socket.socket() as sock:
        lenient = keepalive.configure(sock, KeepaliveConfig(1.5, 2, 3, 4), strict=False)
        assert lenient.unsupported == ()  # Linux supports every setting per socket
        assert [item.setting for item in lenient.approximated] == ["idle"]
        assert raw_options(sock.fileno())["TCP_KEEPIDLE"] == 2


def test_socket_created_with_nonblocking_flag_is_accepted() -> None:
    kind = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
    with socket.socket(socket.AF_INET, kind) as sock:
        keepalive.configure(sock, idle=42)
        assert raw_options(sock.fileno())["TCP_KEEPIDLE"] == 42


# -- other socket objects: TLS, asyncio, raw fd, listening ----------------------------------------


def _cert_with_cryptography(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keepalive test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _cert_with_openssl(directory: Path, tool: str) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    command = [tool, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=keepalive test"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    command += ["-keyout", str(key_path), "-out", str(cert_path)]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert, key) for 127.0.0.1, made now: with `cryptography` if installed, else `openssl`."""
    directory = tmp_path_factory.mktemp("tls")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        tool = shutil.which("openssl")
        if tool is None:
            message = "neither the cryptography package nor the openssl tool is installed"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        return _cert_with_openssl(directory, tool)
    return _cert_with_cryptography(directory)


def test_tls_wrapped_socket(self_signed_cert: tuple[Path, Path]) -> None:
    cert, key = self_signed_cert
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    errors: list[BaseException] = []

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(IO_TIMEOUT)

        def echo_once() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(IO_TIMEOUT)
                with server_context.wrap_socket(conn, server_side=True) as tls_server:
                    tls_server.sendall(tls_server.recv(64))
            except BaseException as exc:  # reported to the test thread below
                errors.append(exc)

        thread = threading.Thread(target=echo_once, daemon=True)
        thread.start()
        plain = socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT)
        with client_context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
            assert isinstance(tls, ssl.SSLSocket)
            cfg = KeepaliveConfig(idle=21, interval=3, count=4, user_timeout=33.3)
            applied = keepalive.configure(tls, cfg)
            raw = raw_options(tls.fileno())
            assert_applied_matches_kernel(applied, cfg, raw)
            assert raw == expected_native(cfg)
            state = keepalive.inspect(tls)
            assert (state.enabled, state.idle, state.user_timeout) == (True, 21, 33.3)
            tls.sendall(b"over tls")
            assert tls.recv(64) == b"over tls", "the TLS session still works"
        thread.join(IO_TIMEOUT)
    assert not errors, errors


def test_asyncio_transport_socket() -> None:
    cfg = KeepaliveConfig(idle=12, interval=2.5, count=6, user_timeout=0.25)

    async def scenario() -> tuple[ConfigureResult, dict[str, int], bytes, Any]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(64))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        transport_socket = writer.get_extra_info("socket")
        applied = keepalive.configure(transport_socket, cfg)
        raw = raw_options(transport_socket.fileno())
        state = keepalive.inspect(transport_socket)
        writer.write(b"through asyncio")
        await writer.drain()
        echoed = await reader.read(64)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return applied, raw, echoed, state

    applied, raw, echoed, state = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert raw == expected_native(cfg)
    assert raw["TCP_KEEPINTVL"] == 3
    assert raw["TCP_USER_TIMEOUT"] == 250
    assert_applied_matches_kernel(applied, cfg, raw)
    assert (state.interval, state.user_timeout) == (3, 0.25)
    assert echoed == b"through asyncio", "the transport still works"


def test_raw_fd_is_configured_and_left_open_and_usable() -> None:
    with tcp_pair() as (client, server):
        fd = client.fileno()
        cfg = KeepaliveConfig(idle=17, interval=4, count=3, user_timeout=9)
        applied = keepalive.configure(fd, cfg)
        raw = raw_options(fd)
        assert raw == expected_native(cfg)
        assert_applied_matches_kernel(applied, cfg, raw)
        state = keepalive.inspect(fd)
        assert (state.idle, state.interval, state.count, state.user_timeout) == (17, 4, 3, 9)
        assert client.fileno() == fd
        os.fstat(fd)  # still open
        assert_connection_works(client, server)
        os.write(fd, b"raw")  # the descriptor itself works too
        assert server.recv(16) == b"raw"


def test_raw_fd_keeps_its_blocking_mode() -> None:
    with tcp_pair() as (client, _server):
        fd = client.fileno()
        client.setblocking(False)
        keepalive.configure(fd, idle=5)
        keepalive.inspect(fd)
        assert os.get_blocking(fd) is False
        client.setblocking(True)
        keepalive.configure(fd, idle=6)
        keepalive.inspect(fd)
        assert os.get_blocking(fd) is True


def test_raw_fd_keeps_its_blocking_mode_under_a_default_timeout() -> None:
    with tcp_pair() as (client, _server):
        fd = client.fileno()
        client.setblocking(True)
        assert os.get_blocking(fd) is True
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(3.0)
        try:
            keepalive.configure(fd, idle=5)
            after_configure = os.get_blocking(fd)
            client.setblocking(True)
            keepalive.inspect(fd)
            after_inspect = os.get_blocking(fd)
        finally:
            socket.setdefaulttimeout(previous)
        assert after_configure is True, "configure() made the caller's fd non-blocking"
        assert after_inspect is True, "inspect() made the caller's fd non-blocking"


def test_listening_socket_passes_its_settings_to_accepted_sockets() -> None:
    cfg = KeepaliveConfig(idle=45, interval=6, count=7, user_timeout=51.5)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(IO_TIMEOUT)
        applied = keepalive.configure(listener, cfg)
        assert_applied_matches_kernel(applied, cfg, raw_options(listener.fileno()))
        with socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert raw_options(accepted.fileno()) == expected_native(cfg)
                state = keepalive.inspect(accepted)
                assert (state.enabled, state.idle, state.interval) == (True, 45, 6)
                assert (state.count, state.user_timeout) == (7, 51.5)
                # the connecting side is a different socket: it keeps the defaults
                assert raw_options(client.fileno())["SO_KEEPALIVE"] == 0


# -- inspect, system_defaults, socket_options -----------------------------------------------------


def assert_inspect_equals_raw(sock: socket.socket) -> None:
    raw = raw_options(sock.fileno())
    state = keepalive.inspect(sock)
    assert state.platform == "Linux"
    assert state.enabled is bool(raw["SO_KEEPALIVE"])
    assert state.idle == raw["TCP_KEEPIDLE"]
    assert state.interval == raw["TCP_KEEPINTVL"]
    assert state.count == raw["TCP_KEEPCNT"]
    if raw["TCP_USER_TIMEOUT"] == 0:
        assert state.user_timeout is None
        assert state.source["user_timeout"] == "none"
    else:
        assert state.user_timeout == raw["TCP_USER_TIMEOUT"] / 1000
        assert state.source["user_timeout"] == "socket"
    for setting in ("idle", "interval", "count"):
        assert state.source[setting] == "socket"


@socket_settings
@given(cfg=linux_configs)
def test_inspect_equals_raw_getsockopt(cfg: KeepaliveConfig) -> None:
    with socket.socket() as sock:
        assert_inspect_equals_raw(sock)
        keepalive.configure(sock, cfg)
        assert_inspect_equals_raw(sock)
        state = keepalive.inspect(sock)
        raw = raw_options(sock.fileno())
        assert state.detection_bound == (
            raw["TCP_KEEPIDLE"] + raw["TCP_KEEPINTVL"] * raw["TCP_KEEPCNT"]
        )


def test_inspect_on_a_fresh_socket_reports_the_sysctl_defaults() -> None:
    with tcp_pair() as (client, _server):
        state = keepalive.inspect(client)
    assert state.enabled is False, "keepalive is off on a fresh TCP socket"
    assert state.idle == read_proc("tcp_keepalive_time")
    assert state.interval == read_proc("tcp_keepalive_intvl")
    assert state.count == read_proc("tcp_keepalive_probes")
    assert state.user_timeout is None
    assert state.detection_bound is None, "no bound while keepalive is off"


def test_system_defaults_equal_proc() -> None:
    defaults = keepalive.system_defaults()
    assert defaults.platform == "Linux"
    assert defaults.idle == read_proc("tcp_keepalive_time")
    assert defaults.interval == read_proc("tcp_keepalive_intvl")
    assert defaults.count == read_proc("tcp_keepalive_probes")
    assert isinstance(defaults.count, int)
    assert defaults.user_timeout is None
    assert defaults.source["idle"] == str(PROC / "tcp_keepalive_time")
    assert defaults.source["interval"] == str(PROC / "tcp_keepalive_intvl")
    assert defaults.source["count"] == str(PROC / "tcp_keepalive_probes")
    assert defaults.detection_bound == defaults.idle + defaults.interval * defaults.count


@socket_settings
@given(cfg=linux_configs)
def test_socket_options_by_hand_equal_configure(cfg: KeepaliveConfig) -> None:
    options = keepalive.socket_options(cfg)
    assert options[-1] == (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # TCP options first
    assert all(
        isinstance(part, int) and not isinstance(part, bool) for item in options for part in item
    )
    with socket.socket() as by_hand, socket.socket() as configured:
        for level, optname, value in options:
            by_hand.setsockopt(level, optname, value)
        keepalive.configure(configured, cfg)
        assert raw_options(by_hand.fileno()) == raw_options(configured.fileno())
        assert raw_options(by_hand.fileno())["TCP_KEEPIDLE"] == stored_seconds(cfg.idle)


def test_socket_options_keywords() -> None:
    options = keepalive.socket_options(idle=30, interval=5, count=3, user_timeout=0.5)
    # The TCP options first, the user timeout first of all (Linux MPTCP sockets refuse it,
    # not the others), SO_KEEPALIVE last: a socket that is not TCP refuses the first call.
    assert options == [
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 500),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]


# -- refusals -------------------------------------------------------------------------------------


def assert_invalid_socket(call: Any) -> InvalidSocket:
    with pytest.raises(InvalidSocket) as caught:
        call()
    assert isinstance(caught.value, KeepaliveError)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value), "the error says what is wrong"
    return caught.value


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_udp_socket_refused_and_untouched(function: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        error = assert_invalid_socket(lambda: function(udp))
        assert "TCP" in str(error)
        assert raw_keepalive_flag(udp.fileno()) == 0
        assert_invalid_socket(lambda: function(udp.fileno()))
        assert raw_keepalive_flag(udp.fileno()) == 0
        assert udp.fileno() >= 0, "the caller's socket stays open"


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_unix_socket_refused_and_untouched(function: Any) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        error = assert_invalid_socket(lambda: function(left))
        assert "TCP" in str(error)
        assert raw_keepalive_flag(left.fileno()) == 0
        assert_invalid_socket(lambda: function(left.fileno()))
        assert raw_keepalive_flag(left.fileno()) == 0
        left.sendall(b"still open")
        assert right.recv(16) == b"still open"


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_closed_socket_refused(function: Any) -> None:
    sock = socket.socket()
    sock.close()
    error = assert_invalid_socket(lambda: function(sock))
    assert "closed" in str(error)


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
def test_pipe_fd_refused_and_left_open(function: Any) -> None:
    read_end, write_end = os.pipe()
    try:
        assert_invalid_socket(lambda: function(read_end))
        assert_invalid_socket(lambda: function(write_end))
        os.write(write_end, b"x")
        assert os.read(read_end, 1) == b"x", "the pipe is still open and works"
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("function", [keepalive.configure, keepalive.inspect])
@pytest.mark.parametrize(
    "thing", [object(), "127.0.0.1", b"socket", 3.0, None, [], -1, -12345, True], ids=case_id
)
def test_non_sockets_refused(function: Any, thing: object) -> None:
    assert_invalid_socket(lambda: function(thing))


def test_closed_fd_numbers_refused() -> None:
    with socket.socket() as sock:
        fd = sock.fileno()
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)  # not reused by anything else since
    assert_invalid_socket(lambda: keepalive.configure(fd))
    beyond_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 1
    assert_invalid_socket(lambda: keepalive.configure(beyond_limit))
    assert_invalid_socket(lambda: keepalive.inspect(beyond_limit))


@pytest.mark.parametrize(
    ("settings_", "field", "range_text"),
    [
        ({"count": 1000}, "count", "1..127"),
        ({"idle": 40000}, "idle", "1..32767"),
        ({"interval": 40000}, "interval", "1..32767"),
        ({"idle": 32767.5}, "idle", "1..32767"),
        ({"user_timeout": 3e6}, "user_timeout", "2147483.647"),
        ({"user_timeout": 2_147_483.6475}, "user_timeout", "2147483.647"),
    ],
    ids=case_id,
)
@pytest.mark.parametrize("strict", [True, False])
def test_out_of_linux_range_refused_and_socket_untouched(
    settings_: dict[str, float], field: str, range_text: str, strict: bool
) -> None:
    with tcp_pair() as (client, _server):
        keepalive.configure(client, idle=100)  # not at defaults: "untouched" means kept
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        before = raw_options(client.fileno())
        with pytest.raises(InvalidSetting) as caught:
            keepalive.configure(client, strict=strict, **settings_)  # type: ignore[arg-type]
        assert raw_options(client.fileno()) == before
        assert before["SO_KEEPALIVE"] == 0
        with pytest.raises(InvalidSetting):
            keepalive.configure(client, KeepaliveConfig(**settings_))  # type: ignore[arg-type]
        with pytest.raises(InvalidSetting):
            keepalive.socket_options(**settings_)  # type: ignore[arg-type]
        assert raw_options(client.fileno()) == before
    error = caught.value
    assert isinstance(error, KeepaliveError)
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.platform == "Linux"
    assert "Linux" in str(error)
    assert range_text in str(error)


# -- an option refused midway: the earlier ones are restored --------------------------------------


def linux_with(setting: str, **changes: Any) -> Platform:
    base = linux_platform.detect()
    spec = dataclasses.replace(base.options[setting], **changes)  # type: ignore[index]
    return dataclasses.replace(base, options={**base.options, setting: spec})


@pytest.mark.parametrize(
    ("platform", "cfg", "option", "code"),
    [
        # the kernel has no TCP option 250: ENOPROTOOPT on the last option of the plan
        (
            linux_with("user_timeout", optname=250),
            KeepaliveConfig(idle=11, interval=12, count=13, user_timeout=14),
            "TCP_USER_TIMEOUT",
            errno.ENOPROTOOPT,
        ),
        # our range lifted, the kernel's is not: EINVAL from TCP_KEEPCNT after three options
        (
            linux_with("count", maximum=10_000),
            KeepaliveConfig(idle=11, interval=12, count=1000),
            "TCP_KEEPCNT",
            errno.EINVAL,
        ),
    ],
    ids=["bogus-optname", "kernel-range"],
)
def test_kernel_refusal_midway_restores_the_earlier_options(
    platform: Platform, cfg: KeepaliveConfig, option: str, code: int
) -> None:
    with tcp_pair() as (client, server):
        keepalive.configure(client, KeepaliveConfig(idle=300, interval=30, count=3, user_timeout=9))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        before = raw_options(client.fileno())
        with pytest.raises(SocketOptionError) as caught:
            keepalive.configure(client, cfg, platform=platform)
        assert raw_options(client.fileno()) == before, "earlier options restored"
        assert_connection_works(client, server)
    error = caught.value
    assert isinstance(error, KeepaliveError)
    assert isinstance(error, OSError)
    assert error.errno == code
    assert error.option == option
    assert option in str(error)
    assert error.restored is True
    assert isinstance(error.__cause__, OSError)
