"""S3 presigned GET links signed with the standard library, checked against minio's
signer (an independent SigV4 implementation) at the same moment, and re-signed in a
stored document's bytes without touching anything else."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from minio import Minio

from dfd.s3_presign import S3Presigner, s3_link_resigner
from dfd.settings import Settings

pytestmark = pytest.mark.unit

ACCESS, SECRET = "dfd-test-access", "dfd-test-secret-key"
KEY = "0123456789abcdef0123456789abcdef/" + "a" * 32 + "-thumb_00_f3.jpg"
AT = datetime(2026, 12, 1, 20, 40, 1, tzinfo=UTC)


def _minio(netloc: str, secure: bool, region: str) -> Minio:
    return Minio(netloc, access_key=ACCESS, secret_key=SECRET, secure=secure, region=region)


@pytest.mark.parametrize(
    ("base", "netloc", "secure", "region"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000", False, "us-east-1"),
        ("https://evidence.example.org", "evidence.example.org", True, "eu-west-3"),
        ("https://evidence.example.org:9443", "evidence.example.org:9443", True, "us-east-1"),
        ("http://[::1]:9000", "[::1]:9000", False, "us-east-1"),
    ],
)
def test_a_link_is_the_one_minio_signs_at_the_same_moment(base, netloc, secure, region) -> None:
    ours = S3Presigner(base, "dfd-evidence", ACCESS, SECRET, region).url(KEY, 3600, AT)
    theirs = _minio(netloc, secure, region).presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(seconds=3600), request_date=AT
    )
    assert ours == theirs


def test_a_key_with_characters_to_escape_is_signed_as_minio_does() -> None:
    key = "job/x y+z~é.jpg"
    ours = S3Presigner("http://s3:9000", "evidence", ACCESS, SECRET).url(key, 60, AT)
    theirs = _minio("s3:9000", False, "us-east-1").presigned_get_object(
        "evidence", key, expires=timedelta(seconds=60), request_date=AT
    )
    assert ours == theirs


def test_the_lifetime_is_what_sigv4_allows() -> None:
    presigner = S3Presigner("http://s3:9000", "b", ACCESS, SECRET)
    with pytest.raises(ValueError, match="1..604800"):
        presigner.url(KEY, 0, AT)
    with pytest.raises(ValueError, match="1..604800"):
        presigner.url(KEY, 604801, AT)


def _settings(tmp_path, **overrides) -> Settings:
    values = {
        "data_dir": tmp_path,
        "store": "s3",
        "s3_endpoint": "minio:9000",
        "s3_access_key": ACCESS,
        "s3_secret_key": SECRET,
        "s3_bucket": "dfd-evidence",
        "evidence_url_ttl_s": 900,
    }
    values.update(overrides)
    return Settings(**values)


def test_stored_links_are_presigned_afresh_and_nothing_else_changes(tmp_path) -> None:
    settings = _settings(tmp_path, s3_public_url="https://evidence.example.org")
    old_signer = _minio("minio:9000", False, "us-east-1")
    stale = old_signer.presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(hours=1), request_date=AT - timedelta(days=1)
    )
    foreign = (
        "https://other.example.org/dfd-evidence/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Signature=" + "0" * 64
    )
    other_bucket = stale.replace("/dfd-evidence/", "/another-bucket/")
    doc = json.dumps(
        {
            "evidence": {"thumbnails": [stale], "timeline_chart": stale},
            "source": foreign,
            "x": other_bucket,
        }
    ).encode()
    fresh = json.loads(s3_link_resigner(settings, now=lambda: AT)(doc))
    expected = S3Presigner.from_settings(settings).url(KEY, 900, AT)
    assert fresh["evidence"]["thumbnails"] == [expected]
    assert fresh["evidence"]["timeline_chart"] == expected
    assert urllib.parse.urlsplit(expected).netloc == "evidence.example.org"  # the address now
    assert fresh["source"] == foreign  # another host's link is not ours to sign
    assert fresh["x"] == other_bucket  # nor another bucket's
    assert s3_link_resigner(settings)(b'{"a": 1}') == b'{"a": 1}'


def test_a_public_url_with_a_path_is_refused(tmp_path) -> None:
    from dfd.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="DFD_S3_PUBLIC_URL"):
        S3Presigner.from_settings(_settings(tmp_path, s3_public_url="https://h/path"))


def test_without_a_region_setting_each_link_keeps_its_own_region(tmp_path) -> None:
    """The worker's client asks the server its region when none is set; the gateway
    re-signs for the region the link's credential shows."""
    settings = _settings(tmp_path)  # no s3_region
    stale = _minio("minio:9000", False, "eu-west-3").presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(hours=1), request_date=AT - timedelta(days=1)
    )
    fresh = s3_link_resigner(settings, now=lambda: AT)(json.dumps([stale]).encode())
    expected = _minio("minio:9000", False, "eu-west-3").presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(seconds=900), request_date=AT
    )
    assert json.loads(fresh) == [expected]


def test_without_credentials_links_keep_the_workers_signature(tmp_path) -> None:
    settings = _settings(tmp_path, s3_access_key="", s3_secret_key="")
    stale = _minio("minio:9000", False, "us-east-1").presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(hours=1), request_date=AT
    )
    doc = json.dumps([stale]).encode()
    assert s3_link_resigner(settings, now=lambda: AT)(doc) == doc


@pytest.mark.parametrize(
    "endpoint",
    ["s3.amazonaws.com", "s3.eu-west-3.amazonaws.com", "s3.dualstack.eu-west-3.amazonaws.com"],
)
def test_an_aws_virtual_host_link_is_resigned_as_minio_signs_it(tmp_path, endpoint) -> None:
    """On AWS minio signs ``https://{bucket}.s3.{region}.amazonaws.com/{key}``: the link is
    re-signed for that host, byte for byte what minio signs at the later moment."""
    settings = _settings(tmp_path, s3_endpoint=endpoint, s3_secure=True, s3_region="eu-west-3")
    aws = _minio(endpoint, True, "eu-west-3")
    stale = aws.presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(hours=1), request_date=AT - timedelta(days=1)
    )
    assert urllib.parse.urlsplit(stale).netloc.startswith("dfd-evidence.s3.")  # virtual-host
    other_bucket = stale.replace("://dfd-evidence.", "://another-bucket.")
    doc = json.dumps({"thumbnails": [stale], "x": other_bucket}).encode()
    fresh = json.loads(s3_link_resigner(settings, now=lambda: AT)(doc))
    expected = aws.presigned_get_object(
        "dfd-evidence", KEY, expires=timedelta(seconds=900), request_date=AT
    )
    assert fresh["thumbnails"] == [expected] and expected != stale
    assert fresh["x"] == other_bucket  # another bucket's link is not ours to sign
