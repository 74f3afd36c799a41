"""HTTPS through the guarded fetcher, against a loopback TLS host with a test CA (trustme).

The fetcher connects to the address it checked (no second DNS lookup) but must still speak TLS to the host
name: SNI and certificate verification use the name, not the pinned IP.
"""

from __future__ import annotations

import ssl

import pytest
import trustme

from tests.servers import Reply, Server, image_bytes
from train.download import FetchError, HttpConfig, fetch

HOST = "snakes.test"


def cfg() -> HttpConfig:
    return HttpConfig(
        allow_hosts=frozenset({HOST}),
        resolver=lambda host, port: ["127.0.0.1"],  # the name resolves to loopback, and only in this test
        connect_timeout=2.0,
        read_timeout=2.0,
        total_timeout=5.0,
        retries=2,
        backoff=0.05,
    )


@pytest.fixture
def ca():
    return trustme.CA()


def tls_server(cert: trustme.LeafCert, body: bytes) -> tuple[Server, list, list]:
    """A loopback HTTPS server presenting cert; returns it with the SNI names and Host headers it saw."""
    snis: list[str | None] = []
    hosts: list[str] = []

    def route(handler, _q):
        hosts.append(handler.headers.get("Host", ""))
        return Reply(200, body, {"Content-Type": "image/jpeg"})

    server = Server({"/a.jpg": route})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ctx.sni_callback = lambda sock, name, _ctx: snis.append(name)
    server.httpd.socket = ctx.wrap_socket(server.httpd.socket, server_side=True)
    return server.start(), snis, hosts


def trust(ca: trustme.CA, tmp_path, monkeypatch) -> None:
    """Make the default verify paths (what ssl.create_default_context loads) hold only the test CA."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-certs-here"))


def test_https_connects_to_the_checked_ip_but_verifies_and_sends_sni_for_the_name(ca, tmp_path, monkeypatch):
    trust(ca, tmp_path, monkeypatch)
    body = image_bytes("JPEG", seed=5)
    server, snis, hosts = tls_server(ca.issue_cert(HOST), body)
    try:
        r = fetch(f"https://{HOST}:{server.port}/a.jpg", cfg())
    finally:
        server.stop()
    assert r.status == 200 and r.body == body
    assert snis == [HOST]
    assert hosts == [f"{HOST}:{server.port}"]


def test_a_certificate_for_another_name_is_refused_as_a_tls_error(ca, tmp_path, monkeypatch):
    trust(ca, tmp_path, monkeypatch)
    server, _, hosts = tls_server(ca.issue_cert("other.test"), image_bytes("JPEG"))
    try:
        with pytest.raises(FetchError) as e:
            fetch(f"https://{HOST}:{server.port}/a.jpg", cfg())
    finally:
        server.stop()
    assert e.value.reason == "tls" and HOST in str(e.value)
    assert hosts == []  # no request was sent over the unverified connection


def test_a_certificate_from_an_untrusted_ca_is_refused(ca, tmp_path, monkeypatch):
    trust(trustme.CA(), tmp_path, monkeypatch)  # trust some other CA, not the one that signed the server's cert
    server, _, hosts = tls_server(ca.issue_cert(HOST), image_bytes("JPEG"))
    try:
        with pytest.raises(FetchError) as e:
            fetch(f"https://{HOST}:{server.port}/a.jpg", cfg())
    finally:
        server.stop()
    assert e.value.reason == "tls"
    assert hosts == []
