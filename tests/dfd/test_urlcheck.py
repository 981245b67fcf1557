"""The SSRF corpus: every notation of a forbidden address, IPv6 forms, names, host lists."""

import ipaddress
import socket

import pytest

from dfd.errors import ConfigurationError, FetchTransientError, RejectedURLError
from dfd.settings import Settings
from dfd.urlcheck import check_url, forbidden_reason, literal_address, resolve_and_vet

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path)


LOOPBACK_NOTATIONS = [
    "127.0.0.1",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "017700000001",  # octal
    "0177.0.0.1",  # octal first byte
    "0x7f.1",  # hex, shortened
    "127.1",  # shortened
    "127.0.1",  # a.b.c
    "0x7f.0.0.0x1",  # mixed hex
    "0177.0x0.0.01",  # mixed octal and hex
    "127.000.000.001",  # leading zeros
    "127.0.0.1.",  # trailing dot
    "0X7F.1",  # upper-case prefix
]


@pytest.mark.parametrize("host", LOOPBACK_NOTATIONS)
def test_every_ipv4_notation_of_loopback_is_parsed_and_refused(host, settings):
    assert literal_address(host.lower().rstrip(".")) == ipaddress.IPv4Address("127.0.0.1")
    with pytest.raises(RejectedURLError, match="loopback"):
        check_url(f"http://{host}/video.mp4", settings)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("10.1.2.3", "private"),
        ("012.1.2.3", "private"),  # octal 10
        ("167772161", "private"),  # 10.0.0.1
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("0xc0a80101", "private"),
        ("169.254.169.254", "metadata"),  # AWS, GCP, Azure metadata
        ("2852039166", "metadata"),  # 169.254.169.254 in decimal
        ("0xa9.0xfe.0xa9.0xfe", "metadata"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.100.100.200", "carrier-grade NAT"),  # Alibaba metadata
        ("0.0.0.0", "unspecified"),
        ("0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.1", "documentation"),
        ("192.0.0.8", "IETF"),
    ],
)
def test_private_and_special_ipv4_ranges_are_refused(host, reason, settings):
    with pytest.raises(RejectedURLError, match=reason):
        check_url(f"https://{host}/v.mp4", settings)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("[::1]", "loopback"),
        ("[0:0:0:0:0:0:0:1]", "loopback"),
        ("[::]", "unspecified"),
        ("[::ffff:127.0.0.1]", "loopback address 127.0.0.1 embedded"),
        ("[::ffff:7f00:1]", "loopback address 127.0.0.1 embedded"),
        ("[::ffff:169.254.169.254]", "metadata"),
        ("[::127.0.0.1]", "loopback"),  # IPv4-compatible (deprecated)
        ("[64:ff9b::7f00:1]", "loopback"),  # NAT64 of 127.0.0.1
        ("[64:ff9b::a9fe:a9fe]", "metadata"),  # NAT64 of 169.254.169.254
        ("[64:ff9b:1::1]", "local-use NAT64"),
        ("[2002:7f00:1::]", "loopback"),  # 6to4 of 127.0.0.1
        ("[2002:c0a8:101::1]", "private"),  # 6to4 of 192.168.1.1
        ("[fc00::1]", "unique-local"),
        ("[fd00:ec2::254]", "unique-local"),  # AWS IPv6 metadata
        ("[fe80::1]", "link-local"),
        ("[fec0::1]", "site-local"),
        ("[ff02::1]", "multicast"),
        ("[2001:db8::1]", "documentation"),
        ("[100::1]", "discard"),
    ],
)
def test_ipv6_forms_are_refused(host, reason, settings):
    with pytest.raises(RejectedURLError, match=reason):
        check_url(f"http://{host}:8080/v.mp4", settings)


