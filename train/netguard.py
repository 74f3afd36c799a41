"""SSRF guard: only http(s) URLs whose every resolved address is globally routable may be fetched."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Ranges refused on top of what ipaddress already calls non-global (kept explicit: Python versions differ).
_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, including the cloud metadata address 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/3",  # multicast, reserved, broadcast
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form (::127.0.0.1)
        "fc00::/7",  # unique local, including the AWS metadata address fd00:ec2::254
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "instance-data"}


class BlockedURLError(ValueError):
    """The URL may not be fetched: wrong scheme, or a host that is (or resolves to) a non-public address."""


class HostResolutionError(BlockedURLError):
    """The host name did not resolve (offline, DNS down or flaky, or no such name): nothing was refused, so
    the URL is worth trying again later. A BlockedURLError, so code that knows only that still fails closed."""

    def __init__(self, host: str, detail: str = ""):
        super().__init__(f"cannot resolve host {host!r}" + (f" ({detail})" if detail else ""))
        self.host = host


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `ip`, but speak HTTP (Host header, TLS SNI) to `host`."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    ip: str


def parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    """Parse every IPv4 spelling inet_aton accepts: 2130706433, 0x7f.0.0.1, 0177.0.0.1, 127.1, 127.0.1."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    nums = []
    for p in parts:
        try:
            if p[:2].lower() == "0x":
                n = int(p[2:], 16) if p[2:] else 0
            elif len(p) > 1 and p.startswith("0"):
                n = int(p, 8)
            else:
                n = int(p, 10) if p.isdigit() else -1
        except ValueError:
            return None
        if n < 0:
            return None
        nums.append(n)
    last_bits = 8 * (5 - len(nums))
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 1 << last_bits:
        return None
    value = 0
    for n in nums[:-1]:
        value = value << 8 | n
    value = value << last_bits | nums[-1]
    return ipaddress.IPv4Address(value)


def parse_ip(host: str) -> IPAddress | None:
    """The address a host string denotes literally (any IPv4 spelling, IPv6 with or without brackets), or None."""
    h = host.strip().strip("[]").rstrip(".")
    if "%" in h:
        h = h.split("%", 1)[0]  # IPv6 zone id
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    return parse_ipv4_loose(h) if h and all(c in "0123456789abcdefxABCDEFX." for c in h) else None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public_ip(ip: IPAddress | str) -> bool:
    """True only for a globally routable unicast address (IPv4 inside IPv6 forms is unwrapped and checked)."""
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public_ip(inner)
    if any(ip.version == n.version and ip in n for n in _BLOCKED):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_link_local)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host; HostResolutionError when the lookup fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as e:  # not a valid host name (IDNA): no lookup can ever succeed
        raise BlockedURLError(f"host name {host!r} cannot be looked up ({e})") from e
    except OSError as e:  # socket.gaierror and kin: no network, DNS down or flaky, or no such name
        raise HostResolutionError(host, str(e)) from e
    if not infos:
        raise HostResolutionError(host, "no addresses")
    return sorted({info[4][0] for info in infos})


def _resolve(resolver: Resolver | None, host: str, port: int) -> list[str]:
    """The addresses of host by resolver (the system one by default): a lookup that fails, whichever resolver
    raised what, is a HostResolutionError; a name that cannot be looked up at all is a BlockedURLError."""
    try:
        ips = (resolver or system_resolver)(host, port)
    except BlockedURLError:
        raise
    except UnicodeError as e:
        raise BlockedURLError(f"host name {host!r} cannot be looked up ({e})") from e
    except OSError as e:  # socket.gaierror from a resolver that does not wrap it
        raise HostResolutionError(host, str(e)) from e
    if not ips:
        raise HostResolutionError(host, "no addresses")
    return list(ips)


def normalise_hosts(hosts: Iterable[str] | None) -> frozenset[str]:
    """Allow-list entries compared as written: lower case, without brackets or a trailing dot."""
    return frozenset(h.strip().lower().strip("[]").rstrip(".") for h in (hosts or ()) if h.strip())


def check_url(url: str, allow_hosts: Iterable[str] | None = None, resolver: Resolver | None = None) -> Target:
    """Check a URL and pick the address to connect to, or raise BlockedURLError saying why (its subclass
    HostResolutionError when the host name did not resolve, which may work later).

    A host on the allow-list (compared exactly as written in the URL, so `127.0.0.1` does not also admit
    `2130706433` or `localhost`) skips the address check; everything else must resolve only to public addresses.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise BlockedURLError(f"malformed URL {url!r} ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BlockedURLError(f"only http and https URLs are fetched, not {scheme or 'a schemeless'} URL {url!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BlockedURLError(f"URL {url!r} has no host")
    port = port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    allowed = normalise_hosts(allow_hosts)
    literal = parse_ip(host)
    if host.lower() in allowed:
        if literal is not None:
            return Target(url, scheme, host, port, path, str(literal))
        return Target(url, scheme, host, port, path, _resolve(resolver, host, port)[0])
    if literal is not None:
        if not is_public_ip(literal):
            raise BlockedURLError(f"refused {url!r}: {host} is the non-public address {literal}")
        return Target(url, scheme, host, port, path, str(literal))
    if host.lower() in _BLOCKED_NAMES or host.lower().endswith((".localhost", ".internal", ".local")):
        raise BlockedURLError(f"refused {url!r}: {host} names a local or metadata host")
    ips = _resolve(resolver, host, port)
    bad = [a for a in ips if not is_public_ip(a)]
    if bad:
        raise BlockedURLError(f"refused {url!r}: {host} resolves to the non-public address {bad[0]}")
    return Target(url, scheme, host, port, path, ips[0])
