"""keepalive.integrations' httpx helpers against real httpx, real proxies and real servers.

Every route a request can take is tried, sync and async: direct (HTTP and HTTPS), through
tinyproxy (plain-HTTP forwarding, and a ``CONNECT`` tunnel to an HTTPS server whose
self-signed certificate is made here), and through a SOCKS5 proxy (OpenSSH's dynamic
forwarding, ``ssh -N -D``, against a throwaway ``sshd``). After each request the options are
read back with ``getsockopt`` from this process's sockets connected to the port the route's
first hop listens on (found with psutil: tests/servers.py ``client_sockets_to``), so nothing
private to httpx is trusted to say where the socket went.

Everything listens on 127.0.0.1 only. A missing tinyproxy, sshd or ssh skips, or fails under
``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.server
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import (
    HttpServer,
    SshServer,
    _OkHandler,
    _stop,
    free_port,
    http_server,
    require_module,
    sshd_server,
    unavailable,
)
from sockets_seen import (
    CFG,
    assert_keepalive,
    assert_no_keepalive_to,
    assert_sockets_to,
    has_socket_to,
    server_fixture,
)

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig, UnsupportedOption
from keepalive import integrations as ki
from keepalive.integrations import httpx as kihttpx
from keepalive.platforms import catalog, detect
from keepalive.sockets import socket_options

OTHER_CFG = KeepaliveConfig(idle=41, interval=9, count=3)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# -- servers ----------------------------------------------------------------------------------


@dataclass
class TlsServer:
    port: int
    ca_file: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def _self_signed(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (cert, key) paths."""
    require_module("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keepalive test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_file).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.contextmanager
def tls_server() -> Iterator[TlsServer]:
    """An HTTPS/1.1 server on 127.0.0.1 answering every GET with ``ok``."""
    with tempfile.TemporaryDirectory(prefix="keepalive-tls-") as workdir:
        cert_file, key_file = _self_signed(workdir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OkHandler)
        server.daemon_threads = True
        # The handshake happens in the handler's thread, so a slow client never stalls accept.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        try:
            yield TlsServer(int(server.server_address[1]), cert_file)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections on 127.0.0.1 and never answers: the hang a read timeout bounds."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        time.sleep(0.05)
    return False


def _stop_for_its_stderr(process: subprocess.Popen[bytes]) -> str:
    """Stops ``process`` as tests/servers.py stops its servers; returns its stderr's tail."""
    _stop(process)
    return process.stderr.read().decode(errors="replace")[-500:] if process.stderr else ""


@contextlib.contextmanager
def tinyproxy() -> Iterator[int]:
    """tinyproxy on 127.0.0.1 and a free port, in the foreground, from a generated config:
    forwards plain HTTP and tunnels ``CONNECT`` to any port. Yields its port."""
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not os.access(binary, os.X_OK):
        unavailable("tinyproxy is not installed (Debian package tinyproxy)")
    with tempfile.TemporaryDirectory(prefix="keepalive-tinyproxy-") as workdir:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken by another worker first
            port = free_port()
            config = Path(workdir, "tinyproxy.conf")
            # No ConnectPort line: CONNECT may reach any port (the TLS server's is random).
            config.write_text(
                f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 50\n"
                "LogLevel Error\nDisableViaHeader Yes\n"
            )
            process = subprocess.Popen(
                [binary, "-d", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if _wait_for_port(port, process):
                    yield port
                    return
            finally:
                last_error = _stop_for_its_stderr(process)
        pytest.fail(f"tinyproxy did not start: {last_error}")


def _socks_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"\x05\x01\x00")  # SOCKS5, one method: no authentication
            return sock.recv(2) == b"\x05\x00"
    except OSError:
        return False


@contextlib.contextmanager
def ssh_socks_proxy(sshd: SshServer) -> Iterator[int]:
    """OpenSSH's SOCKS5 proxy (``ssh -N -D``) on 127.0.0.1 through ``sshd``. Yields its port."""
    ssh = shutil.which("ssh")
    if ssh is None:
        unavailable("ssh is not installed (Debian package openssh-client)")
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        command = [ssh, "-N", "-F", "/dev/null", "-D", f"127.0.0.1:{port}"]
        command += ["-p", str(sshd.port), "-i", sshd.key_file, "-o", "BatchMode=yes"]
        command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        command += ["-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"]
        command += [f"{sshd.user}@127.0.0.1"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                if _socks_answers(port):
                    yield port
                    return
                time.sleep(0.05)
        finally:
            last_error = _stop_for_its_stderr(process)
    pytest.fail(f"ssh -D did not start: {last_error}")


origin = server_fixture(http_server)
tls_origin = server_fixture(tls_server)
http_proxy = server_fixture(tinyproxy)


@pytest.fixture(scope="module")
def socks_proxy() -> Iterator[int]:
    with sshd_server() as sshd, ssh_socks_proxy(sshd) as port:
        yield port


@pytest.fixture
def no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


# -- routes -----------------------------------------------------------------------------------


@dataclass
class Route:
    url: str  # what the client asks for
    proxy: str | None  # the proxy it goes through
    first_hop: int  # the port this process's socket is connected to
    verify: ssl.SSLContext | bool


ROUTES = ["direct", "direct-tls", "http-forward", "http-connect-tls", "socks5", "socks5-tls"]


def route_named(name: str, request: pytest.FixtureRequest) -> Route:
    origin: HttpServer = request.getfixturevalue("origin")
    verify: ssl.SSLContext | bool = True
    if name.endswith("tls"):
        secure: TlsServer = request.getfixturevalue("tls_origin")
        url, port, verify = secure.url, secure.port, secure.client_context()
    else:
        url, port = origin.url, origin.port
    if name.startswith("direct"):
        return Route(url, None, port, verify)
    if name.startswith("http"):
        proxy_port: int = request.getfixturevalue("http_proxy")
        return Route(url, f"http://127.0.0.1:{proxy_port}", proxy_port, verify)
    proxy_port = request.getfixturevalue("socks_proxy")
    return Route(url, f"socks5://127.0.0.1:{proxy_port}", proxy_port, verify)


def sync_client(helper: str, route: Route, **kwargs: Any) -> Any:
    if helper == "client":
        return ki.httpx_client(
            CFG, proxy=route.proxy, verify=route.verify, trust_env=False, **kwargs
        )
    transport = ki.httpx_transport(CFG, proxy=route.proxy, verify=route.verify)
    return httpx.Client(transport=transport, trust_env=False, **kwargs)


def async_client(helper: str, route: Route, **kwargs: Any) -> Any:
    if helper == "client":
        return ki.httpx_async_client(
            CFG, proxy=route.proxy, verify=route.verify, trust_env=False, **kwargs
        )
    transport = ki.httpx_async_transport(CFG, proxy=route.proxy, verify=route.verify)
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


def first_hop_socket(response: Any) -> Any:
    return response.extensions["network_stream"].get_extra_info("socket")


def get_through(client: Any, url: str, first_hop: int, cfg: KeepaliveConfig = CFG) -> None:
    """GET ``url``; while the response is open, its socket leads to ``first_hop`` and every
    socket to that port carries ``cfg``. (Streamed: tinyproxy closes a forwarded connection
    after the response, so the socket is read while the response is still open.)"""
    with client.stream("GET", url) as response:
        assert first_hop_socket(response).getpeername()[1] == first_hop
        assert_sockets_to(first_hop, cfg)
        assert response.read() == b"ok\n"


# -- every route, sync and async --------------------------------------------------------------


@pytest.mark.parametrize("helper", ["client", "transport"])
@pytest.mark.parametrize("route_name", ROUTES)
def test_sync_requests_carry_keepalive_on_every_route(
    request: pytest.FixtureRequest,
    no_env_proxies: pytest.MonkeyPatch,
    route_name: str,
    helper: str,
) -> None:
    route = route_named(route_name, request)
    # Streamed, as in get_through().
    with sync_client(helper, route) as client, client.stream("GET", route.url) as response:
        sock = first_hop_socket(response)
        assert sock.getpeername()[1] == route.first_hop  # the route really was taken
        assert_keepalive(sock)
        assert assert_sockets_to(route.first_hop) == 1  # the same socket, read from outside
        assert response.read() == b"ok\n"


@pytest.mark.parametrize("helper", ["client", "transport"])
@pytest.mark.parametrize("route_name", ROUTES)
def test_async_requests_carry_keepalive_on_every_route(
    request: pytest.FixtureRequest,
    no_env_proxies: pytest.MonkeyPatch,
    route_name: str,
    helper: str,
) -> None:
    route = route_named(route_name, request)

    async def main() -> None:
        async with (
            async_client(helper, route) as client,
            client.stream("GET", route.url) as response,
        ):
            assert first_hop_socket(response).getpeername()[1] == route.first_hop
            assert assert_sockets_to(route.first_hop) == 1
            assert await response.aread() == b"ok\n"

    asyncio.run(main())


@pytest.mark.parametrize("route_name", ["direct", "http-connect-tls", "socks5"])
def test_trio_requests_carry_keepalive(
    request: pytest.FixtureRequest, no_env_proxies: pytest.MonkeyPatch, route_name: str
) -> None:
    trio = require_module("trio")
    route = route_named(route_name, request)

    async def main() -> None:
        async with (
            async_client("client", route) as client,
            client.stream("GET", route.url) as response,
        ):
            assert assert_sockets_to(route.first_hop) == 1
            assert await response.aread() == b"ok\n"

    trio.run(main)


def test_without_the_helper_a_proxied_socket_has_no_keepalive(
    request: pytest.FixtureRequest, no_env_proxies: pytest.MonkeyPatch
) -> None:
    """The gap this closes: httpx's own socket_options stop at the proxy."""
    route = route_named("http-connect-tls", request)
    options = socket_options(CFG)
    transport = httpx.HTTPTransport(proxy=route.proxy, verify=route.verify, socket_options=options)
    with httpx.Client(transport=transport, trust_env=False) as client:
        assert client.get(route.url).text == "ok\n"
        assert_no_keepalive_to(route.first_hop)


# -- the caller's settings are kept ------------------------------------------------------------


@dataclass
class EnvCase:
    variables: dict[str, str]  # {name: "http" | "socks" | literal}
    client_kwargs: dict[str, Any]
    via: str  # "http", "socks" or "direct"


ENV_CASES = {
    "HTTP_PROXY": EnvCase({"HTTP_PROXY": "http"}, {}, "http"),
    "ALL_PROXY-socks": EnvCase({"ALL_PROXY": "socks"}, {}, "socks"),
    "HTTPS_PROXY-only": EnvCase({"HTTPS_PROXY": "http"}, {}, "direct"),  # the origin is http://
    "NO_PROXY": EnvCase({"HTTP_PROXY": "http", "NO_PROXY": "127.0.0.1"}, {}, "direct"),
    "trust_env-False": EnvCase({"HTTP_PROXY": "http"}, {"trust_env": False}, "direct"),
    "proxy-beats-env": EnvCase({"HTTP_PROXY": "http"}, {"proxy": "socks"}, "socks"),
}


@pytest.mark.parametrize("case_name", list(ENV_CASES))
def test_environment_proxies_are_resolved_as_httpx_resolves_them(
    no_env_proxies: pytest.MonkeyPatch,
    origin: HttpServer,
    http_proxy: int,
    socks_proxy: int,
    case_name: str,
) -> None:
    case = ENV_CASES[case_name]
    ports = {"http": http_proxy, "socks": socks_proxy, "direct": origin.port}
    urls = {"http": f"http://127.0.0.1:{http_proxy}", "socks": f"socks5://127.0.0.1:{socks_proxy}"}
    for name, value in case.variables.items():
        no_env_proxies.setenv(name, urls.get(value, value))
    kwargs = {key: urls.get(value, value) for key, value in case.client_kwargs.items()}
    expected = ports[case.via]
    # What httpx itself does with the same arguments:
    with httpx.Client(**kwargs) as plain, plain.stream("GET", origin.url) as response:
        assert first_hop_socket(response).getpeername()[1] == expected
        assert response.read() == b"ok\n"
    with ki.httpx_client(CFG, **kwargs) as client:
        get_through(client, origin.url, expected)


def test_limits_and_timeouts_are_kept_through_a_proxy(
    no_env_proxies: pytest.MonkeyPatch, tls_origin: TlsServer, http_proxy: int
) -> None:
    timeout = httpx.Timeout(10, pool=0.3)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30)
    proxy = f"http://127.0.0.1:{http_proxy}"
    verify = tls_origin.client_context()
    with ki.httpx_client(CFG, proxy=proxy, limits=limits, timeout=timeout, verify=verify) as client:
        assert client.timeout == timeout
        with client.stream("GET", tls_origin.url) as held:  # takes the only connection
            assert held.status_code == 200
            started = time.monotonic()
            with pytest.raises(httpx.PoolTimeout):
                client.get(tls_origin.url)
            waited = time.monotonic() - started
        assert 0.25 <= waited < 5, waited  # the pool timeout, with room for a loaded machine
        assert client.get(tls_origin.url).text == "ok\n"  # the tunnel came back to the pool
        assert assert_sockets_to(http_proxy) == 1  # max_connections=1 held


def test_the_read_timeout_bounds_a_silent_server_behind_a_proxy(
    no_env_proxies: pytest.MonkeyPatch, http_proxy: int
) -> None:
    """The proxy answers keepalive probes for a server that never answers: the socket carries
    keepalive all along, and only the caller's read timeout ends the wait
    (docs/recipes/http.md, "What bounds a hang")."""
    proxy = f"http://127.0.0.1:{http_proxy}"
    outcome: list[BaseException | float] = []
    with (
        silent_server() as port,
        ki.httpx_client(CFG, proxy=proxy, timeout=httpx.Timeout(10, read=3.0)) as client,
    ):

        def hang() -> None:
            started = time.monotonic()
            try:
                client.get(f"http://127.0.0.1:{port}/")
            except httpx.ReadTimeout:
                outcome.append(time.monotonic() - started)
            except BaseException as exc:  # reported by the assertion below
                outcome.append(exc)

        thread = threading.Thread(target=hang)
        thread.start()
        # Well inside the 3 s read timeout, so a loaded machine still sees the hang.
        deadline = time.monotonic() + 2.5
        while not has_socket_to(http_proxy) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_sockets_to(http_proxy)  # mid-hang: keepalive is on, and cannot help
        thread.join(15)
    assert len(outcome) == 1
    waited = outcome[0]
    assert isinstance(waited, float), waited
    assert 2.95 <= waited < 10, waited


class SdkStyleClient(httpx.Client):
    """As openai.DefaultHttpxClient and anthropic.DefaultHttpxClient: the SDK's defaults."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", httpx.Timeout(600, connect=5))
        kwargs.setdefault(
            "limits", httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        )
        kwargs.setdefault("follow_redirects", True)
        super().__init__(**kwargs)


def test_client_class_builds_an_sdk_style_client(
    no_env_proxies: pytest.MonkeyPatch, origin: HttpServer, socks_proxy: int
) -> None:
    proxy = f"socks5://127.0.0.1:{socks_proxy}"
    with ki.httpx_client(CFG, client_class=SdkStyleClient, proxy=proxy) as client:
        assert type(client) is SdkStyleClient
        assert client.timeout == httpx.Timeout(600, connect=5)
        assert client.follow_redirects is True
        get_through(client, origin.url, socks_proxy)


def test_a_transport_from_httpx_transport_keeps_its_own_config(
    no_env_proxies: pytest.MonkeyPatch, origin: HttpServer, http_proxy: int
) -> None:
    proxy = f"http://127.0.0.1:{http_proxy}"
    mounted = ki.httpx_transport(OTHER_CFG, proxy=proxy)
    with ki.httpx_client(CFG, mounts={"http://127.0.0.1": mounted}) as client:
        get_through(client, origin.url, http_proxy, OTHER_CFG)


def test_a_plain_transport_of_the_caller_gets_keepalive(
    no_env_proxies: pytest.MonkeyPatch, origin: HttpServer, http_proxy: int
) -> None:
    proxy = f"http://127.0.0.1:{http_proxy}"
    transport = httpx.HTTPTransport(proxy=proxy, retries=1)
    with ki.httpx_client(CFG, transport=transport) as client:
        get_through(client, origin.url, http_proxy)


# -- refusals ---------------------------------------------------------------------------------


def test_a_transport_keepalive_cannot_reach_is_refused_unless_not_strict(
    no_env_proxies: pytest.MonkeyPatch, origin: HttpServer
) -> None:
    mock = httpx.MockTransport(lambda request: httpx.Response(200, text="mocked"))
    mounts = {"http://mocked.invalid": mock}
    yours = httpx.HTTPTransport()
    with pytest.raises(InvalidSetting, match=r"mounts\['http://mocked\.invalid'\].*MockTransport"):
        ki.httpx_client(CFG, transport=yours, mounts=mounts)
    # Refused before anything changed: your transport still dials without keepalive.
    with httpx.Client(transport=yours) as plain, plain.stream("GET", origin.url) as response:
        assert_no_keepalive_to(origin.port)
        assert response.read() == b"ok\n"
    with ki.httpx_client(CFG, mounts=mounts, strict=False) as client:
        assert client.get("http://mocked.invalid/").text == "mocked"
        get_through(client, origin.url, origin.port)


def test_bad_arguments_raise_before_a_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    monkeypatch.setattr(httpx.Client, "__init__", lambda self, **kwargs: made.append(kwargs))
    with pytest.raises(InvalidSettingType, match="cfg"):
        ki.httpx_client({"idle": 60})  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="strict"):
        ki.httpx_client(CFG, strict="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="client_class"):
        ki.httpx_client(CFG, client_class=httpx.AsyncClient)  # type: ignore[arg-type]
    if sys.platform.startswith("linux"):
        with pytest.raises(InvalidSetting, match=r"idle=40000\.0 is not allowed on Linux"):
            ki.httpx_client(KeepaliveConfig(idle=40000))
    assert made == []


def test_strict_refuses_a_setting_the_platform_cannot_apply_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variant = catalog.variant("NetBSD")  # no per-socket user timeout there
    netbsd = detect(variant.sys_platform, variant.namespace, variant.release)
    monkeypatch.setattr(kihttpx, "current", lambda: netbsd)
    for make in (ki.httpx_client, ki.httpx_async_client):
        with pytest.raises(UnsupportedOption, match="user_timeout"):
            make(CFG)
    lenient = ki.httpx_client(CFG, strict=False)
    lenient.close()


@pytest.mark.parametrize("helper", ["httpx_client", "httpx_async_client"])
def test_a_missing_httpx_raises_import_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, helper: str
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(ImportError, match=r"pip install 'httpx'") as info:
        getattr(ki, helper)(CFG)
    assert info.value.name == "httpx"


def test_an_httpx_whose_transport_hides_its_pool_is_named_in_the_error() -> None:
    class Relaid(httpx.Client):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            transport = self._transport
            transport.__dict__["_elsewhere"] = transport.__dict__.pop("_pool")

    message = rf"cannot reach the sockets of httpx {httpx.__version__} with httpcore .*_pool"
    with pytest.raises(ImportError, match=message):
        ki.httpx_client(CFG, client_class=Relaid)


def test_a_proxy_pool_that_stops_using_its_backend_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If an httpcore release gave proxy connections a backend of their own, keepalive would
    silently stop at the proxy again: the client is refused instead."""
    httpcore = require_module("httpcore")
    original = httpcore.HTTPProxy.create_connection

    def own_backend(self: Any, origin: Any) -> Any:
        connection = original(self, origin)
        inner = getattr(connection, "_connection", connection)
        inner._network_backend = httpcore.SyncBackend()
        return connection

    monkeypatch.setattr(httpcore.HTTPProxy, "create_connection", own_backend)
    with pytest.raises(ImportError, match=r"HTTPProxy does not dial its http connections"):
        ki.httpx_client(CFG, proxy="http://127.0.0.1:9")
    with pytest.raises(ImportError, match=r"HTTPProxy does not dial"):
        ki.httpx_transport(CFG, proxy="http://127.0.0.1:9")
    with ki.httpx_client(CFG, trust_env=False):  # direct pools are unaffected
        pass
