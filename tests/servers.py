"""Real servers on 127.0.0.1 for the integration tests: HTTP (in-process), Redis, PostgreSQL.

Every server listens on loopback only, on a port chosen at start, with its files in a fresh
temporary directory, so pytest-xdist workers can each run their own side by side.

Skip policy: where a server binary, a system user or a Python client library is missing, the
test skips with the reason, unless ``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI sets it): then it
fails. Redis needs ``redis-server`` (Debian package ``redis-server``); PostgreSQL needs
``initdb``, ``pg_ctl`` (``postgresql``, found on PATH or under /usr/lib/postgresql/*/bin) and,
when running as root, the ``postgres`` system user to run them as.
"""

from __future__ import annotations

import contextlib
import glob
import http.server
import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = [
    "RABBITMQ_GROUP",
    "REQUIRE_ENV",
    "AmqpServer",
    "HttpServer",
    "NatsServer",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "SmtpServer",
    "SshServer",
    "client_sockets_to",
    "elasticsearch_standin",
    "http_server",
    "moto_s3_server",
    "nats_server",
    "postgres_server",
    "rabbitmq_server",
    "redis_server",
    "require_module",
    "smtp_server",
    "sshd_server",
    "unavailable",
]

REQUIRE_ENV = "KEEPALIVE_REQUIRE_INTEGRATIONS"
"""When this environment variable is ``1``, a missing server or library fails the test."""

START_ATTEMPTS = 3  # a port picked free can be taken by another worker before the server binds


def unavailable(reason: str) -> NoReturn:
    """Skip the running test, or fail it when ``KEEPALIVE_REQUIRE_INTEGRATIONS=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """``import name``, or :func:`unavailable` naming the package to install."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        unavailable(f"Python package {name!r} is not installed: {exc}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def client_sockets_to(port: int) -> list[socket.socket]:
    """This process's TCP sockets connected to 127.0.0.1:``port``, as duplicates to close.

    Found through psutil by remote port, so a test needs nothing private from a client library
    to reach the socket it connected.
    """
    import psutil

    process = psutil.Process()
    # psutil 6 renamed connections() to net_connections().
    list_connections = getattr(process, "net_connections", None) or process.connections
    found: list[socket.socket] = []
    for conn in list_connections(kind="tcp4"):
        if conn.raddr and conn.raddr.port == port and conn.fd >= 0:
            found.append(socket.socket(fileno=os.dup(conn.fd)))
    return found


# -- HTTP -------------------------------------------------------------------------------------


