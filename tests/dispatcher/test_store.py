"""Evidence stores: local (signed, expiring URLs) and S3 (a real S3-API server)."""

import os
import stat
import time
import urllib.parse

import httpx
import pytest

from dfd import signing
from dfd.errors import ConfigurationError, InternalError
from dfd.ports import free_port
from dfd.settings import Settings
from dispatcher.cleanup import purge_expired
from dispatcher.errors import StoreUnavailableError
from dispatcher.store import (
    LIFECYCLE_RULE_ID,
    EvidenceStore,
    LocalStore,
    S3Store,
    make_store,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\1" * 32


def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# --- local ---------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    return LocalStore(
        Settings(data_dir=tmp_path, evidence_url_ttl_s=600, public_base_url="https://dfd.example/")
    )


@pytest.mark.unit
def test_local_put_keeps_bytes_under_an_unguessable_key(local, tmp_path):
    a = local.put("job1", "thumb_00.jpg", JPEG, "image/jpeg")
    b = local.put("job1", "thumb_00.jpg", JPEG, "image/jpeg")
    assert a != b
    for key in (a, b):
        job, rest = key.split("/")
        token, name = rest.split("-", 1)
        assert job == "job1" and name == "thumb_00.jpg" and len(token) == 32
        assert signing.is_valid_key(key)
        assert local.get(key) == JPEG
        assert (tmp_path / "evidence" / key).read_bytes() == JPEG
    assert isinstance(local, EvidenceStore)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "content_type", "ends"),
    [
        ("chart.png", "image/png", "-chart.png"),
        ("chart", "image/png", "-chart.png"),
        ("chart.html", "image/png", "-chart.png"),
        ("../../etc/passwd", "image/jpeg", "-etc_passwd.jpg"),
        ("a b/c.jpg", "image/jpeg; quality=90", "-a_b_c.jpg"),
    ],
)
def test_local_names_are_made_safe_and_match_their_type(local, tmp_path, name, content_type, ends):
    key = local.put("job2", name, PNG, content_type)
    assert key.startswith("job2/") and key.endswith(ends)
    assert local.path(key).parent == tmp_path / "evidence" / "job2"
    assert local.path(key).read_bytes() == PNG


@pytest.mark.unit
@pytest.mark.parametrize(
    ("job_id", "content_type"),
    [("../x", "image/png"), ("ok", "text/html"), ("ok", "image/svg+xml")],
)
def test_local_refuses_unsafe_job_ids_and_types(local, job_id, content_type):
    with pytest.raises(InternalError):
        local.put(job_id, "x.png", PNG, content_type)


@pytest.mark.unit
def test_local_url_is_signed_and_expires(local):
    key = local.put("job3", "heat.jpg", JPEG, "image/jpeg")
    now = 1_800_000_000.0
    url = local.url(key, now=now)
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://dfd.example"
    assert urllib.parse.unquote(parts.path) == f"/evidence/{key}"
    q = query(url)
    assert int(q["exp"]) == int(now) + 600
    assert local.verify(key, q["exp"], q["sig"], now=now)
    assert local.verify(key, q["exp"], q["sig"], now=now + 600)
    assert not local.verify(key, q["exp"], q["sig"], now=now + 601)


@pytest.mark.unit
def test_local_tampering_is_refused(local, tmp_path):
    key = local.put("job4", "heat.jpg", JPEG, "image/jpeg")
    other = local.put("job4", "heat.jpg", JPEG, "image/jpeg")
    now = time.time()
    q = query(local.url(key, now=now))
    exp, sig = q["exp"], q["sig"]
    assert local.verify(key, exp, sig, now=now)
    assert not local.verify(other, exp, sig, now=now)  # another key
    assert not local.verify(key, str(int(exp) + 3600), sig, now=now)  # a later expiry
    assert not local.verify(key, exp, sig[:-1] + ("0" if sig[-1] != "0" else "1"), now=now)
    assert not local.verify(key, exp, "", now=now)
    assert not local.verify(key, "soon", sig, now=now)
    assert not local.verify("job4/../../secret", exp, sig, now=now)
    stranger = LocalStore(Settings(data_dir=tmp_path / "elsewhere"))  # another secret
    assert not stranger.verify(key, exp, sig, now=now)


@pytest.mark.unit
def test_local_secret_is_generated_once_private_and_shared(tmp_path):
    s = Settings(data_dir=tmp_path)
    first = signing.load_secret(s)
    assert signing.load_secret(s) == first and len(first) >= 32
    mode = stat.S_IMODE(os.stat(tmp_path / signing.SECRET_FILE).st_mode)
    assert mode == 0o600
    store = LocalStore(s)
    key = store.put("job5", "x.png", PNG, "image/png")
    q = query(store.url(key))
    # the gateway verifies with the same secret through dfd.signing alone
    assert signing.verify(key, q["exp"], q["sig"], signing.load_secret(s))
    configured = Settings(data_dir=tmp_path, url_signing_key="a-configured-secret-of-some-length")
    assert signing.load_secret(configured) == b"a-configured-secret-of-some-length"


@pytest.mark.unit
def test_local_delete_job_and_purge_expired(tmp_path):
    s = Settings(data_dir=tmp_path, evidence_ttl_s=3600)
    store = LocalStore(s)
    old = store.put("old", "a.png", PNG, "image/png")
    new = store.put("new", "b.png", PNG, "image/png")
    gone = store.put("gone", "c.png", PNG, "image/png")
    past = time.time() - 7200
    os.utime(store.path(old), (past, past))
    assert store.delete_job("gone") == 1 and not store.path(gone).exists()
    assert store.purge_expired() == 1
    assert not store.path(old).exists() and not store.path(old).parent.exists()
    assert store.path(new).exists()
    assert purge_expired(make_store(s), s, now=time.time() + 7200) == 1  # the maintenance entry
    assert not store.path(new).exists()


