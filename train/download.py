"""Guarded HTTP fetching: SSRF checks on every hop, timeouts, a byte cap, retries that honour Retry-After."""

from __future__ import annotations

import email.utils
import http.client
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from train.netguard import BlockedURLError, HostResolutionError, Resolver, Target, check_url, parse_ip

log = logging.getLogger(__name__)

USER_AGENT = "snake-classifier-gather/0.1 (+https://github.com/; research image dataset builder; polite, 1 req/s)"
REDIRECTS = {301, 302, 303, 307, 308}
RETRY_STATUSES = {429, 500, 502, 503, 504}
# What a browser leaves as is in a path / query: the RFC 3986 delimiters and '%' (an existing %XX stays as written).
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")


class FetchError(Exception):
    """A URL could not be fetched; `reason` is a short key for the failure report, the message says more."""

    def __init__(self, reason: str, message: str, transient: bool = False):
        super().__init__(message)
        self.reason = reason
        self.transient = transient


@dataclass
class HttpConfig:
    """Every knob of the fetcher; tests shrink the timeouts and allow 127.0.0.1."""

    user_agent: str = USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 90.0  # a body that trickles in slower than this is abandoned
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 3
    backoff: float = 1.0  # first wait; doubles each retry
    max_retry_wait: float = 60.0  # a longer Retry-After is not waited for: the URL fails as rate-limited
    per_host: int = 2  # concurrent requests to one host
    host_interval: float = 0.0  # seconds between request starts on one host
    allow_hosts: frozenset[str] = field(default_factory=frozenset)
    resolver: Resolver | None = None  # injectable for tests; default is the system resolver


