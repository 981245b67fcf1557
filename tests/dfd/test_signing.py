"""Signed evidence URLs: keys, signatures, expiry and the shared secret."""

import threading
import urllib.parse

import pytest

from dfd import signing
from dfd.errors import ConfigurationError
from dfd.settings import Settings

pytestmark = pytest.mark.unit

KEY = "job-1/0123456789abcdef0123456789abcdef-thumb_00.jpg"
SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "key",
    [
        "../evidence/x.jpg",
        "job/../../etc/passwd",
        "/abs/0123456789abcdef-x.jpg",
        "job/short-x.jpg",
        "job/0123456789abcdef0123-.hidden",
        "job/sub/0123456789abcdef0123-x.jpg",
        "job/0123456789abcdef0123-x..jpg",
        "",
    ],
)
def test_keys_the_store_never_hands_out_are_invalid(key, tmp_path):
    assert not signing.is_valid_key(key)
    with pytest.raises(ValueError):
        signing.evidence_path(Settings(data_dir=tmp_path), key)


def test_sign_and_verify():
    sig = signing.sign(KEY, 2000, SECRET)
    assert signing.verify(KEY, 2000, sig, SECRET, now=1999)
    assert signing.verify(KEY, "2000", sig, SECRET, now=2000)
    assert not signing.verify(KEY, 2000, sig, SECRET, now=2001)
    assert not signing.verify(KEY, 2001, sig, SECRET, now=0)
    assert not signing.verify(KEY, 2000, sig.upper(), SECRET, now=0)
    assert not signing.verify(KEY, 2000, sig, SECRET + b"x", now=0)


@pytest.mark.parametrize("bad", ["é" * 64, "\x00" * 64, "a" * 63, "a" * 65, "", "g" * 64])
def test_a_signature_that_is_not_64_hex_digits_is_refused_not_an_error(bad):
    # hmac.compare_digest raises TypeError on non-ASCII text: the evidence route
    # answered 500 (with a logged traceback) to anyone sending sig=é.
    assert not signing.verify(KEY, 2000, bad, SECRET, now=0)


def test_signed_url_shape():
    url = signing.signed_url("http://127.0.0.1:8000/", KEY, 2000, SECRET)
    parts = urllib.parse.urlsplit(url)
    assert parts.path == f"/evidence/{KEY}"
    q = dict(urllib.parse.parse_qsl(parts.query))
    assert q == {"exp": "2000", "sig": signing.sign(KEY, 2000, SECRET)}


def test_generated_secret_is_the_same_for_processes_starting_together(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(signing.load_secret(s))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got[0]) == 64


def test_short_configured_secret_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="at least 16"):
        signing.load_secret(Settings(data_dir=tmp_path, url_signing_key="short"))


def test_a_failed_key_write_leaves_no_empty_key_file_behind(tmp_path, monkeypatch):
    """A process that dies or hits a full disk while writing the generated key must not
    leave an empty key file, which every later start would refuse for good."""
    s = Settings(data_dir=tmp_path / "data")
    real_fdopen = signing.os.fdopen

    class FullDisk:
        def __init__(self, fd: int, *args: object, **kwargs: object) -> None:
            self._fh = real_fdopen(fd, *args, **kwargs)

        def __enter__(self) -> "FullDisk":
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

        def write(self, data: str) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(signing.os, "fdopen", FullDisk)
    with pytest.raises(ConfigurationError, match="No space left"):
        signing.load_secret(s)
    monkeypatch.setattr(signing.os, "fdopen", real_fdopen)
    secret = signing.load_secret(s)  # the next start generates the key
    assert len(secret) == 64
    assert signing.load_secret(s) == secret
    assert [p.name for p in (tmp_path / "data").iterdir()] == [signing.SECRET_FILE]
