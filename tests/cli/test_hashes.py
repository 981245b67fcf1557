"""``dfd hashes export|import`` against a real Redis."""

from __future__ import annotations

import pytest

from cli.main import main
from dfd.known_fakes import BANK_KEY, KnownFake, MediaHashes

pytestmark = pytest.mark.integration


def test_export_and_import_move_the_bank(redis, redis_url, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DFD_REDIS_URL", redis_url)
    frames = MediaHashes.model_validate(
        {"frames": [{"time_s": 0.0, "pdq": "ab" * 32, "quality": 90}]}
    )
    entry = KnownFake(id="2" * 16, label="fake", created_at="2026-12-01T00:00:00", hashes=frames)
    redis.hset(BANK_KEY, entry.id, entry.model_dump_json())
    out = tmp_path / "bank.txt"
    assert main(["hashes", "export", str(out)]) == 0
    assert any(line.startswith("vpdq [") for line in out.read_text().splitlines())
    redis.delete(BANK_KEY)
    assert main(["hashes", "import", str(out)]) == 0
    assert KnownFake.model_validate_json(redis.hget(BANK_KEY, entry.id)) == entry
    bad = tmp_path / "bad.txt"
    bad.write_text("pdq zz\n")
    assert main(["hashes", "import", str(bad)]) == 1
    assert "line 1" in capsys.readouterr().err
