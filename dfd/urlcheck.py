"""Which URLs dfd may fetch: syntax, scheme, host lists and the SSRF address check.

Standard library only: the gateway checks a URL before it enqueues a job, and the
worker checks it again, together with every address the name resolves to and every
redirect, before it connects.

The address check reads a host the way the C library would: ``2130706433``,
``0177.0.0.1``, ``0x7f.1`` and ``127.1`` are all 127.0.0.1, so each notation is parsed
to the address it means before the ranges are checked. IPv6 addresses that carry an
IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are checked for the
address they carry as well.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import string
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dfd.errors import ConfigurationError, FetchTransientError, RejectedURLError

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 4096

# Ranges refused whatever ``ipaddress`` thinks of them (its ``is_global`` differs between
# Python releases and calls multicast, 192.0.0.0/24 and site-local IPv6 global).
_FORBIDDEN_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
# Most specific first, so 255.255.255.255 reads "broadcast", not "reserved".
_NETWORKS = tuple(
    sorted(
        ((ipaddress.ip_network(net), why) for net, why in _FORBIDDEN_NETWORKS),
        key=lambda item: -item[0].prefixlen,
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

# Names that mean this machine whatever DNS says (RFC 6761) and well-known metadata names.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")

_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._")


def check_url(url: str, settings: Settings) -> str:
    """Check a URL's syntax, scheme, host lists and literal address; return it normalised.

    Names are not resolved here (see `resolve_and_vet`), so the gateway can call this
    without touching DNS.

    Args:
        url: What the user sent.
        settings: Host lists and exempt networks.

    Returns:
        The URL with a lower-case scheme and host, an IDNA-encoded name, no default
        port and no fragment.

    Raises:
        RejectedURLError: Not an http(s) URL, credentials in it, a forbidden host or
            address, or a host the allowlist or blocklist refuses.
    """
    if not isinstance(url, str) or not url.strip():
        raise RejectedURLError("url: expected an http(s) URL, got an empty value")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise RejectedURLError(f"url: expected at most {MAX_URL_LENGTH} characters, got {len(url)}")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise RejectedURLError("url: expected no spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RejectedURLError(f"url: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise RejectedURLError(
            f"url: expected an http or https URL, got scheme {scheme or 'none'!r}"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise RejectedURLError("url: expected no user name or password in the URL")
    if not parts.hostname:
        raise RejectedURLError("url: expected a host name, got none")
    if port == 0:
        raise RejectedURLError("url: expected a port between 1 and 65535, got 0")

    host = normalise_host(parts.hostname, bracketed="[" in parts.netloc)
    check_host_lists(host, settings)
    address = literal_address(host)
    if address is not None:
        vet_address(address, settings, host=host)
    else:
        _check_local_name(host)

    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    return urllib.parse.urlunsplit((scheme, netloc, path, parts.query, ""))


def normalise_host(host: str, *, bracketed: bool = False) -> str:
    """Lower-case, IDNA-encode and strip the trailing dot of a host; IPv6 stays as written.

    Raises:
        RejectedURLError: The host has characters no DNS name or address has.
    """
    host = host.strip().lower()
    if bracketed or ":" in host:
        if "%" in host:
            raise RejectedURLError(f"url: expected no IPv6 zone identifier, got host {host!r}")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise RejectedURLError(f"url: expected a valid IPv6 address, got [{host}]") from exc
    host = host.rstrip(".")
    if not host:
        raise RejectedURLError("url: expected a host name, got none")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise RejectedURLError(f"url: host {host!r} is not a valid international name") from exc
    if not set(host) <= _HOST_CHARS or ".." in host:
        raise RejectedURLError(f"url: host {host!r} has characters no host name has")
    return host


def literal_address(host: str) -> IPAddress | None:
    """The address a host denotes by itself, in any notation ``inet_aton`` accepts.

    Returns ``None`` for a DNS name.

    Raises:
        RejectedURLError: The host looks numeric (its last label is a number) but is not
            a valid address: resolvers disagree on such names, so none is accepted.
    """
    if ":" in host:
        return ipaddress.IPv6Address(host)
    labels = host.split(".")
    if not _looks_numeric(labels[-1]):
        return None
    if len(labels) > 4:
        raise RejectedURLError(f"url: host {host!r} is neither a name nor an IPv4 address")
    try:
        values = [_parse_ipv4_part(label) for label in labels]
    except ValueError as exc:
        raise RejectedURLError(f"url: host {host!r} is neither a name nor an IPv4 address") from exc
    # inet_aton: a.b.c.d, a.b.c (c fills 16 bits), a.b (b fills 24 bits), a (32 bits).
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        raise RejectedURLError(f"url: host {host!r} is out of range for an IPv4 address")
    number = last
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _looks_numeric(label: str) -> bool:
    if not label:
        return False
    if label[:2] in ("0x", "0X"):
        return all(c in string.hexdigits for c in label[2:])
    return label.isdigit()


def _parse_ipv4_part(label: str) -> int:
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    if not label.isdigit():
        raise ValueError(label)
    return int(label, 10)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why connecting to this address is refused, or ``None`` if it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner is not None:
                return f"{inner} address {embedded} embedded in IPv6"
            return None
    for network, why in _NETWORKS:
        if address.version == network.version and address in network:
            return why
    if address.is_multicast:
        return "multicast"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if address.is_unspecified:
        return "unspecified"
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    packed = int(address)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and packed > 1):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    if address in _TEREDO and address.teredo is not None:
        return address.teredo[1]
    return None


def vet_address(
    address: IPAddress, settings: Settings, *, host: str | None = None, resolved: bool = False
) -> None:
    """Refuse an address dfd must never connect to.

    ``settings.fetch_allowed_networks`` exempts trusted networks (tests, internal
    deployments); nothing else is exempt. ``resolved``: the address came from resolving
    ``host``; the refusal then names neither the address nor why (the log does).

    Raises:
        RejectedURLError: The address is loopback, private, link-local, metadata, ...
    """
    reason = forbidden_reason(address)
    if reason is None or _exempt(address, settings):
        return
    if resolved:
        # The address came from DNS: naming it (or why it is refused) would let a caller
        # map the gateway's internal network one name at a time. The log keeps it.
        log.info("url refused", extra={"host": host, "address": str(address), "reason": reason})
        raise RejectedURLError(
            f"url: host {host!r} resolves to an address dfd does not fetch from; "
            "expected a public address"
        )
    named = f"host {host!r} ({address})" if host and host != str(address) else f"address {address}"
    raise RejectedURLError(f"url: {named} is {reason}; expected a public address")


def _exempt(address: IPAddress, settings: Settings) -> bool:
    for cidr in getattr(settings, "fetch_allowed_networks", ()):
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigurationError(
                f"fetch_allowed_networks: expected CIDRs, got {cidr!r}"
            ) from exc
        if address.version == network.version and address in network:
            return True
    return False


def _check_local_name(host: str) -> None:
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise RejectedURLError(f"url: host {host!r} names a local or internal machine")


def _matches(host: str, patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        entry = pattern.strip().lower().rstrip(".").lstrip("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return pattern
    return None


def check_host_lists(host: str, settings: Settings) -> None:
    """Apply the blocklist, then the allowlist (hosts and their subdomains).

    Raises:
        RejectedURLError: The host is blocked, or an allowlist is set and it is not on it.
    """
    blocked = _matches(host, settings.url_blocklist)
    if blocked is not None:
        raise RejectedURLError(f"url: host {host!r} is blocked ({blocked!r} is on the blocklist)")
    if settings.url_allowlist and _matches(host, settings.url_allowlist) is None:
        raise RejectedURLError(f"url: host {host!r} is not on the allowlist")


def resolve_and_vet(
    host: str, port: int, settings: Settings, *, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve a host and vet every address it resolves to.

    The caller connects to one of the returned addresses (never resolves again), so a
    second, different DNS answer cannot redirect the connection.

    Args:
        host: A host as `check_url` returns it (name or address literal).
        port: The port that will be connected to.
        settings: Exempt networks.
        resolver: ``socket.getaddrinfo`` or a stand-in with its signature (tests).

    Returns:
        The vetted addresses, in resolver order, without duplicates.

    Raises:
        RejectedURLError: ANY resolved address is forbidden, or the name does not exist.
        FetchTransientError: The resolver failed temporarily.
    """
    host = normalise_host(host.strip("[]"), bracketed=host.startswith("["))
    literal = literal_address(host)
    if literal is not None:
        vet_address(literal, settings, host=host)
        return [literal]
    _check_local_name(host)
    resolve = resolver or socket.getaddrinfo
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
            raise FetchTransientError(f"url: resolving {host!r} failed for now ({exc})") from exc
        raise RejectedURLError(f"url: host {host!r} does not resolve ({exc})") from exc
    except (OSError, UnicodeError) as exc:
        raise RejectedURLError(f"url: host {host!r} does not resolve ({exc})") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(raw)
        vet_address(address, settings, host=host, resolved=True)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RejectedURLError(f"url: host {host!r} resolves to no address")
    return addresses
