"""keepalive.install() on real loopback sockets: every connect path of the standard library,
asyncio and uvloop, TLS, what is left alone, the application's own values, uninstall,
idempotence, threads, strict, fork, host-name rules, and the audit.

Values are read back with getsockopt from the socket the library itself opened: found by its
peer's port among this process's file descriptors (psutil), or taken from the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import logging
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from servers import client_sockets_to, http_server

import keepalive
import keepalive.installer as ki
from keepalive import InvalidSetting, KeepaliveConfig, SocketOptionError

CFG = KeepaliveConfig(idle=37, interval=7, count=4, user_timeout=23.5)
WANTED = {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 37, "TCP_KEEPINTVL": 7, "TCP_KEEPCNT": 4}
WANTED_UT = {**WANTED, "TCP_USER_TIMEOUT": 23500}
OTHER = KeepaliveConfig(idle=51, interval=9, count=2)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads Linux's option numbers back"
)


def options(sock: Any) -> dict[str, int]:
    """The keepalive options of ``sock`` as the kernel reports them."""
    read = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"):
        read[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return read


def untouched(sock: Any) -> bool:
    read = options(sock)
    return read["SO_KEEPALIVE"] == 0 and read["TCP_KEEPIDLE"] == DEFAULT_IDLE


with socket.socket() as _probe:
    DEFAULT_IDLE = _probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
assert DEFAULT_IDLE not in (37, 51), "pick other test values"


def sockets_to(port: int) -> list[socket.socket]:
    found = client_sockets_to(port)
    assert found, f"no socket of this process is connected to port {port}"
    return found


def configured(port: int, wanted: dict[str, int] = WANTED_UT) -> None:
    """Every socket of this process connected to ``port`` carries ``wanted``."""
    for sock in sockets_to(port):
        with sock:
            read = options(sock)
            assert {name: read[name] for name in wanted} == wanted


@pytest.fixture(autouse=True)
def _uninstalled() -> Iterator[None]:
    assert ki.installed() is None, "a test left keepalive installed"
    try:
        yield
    finally:
        ki.uninstall()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """A listener on 127.0.0.1; its port picks out the client sockets of one test."""
    with socket.create_server(("127.0.0.1", 0), backlog=512) as listener:
        yield listener


def port_of(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def status() -> ki.Installation:
    found = ki.installed()
    assert found is not None
    return found


# -- socket.socket.connect and connect_ex ------------------------------------------------------


def test_blocking_connect_is_configured_before_the_connection_exists(
    server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    ki.install(CFG, loopback=True)
    seen: list[dict[str, int]] = []
    real = ki._original_connect

    def spy(sock: socket.socket, address: Any) -> None:
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()  # the handshake has not started...
        seen.append(options(sock))  # ... and the options are there
        real(sock, address)

    monkeypatch.setattr(ki, "_original_connect", spy)
    with socket.socket() as sock:
        sock.connect(server.getsockname())
        assert options(sock) == WANTED_UT
    assert seen == [WANTED_UT]
    assert status().configured == 1
    assert status().configured_by_rule == (1,)


def test_connect_with_a_timeout_keeps_the_timeout(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    with socket.socket() as sock:
        sock.settimeout(2.5)
        sock.connect(server.getsockname())
        assert sock.gettimeout() == 2.5
        assert os.get_blocking(sock.fileno()) is False  # as Python keeps a socket with a timeout
        assert options(sock) == WANTED_UT


def test_non_blocking_connect_keeps_einprogress_and_counts_once(server: socket.socket) -> None:
    def attempt() -> tuple[int, dict[str, int], int, float | None, bool]:
        with socket.socket() as sock:
            sock.setblocking(False)
            first = sock.connect_ex(server.getsockname())
            right_away = options(sock)
            select.select([], [sock], [], 5)
            again = sock.connect_ex(server.getsockname())  # a polling loop's second call
            return first, right_away, again, sock.gettimeout(), os.get_blocking(sock.fileno())

    plain = attempt()
    ki.install(CFG, loopback=True)
    first, right_away, again, timeout, blocking = attempt()
    assert (first, again, timeout, blocking) == (plain[0], plain[2], plain[3], plain[4])
    assert first in (0, errno.EINPROGRESS)
    assert again in (0, errno.EISCONN)
    assert right_away == WANTED_UT  # set before connect_ex returned: before the handshake ended
    assert status().configured == 1


def test_non_blocking_connect_still_raises_blocking_io_error(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    with socket.socket() as sock:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # loopback may even finish at once
            sock.connect(server.getsockname())
        assert options(sock) == WANTED_UT
        assert sock.gettimeout() == 0.0


def test_a_refused_connect_fails_as_it_would() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    ki.install(CFG, loopback=True)
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", closed_port))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", closed_port)) == errno.ECONNREFUSED
    with socket.socket() as sock, pytest.raises(TypeError):
        sock.connect(("127.0.0.1", "http"))  # connect()'s own error, not ours
    assert status().configured == 2


def test_ipv6_connect(server: socket.socket) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    ki.install(CFG, loopback=True)
    with listener, socket.create_connection(listener.getsockname()[:2]) as sock:
        assert options(sock) == WANTED_UT


def test_create_connection(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    with socket.create_connection(server.getsockname(), timeout=3) as sock:
        assert options(sock) == WANTED_UT
        assert sock.gettimeout() == 3


def test_http_client_and_urllib_request() -> None:
    ki.install(CFG, loopback=True)
    with http_server() as web:
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"ok\n"
        configured(web.port)
        connection.close()
        with urllib.request.urlopen(web.url, timeout=5) as response:
            configured(web.port)  # before the body: urllib closes the socket once it is read
            assert response.read() == b"ok\n"
    assert status().configured == 2


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tool = shutil.which("openssl")
    if tool is None:
        if os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1":
            pytest.fail("the openssl tool is not installed")
        pytest.skip("the openssl tool is not installed")
    directory = tmp_path_factory.mktemp("install-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [tool, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=keepalive test"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, ssl.SSLContext]]:
    """A TLS server on 127.0.0.1 answering b"hi" to each connection; and a client context."""
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with (
                    contextlib.suppress(OSError),
                    server_context.wrap_socket(conn, server_side=True) as tls,
                ):
                    tls.sendall(b"hi")
                    tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port_of(listener), client_context
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        listener.close()
        thread.join(5)


def test_a_tls_socket_connecting_itself(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, context = tls_server
    ki.install(CFG, loopback=True)
    with context.wrap_socket(socket.socket(), server_hostname="127.0.0.1") as tls:
        tls.connect(("127.0.0.1", port))  # SSLSocket.connect goes through socket.connect
        assert tls.recv(2) == b"hi"
        assert options(tls) == WANTED_UT
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"hi"
        assert options(tls) == WANTED_UT


def test_asyncio_tls(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, context = tls_server
    ki.install(CFG, loopback=True)

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        assert await reader.readexactly(2) == b"hi"
        assert options(writer.get_extra_info("socket")) == WANTED_UT
        writer.close()

    asyncio.run(main())


# -- asyncio -------------------------------------------------------------------------------------


def test_asyncio_open_connection_create_connection_and_sock_connect(
    server: socket.socket,
) -> None:
    ki.install(CFG, loopback=True)
    address = server.getsockname()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _reader, writer = await asyncio.open_connection(*address)
        assert options(writer.get_extra_info("socket")) == WANTED_UT
        writer.close()
        transport, _ = await loop.create_connection(asyncio.Protocol, *address)
        assert options(transport.get_extra_info("socket")) == WANTED_UT
        transport.close()
        with socket.socket() as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            assert options(sock) == WANTED_UT
        # happy eyeballs connects through its own staggered sock_connect calls
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "localhost", address[1], happy_eyeballs_delay=0.1
        )
        assert options(transport.get_extra_info("socket")) == WANTED_UT
        transport.close()

    asyncio.run(main())
    assert status().configured >= 4


def test_the_proactor_loop_is_wrapped_once_imported(server: socket.socket) -> None:
    """Windows' proactor connects in C: its sock_connect is wrapped where it is imported
    (here driven with a stand-in proactor that connects like ConnectEx would)."""
    ki.install(CFG, loopback=True)
    from asyncio import proactor_events

    seen: list[dict[str, int]] = []

    class Proactor:
        async def connect(self, sock: socket.socket, address: Any) -> None:
            seen.append(options(sock))
            sock.setblocking(True)
            socket.socket.__base__.connect(sock, address)  # type: ignore[union-attr]

    loop_class = proactor_events.BaseProactorEventLoop
    assert vars(loop_class)["sock_connect"] is ki._proactor_sock_connect
    assert "asyncio BaseProactorEventLoop.sock_connect" in status().entry_points
    fake = SimpleNamespace(_debug=False, _proactor=Proactor())
    with socket.socket() as sock:
        asyncio.run(loop_class.sock_connect(fake, sock, server.getsockname()))  # type: ignore[arg-type]
        assert options(sock) == WANTED_UT
    assert seen == [WANTED_UT]
    assert status().configured == 1
    ki.uninstall()
    assert vars(loop_class)["sock_connect"] is not ki._proactor_sock_connect


# -- uvloop --------------------------------------------------------------------------------------


@pytest.fixture
def uvloop() -> Any:
    if os.environ.get("KEEPALIVE_REQUIRE_INTEGRATIONS") == "1":
        import uvloop  # CI installs the test extra

        return uvloop
    return pytest.importorskip("uvloop")


def test_uvloop_create_connection_open_connection_and_sock_connect(
    uvloop: Any, server: socket.socket, tls_server: tuple[int, ssl.SSLContext]
) -> None:
    ki.install(CFG, loopback=True)
    address = server.getsockname()
    tls_port, context = tls_server
    assert "uvloop.Loop.create_connection" in status().entry_points

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop)
        transport, _ = await loop.create_connection(asyncio.Protocol, *address)
        sock = transport.get_extra_info("socket")
        assert options(sock) == WANTED_UT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # as uvloop sets
        assert transport.get_extra_info("peername") == address
        transport.close()
        _reader, writer = await asyncio.open_connection("localhost", address[1])
        assert options(writer.get_extra_info("socket")) == WANTED_UT
        writer.close()
        with socket.socket() as raw:
            raw.setblocking(False)
            await loop.sock_connect(raw, address)
            assert options(raw) == WANTED_UT
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=context, local_addr=("127.0.0.1", 0)
        )
        assert await reader.readexactly(2) == b"hi"
        assert options(writer.get_extra_info("socket")) == WANTED_UT
        writer.close()

    uvloop.run(main())
    assert status().configured >= 4


def test_uvloop_errors_are_uvloops(uvloop: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def refused() -> type[BaseException]:
        try:
            await asyncio.open_connection("127.0.0.1", closed_port)
        except OSError as exc:
            return type(exc)
        raise AssertionError("connected to a closed port")

    async def misuse() -> str:
        with pytest.raises(ValueError, match="server_hostname is only meaningful") as caught:
            await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, "127.0.0.1", closed_port, server_hostname="x"
            )
        return str(caught.value)

    plain = uvloop.run(refused()), uvloop.run(misuse())
    ki.install(CFG, loopback=True)
    assert (uvloop.run(refused()), uvloop.run(misuse())) == plain
    assert plain[0] is ConnectionRefusedError
    assert status().configured == 1  # the refused attempt; the misuse never connected


def test_uvloop_imported_after_install_is_wrapped_and_restored() -> None:
    code = """
