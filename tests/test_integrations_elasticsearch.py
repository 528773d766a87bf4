"""keepalive.integrations.elasticsearch against the real elasticsearch-py client.

The server is a local stand-in answering as an Elasticsearch node does (the product header the
client checks, the root document), plain or over TLS: a real Elasticsearch is a JVM service
that Debian does not package, so CI does not run one. What is under test is the client's side:
each test makes real requests through ``Elasticsearch(node_class=...)`` and reads the options
back from the sockets the client connected (found through psutil by remote port).
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sockets_seen
import tls_certs
from servers import (
    HttpServer,
    _ElasticsearchHandler,
    elasticsearch_standin,
    require_module,
)
from sockets_seen import CFG

from keepalive import InvalidSetting, InvalidSettingType, KeepaliveConfig
from keepalive.integrations.elasticsearch import HttpClient, node_class

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux option numbers"),
]

WANTED = {**sockets_seen.WANTED, "TCP_NODELAY": 1}  # TCP_NODELAY: urllib3's default, kept
HTTP_CLIENTS: list[HttpClient] = ["urllib3", "requests"]


def configured_sockets(port: int) -> list[dict[str, int]]:
    return sockets_seen.configured_sockets(port, extra=("TCP_NODELAY",))


def elasticsearch() -> Any:
    return require_module("elasticsearch")


# -- a stand-in that also records requests, answers POST, and speaks TLS ------------------------


class _RecordingHandler(_ElasticsearchHandler):
    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    post_delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.requests.append((self.path, headers, body))
        time.sleep(self.post_delay)  # holds the connection, so concurrent requests need more
        answer = b'{"took": 1, "timed_out": false, "hits": {"total": {"value": 0}, "hits": []}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@contextlib.contextmanager
def recording_standin(
    tls: tuple[Path, Path] | None = None, post_delay: float = 0.0
) -> Iterator[tuple[HttpServer, type[_RecordingHandler]]]:
    handler = type("Handler", (_RecordingHandler,), {"requests": [], "post_delay": post_delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield HttpServer(int(server.server_address[1])), handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


certificate = tls_certs.certificate  # the module-scoped fixture


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_the_client_socket_carries_the_options(http_client: HttpClient) -> None:
    es = elasticsearch()
    with elasticsearch_standin() as server:
        client = es.Elasticsearch(
            f"http://127.0.0.1:{server.port}", node_class=node_class(CFG, http_client=http_client)
        )
        try:
            assert client.info()["version"]["number"] == "9.1.0"  # the product check passed
            assert configured_sockets(server.port) == [WANTED]
        finally:
            client.close()


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_without_the_node_class_the_socket_has_no_keepalive(http_client: HttpClient) -> None:
    """The control: the options above come from node_class, not from a default."""
    es = elasticsearch()
    plain = "Urllib3HttpNode" if http_client == "urllib3" else "RequestsHttpNode"
    with elasticsearch_standin() as server:
        client = es.Elasticsearch(f"http://127.0.0.1:{server.port}", node_class=http_client)
        try:
            client.info()
            [found] = configured_sockets(server.port)
            assert found["SO_KEEPALIVE"] == 0
            assert found["TCP_USER_TIMEOUT"] == 0
            assert type(client.transport.node_pool.get()).__name__ == plain
        finally:
            client.close()


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_tls_is_verified_and_carries_the_options(
    http_client: HttpClient, certificate: tuple[Path, Path]
) -> None:
    es = elasticsearch()
    with recording_standin(tls=certificate) as (server, _handler):
        # RequestsHttpNode ignores ca_certs (elastic-transport 9.4.2 with requests 2.32, with or
        # without keepalive): it verifies against an ssl_context.
        trust: dict[str, Any] = (
            {"ca_certs": str(certificate[0])}
            if http_client == "urllib3"
            else {"ssl_context": ssl.create_default_context(cafile=str(certificate[0]))}
        )
        client = es.Elasticsearch(
            f"https://127.0.0.1:{server.port}",
            node_class=node_class(CFG, http_client=http_client),
            **trust,
        )
        try:
            assert client.info()["cluster_name"] == "keepalive"
            assert configured_sockets(server.port) == [WANTED]
        finally:
            client.close()
        # Verification is still on: an unknown CA is refused.
        untrusted = es.Elasticsearch(
            f"https://127.0.0.1:{server.port}",
            node_class=node_class(CFG, http_client=http_client),
            retry_on_timeout=False,
            max_retries=0,
        )
        try:
            with pytest.raises(es.exceptions.SSLError) as refused:
                untrusted.info()
            assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value)
        finally:
            untrusted.close()


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_http_compress_still_gzips_request_bodies(http_client: HttpClient) -> None:
    es = elasticsearch()
    with recording_standin() as (server, handler):
        client = es.Elasticsearch(
            f"http://127.0.0.1:{server.port}",
            http_compress=True,
            node_class=node_class(CFG, http_client=http_client),
        )
        try:
            client.search(index="logs", query={"match_all": {}})
            assert configured_sockets(server.port) == [WANTED]
        finally:
            client.close()
    [(path, headers, body)] = handler.requests
    assert path == "/logs/_search"
    assert headers["content-encoding"] == "gzip"
    assert "gzip" in headers["accept-encoding"]
    assert json.loads(gzip.decompress(body)) == {"query": {"match_all": {}}}


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_connections_per_node_bounds_the_sockets_and_each_carries_the_options(
    http_client: HttpClient,
) -> None:
    es = elasticsearch()
    with recording_standin(post_delay=0.3) as (server, handler):
        client = es.Elasticsearch(
            f"http://127.0.0.1:{server.port}",
            connections_per_node=3,
            node_class=node_class(CFG, http_client=http_client),
        )
        try:
            searches = [
                threading.Thread(target=client.search, kwargs={"index": f"i{n}"}) for n in range(6)
            ]
            for search in searches:
                search.start()
            time.sleep(0.15)  # all six are queued or in flight; at most three sockets
            during = configured_sockets(server.port)
            for search in searches:
                search.join(10)
            assert len(handler.requests) == 6
            after = configured_sockets(server.port)
        finally:
            client.close()
    assert 2 <= len(during) <= 3, during
    assert len(after) <= 3
    assert all(found == WANTED for found in during + after)


def test_the_requests_node_through_an_http_proxy_carries_the_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RequestsHttpNode honours HTTP_PROXY; its proxy connections get the options too. The
    stand-in answers the proxied ``GET http://search.invalid:9200/`` itself, so the client's
    only socket is its connection to the proxy."""
    es = elasticsearch()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with recording_standin() as (proxy, _handler):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        client = es.Elasticsearch(
            "http://search.invalid:9200", node_class=node_class(CFG, http_client="requests")
        )
        try:
            assert client.info()["cluster_name"] == "keepalive"
            assert configured_sockets(proxy.port) == [WANTED]
        finally:
            client.close()


def test_the_same_arguments_return_the_same_class() -> None:
    elasticsearch()
    assert node_class(CFG) is node_class(CFG)
    assert node_class(CFG) is not node_class(CFG, http_client="requests")
    assert node_class(CFG).__name__ == "KeepaliveUrllib3HttpNode"
    assert node_class(CFG, http_client="requests").__name__ == "KeepaliveRequestsHttpNode"


def test_bad_arguments_raise_before_any_class_is_made() -> None:
    with pytest.raises(InvalidSettingType, match="http_client"):
        node_class(CFG, http_client="httpx")  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingType, match="cfg"):
        node_class({"idle": 60})  # type: ignore[arg-type]
    with pytest.raises(InvalidSetting, match="count"):
        node_class(KeepaliveConfig(idle=60, interval=10, count=10_000))
