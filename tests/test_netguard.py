"""The SSRF guard refuses every spelling of a non-public address; no DNS or network is used here."""

from __future__ import annotations

import pytest

from train.netguard import BlockedURLError, check_url, is_public_ip, parse_ip


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the guard tried to resolve {host!r}; tests never use real DNS")


BLOCKED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/x.jpg",
    "http://127.1/",  # short form
    "http://127.0.1/",
    "http://2130706433/",  # decimal
    "http://0x7f000001/",  # hex, one part
    "http://0x7f.0.0.1/",  # hex octet
    "http://0x7F.0x0.0x0.0x1/",
    "http://0177.0.0.1/",  # octal
    "http://0177.1/",
    "http://017700000001/",  # octal, one part
    "http://127.0.0.1./",  # trailing dot
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv6-mapped
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",  # deprecated IPv4-compatible
    "http://[64:ff9b::7f00:1]/",  # NAT64 of loopback
    "http://[2002:7f00:1::]/",  # 6to4 of loopback
    "http://[fe80::1%25eth0]/",  # link-local with zone id
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/",  # 169.254.169.254 in decimal
    "http://0xa9fea9fe/",  # ... in hex
    "http://10.0.0.1/",
    "http://10.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0/",
    "http://0/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://[::]/",
    "http://[fc00::1]/",
    "http://user:pw@127.0.0.1/",  # userinfo does not hide the host
    "http://example.com@127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST:8000/",
    "http://foo.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_every_spelling_of_a_private_loopback_or_metadata_address_is_refused(url):
    with pytest.raises(BlockedURLError):
        check_url(url, resolver=no_dns)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://1.1.1.1/",
        "javascript:alert(1)",
        "//1.1.1.1/x",
        "http:///x",
    ],
)
def test_only_http_and_https_with_a_host_are_accepted(url):
    with pytest.raises(BlockedURLError):
        check_url(url, resolver=no_dns)


def test_a_public_literal_address_is_allowed_and_pinned():
    t = check_url("https://93.184.216.34/a.jpg?x=1", resolver=no_dns)
    assert (t.ip, t.port, t.path, t.scheme) == ("93.184.216.34", 443, "/a.jpg?x=1", "https")
    assert check_url("http://[2606:4700::1111]:8080/", resolver=no_dns).ip == "2606:4700::1111"


def test_a_hostname_is_refused_when_any_resolved_address_is_private():
    def resolver(host, port):
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(BlockedURLError, match="10.0.0.7"):
        check_url("http://rebind.example/x.jpg", resolver=resolver)


def test_a_hostname_resolving_to_mapped_loopback_is_refused():
    with pytest.raises(BlockedURLError):
        check_url("http://sneaky.example/", resolver=lambda h, p: ["::ffff:127.0.0.1"])


def test_a_public_hostname_connects_to_the_checked_address():
    t = check_url("http://images.example/a.jpg", resolver=lambda h, p: ["93.184.216.34"])
    assert t.host == "images.example" and t.ip == "93.184.216.34" and t.port == 80


def test_the_allow_list_admits_exactly_the_host_written_and_no_other_spelling():
    allow = {"127.0.0.1"}
    assert check_url("http://127.0.0.1:5000/a.jpg", allow, resolver=no_dns).ip == "127.0.0.1"
    for other in ["http://2130706433/", "http://0x7f.0.0.1/", "http://localhost/", "http://[::ffff:127.0.0.1]/"]:
        with pytest.raises(BlockedURLError):
            check_url(other, allow, resolver=no_dns)
    with pytest.raises(BlockedURLError):
        check_url("http://10.0.0.1/", allow, resolver=no_dns)


def test_loose_ipv4_parsing_matches_inet_aton():
    assert str(parse_ip("2130706433")) == "127.0.0.1"
    assert str(parse_ip("0x7f.1")) == "127.0.0.1"
    assert str(parse_ip("0300.0250.1.1")) == "192.168.1.1"
    assert str(parse_ip("1.2.65535")) == "1.2.255.255"
    assert parse_ip("1.2.65536") is None
    assert parse_ip("256.1.1.1") is None
    assert parse_ip("example.com") is None
    assert parse_ip("08.1.1.1") is None  # 8 is not an octal digit


def test_public_and_private_classification():
    assert is_public_ip("8.8.8.8") and is_public_ip("2a00:1450::1")
    for ip in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254", "::ffff:10.0.0.1", "192.0.2.1", "0.0.0.0"]:
        assert not is_public_ip(ip), ip
