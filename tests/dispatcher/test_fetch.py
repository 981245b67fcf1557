"""Fetch against a loopback HTTP server: SSRF guard, redirects, byte cap, retries."""

import hashlib
import socket
import time

import httpx
import pytest

from dfd.errors import FetchTransientError, RejectedURLError
from dfd.ports import free_port
from dfd.settings import Settings
from dispatcher.errors import (
    DownloadTooLargeError,
    FetchRetriesExhaustedError,
    NotMediaError,
    RemoteRefusedError,
    TooManyRedirectsError,
)
from dispatcher.fetch import fetch
from tests.dispatcher.media_server import MediaServer, trickle

pytestmark = pytest.mark.unit


def make_settings(tmp_path, **overrides):
    values = {
        "data_dir": tmp_path / "data",
        "fetch_backoff_s": 0.01,
        "fetch_connect_timeout_s": 2.0,
        "fetch_read_timeout_s": 2.0,
        "ytdlp_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def trusted(tmp_path):
    """Settings that exempt exactly 127.0.0.1 (the test server), nothing else."""
    return make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"])


def resolver_for(*answers_per_call):
    """A getaddrinfo stand-in answering the n-th call with the n-th address (last repeats)."""
    calls = []

    def resolve(host, port, type=0, **_):
        calls.append(host)
        address = answers_per_call[min(len(calls), len(answers_per_call)) - 1]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    resolve.calls = calls
    return resolve


def test_direct_fetch_streams_the_file_with_its_digest(server, clip, trusted, tmp_path):
    server.file("/clip.mpg", clip, "video/mpeg")
    got = fetch(server.url("/clip.mpg"), tmp_path / "job", trusted)
    assert got.path.read_bytes() == clip
    assert got.path.parent == tmp_path / "job" and got.path.suffix == ".mpg"
    assert got.size == len(clip)
    assert got.sha256 == hashlib.sha256(clip).hexdigest()
    assert got.content_type == "video/mpeg"
    assert got.final_url == server.url("/clip.mpg")


def test_direct_fetch_reports_its_progress_as_the_body_arrives(server, clip, trusted, tmp_path):
    server.file("/clip.mpg", clip, "video/mpeg")
    seen: list[float] = []
    fetch(server.url("/clip.mpg"), tmp_path / "job", trusted, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len(clip) <= 1 << 16 or any(0 < f < 1 for f in seen), seen


def test_connects_to_the_first_vetted_address_so_rebinding_cannot_switch_it(
    server, clip, trusted, tmp_path
):
    # First answer: the test server (exempt). Any later answer: a private address. A client
    # that resolved again when connecting would be refused or fail; the pinned one succeeds.
    resolver = resolver_for("127.0.0.1", "10.255.0.1")
    server.file("/clip.mpg", clip)
    got = fetch(
        f"http://media.test:{server.port}/clip.mpg", tmp_path / "job", trusted, resolver=resolver
    )
    assert got.size == len(clip)
    assert resolver.calls == ["media.test"]
    assert server.seen[0].host == f"media.test:{server.port}"
    assert got.final_url == f"http://media.test:{server.port}/clip.mpg"


def test_https_goes_to_the_vetted_address_with_host_and_sni_kept(tmp_path):
    sent = []

    def handler(request):
        sent.append(request)
        return httpx.Response(
            200, headers={"Content-Type": "video/mp4"}, content=b"\0\0\0\x18ftypmp42"
        )

    got = fetch(
        "https://cdn.example/v/clip.mp4",
        tmp_path / "job",
        make_settings(tmp_path),
        resolver=resolver_for("93.184.216.34"),
        transport=httpx.MockTransport(handler),
    )
    (request,) = sent
    assert request.url.host == "93.184.216.34"
    assert request.headers["host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"
    assert got.final_url == "https://cdn.example/v/clip.mp4"


def test_redirect_chain_is_followed_and_rechecked(server, clip, trusted, tmp_path):
    server.redirect("/a", "/b", 301)
    server.redirect("/b", server.url("/c"), 307)
    server.redirect("/c", "d.mpg", 308)
    server.file("/d.mpg", clip)
    got = fetch(server.url("/a"), tmp_path / "job", trusted)
    assert server.paths() == ["/a", "/b", "/c", "/d.mpg"]
    assert got.final_url == server.url("/d.mpg")
    assert got.size == len(clip)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/x",
        "http://2130706434:{port}/x",  # 127.0.0.2, decimal
        "http://0x7f.2:{port}/x",
        "http://0177.0.0.2:{port}/x",
        "http://[::1]:{port}/x",
        "http://[::ffff:127.0.0.2]:{port}/x",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.1/x",
        "http://localhost:{port}/x",
        "http://private.test:{port}/x",  # resolves to 192.168.0.10 below
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
    ],
)
def test_redirect_to_a_forbidden_target_is_refused_before_connecting(
    server, trusted, tmp_path, target
):
    def resolver(host, port, type=0, **_):
        assert host == "private.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.0.10", port))]

    server.redirect("/r", target.format(port=server.port))
    with pytest.raises(RejectedURLError):
        fetch(server.url("/r"), tmp_path / "job", trusted, resolver=resolver)
    assert server.paths() == ["/r"]
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/clip.mpg",
        "http://2130706433:{port}/clip.mpg",
        "http://017700000001:{port}/clip.mpg",
        "http://0x7f.1:{port}/clip.mpg",
        "http://127.1:{port}/clip.mpg",
        "http://0177.0.0x0.1:{port}/clip.mpg",
        "http://[::ffff:127.0.0.1]:{port}/clip.mpg",
        "http://[::ffff:7f00:1]:{port}/clip.mpg",
        "http://localhost:{port}/clip.mpg",
        "http://loopback.test:{port}/clip.mpg",  # a name resolving to 127.0.0.1
    ],
)
def test_loopback_server_is_unreachable_in_every_notation(server, clip, tmp_path, url):
    server.file("/clip.mpg", clip)
    with pytest.raises(RejectedURLError):
        fetch(
            url.format(port=server.port),
            tmp_path / "job",
            make_settings(tmp_path),
            resolver=resolver_for("127.0.0.1"),
        )
    assert server.seen == []


