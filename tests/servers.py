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
    "REQUIRE_ENV",
    "HttpServer",
    "PostgresServer",
    "RedisServer",
    "client_sockets_to",
    "http_server",
    "postgres_server",
    "redis_server",
    "require_module",
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
