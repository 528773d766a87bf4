"""keepalive.install() under real client libraries that give no (or no working) way to set
keepalive themselves, against real servers on 127.0.0.1: boto3/botocore (moto's S3 endpoint),
asyncpg (PostgreSQL), elasticsearch-py (a stand-in answering as Elasticsearch does), nats-py
(nats-server), paramiko (OpenSSH's sshd), pika (RabbitMQ) and smtplib (aiosmtpd).

Each test lets the library open its connection as it always does, then finds that socket among
this process's file descriptors by its peer's port and reads the options back with getsockopt.
A missing library or server skips, or fails under ``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI).
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from servers import (
    RABBITMQ_GROUP,
    AmqpServer,
    HttpServer,
    NatsServer,
    PostgresServer,
    S3Server,
    SmtpServer,
    SshServer,
    client_sockets_to,
    elasticsearch_standin,
    moto_s3_server,
    nats_server,
    postgres_server,
    require_module,
    smtp_server,
    sshd_server,
)
from sockets_seen import WANTED, keepalive_options, server_fixture

import keepalive.installer as ki
from keepalive import KeepaliveConfig

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers"),
]

CFG = KeepaliveConfig(idle=37, interval=7, count=4, user_timeout=23.5)  # reads back as WANTED


def assert_configured(port: int) -> None:
    """The library's own socket(s) to ``port`` carry CFG (and there is at least one)."""
    found = client_sockets_to(port)
    assert found, f"the library holds no connection to port {port}"
    for sock in found:
        with sock:
            assert keepalive_options(sock) == WANTED


@pytest.fixture(autouse=True)
def _installed() -> Iterator[None]:
    ki.install(CFG, loopback=True)  # every server here is on loopback
    try:
        yield
    finally:
        ki.uninstall()


# -- boto3 / botocore: Config(tcp_keepalive=True) sets SO_KEEPALIVE only ------------------------


s3 = server_fixture(moto_s3_server)


def s3_client(s3: S3Server, **options: Any) -> Any:
    """A boto3 client of moto's S3 endpoint (any credentials do)."""
    return require_module("boto3").client(
        "s3",
        endpoint_url=s3.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **options,
    )


def test_boto3_against_an_s3_endpoint(s3: S3Server) -> None:
    client = s3_client(s3)
    client.create_bucket(Bucket="keepalive-install")
    client.put_object(Bucket="keepalive-install", Key="k", Body=b"v")
    # moto's server closes each connection after its response: the one of a body not read
    # yet is still open, as botocore opened it
    body = client.get_object(Bucket="keepalive-install", Key="k")["Body"]
    assert_configured(s3.port)
    assert body.read() == b"v"
    assert ki.installed().configured == 3  # type: ignore[union-attr]


def test_botocore_tcp_keepalive_alone_leaves_two_hours(s3: S3Server) -> None:
    """Why botocore needs this: its own switch turns keepalive on with the system's timings."""
    require_module("boto3")  # skips before anything is uninstalled
    config = require_module("botocore.config").Config(tcp_keepalive=True)
    ki.uninstall()
    client = s3_client(s3, config=config)
    client.create_bucket(Bucket="keepalive-botocore")
    client.put_object(Bucket="keepalive-botocore", Key="k", Body=b"v")
    body = client.get_object(Bucket="keepalive-botocore", Key="k")["Body"]
    (sock,) = client_sockets_to(s3.port)
    with sock, socket.socket() as fresh:
        botocores = keepalive_options(sock)
        assert botocores["SO_KEEPALIVE"] == 1
        default = fresh.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        assert botocores["TCP_KEEPIDLE"] == default  # 7200 s unless the system says else
    body.read()
    client.close()
    ki.install(CFG, loopback=True)  # and with install: every timing filled in
    client = s3_client(s3, config=config)
    body = client.get_object(Bucket="keepalive-botocore", Key="k")["Body"]
    assert_configured(s3.port)
    body.read()
    status = ki.installed()
    assert status is not None
    assert (status.configured, status.kept) == (1, 0)  # SO_KEEPALIVE alone is no timing
    client.close()


# -- asyncpg: no keepalive option at all ---------------------------------------------------------


postgres = server_fixture(postgres_server)


def test_asyncpg_against_postgresql(postgres: PostgresServer) -> None:
    asyncpg = require_module("asyncpg")

    async def main() -> None:
        connection = await asyncpg.connect(
            host=postgres.host, port=postgres.port, user=postgres.user, database=postgres.dbname
        )
        try:
            assert await connection.fetchval("SELECT 1") == 1
            assert_configured(postgres.port)
        finally:
            await connection.close()

    asyncio.run(main())


# -- elasticsearch-py: elastic-transport takes no socket options -------------------------------


elasticsearch = server_fixture(elasticsearch_standin, scope="function")


def test_elasticsearch_client(elasticsearch: HttpServer) -> None:
    client_module = require_module("elasticsearch")
    client = client_module.Elasticsearch(f"http://127.0.0.1:{elasticsearch.port}")
    try:
        assert client.info()["tagline"] == "You Know, for Search"
        assert_configured(elasticsearch.port)
    finally:
        client.close()


# -- nats-py: asyncio.open_connection, no hook ---------------------------------------------------


nats = server_fixture(nats_server)


def test_nats_client(nats: NatsServer) -> None:
    nats_module = require_module("nats")

    async def main() -> None:
        client = await nats_module.connect(nats.url, connect_timeout=5, allow_reconnect=False)
        try:
            subscription = await client.subscribe("keepalive")
            await client.publish("keepalive", b"hello")
            message = await subscription.next_msg(timeout=5)
            assert message.data == b"hello"
            assert_configured(nats.port)
        finally:
            await client.close()

    asyncio.run(main())


# -- paramiko: set_keepalive() sends SSH packets, the socket keeps 2 h ---------------------------


sshd = server_fixture(sshd_server)


def test_paramiko_against_sshd(sshd: SshServer) -> None:
    paramiko = require_module("paramiko")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=sshd.port,
            username=sshd.user,
            pkey=paramiko.Ed25519Key.from_private_key_file(sshd.key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        transport: Any = client.get_transport()
        assert transport is not None
        assert transport.is_authenticated()
        assert_configured(sshd.port)
    finally:
        client.close()


# -- pika: tcp_options apply nothing on macOS ---------------------------------------------------


@RABBITMQ_GROUP
def test_pika_against_rabbitmq(rabbitmq: AmqpServer) -> None:
    pika = require_module("pika")
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1", rabbitmq.port, connection_attempts=1, socket_timeout=10
        )
    )
    try:
        channel = connection.channel()
        channel.queue_declare(queue="keepalive-install", auto_delete=True)
        assert_configured(rabbitmq.port)
    finally:
        connection.close()


# -- smtplib --------------------------------------------------------------------------------------


smtp = server_fixture(smtp_server, scope="function")


def test_smtplib_against_aiosmtpd(smtp: SmtpServer) -> None:
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: hi\r\n\r\nhello\r\n")
        assert_configured(smtp.port)
    assert len(smtp.messages) == 1
