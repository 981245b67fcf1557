"""Evidence links: the job id masked in the URL, and links re-signed in stored bytes."""

from __future__ import annotations

import json

import pytest

from dfd import signing

pytestmark = pytest.mark.unit

SECRET = b"s" * 32
JOB = "0123456789abcdef0123456789abcdef"
KEY = f"{JOB}/{'a' * 32}-thumb_00_f3.jpg"


def test_a_link_does_not_carry_the_job_id_and_maps_back_to_its_key() -> None:
    url = signing.signed_url("http://h", KEY, 100, SECRET)
    assert JOB not in url
    assert signing.key_of_url(url, SECRET) == KEY
    assert signing.key_of_url(url, b"o" * 32) != KEY  # another secret unmasks nothing
    other = f"{JOB}/{'b' * 32}-thumb_01_f4.jpg"
    masked = signing.public_key(other, SECRET).split("/")[0]
    assert masked != signing.public_key(KEY, SECRET).split("/")[0]  # one pad per object


def test_links_are_resigned_in_the_bytes_and_nothing_else_changes() -> None:
    old = signing.signed_url("http://h", KEY, 100, SECRET)
    doc = json.dumps(
        {"evidence": {"thumbnails": [old], "x": "https://s3/evidence?X-Amz=1"}}
    ).encode()
    fresh = signing.resign_links(doc, SECRET, 3600, now=1000)
    url = json.loads(fresh)["evidence"]["thumbnails"][0]
    shown = url.split("/evidence/")[1].split("?")[0]
    assert url.startswith(old.split("?")[0]) and "exp=4600" in url
    assert signing.verify(
        signing.private_key(shown, SECRET), 4600, url.rsplit("sig=", 1)[1], SECRET, now=1000
    )
    assert json.loads(fresh)["evidence"]["x"] == "https://s3/evidence?X-Amz=1"
    assert not signing.verify(
        KEY, 100, old.rsplit("sig=", 1)[1], SECRET, now=1000
    )  # the old one died