@pytest.mark.unit
def test_make_store_picks_local_by_default(tmp_path):
    assert isinstance(make_store(Settings(data_dir=tmp_path)), LocalStore)


# --- S3 ------------------------------------------------------------------------------


@pytest.mark.integration
def test_s3_bucket_is_created_with_an_expiry_rule(s3_settings):
    store = make_store(s3_settings)
    assert isinstance(store, S3Store)
    assert store.client.bucket_exists(s3_settings.s3_bucket)
    rules = store.client.get_bucket_lifecycle(s3_settings.s3_bucket).rules
    assert [(r.rule_id, r.status, r.expiration.days) for r in rules] == [
        (LIFECYCLE_RULE_ID, "Enabled", 1)
    ]
    S3Store(s3_settings)  # a second worker finds the bucket and keeps one rule
    assert len(store.client.get_bucket_lifecycle(s3_settings.s3_bucket).rules) == 1


@pytest.mark.integration
def test_s3_expiry_rounds_up_to_whole_days(s3_server, tmp_path):
    s = Settings(
        data_dir=tmp_path,
        evidence_ttl_s=86400 * 2 + 1,
        **s3_server.settings_overrides("dfd-test-ttl"),
    )
    store = S3Store(s)
    try:
        assert store.client.get_bucket_lifecycle("dfd-test-ttl").rules[0].expiration.days == 3
    finally:
        store.client.delete_bucket_lifecycle("dfd-test-ttl")
        store.client.remove_bucket("dfd-test-ttl")


@pytest.mark.integration
def test_s3_put_get_and_presigned_url(s3_settings):
    store = S3Store(s3_settings)
    key = store.put("job-s3", "thumb_00.jpg", JPEG, "image/jpeg")
    assert key.startswith("job-s3/") and key.endswith("-thumb_00.jpg")
    assert store.get(key) == JPEG
    stat_ = store.client.stat_object(s3_settings.s3_bucket, key)
    assert stat_.content_type == "image/jpeg"
    url = store.url(key)
    q = query(url)
    assert q["X-Amz-Expires"] == str(s3_settings.evidence_url_ttl_s)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert len(q["X-Amz-Signature"]) == 64
    assert q["X-Amz-Credential"].startswith(s3_settings.s3_access_key.get_secret_value() + "/")
    assert urllib.parse.urlsplit(url).path == f"/{s3_settings.s3_bucket}/{key}"
    # moto does not check signatures, but the URL does reach the object
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200 and response.content == JPEG


@pytest.mark.integration
def test_s3_urls_are_presigned_for_the_public_address(s3_settings):
    # The public name does not resolve: presigning must not try to reach it.
    public = s3_settings.model_copy(update={"s3_public_url": "https://evidence.invalid:9443"})
    store = S3Store(public)
    key = store.put("job-pub", "thumb.jpg", JPEG, "image/jpeg")
    url = store.url(key)
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "evidence.invalid:9443")
    assert parts.path == f"/{s3_settings.s3_bucket}/{key}"
    assert query(url)["X-Amz-Expires"] == str(s3_settings.evidence_url_ttl_s)
    assert len(query(url)["X-Amz-Signature"]) == 64
    # The object itself still went to the real endpoint.
    assert store.get(key) == JPEG


@pytest.mark.unit
def test_s3_public_url_must_be_a_bare_origin(tmp_path):
    bad = Settings(data_dir=tmp_path, store="s3", s3_public_url="evidence.example.org/path")
    with pytest.raises(ConfigurationError, match="DFD_S3_PUBLIC_URL"):
        S3Store(bad, client=object())


@pytest.mark.integration
def test_s3_links_do_not_show_a_gateway_made_job_id(s3_settings):
    store = S3Store(s3_settings)
    job_id = "0123456789abcdef0123456789abcdef"
    key = store.put(job_id, "thumb_00.jpg", b"\xff\xd8jpeg", "image/jpeg")
    url = store.url(key)
    assert job_id not in key and job_id not in url
    assert store.get(key) == b"\xff\xd8jpeg"
    assert store.delete_job(job_id) == 1


def test_s3_delete_job_and_purge(s3_settings):
    store = S3Store(s3_settings)
    mine = [store.put("job-a", f"t{i}.png", PNG, "image/png") for i in range(3)]
    other = store.put("job-b", "t.png", PNG, "image/png")
    assert store.delete_job("job-a") == 3
    names = [
        o.object_name for o in store.client.list_objects(s3_settings.s3_bucket, recursive=True)
    ]
    assert names == [other] and not set(mine) & set(names)
    assert store.purge_expired(now=time.time()) == 0
    assert store.purge_expired(now=time.time() + s3_settings.evidence_ttl_s + 60) == 1
    assert list(store.client.list_objects(s3_settings.s3_bucket, recursive=True)) == []


@pytest.mark.integration
def test_s3_down_is_a_transient_error(tmp_path):
    port = free_port()  # nothing listens there
    s = Settings(
        data_dir=tmp_path,
        store="s3",
        s3_endpoint=f"127.0.0.1:{port}",
        s3_access_key="a",
        s3_secret_key="b",
    )
    with pytest.raises(StoreUnavailableError, match="dfd-evidence"):
        S3Store(s)


@pytest.mark.unit
def test_local_failed_write_leaves_no_partial_file(local, tmp_path, monkeypatch):
    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dispatcher.store.os.replace", full_disk)
    with pytest.raises(StoreUnavailableError, match="cannot write"):
        local.put("job1", "a.png", PNG, "image/png")
    assert [p for p in tmp_path.rglob("*") if p.is_file() and ".part" in p.name] == []
