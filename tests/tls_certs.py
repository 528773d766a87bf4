"""A self-signed TLS certificate for 127.0.0.1, made with the openssl tool, for the TLS tests.

A test module takes the ``certificate`` fixture by binding it to a module-level name
(``certificate = tls_certs.certificate``): each module then makes one certificate, in its own
temporary directory. Where the openssl tool is missing the test skips, and fails when
``KEEPALIVE_REQUIRE_INTEGRATIONS=1`` (CI), through :func:`servers.unavailable`.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from servers import unavailable

CertificateFiles = tuple[Path, Path]  # the certificate's PEM file and its key's


def self_signed_certificate(directory: Path) -> CertificateFiles:
    """``cert.pem`` and ``key.pem`` in ``directory``: valid for a day, for IP 127.0.0.1."""
    tool = shutil.which("openssl")
    if tool is None:
        unavailable("the openssl tool is not installed (Debian package openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [tool, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """One certificate per test module (openssl takes a while to make an RSA key)."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def tls_contexts(certificate: CertificateFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context presenting ``certificate`` and a client context trusting only it."""
    cert, key = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client
