"""GET /evidence/{key}: local evidence behind HMAC-signed, expiring URLs."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from dfd import signing

pytestmark = pytest.mark.integration

KEY = "job123/abcdefghijklmnop0123-thumb_0.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _path_and_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def evidence_client(gateway):
    with gateway() as client:
        path = signing.evidence_path(client.settings, KEY)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG)
        client.secret = signing.load_secret(client.settings)
        yield client


def test_signed_url_serves_the_file(evidence_client) -> None:
    c = evidence_client
    url = signing.signed_url(c.settings.public_base_url, KEY, int(time.time()) + 60, c.secret)
    response = c.get(_path_and_query(url))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert "max-age=" in response.headers["cache-control"]


def test_tampered_or_expired_signature_is_403(evidence_client) -> None:
    c = evidence_client
    exp = int(time.time()) + 60
    good = signing.sign(KEY, exp, c.secret)
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    assert c.get(f"/evidence/{KEY}?exp={exp}&sig={bad}").status_code == 403
    assert c.get(f"/evidence/{KEY}?exp={exp + 1}&sig={good}").status_code == 403  # expiry changed
    assert c.get(f"/evidence/{KEY}").status_code == 403
    past = int(time.time()) - 1
    response = c.get(f"/evidence/{KEY}?exp={past}&sig={signing.sign(KEY, past, c.secret)}")
    assert response.status_code == 403
    assert response.json()["type"] == "urn:dfd:problem:forbidden"
    other = signing.sign(KEY, exp, b"another-secret-of-32-characters!")
    assert c.get(f"/evidence/{KEY}?exp={exp}&sig={other}").status_code == 403


def test_keys_outside_the_store_are_404(evidence_client) -> None:
    c = evidence_client
    exp = int(time.time()) + 60
    for key in ("../url_signing.key", "job123/../../url_signing.key", "url_signing.key"):
        sig = signing.sign(key, exp, c.secret)
        response = c.get(f"/evidence/{urllib.parse.quote(key)}?exp={exp}&sig={sig}")
        assert response.status_code == 404, key


def test_signed_but_deleted_is_404(evidence_client) -> None:
    c = evidence_client
    signing.evidence_path(c.settings, KEY).unlink()
    url = signing.signed_url(c.settings.public_base_url, KEY, int(time.time()) + 60, c.secret)
    assert c.get(_path_and_query(url)).status_code == 404