def test_ipv6_zone_identifier_is_refused(settings):
    with pytest.raises(RejectedURLError):
        check_url("http://[fe80::1%25eth0]/", settings)


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses_pass(address):
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://example.org/v.mp4", "scheme 'ftp'"),
        ("gopher://example.org/", "scheme 'gopher'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("//example.org/v.mp4", "scheme 'none'"),
        ("http://user:pw@example.org/v.mp4", "user name or password"),
        ("http://example.org@127.0.0.1/v.mp4", "user name or password"),
        ("http:///v.mp4", "host name"),
        ("http://exa mple.org/", "spaces"),
        ("http://example.org:0/", "port"),
        ("http://example.org:99999/", "not a valid URL"),
        ("http://%31%32%37.0.0.1/", "characters"),
        ("http://1.2.3.4.5/", "neither a name nor an IPv4"),
        ("http://256.1.1.1/", "out of range"),
        ("http://1.2.65536/", "out of range"),
        ("http://0x7g.1/", "neither a name nor an IPv4"),
        ("http://localhost:8000/", "local or internal"),
        ("http://LOCALHOST./", "local or internal"),
        ("http://foo.localhost/", "local or internal"),
        ("http://metadata.google.internal/computeMetadata/v1/", "local or internal"),
        ("", "empty"),
        ("http://example.org/" + "a" * 5000, "at most"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url, message, settings):
    with pytest.raises(RejectedURLError, match=message):
        check_url(url, settings)


def test_normalisation(settings):
    assert (
        check_url("HTTPS://Example.ORG:443/a/b.mp4?x=1#frag", settings)
        == "https://example.org/a/b.mp4?x=1"
    )
    assert check_url("http://example.org:8080", settings) == "http://example.org:8080/"
    assert (
        check_url("http://bücher.example/v.mp4", settings) == "http://xn--bcher-kva.example/v.mp4"
    )
    assert (
        check_url("http://[2606:4700:4700:0::1111]/", settings) == "http://[2606:4700:4700::1111]/"
    )
    assert check_url("http://93.184.216.34/v", settings) == "http://93.184.216.34/v"


def test_blocklist_covers_host_and_subdomains(tmp_path):
    s = Settings(data_dir=tmp_path, url_blocklist=["evil.example"])
    for url in ("http://evil.example/v", "http://cdn.evil.example/v", "http://EVIL.example./v"):
        with pytest.raises(RejectedURLError, match="blocklist"):
            check_url(url, s)
    assert check_url("http://notevil.example/v", s) == "http://notevil.example/v"


def test_allowlist_admits_only_listed_hosts_and_subdomains(tmp_path):
    s = Settings(data_dir=tmp_path, url_allowlist=["videos.example", "*.cdn.example"])
    assert check_url("https://videos.example/v", s)
    assert check_url("https://a.videos.example/v", s)
    assert check_url("https://x.cdn.example/v", s)
    for url in (
        "https://other.example/v",
        "https://videos.example.evil.org/v",
        "https://xvideos.example/v",
    ):
        with pytest.raises(RejectedURLError, match="allowlist"):
            check_url(url, s)


def test_allowlist_does_not_bypass_the_address_check(tmp_path):
    s = Settings(data_dir=tmp_path, url_allowlist=["127.0.0.1"])
    with pytest.raises(RejectedURLError, match="loopback"):
        check_url("http://127.0.0.1/v", s)


def _resolver(*answers):
    calls = []

    def resolve(host, port, type=0, **_):
        calls.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port))
            for a in answers
        ]

    resolve.calls = calls
    return resolve


def test_resolve_refuses_a_name_if_any_answer_is_forbidden(settings):
    with pytest.raises(RejectedURLError, match="rebind.example. resolves to an address") as info:
        resolve_and_vet(
            "rebind.example", 80, settings, resolver=_resolver("93.184.216.34", "10.0.0.7")
        )
    # Where a name points inside the network is not the caller's to learn.
    assert "10.0.0.7" not in str(info.value) and "private" not in str(info.value)
    with pytest.raises(RejectedURLError, match="v6.example. resolves to an address") as info:
        resolve_and_vet("v6.example", 80, settings, resolver=_resolver("::ffff:127.0.0.1"))
    assert "127.0.0.1" not in str(info.value)


def test_resolve_returns_vetted_public_addresses(settings):
    resolver = _resolver("93.184.216.34", "93.184.216.34", "2606:2800:220:1::1")
    got = resolve_and_vet("Example.org", 443, settings, resolver=resolver)
    assert got == [
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1::1"),
    ]
    assert resolver.calls == ["example.org"]


def test_real_resolver_refuses_localhost_by_address(settings):
    # "localhost" is refused by name; a name the system resolves to loopback is refused by address
    with pytest.raises(RejectedURLError):
        resolve_and_vet("localhost", 80, settings)
    with pytest.raises(RejectedURLError, match="loopback"):
        resolve_and_vet("127.0.0.1", 80, settings)


def test_resolver_failures_are_classified(settings):
    def nxdomain(*_, **__):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def again(*_, **__):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(RejectedURLError, match="does not resolve"):
        resolve_and_vet("nope.example", 80, settings, resolver=nxdomain)
    with pytest.raises(FetchTransientError, match="for now"):
        resolve_and_vet("flaky.example", 80, settings, resolver=again)


def test_exempt_networks_admit_only_what_they_list(tmp_path):
    s = Settings(data_dir=tmp_path, fetch_allowed_networks=["127.0.0.1/32"])
    assert check_url("http://127.0.0.1:8080/v", s) == "http://127.0.0.1:8080/v"
    assert resolve_and_vet("media.test", 80, s, resolver=_resolver("127.0.0.1")) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    with pytest.raises(RejectedURLError, match="loopback"):
        check_url("http://127.0.0.2/v", s)
    with pytest.raises(RejectedURLError, match="metadata"):
        check_url("http://169.254.169.254/latest/meta-data/", s)


def test_a_bad_exempt_network_is_a_configuration_error(tmp_path):
    s = Settings(data_dir=tmp_path, fetch_allowed_networks=["not-a-cidr"])
    with pytest.raises(ConfigurationError, match="fetch_allowed_networks"):
        check_url("http://127.0.0.1/", s)
