import pytest
from pydantic import ValidationError

from dfd.settings import Settings

pytestmark = pytest.mark.unit


def test_environment_prefix_units_and_lists(monkeypatch):
    monkeypatch.setenv("DFD_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("DFD_URL_BLOCKLIST", '["evil.example"]')
    monkeypatch.setenv("DFD_WEIGHT_AUDIO", "0.7")
    s = Settings()
    assert s.max_upload_bytes == 1234
    assert s.url_blocklist == ["evil.example"]
    assert s.fusion_scales() == {"visual": 1.0, "audio": 0.7, "lipsync": 1.0}


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("DFD_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="threshold"):
        Settings()


def test_s3_evidence_urls_cannot_outlive_what_s3_presigns():
    week = 7 * 86400
    assert Settings(store="s3", evidence_url_ttl_s=week).evidence_url_ttl_s == week
    assert Settings(store="local", evidence_url_ttl_s=week + 1).evidence_url_ttl_s == week + 1
    with pytest.raises(ValidationError, match="evidence_url_ttl_s: S3 presigned URLs live at most"):
        Settings(store="s3", evidence_url_ttl_s=week + 1)


def test_derived_paths_follow_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.repository_dir("gpu") == tmp_path / "model_repository" / "gpu"
    assert s.evidence_dir.parent == tmp_path
