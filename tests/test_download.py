"""The guarded fetcher against hostile loopback hosts: timeouts, byte caps, retries, redirects, politeness."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import train.download as download
from tests.servers import Reply, image_bytes, jpeg_reply, serve
from train.download import FetchError, HostGate, HttpConfig, fetch, parse_retry_after
from train.netguard import HostResolutionError, system_resolver

LOOPBACK = frozenset({"127.0.0.1"})


def cfg(**kw) -> HttpConfig:
    base = dict(
        allow_hosts=LOOPBACK,
        connect_timeout=2.0,
        read_timeout=0.5,
        total_timeout=5.0,
        retries=2,
        backoff=0.05,
        max_retry_wait=3.0,
        max_bytes=200_000,
    )
    base.update(kw)
    return HttpConfig(**base)


def test_a_good_image_is_fetched_with_its_bytes_intact():
    body = image_bytes("JPEG", seed=3)
    with serve({"/a.jpg": Reply(200, body, {"Content-Type": "image/jpeg"})}) as s:
        r = fetch(s.url("/a.jpg"), cfg())
    assert r.status == 200 and r.body == body


def test_loopback_is_refused_without_the_allow_list_and_no_request_is_made():
    with serve({"/a.jpg": jpeg_reply()}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/a.jpg"), cfg(allow_hosts=frozenset()))
        assert e.value.reason == "blocked_address"
        assert s.hits["/a.jpg"] == 0


def test_retry_after_is_honoured_before_the_second_try():
    with serve({"/busy.jpg": Reply(429, b"slow down", {"Retry-After": "1"}, times=1, then=jpeg_reply())}) as s:
        t0 = time.monotonic()
        r = fetch(s.url("/busy.jpg"), cfg())
        elapsed = time.monotonic() - t0
        assert r.status == 200 and s.hits["/busy.jpg"] == 2
        gap = s.log[1][0] - s.log[0][0]
    assert gap >= 0.95 and elapsed >= 0.95


def test_a_retry_after_longer_than_the_cap_fails_at_once_instead_of_hammering():
    with serve({"/busy.jpg": Reply(429, b"", {"Retry-After": "3600"})}) as s:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as e:
            fetch(s.url("/busy.jpg"), cfg())
        assert time.monotonic() - t0 < 1.0
        assert e.value.reason == "http_429" and s.hits["/busy.jpg"] == 1


def test_server_errors_are_retried_with_backoff_then_succeed():
    with serve({"/flaky.jpg": Reply(503, b"", times=2, then=jpeg_reply())}) as s:
        r = fetch(s.url("/flaky.jpg"), cfg())
        assert r.status == 200 and s.hits["/flaky.jpg"] == 3


def test_retries_are_bounded():
    with serve({"/down.jpg": Reply(500, b"")}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/down.jpg"), cfg(retries=2))
        assert e.value.reason == "http_500" and s.hits["/down.jpg"] == 3


def test_a_404_fails_without_retrying():
    with serve({}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/missing.jpg"), cfg())
        assert e.value.reason == "http_404" and s.hits["/missing.jpg"] == 1


def test_a_slow_body_times_out():
    with serve({"/slow.jpg": jpeg_reply(body_delay=3.0)}) as s:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as e:
            fetch(s.url("/slow.jpg"), cfg(retries=0))
        assert e.value.reason == "timeout" and time.monotonic() - t0 < 2.5


def test_a_body_that_trickles_in_is_cut_off_by_the_total_deadline():
    body = image_bytes("JPEG", size=(200, 200), seed=1)
    with serve({"/drip.jpg": Reply(200, body, {"Content-Type": "image/jpeg"}, body_delay=0.2, chunk=64)}) as s:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as e:
            fetch(s.url("/drip.jpg"), cfg(retries=0, total_timeout=1.0))
        assert e.value.reason == "timeout" and time.monotonic() - t0 < 2.5


def test_a_huge_declared_body_is_refused_by_the_byte_cap():
    with serve({"/huge.jpg": Reply(200, b"\xff\xd8\xff" + b"\0" * 300_000, {"Content-Type": "image/jpeg"})}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/huge.jpg"), cfg())
        assert e.value.reason == "too_large"


def test_a_huge_undeclared_body_is_cut_at_the_byte_cap():
    big = Reply(200, b"\xff\xd8\xff" + b"\0" * 2_000_000, {"Content-Type": "image/jpeg"}, no_length=True)
    with serve({"/huge.jpg": big}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/huge.jpg"), cfg())
        assert e.value.reason == "too_large"


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.jpg",
        "http://[::1]:{port}/secret",
        "http://2130706433:{port}/secret",
        "http://0x7f.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "file:///etc/passwd",
    ],
)
def test_a_redirect_to_a_private_address_is_refused_before_it_is_followed(location):
    with serve({"/secret": jpeg_reply()}) as s:
        s.routes["/r.jpg"] = Reply(302, b"", {"Location": location.format(port=s.port)})
        with pytest.raises(FetchError) as e:
            fetch(s.url("/r.jpg"), cfg())
        assert e.value.reason == "blocked_redirect"
        assert s.hits["/secret"] == 0


def test_allowed_redirects_are_followed_and_loops_are_bounded():
    with serve({"/final.jpg": jpeg_reply(), "/loop": Reply(301, b"", {"Location": "/loop"})}) as s:
        s.routes["/hop"] = Reply(307, b"", {"Location": s.url("/final.jpg")})
        assert fetch(s.url("/hop"), cfg()).url == s.url("/final.jpg")
        with pytest.raises(FetchError) as e:
            fetch(s.url("/loop"), cfg(max_redirects=3))
        assert e.value.reason == "too_many_redirects" and s.hits["/loop"] == 4


def test_per_host_politeness_caps_concurrent_requests_to_one_host():
    with serve({"/a.jpg": jpeg_reply(delay=0.15)}) as s:
        c = cfg(per_host=1)
        gate = HostGate(c.per_host)
        threads = [threading.Thread(target=fetch, args=(s.url("/a.jpg"), c, gate)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.hits["/a.jpg"] == 4 and s.max_active == 1


def test_retry_after_dates_are_understood():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---------------------------------------------------------------- URLs as people and servers write them


def test_non_ascii_and_spaces_are_sent_percent_encoded_and_fetched():
    pit, photo = image_bytes("JPEG", seed=4), image_bytes("JPEG", seed=5)
    routes = {
        "/Pit%C3%B3n.jpg": Reply(200, pit, {"Content-Type": "image/jpeg"}),
        "/my%20photo.jpg": Reply(200, photo, {"Content-Type": "image/jpeg"}),
        "/q.jpg": jpeg_reply(),
    }
    with serve(routes) as s:
        assert fetch(s.base + "/Pit\u00f3n.jpg", cfg()).body == pit
        assert fetch(s.base + "/my photo.jpg", cfg()).body == photo  # not a 'connection' failure, not retried
        assert fetch(s.base + "/Pit%C3%B3n.jpg", cfg()).body == pit  # already encoded: not encoded twice
        fetch(s.base + "/q.jpg?name=Pit\u00f3n boa&x=%2F#frag", cfg())
        assert s.hits["/Pit%C3%B3n.jpg"] == 2 and s.hits["/my%20photo.jpg"] == 1
        sent = [path for _t, path in s.log]
    assert sent == ["/Pit%C3%B3n.jpg", "/my%20photo.jpg", "/Pit%C3%B3n.jpg", "/q.jpg?name=Pit%C3%B3n%20boa&x=%2F"]


@pytest.mark.parametrize(
    "location",
    [
        "/Pit\u00f3n.jpg".encode().decode("latin-1"),  # raw UTF-8 bytes on the wire, as servers send them today
        "/Pit\u00f3n.jpg",  # the server's send_header writes this as the Latin-1 byte F3
        "http://127.0.0.1:{port}/Pit\u00f3n.jpg".encode().decode("latin-1"),
    ],
)
def test_a_redirect_to_a_raw_non_ascii_location_is_followed(location):
    body = image_bytes("JPEG", seed=4)
    with serve({"/Pit%C3%B3n.jpg": Reply(200, body, {"Content-Type": "image/jpeg"})}) as s:
        s.routes["/moved"] = Reply(302, b"", {"Location": location.format(port=s.port)})
        r = fetch(s.url("/moved"), cfg())
        assert r.body == body and r.url == s.url("/Pit%C3%B3n.jpg")
        assert s.hits["/Pit%C3%B3n.jpg"] == 1


def refuse_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host!r} was looked up; a URL that cannot be sent must fail before that")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/a\ud800.jpg",  # a lone surrogate: not text UTF-8 can encode
        "http://exa mple.com/a.jpg",  # no host name has a space
        "http://a..b/a.jpg",
        "http://127.0.0.1:port/a.jpg",
    ],
)
def test_a_url_that_cannot_be_sent_is_a_permanent_per_url_failure(url):
    with serve({"/a.jpg": jpeg_reply()}) as s:
        with pytest.raises(FetchError) as e:
            fetch(url.format(port=s.port), cfg(resolver=refuse_dns))
        assert e.value.reason == "bad_url" and not e.value.transient
        assert sum(s.hits.values()) == 0


def test_a_redirect_to_a_url_that_cannot_be_sent_is_a_bad_redirect():
    with serve({"/r.jpg": Reply(302, b"", {"Location": "http://exa mple.com/a.jpg"})}) as s:
        with pytest.raises(FetchError) as e:
            fetch(s.url("/r.jpg"), cfg(resolver=refuse_dns))
        assert e.value.reason == "bad_redirect" and not e.value.transient
        assert s.hits["/r.jpg"] == 1


def test_a_request_http_client_refuses_is_bad_url_not_a_crash_or_a_retry(monkeypatch):
    monkeypatch.setattr(download, "encode_url", lambda url: url)  # the last line of defence, on its own
    with serve({}) as s:
        for url in (s.base + "/Pit\u00f3n.jpg", s.base + "/my photo.jpg"):
            with pytest.raises(FetchError) as e:
                fetch(url, cfg())
            assert e.value.reason == "bad_url" and not e.value.transient
        assert sum(s.hits.values()) == 0


# ---------------------------------------------------------------- DNS failures are not refusals


def test_a_dns_failure_is_transient_and_the_url_works_once_dns_is_back():
    online = {"up": False}

    def resolver(host: str, port: int) -> list[str]:
        if not online["up"]:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ["127.0.0.1"]

    with serve({"/a.jpg": jpeg_reply()}) as s:
        c = cfg(allow_hosts=frozenset({"images.test"}), resolver=resolver)
        url = f"http://images.test:{s.port}/a.jpg"
        with pytest.raises(FetchError) as e:
            fetch(url, c)
        assert e.value.reason == "dns" and e.value.transient
        assert "images.test" in str(e.value) and "online" in str(e.value)
        online["up"] = True
        assert fetch(url, c).status == 200 and s.hits["/a.jpg"] == 1


def test_a_redirect_to_a_host_that_does_not_resolve_is_transient_too():
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with serve({}) as s:
        s.routes["/r.jpg"] = Reply(302, b"", {"Location": "http://gone.example/a.jpg"})
        with pytest.raises(FetchError) as e:
            fetch(s.url("/r.jpg"), cfg(resolver=resolver))
        assert e.value.reason == "dns" and e.value.transient


def test_the_system_resolver_reports_a_dns_failure_as_such(monkeypatch):
    def offline(*a, **kw):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.raises(HostResolutionError) as e:
        system_resolver("upload.wikimedia.org", 443)
    assert e.value.host == "upload.wikimedia.org"
    with pytest.raises(FetchError) as f:
        fetch("https://upload.wikimedia.org/a.jpg", cfg(allow_hosts=frozenset()))
    assert f.value.reason == "dns" and f.value.transient


@pytest.mark.parametrize("address", ["10.0.0.7", "127.0.0.1", "169.254.169.254"])
def test_a_host_that_resolves_to_a_private_address_stays_a_permanent_refusal(address):
    with pytest.raises(FetchError) as e:
        fetch("http://images.example/a.jpg", cfg(allow_hosts=frozenset(), resolver=lambda h, p: [address]))
    assert e.value.reason == "blocked_address" and not e.value.transient