class _OkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections, so clients pool them
    timeout = 10  # a handler thread blocked on an idle pooled connection ends by itself

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class HttpServer:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@contextlib.contextmanager
def http_server() -> Iterator[HttpServer]:
    """A threading HTTP/1.1 server on 127.0.0.1 answering every GET with ``ok``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OkHandler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.02},  # shutdown() waits up to one poll interval
        name="http-server",
        daemon=True,
    )
    thread.start()
    try:
        yield HttpServer(int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- Redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """``redis-server`` on 127.0.0.1 and a free port, without persistence; stopped at exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory(prefix="keepalive-redis-") as workdir:
        log = os.path.join(workdir, "redis.log")
        last_error = ""
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            command += ["--appendonly", "no", "--dir", workdir, "--logfile", log]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=workdir
            )
            try:
                deadline = time.monotonic() + 10
                while process.poll() is None and time.monotonic() < deadline:
                    if _redis_answers(port):
                        yield RedisServer(port, process)
                        return
                    time.sleep(0.05)
                last_error = f"redis-server did not start on port {port}"
            finally:
                _stop(process)
            with contextlib.suppress(OSError):
                last_error += ": " + Path(log).read_text(errors="replace")[-500:]
        pytest.fail(last_error)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"
    dbname: str = "postgres"

    @property
    def host(self) -> str:
        return "127.0.0.1"


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _run_as_postgres() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts (it refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no 'postgres' system user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root and runuser (util-linux) is missing")
    return [runuser, "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, trust authentication.

    initdb writes it into a new temporary directory (its Unix socket goes there too); it is
    stopped (immediate mode) and deleted at exit.
    """
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    prefix = _run_as_postgres()
    workdir = tempfile.mkdtemp(prefix="keepalive-pg-")
    try:
        if prefix:
            owner = pwd.getpwnam("postgres")
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
        data = os.path.join(workdir, "data")
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            cwd=workdir,
            timeout=60,
        )
        yield from _start_postgres(prefix, pg_ctl, workdir, data)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start_postgres(
    prefix: list[str], pg_ctl: str, workdir: str, data: str
) -> Iterator[PostgresServer]:
    log = os.path.join(workdir, "server.log")
    last_error = ""
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={workdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            [*prefix, pg_ctl, "-D", data, "-l", log, "-w", "-t", "30", "-o", options, "start"],
            capture_output=True,
            cwd=workdir,
            timeout=60,
            check=False,
        )
        if started.returncode != 0:
            last_error = (
                started.stdout.decode(errors="replace")
                + Path(log).read_text(errors="replace")[-1000:]
            )
            continue
        try:
            yield PostgresServer(port)
        finally:
            subprocess.run(
                [*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                capture_output=True,
                cwd=workdir,
                timeout=60,
                check=False,
            )
        return
    pytest.fail(f"PostgreSQL did not start: {last_error}")


# -- more servers, for keepalive.installer's tests -----------------------------------------------
# NATS (Debian package nats-server), OpenSSH (openssh-server), RabbitMQ (rabbitmq-server),
# an S3 endpoint (Python package moto), SMTP (aiosmtpd), and an HTTP stand-in answering as
# Elasticsearch does. Each on 127.0.0.1 only, files in a fresh temporary directory.


def _system_binary(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(path, os.X_OK)),
        None,
    )
    if found is None:
        unavailable(f"{name} is not installed (Debian package {package})")
    return found


def _wait_for_banner(
    port: int, process: subprocess.Popen[bytes], banner: bytes, *, send: bytes = b""
) -> bool:
    """Poll 127.0.0.1:``port`` until it answers ``send`` with bytes starting with ``banner``."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if send:
                    sock.sendall(send)
                if sock.recv(64).startswith(banner):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


@dataclass
class NatsServer:
    port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@contextlib.contextmanager
def nats_server() -> Iterator[NatsServer]:
    """``nats-server`` on 127.0.0.1 and a free port (no monitoring port, no cluster)."""
    binary = _system_binary("nats-server", "nats-server")
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if _wait_for_banner(port, process, b"INFO "):
                yield NatsServer(port)
                return
        finally:
            _stop(process)
    pytest.fail("nats-server did not start")


@dataclass
class SshServer:
    port: int
    user: str
    key_file: str  # the client's private key (ed25519, OpenSSH format)


@contextlib.contextmanager
def sshd_server() -> Iterator[SshServer]:
    """OpenSSH's ``sshd`` on 127.0.0.1 and a free port, accepting one fresh key for the user
    running the tests (root in CI; sshd refuses other users' logins when not run as root)."""
    sshd = _system_binary("sshd", "openssh-server")
    keygen = _system_binary("ssh-keygen", "openssh-client")
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        # Privilege separation needs this directory (systemd's tmpfiles makes it at boot).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keepalive-sshd-") as workdir:
        host_key, client_key = os.path.join(workdir, "host"), os.path.join(workdir, "client")
        for path in (host_key, client_key):
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", path],
                check=True,
                capture_output=True,
                timeout=30,
            )
        authorized = os.path.join(workdir, "authorized_keys")
        shutil.copy(client_key + ".pub", authorized)
        last_error = ""
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            config = os.path.join(workdir, "sshd_config")
            Path(config).write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"PidFile {workdir}/sshd.pid\nAuthorizedKeysFile {authorized}\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                "LogLevel ERROR\n"
            )
            process = subprocess.Popen(
                [sshd, "-D", "-e", "-f", config],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if _wait_for_banner(port, process, b"SSH-2.0-"):
                    yield SshServer(port, user, client_key)
                    return
            finally:
                _stop(process)
            assert process.stderr is not None
            last_error = process.stderr.read().decode(errors="replace")[-500:]
        pytest.fail(f"sshd did not start: {last_error}")


#: Mark for every test using the ``rabbitmq`` fixture (tests/conftest.py): with ``--dist
#: loadgroup`` (pyproject's addopts) pytest-xdist runs them on one worker, which starts the
#: broker once for all of them.
RABBITMQ_GROUP = pytest.mark.xdist_group("rabbitmq")


@dataclass
class AmqpServer:
    port: int


_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1: the broker answers with Connection.Start


@contextlib.contextmanager
def rabbitmq_server() -> Iterator[AmqpServer]:
    """RabbitMQ on 127.0.0.1 and a free port, with an ``epmd`` of its own (also on loopback,
    on a free port, stopped with it: the system one would outlive the test), no plugins,
    and no DNS look-up (a resolver that cannot be reached costs Erlang seconds)."""
    server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    if not os.access(server, os.X_OK):
        unavailable("RabbitMQ is not installed (Debian package rabbitmq-server)")
    epmd = _system_binary("epmd", "erlang-base")
    with tempfile.TemporaryDirectory(prefix="keepalive-rabbitmq-") as workdir:
        Path(workdir, "enabled_plugins").write_text("[].\n")
        Path(workdir, "inetrc").write_text('{lookup, [file]}.\n{hosts_file, "/etc/hosts"}.\n')
        last_error = ""
        for attempt in range(START_ATTEMPTS):
            epmd_port, port, dist_port = free_port(), free_port(), free_port()
            Path(workdir, "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n"
            )
            env = dict(
                os.environ,
                HOME=workdir,
                ERL_EPMD_PORT=str(epmd_port),
                ERL_INETRC=os.path.join(workdir, "inetrc"),
                RABBITMQ_NODENAME=f"keepalive{os.getpid()}x{attempt}@localhost",
                RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                RABBITMQ_NODE_PORT=str(port),
                RABBITMQ_DIST_PORT=str(dist_port),
                RABBITMQ_MNESIA_BASE=os.path.join(workdir, "mnesia"),
                RABBITMQ_LOG_BASE=os.path.join(workdir, "log"),
                RABBITMQ_LOGS="-",
                RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(workdir, "enabled_plugins"),
                RABBITMQ_CONFIG_FILE=os.path.join(workdir, "rabbitmq"),
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            )
            name_server = subprocess.Popen(
                [epmd, "-port", str(epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            log = open(os.path.join(workdir, "server.log"), "wb")  # noqa: SIM115
            # Its own session: stopping the group stops the Erlang VM and its helpers too.
            process = subprocess.Popen(
                [server], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            try:
                if _wait_for_banner(port, process, b"\x01", send=_AMQP_HEADER):
                    yield AmqpServer(port)
                    return
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 15)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()
                _stop(name_server)
                log.close()
            last_error = Path(workdir, "server.log").read_text(errors="replace")[-1000:]
        pytest.fail(f"rabbitmq-server did not start: {last_error}")


@dataclass
class S3Server:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    """moto's server (an S3 endpoint, among others) in a thread, on 127.0.0.1."""
    moto_server = require_module("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield S3Server(int(server.get_host_and_port()[1]))
    finally:
        server.stop()


@dataclass
class SmtpServer:
    port: int
    messages: list[bytes]


@contextlib.contextmanager
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1 and a free port, keeping every message it receives."""
    controller_module = require_module("aiosmtpd.controller")
    received: list[bytes] = []

    class Keep:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            received.append(getattr(envelope, "content", b""))
            return "250 OK"

    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        controller = controller_module.Controller(Keep(), hostname="127.0.0.1", port=port)
        try:
            controller.start()
        except (OSError, RuntimeError):
            continue
        try:
            yield SmtpServer(port, received)
            return
        finally:
            controller.stop()
    pytest.fail("aiosmtpd did not start")


class _ElasticsearchHandler(_OkHandler):
    """What an Elasticsearch 9 node answers to ``GET /`` (the client's info() and its product
    check), with the product header the official clients require."""

    INFO = (
        b'{"name": "standin", "cluster_name": "keepalive",'
        b' "cluster_uuid": "AAAAAAAAAAAAAAAAAAAAAA",'
        b' "version": {"number": "9.1.0", "build_flavor": "default", "build_type": "deb",'
        b' "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",'
        b' "minimum_index_compatibility_version": "8.0.0"}, "tagline": "You Know, for Search"}'
    )

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(self.INFO)))
        self.end_headers()
        self.wfile.write(self.INFO)

    do_HEAD = do_GET


@contextlib.contextmanager
def elasticsearch_standin() -> Iterator[HttpServer]:
    """An HTTP/1.1 server on 127.0.0.1 answering every GET as an Elasticsearch node's root."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ElasticsearchHandler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield HttpServer(int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- Kafka (a stand-in) -----------------------------------------------------------------------
# No Kafka broker can run on the CI machine: Debian has no package of it, and Apache's
# downloads are not on a package registry the machine reaches. This stand-in speaks just enough
# of the Kafka protocol (ApiVersions v0, Metadata v0: kafka-protocol.html) for a real client to
# connect and bootstrap.

__all__ += ["KafkaStandin", "kafka_standin"]

_KAFKA_API_VERSIONS = 18
_KAFKA_METADATA = 3
_KAFKA_UNSUPPORTED_VERSION = 35


@dataclass
class KafkaStandin:
    port: int
    #: ``(api_key, api_version)`` of every request received, in order.
    requests: list[tuple[int, int]]
    #: Set when a Metadata request arrived; its reply waits until ``release`` is set.
    metadata_requested: threading.Event
    release: threading.Event


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _kafka_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _kafka_reply(standin: KafkaStandin, api_key: int, api_version: int) -> bytes | None:
    """The response body, or None for a request the stand-in does not speak."""
    if api_key == _KAFKA_API_VERSIONS:
        # A broker answers a version it does not know with a v0 body and UNSUPPORTED_VERSION,
        # listing the versions it has (KIP-511); the client then asks again with v0.
        if api_version > 0:
            return struct.pack(">hi3h", _KAFKA_UNSUPPORTED_VERSION, 1, _KAFKA_API_VERSIONS, 0, 0)
        return struct.pack(">hi6h", 0, 2, _KAFKA_API_VERSIONS, 0, 0, _KAFKA_METADATA, 0, 0)
    if api_key == _KAFKA_METADATA and api_version == 0:
        standin.metadata_requested.set()
        standin.release.wait(30)
        broker = struct.pack(">i", 0) + _kafka_string("127.0.0.1") + struct.pack(">i", standin.port)
        return struct.pack(">i", 1) + broker + struct.pack(">i", 0)  # one broker, no topics
    return None


def _serve_kafka_client(standin: KafkaStandin, conn: socket.socket) -> None:
    with conn:
        while True:
            header = _recv_exactly(conn, 4)
            request = None if header is None else _recv_exactly(conn, int.from_bytes(header, "big"))
            if request is None or len(request) < 8:
                return
            api_key, api_version, correlation_id = struct.unpack(">hhi", request[:8])
            standin.requests.append((api_key, api_version))
            body = _kafka_reply(standin, api_key, api_version)
            if body is None:
                return  # as a broker does with a request it cannot parse: close
            payload = struct.pack(">i", correlation_id) + body  # response header v0
            conn.sendall(len(payload).to_bytes(4, "big") + payload)


@contextlib.contextmanager
def kafka_standin(*, hold_metadata: bool = False) -> Iterator[KafkaStandin]:
    """A Kafka stand-in on 127.0.0.1: answers ApiVersions and Metadata (itself as broker 0, no
    topics). With ``hold_metadata``, Metadata replies wait for ``release.set()``, so a test
    can inspect the client's connection while it is open."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    release = threading.Event()
    if not hold_metadata:
        release.set()
    standin = KafkaStandin(port, [], threading.Event(), release)

    def accept() -> None:
        while True:
            try:
                conn, _address = listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=_serve_kafka_client, args=(standin, conn), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        release.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        listener.close()
        thread.join(5)