def test_real_resolver_refuses_a_name_for_loopback(server, clip, tmp_path):
    # "localhost." passes the name check only if the trailing dot were kept; with the real
    # resolver the address check refuses it anyway.
    server.file("/clip.mpg", clip)
    with pytest.raises(RejectedURLError):
        fetch(
            f"http://localhost.:{server.port}/clip.mpg", tmp_path / "job", make_settings(tmp_path)
        )
    assert server.seen == []


def test_allowlist_and_blocklist_apply_to_redirects(server, clip, tmp_path):
    s = make_settings(
        tmp_path, fetch_allowed_networks=["127.0.0.1/32"], url_blocklist=["blocked.test"]
    )
    server.redirect("/r", f"http://cdn.blocked.test:{server.port}/clip.mpg")
    with pytest.raises(RejectedURLError, match="blocklist"):
        fetch(server.url("/r"), tmp_path / "job", s, resolver=resolver_for("127.0.0.1"))
    allow = make_settings(
        tmp_path, fetch_allowed_networks=["127.0.0.1/32"], url_allowlist=["127.0.0.1"]
    )
    server.redirect("/r2", f"http://other.test:{server.port}/clip.mpg")
    with pytest.raises(RejectedURLError, match="allowlist"):
        fetch(server.url("/r2"), tmp_path / "job", allow, resolver=resolver_for("127.0.0.1"))
    assert server.paths() == ["/r", "/r2"]


def test_content_length_over_the_cap_is_refused_before_reading(server, trusted, tmp_path):
    s = make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"], max_download_bytes=1000)
    server.file("/big.mp4", b"\0" * 5000)
    with pytest.raises(DownloadTooLargeError, match="announces 5000 bytes; the limit is 1000"):
        fetch(server.url("/big.mp4"), tmp_path / "job", s)
    assert not list((tmp_path / "job").glob("*")) if (tmp_path / "job").exists() else True


def test_stream_over_the_cap_is_cut_while_reading(server, tmp_path):
    s = make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"], max_download_bytes=10_000)
    # 200 x 1000 bytes, 5 ms apart, no Content-Length: reading it all would take a second
    server.route(
        "/endless.mp4", lambda _s: (200, {"Content-Type": "video/mp4"}, trickle(200, 1000, 0.005))
    )
    started = time.monotonic()
    with pytest.raises(DownloadTooLargeError, match="more than 10000 bytes"):
        fetch(server.url("/endless.mp4"), tmp_path / "job", s)
    assert time.monotonic() - started < 0.8
    assert list((tmp_path / "job").iterdir()) == []


def test_transient_5xx_is_retried_with_backoff_then_succeeds(server, clip, trusted, tmp_path):
    answers = iter([503, 502])
    server.route(
        "/flaky.mpg",
        lambda _s: (next(answers, 200), {"Content-Type": "video/mpeg"}, clip),
    )
    delays = []
    got = fetch(server.url("/flaky.mpg"), tmp_path / "job", trusted, sleep=delays.append)
    assert got.size == len(clip)
    assert server.paths() == ["/flaky.mpg"] * 3
    assert delays == [0.01, 0.02]