import sys, socket
import keepalive.installer as ki
ki.install(loopback=True)
assert "uvloop" not in sys.modules
import uvloop
assert vars(uvloop.Loop)["create_connection"] is ki._uvloop_create_connection
assert type(uvloop.__spec__.loader).__name__ != "_WatchingLoader"
assert uvloop.__loader__ is uvloop.__spec__.loader
assert "uvloop.Loop.create_connection" in ki.installed().entry_points
ki.uninstall()
assert "create_connection" not in vars(uvloop.Loop)
assert ki._watcher not in sys.meta_path
print("ok")
"""
    pytest.importorskip("uvloop")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


# -- left alone ----------------------------------------------------------------------------------


def test_udp_unix_and_listening_sockets_are_left_alone(tmp_path: Path) -> None:
    ki.install(CFG, loopback=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("127.0.0.1", 9))
        assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as unix_listener:
        unix_listener.bind(path)
        unix_listener.listen()
        with socket.socket(socket.AF_UNIX) as unix:
            unix.connect(path)
            assert unix.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert untouched(listener)
        with socket.socket() as raw:  # a client that is not ours: _socket's own connect
            socket.socket.__base__.connect(raw, listener.getsockname())  # type: ignore[union-attr]
            accepted, _ = listener.accept()
            with accepted:
                assert untouched(accepted)  # nothing inherited from the listener either
    after = status()
    assert (after.configured, after.skipped, after.failed) == (0, {}, {})


def test_loopback_is_skipped_unless_asked(server: socket.socket) -> None:
    ki.install(CFG)
    with socket.create_connection(server.getsockname()) as sock:
        assert untouched(sock)
    assert status().skipped == {"loopback destination": 1}
    assert status().configured == 0


def test_only_and_exclude_select_destinations(server: socket.socket) -> None:
    port = port_of(server)
    ki.install(CFG, loopback=True, only=[f"127.0.0.1:{port + 1}-{port + 5}"])
    with socket.create_connection(server.getsockname()) as sock:
        assert untouched(sock)
    assert status().skipped == {"no rule matched": 1}
    ki.install(CFG, loopback=True, exclude=f"*:{port}")
    with socket.create_connection(server.getsockname()) as sock:
        assert untouched(sock)
    assert status().skipped == {"excluded destination": 1}


def test_several_rules_and_host_names(server: socket.socket) -> None:
    port = port_of(server)
    ki.install(
        OTHER, rules=[ki.Rule(CFG, only=[f"localhost:{port}"])], loopback=True
    )  # CFG for localhost, OTHER for the rest
    assert "socket.getaddrinfo" in status().entry_points
    with socket.create_connection(("localhost", port)) as by_name:
        assert options(by_name) == WANTED_UT
    with (
        socket.create_server(("127.0.0.2", port)) as other,
        socket.create_connection(other.getsockname()) as by_address,
    ):  # an address no name resolved to
        read = options(by_address)
        assert (read["TCP_KEEPIDLE"], read["TCP_KEEPCNT"], read["TCP_USER_TIMEOUT"]) == (51, 2, 0)

    async def main() -> None:
        _reader, writer = await asyncio.open_connection("localhost", port)
        assert options(writer.get_extra_info("socket")) == WANTED_UT
        writer.close()

    asyncio.run(main())
    assert status().configured_by_rule == (2, 1)
    # a name resolved to an address once stands for it: 127.0.0.1 is localhost from now on
    with socket.create_connection(("127.0.0.1", port)) as by_address:
        assert options(by_address) == WANTED_UT
    ki.uninstall()
    assert socket.getaddrinfo is ki._original_getaddrinfo


# -- the application's own values ----------------------------------------------------------


def test_the_applications_values_are_kept_and_the_rest_filled_in(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 45)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 9000)
        sock.connect(server.getsockname())
        assert options(sock) == {**WANTED_UT, "TCP_KEEPIDLE": 45, "TCP_USER_TIMEOUT": 9000}
    with socket.socket() as sock:  # everything set: nothing to do
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in ((socket.TCP_KEEPIDLE, 3), (socket.TCP_KEEPINTVL, 2)):
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 8)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000)
        sock.connect(server.getsockname())
        read = options(sock)
        assert (read["TCP_KEEPIDLE"], read["TCP_KEEPINTVL"], read["TCP_KEEPCNT"]) == (3, 2, 8)
        assert read["TCP_USER_TIMEOUT"] == 1000
    with socket.socket() as sock:  # a user timeout alone, without keepalive, is kept too
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 4000)
        sock.connect(server.getsockname())
        assert options(sock) == {**WANTED_UT, "TCP_USER_TIMEOUT": 4000}
    after = status()
    assert after.configured == 2
    assert after.kept == 3
    assert after.skipped == {"set by the application": 1}


def test_override_wins(server: socket.socket) -> None:
    ki.install(CFG, loopback=True, override=True)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 45)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 9000)
        sock.connect(server.getsockname())
        assert options(sock) == WANTED_UT
    assert (status().configured, status().kept) == (1, 0)


# -- uninstall, idempotence ------------------------------------------------------------------


def test_uninstall_restores_exactly_and_leaves_later_sockets_alone(
    server: socket.socket, uvloop: Any
) -> None:
    uvloop_loop = uvloop.Loop  # imported: wrapped by install
    before = (
        dict(vars(socket.socket)),
        socket.getaddrinfo,
        dict(vars(uvloop_loop)),
        list(sys.meta_path),
    )
    ki.install(CFG, loopback=True, only="localhost")  # a host rule: getaddrinfo wrapped too
    assert vars(socket.socket)["connect"] is not None
    assert socket.getaddrinfo is not before[1]
    assert vars(uvloop_loop)["create_connection"] is ki._uvloop_create_connection
    assert ki.uninstall() is True
    after = (dict(vars(socket.socket)), socket.getaddrinfo, dict(vars(uvloop_loop)), sys.meta_path)
    assert after[0] == before[0]
    assert all(after[0][k] is v for k, v in before[0].items())
    assert after[1] is before[1]
    assert after[2] == before[2]
    assert after[3] == before[3]
    assert "connect" not in vars(socket.socket)
    assert socket.socket.connect is socket.socket.__base__.connect  # type: ignore[union-attr]
    assert ki.installed() is None
    assert ki.uninstall() is False  # idempotent too
    with socket.create_connection(server.getsockname()) as sock:
        assert untouched(sock)


def test_install_is_idempotent_and_replaces_other_settings(server: socket.socket) -> None:
    first = ki.install(CFG, loopback=True)
    wrapper = vars(socket.socket)["connect"]
    with socket.create_connection(server.getsockname()):
        pass
    again = ki.install(CFG, loopback=True)
    assert vars(socket.socket)["connect"] is wrapper
    assert again.configured == 1  # same settings: nothing changed, counters neither
    assert again.entry_points == first.entry_points
    assert len(set(again.entry_points)) == len(again.entry_points)
    ki.install(OTHER, loopback=True)  # other settings replace them
    assert vars(socket.socket)["connect"] is wrapper
    with socket.create_connection(server.getsockname()) as sock:
        assert options(sock)["TCP_KEEPIDLE"] == 51
    assert status().rules == (ki.Rule(OTHER),)
    assert status().configured == 1


def test_a_wrapper_added_on_top_of_ours_is_respected(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    ours = vars(socket.socket)["connect"]
    calls: list[Any] = []

    def theirs(self: socket.socket, address: Any) -> None:
        calls.append(address)
        ours(self, address)

    socket.socket.connect = theirs  # type: ignore[method-assign]
    try:
        ki.uninstall()
        assert vars(socket.socket)["connect"] is theirs  # theirs stays; ours passes through
        with socket.create_connection(server.getsockname()) as sock:
            assert untouched(sock)
        ki.install(OTHER, loopback=True)  # ours is still in the chain: not wrapped twice
        assert vars(socket.socket)["connect"] is theirs
        with socket.create_connection(server.getsockname()) as sock:
            assert options(sock)["TCP_KEEPIDLE"] == 51
        assert status().configured == 1
        assert len(calls) == 2
    finally:
        ki.uninstall()
        socket.socket.connect = ours  # type: ignore[method-assign]
        ki.install(CFG)  # ours back on top: uninstall() can now remove it
        ki.uninstall()
    assert "connect" not in vars(socket.socket)


# -- threads, strict, failures, fork ---------------------------------------------------------


def test_threads_connecting_while_installing_and_counting(server: socket.socket) -> None:
    ki.install(CFG, loopback=True)
    address = server.getsockname()
    errors: list[BaseException] = []
    results: list[dict[str, int]] = []
    start = threading.Barrier(8)

    def connect_many() -> None:
        try:
            start.wait()
            for _ in range(25):
                with socket.create_connection(address) as sock:
                    results.append(options(sock))
        except BaseException as exc:
            errors.append(exc)

    def drain() -> None:
        with contextlib.suppress(OSError):
            server.settimeout(10)
            for _ in range(200):
                server.accept()[0].close()

    threads = [threading.Thread(target=connect_many) for _ in range(8)]
    threads.append(threading.Thread(target=drain))
    for thread in threads:
        thread.start()
    for _ in range(20):  # installs of the same settings while they connect: no effect
        ki.install(CFG, loopback=True)
    for thread in threads:
        thread.join(30)
    assert not errors
    assert results == [WANTED_UT] * 200
    assert status().configured == 200


def test_a_failure_is_counted_logged_and_never_fails_the_connect(
    server: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    class Stubborn(socket.socket):
        def setsockopt(self, *args: Any) -> None:
            raise OSError(errno.EPERM, "refused for the test")

    ki.install(CFG, loopback=True)
    with caplog.at_level(logging.WARNING, logger="keepalive"), Stubborn() as sock:
        sock.connect(server.getsockname())
        assert sock.getpeername() == server.getsockname()
    failed = status().failed
    assert list(failed.values()) == [1]
    (reason,) = failed
    assert reason.startswith("SocketOptionError: could not set ")
    assert reason.endswith("refused for the test")
    records = [r for r in caplog.records if r.name == "keepalive"]
    assert len(records) == 1
    assert f"127.0.0.1:{port_of(server)}" in records[0].getMessage()


def test_strict_raises_from_connect(server: socket.socket) -> None:
    class Stubborn(socket.socket):
        def setsockopt(self, *args: Any) -> None:
            raise OSError(errno.EPERM, "refused for the test")

    ki.install(CFG, loopback=True, strict=True)
    with Stubborn() as sock:
        with pytest.raises(SocketOptionError, match="refused for the test"):
            sock.connect(server.getsockname())
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()  # raised before connecting
    assert sum(status().failed.values()) == 1


def test_settings_this_platform_refuses_fail_at_install() -> None:
    with pytest.raises(InvalidSetting, match="idle"):
        ki.install(KeepaliveConfig(idle=40000))  # beyond Linux's TCP_KEEPIDLE maximum
    assert ki.installed() is None
    assert "connect" not in vars(socket.socket)
    with pytest.raises(InvalidSetting, match="only"):
        ki.install(CFG, only="10.0.0.1/8")
    with pytest.raises(TypeError):
        ki.install(CFG, loopback="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ki.install(rules=[CFG])  # type: ignore[list-item]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_keeps_the_installation(server: socket.socket) -> None:
    state = ki.install(CFG, loopback=True)
    assert state.configured == 0
    active = ki._active
    assert active is not None
    active.lock.acquire()  # held at the fork: the child must not inherit it held
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        code = 1
        try:
            with socket.create_connection(server.getsockname()) as sock:
                ok = options(sock) == WANTED_UT and status().configured == 1
            os.write(write, b"ok" if ok else b"bad")
            code = 0
        finally:
            os._exit(code)
    active.lock.release()
    os.close(write)
    with open(read, "rb") as pipe:
        assert pipe.read() == b"ok"
    assert os.waitpid(pid, 0)[1] == 0
    assert status().configured == 0  # the child's connection is the child's


# -- what it did is visible ------------------------------------------------------------------


def test_installed_describes_itself(server: socket.socket) -> None:
    assert ki.installed() is None
    ki.install(CFG, loopback=True, exclude=["10.9.0.0/16"])
    with socket.create_connection(server.getsockname()):
        pass
    text = str(status())
    assert "keepalive installed by install()" in text
    assert "* -> idle=37,interval=7,count=4,user_timeout=23.5: 1 configured" in text
    assert "exclude 10.9.0.0/16" in text
    assert "socket.socket.connect" in text


def test_the_audit_shows_the_connections_armed(server: socket.socket) -> None:
    from keepalive.diagnostics import audit

    ki.install(CFG, loopback=True)
    with socket.create_connection(server.getsockname()) as sock:
        accepted, _ = server.accept()
        with accepted:
            local_port = sock.getsockname()[1]
            reports = [
                report
                for report in audit([os.getpid()]).connections
                if report.local_port == local_port and report.remote_port == port_of(server)
            ]
            assert [report.keepalive for report in reports] == ["on"]
            timer = reports[0].keepalive_timer_seconds
            assert timer is not None
            assert 30 < timer <= 37
            assert untouched(accepted)


def test_importing_the_module_leaves_keepalive_install_the_function() -> None:
    code = """
import keepalive
import keepalive.installer
assert keepalive.install is keepalive.installer.install
status = keepalive.install(keepalive.KeepaliveConfig(idle=33), loopback=True)
assert status.rules[0].cfg.idle == 33
assert keepalive.installed() is not None
assert keepalive.uninstall() is True
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_installing_loads_no_event_loop_nor_anything_heavy() -> None:
    """install() runs at every interpreter start-up under `keepalive run`."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import keepalive.installer as ki; ki.install()\n"
        "heavy = {'asyncio', 'uvloop', 'psutil', 'logging', 'ipaddress', 'argparse', 're',"
        " 'dataclasses', 'typing', 'subprocess', 'threading'}\n"
        "print(sorted((set(sys.modules) - before) & heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_keepalive_module_exports() -> None:
    assert ki.Rule is keepalive.installer.Rule
    assert set(ki.__all__) <= set(dir(ki))