@dataclass
class Response:
    url: str
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class HostGate:
    """Per-host politeness: at most `per_host` requests at once, starts spaced by `interval`, 429 pauses."""

    def __init__(self, per_host: int = 2, interval: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.per_host, self.interval, self.clock = max(1, per_host), interval, clock
        self._lock = threading.Lock()
        self._sems: dict[str, threading.Semaphore] = {}
        self._next: dict[str, float] = {}

    def pause(self, host: str, seconds: float) -> None:
        """Hold every request to host for a while (the host said 429 / Retry-After)."""
        with self._lock:
            self._next[host] = max(self._next.get(host, 0.0), self.clock() + seconds)

    def __call__(self, host: str) -> _Slot:
        with self._lock:
            sem = self._sems.setdefault(host, threading.Semaphore(self.per_host))
        return _Slot(self, host, sem)

    def _wait_turn(self, host: str) -> None:
        while True:
            with self._lock:
                now = self.clock()
                start = self._next.get(host, 0.0)
                if now >= start:
                    self._next[host] = now + self.interval
                    return
            time.sleep(min(start - now, 1.0))


class _Slot:
    def __init__(self, gate: HostGate, host: str, sem: threading.Semaphore):
        self.gate, self.host, self.sem = gate, host, sem

    def __enter__(self) -> None:
        self.sem.acquire()
        try:
            self.gate._wait_turn(self.host)
        except BaseException:
            self.sem.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self.sem.release()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked IP (no second DNS lookup, so no DNS rebinding) but says Host: <name>."""

    def __init__(self, target: Target, connect_timeout: float, read_timeout: float):
        super().__init__(target.host, target.port, timeout=connect_timeout)
        self._ip, self._read_timeout = target.ip, read_timeout

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock.settimeout(self._read_timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, connect_timeout: float, read_timeout: float):
        super().__init__(target.host, target.port, timeout=connect_timeout, context=ssl.create_default_context())
        self._ip, self._read_timeout = target.ip, read_timeout

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        sock.settimeout(self._read_timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def encode_url(url: str) -> str:
    """The URL as a browser sends it: path and query percent-encoded as UTF-8 (an existing %XX is kept, a '%' that
    starts none becomes %25), no fragment. Raises ValueError, saying why, for a URL that cannot be made sendable.
    Anything but http(s) is returned as it is, for the SSRF guard to refuse."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as e:
        raise ValueError(f"malformed URL {url!r} ({e})") from e
    if parts.scheme.lower() not in ("http", "https"):
        return url
    host = parts.hostname or ""
    if host and parse_ip(host) is None:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"{url!r}: {host!r} is not a valid host name ({e})") from e
        if not _HOST_NAME.match(ascii_host):
            raise ValueError(f"{url!r}: {host!r} is not a valid host name")
    try:
        path = quote(_LONE_PERCENT.sub("%25", parts.path), safe=_PATH_SAFE)
        query = quote(_LONE_PERCENT.sub("%25", parts.query), safe=_QUERY_SAFE)
    except UnicodeError as e:  # e.g. a lone surrogate: text that is not a character
        raise ValueError(f"{url!r} cannot be encoded as UTF-8 ({e})") from e
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def location_text(raw: str) -> str:
    """A Location header as the server meant it. http.client reads header bytes as Latin-1: take the bytes back and
    read them as UTF-8, as servers send them today; bytes that are not UTF-8 stay read as Latin-1 (an older server's
    'ó' is the byte F3), and encode_url then sends either as UTF-8 percent-escapes."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _request_once(target: Target, cfg: HttpConfig, accept: str, deadline: float) -> Response:
    """One GET on a checked target; the body is capped at cfg.max_bytes and must arrive before deadline."""
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target, cfg.connect_timeout, cfg.read_timeout)
    try:
        try:
            conn.request(
                "GET",
                target.path,
                headers={"User-Agent": cfg.user_agent, "Accept": accept, "Accept-Encoding": "identity"},
            )
        except (ssl.SSLError, ssl.CertificateError):
            raise  # a CertificateError is also a ValueError
        except (http.client.InvalidURL, ValueError) as e:  # UnicodeEncodeError is a ValueError too
            raise FetchError("bad_url", f"{target.url}: the request cannot be sent ({e})") from e
        resp = conn.getresponse()
        status, ctype = resp.status, resp.getheader("Content-Type", "") or ""
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if status in REDIRECTS or status >= 400:
            return Response(target.url, status, ctype, b"", headers=headers)
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > cfg.max_bytes:
            raise FetchError(
                "too_large", f"{target.url}: Content-Length {int(length):,} is over {cfg.max_bytes:,} bytes"
            )
        chunks, total = [], 0
        while True:
            if time.monotonic() > deadline:
                raise FetchError("timeout", f"{target.url}: the body did not arrive within the time limit", True)
            chunk = resp.read1(64 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total > cfg.max_bytes:
                raise FetchError("too_large", f"{target.url}: the body is over {cfg.max_bytes:,} bytes")
            chunks.append(chunk)
        return Response(target.url, status, ctype, b"".join(chunks), headers=headers)
    except FetchError:
        raise
    except TimeoutError as e:
        raise FetchError("timeout", f"{target.url}: timed out ({e})", True) from e
    except http.client.IncompleteRead as e:
        raise FetchError("connection", f"{target.url}: the connection closed mid-body", True) from e
    except (ssl.SSLError, ssl.CertificateError) as e:
        raise FetchError("tls", f"{target.url}: TLS error ({e})") from e
    except (OSError, http.client.HTTPException) as e:
        raise FetchError("connection", f"{target.url}: connection failed ({e})", True) from e
    finally:
        conn.close()


def fetch(
    url: str,
    cfg: HttpConfig,
    gate: HostGate | None = None,
    accept: str = "image/*,*/*;q=0.5",
    sleep: Callable[[float], None] = time.sleep,
) -> Response:
    """GET a URL, re-checking the SSRF guard on every redirect hop and retrying 429/5xx/timeouts with backoff.

    The URL (and every redirect Location) is percent-encoded as browsers do. Every failure is a FetchError: one
    that cannot be made sendable is `bad_url` (`bad_redirect` after a redirect), a host name that does not resolve
    is the transient `dns`, a refused address `blocked_address` (`blocked_redirect`).
    """
    gate = gate or HostGate(cfg.per_host, cfg.host_interval)
    deadline = time.monotonic() + cfg.total_timeout
    current = url
    for _hop in range(cfg.max_redirects + 1):
        try:
            current = encode_url(current)
        except ValueError as e:
            if _hop == 0:
                raise FetchError("bad_url", f"bad URL: {e}") from e
            raise FetchError("bad_redirect", f"{url}: redirected to a bad URL: {e}") from e
        try:
            target = check_url(current, cfg.allow_hosts, cfg.resolver)
        except HostResolutionError as e:
            raise FetchError("dns", f"{current}: {e}: are you online? (tried again on the next run)", True) from e
        except BlockedURLError as e:
            raise FetchError("blocked_address" if _hop == 0 else "blocked_redirect", str(e)) from e
        resp = _with_retries(target, cfg, gate, accept, deadline, sleep)
        if resp.status in REDIRECTS:
            location = resp.headers.get("location")
            if not location:
                raise FetchError("bad_redirect", f"{current}: HTTP {resp.status} without a Location header")
            try:
                current = urljoin(current, location_text(location))
            except ValueError as e:
                raise FetchError("bad_redirect", f"{current}: HTTP {resp.status} to a bad Location ({e})") from e
            continue
        if resp.status == 404 or resp.status == 410:
            raise FetchError("http_404", f"{current}: HTTP {resp.status} not found")
        if resp.status >= 400:
            raise FetchError(f"http_{resp.status}", f"{current}: HTTP {resp.status}", resp.status in RETRY_STATUSES)
        return resp
    raise FetchError("too_many_redirects", f"{url}: more than {cfg.max_redirects} redirects")


def _with_retries(
    target: Target, cfg: HttpConfig, gate: HostGate, accept: str, deadline: float, sleep: Callable[[float], None]
) -> Response:
    host = target.host.lower()
    for attempt in range(cfg.retries + 1):
        last = attempt == cfg.retries
        try:
            with gate(host):
                resp = _request_once(target, cfg, accept, deadline)
        except FetchError as e:
            if not e.transient or last:
                raise
            wait = cfg.backoff * 2**attempt * (1 + random.random() / 4)
            log.info("%s; retrying in %.1f s", e, wait)
            sleep(min(wait, cfg.max_retry_wait))
            continue
        if resp.status not in RETRY_STATUSES or last:
            return resp
        asked = parse_retry_after(resp.headers.get("retry-after"))
        if asked is not None and asked > cfg.max_retry_wait:
            raise FetchError(
                f"http_{resp.status}",
                f"{target.url}: HTTP {resp.status}, Retry-After {asked:.0f} s is over the {cfg.max_retry_wait:.0f} s cap",
                True,
            )
        wait = asked if asked is not None else cfg.backoff * 2**attempt * (1 + random.random() / 4)
        if resp.status == 429:
            gate.pause(host, wait)  # the whole host asked us to slow down, not just this URL
        log.info("%s: HTTP %d, retrying in %.1f s", target.url, resp.status, wait)
        sleep(min(wait, cfg.max_retry_wait))
    raise AssertionError("unreachable")


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