def test_4xx_is_not_retried(server, trusted, tmp_path):
    with pytest.raises(RemoteRefusedError, match="answered 404") as info:
        fetch(server.url("/missing.mp4"), tmp_path / "job", trusted, sleep=lambda _d: None)
    assert info.value.status == 404
    assert server.paths() == ["/missing.mp4"]


def test_retries_are_bounded_and_end_transient(server, trusted, tmp_path):
    server.route("/down.mp4", lambda _s: (503, {}, b"busy"))
    with pytest.raises(FetchRetriesExhaustedError, match="failed 3 times") as info:
        fetch(server.url("/down.mp4"), tmp_path / "job", trusted, sleep=lambda _d: None)
    assert isinstance(info.value, FetchTransientError)
    assert server.paths() == ["/down.mp4"] * 3


def test_connection_refused_is_transient(tmp_path):
    port = free_port()  # closed again: nothing listens there
    s = make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"])
    with pytest.raises(FetchRetriesExhaustedError, match="cannot connect"):
        fetch(f"http://127.0.0.1:{port}/v.mp4", tmp_path / "job", s, sleep=lambda _d: None)


def test_read_timeout_is_transient(server, tmp_path):
    s = make_settings(
        tmp_path, fetch_allowed_networks=["127.0.0.1/32"], fetch_read_timeout_s=0.2, fetch_retries=1
    )
    server.route("/slow.mp4", lambda _s: (200, {"Content-Type": "video/mp4"}, trickle(3, 10, 0.5)))
    with pytest.raises(FetchRetriesExhaustedError, match="stopped sending"):
        fetch(server.url("/slow.mp4"), tmp_path / "job", s)
    assert list((tmp_path / "job").iterdir()) == []


def test_too_many_redirects(server, trusted, tmp_path):
    server.redirect("/loop", "/loop")
    with pytest.raises(TooManyRedirectsError, match="more than 5 times"):
        fetch(server.url("/loop"), tmp_path / "job", trusted)
    assert len(server.seen) == 6


def test_a_page_is_not_media_when_ytdlp_is_off(server, trusted, tmp_path):
    server.file("/page", b"<html><body>hi</body></html>", "text/html; charset=utf-8")
    with pytest.raises(NotMediaError, match="text/html page"):
        fetch(server.url("/page"), tmp_path / "job", trusted)


def test_empty_body_is_not_media(server, trusted, tmp_path):
    server.file("/empty.mp4", b"")
    with pytest.raises(NotMediaError, match="empty body"):
        fetch(server.url("/empty.mp4"), tmp_path / "job", trusted)


# --- HTTPS: the pinned address with the name kept for SNI and the certificate check ---


def _tls_pair(tmp_path, dns_name):
    """A throwaway CA (PEM file) and a server context with a certificate for ``dns_name``."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, signer, *, ca, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("dfd test CA", "dfd test CA", ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert(dns_name, "dfd test CA", key, ca_key, ca=False, san=dns_name)
    pem = serialization.Encoding.PEM
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


def test_https_to_the_pinned_address_keeps_sni_and_checks_the_certificate(clip, tmp_path):
    ca_file, context = _tls_pair(tmp_path, "media.test")
    with MediaServer(tls=context) as tls_server:
        tls_server.file("/clip.mpg", clip, "video/mpeg")
        s = make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"], fetch_ca_file=ca_file)
        resolver = resolver_for("127.0.0.1", "10.255.0.1")
        got = fetch(
            f"https://media.test:{tls_server.port}/clip.mpg", tmp_path / "job", s, resolver=resolver
        )
        assert got.sha256 == hashlib.sha256(clip).hexdigest()
        assert tls_server.server_names == ["media.test"]
        assert tls_server.seen[0].host == f"media.test:{tls_server.port}"
        assert resolver.calls == ["media.test"]


def test_https_certificate_for_another_name_is_refused_not_retried(clip, tmp_path):
    ca_file, context = _tls_pair(tmp_path, "other.test")
    with MediaServer(tls=context) as tls_server:
        tls_server.file("/clip.mpg", clip, "video/mpeg")
        s = make_settings(tmp_path, fetch_allowed_networks=["127.0.0.1/32"], fetch_ca_file=ca_file)
        delays = []
        with pytest.raises(RejectedURLError, match="certificate"):
            fetch(
                f"https://media.test:{tls_server.port}/clip.mpg",
                tmp_path / "job",
                s,
                resolver=resolver_for("127.0.0.1"),
                sleep=delays.append,
            )
        assert delays == [] and tls_server.seen == []
