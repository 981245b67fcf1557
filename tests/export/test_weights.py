"""Weights lookup: folder, cache, download with checksum, and the offline error."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dfd.errors import ConfigurationError
from dfd.ports import free_port
from dfd.settings import Settings
from dfd.specs import SPECS
from export.weights import WeightFile, manifest, pull_all, resolve_weight, sha256_of

pytestmark = pytest.mark.unit

NAME = "aasist/AASIST-L.conf"  # a small real file from the manifest


class _Server:
    """A loopback HTTP server serving one folder and counting requests."""

    def __init__(self, root: Path) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.hits += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path, weights_dir: Path) -> Iterator[_Server]:
    root = tmp_path / "served"
    (root / "aasist").mkdir(parents=True)
    (root / NAME).write_bytes((weights_dir / NAME).read_bytes())
    srv = _Server(root)
    yield srv
    srv.close()


def _files_at(url: str, sha: str | None = None) -> dict[str, WeightFile]:
    entry = manifest()[NAME]
    return {NAME: replace(entry, url=url, sha256=sha or entry.sha256)}


def test_manifest_covers_every_spec_weight_with_licence_and_checksum(weights_dir: Path):
    files = manifest()
    for model in SPECS.values():
        for name in model.weights:
            entry = files[name]
            assert entry.url.startswith("https://")
            assert entry.licence
            if entry.user_fetched:  # the user's to fetch (SBI's, UFD's CLIP): never shipped
                assert entry.source and entry.terms
                continue
            assert sha256_of(weights_dir / name) == entry.sha256


def test_weights_dir_wins_without_network(tmp_path: Path, weights_dir: Path):
    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir)
    # an unreachable address proves nothing is downloaded
    files = _files_at("http://127.0.0.1:9/never")
    assert resolve_weight(NAME, settings, files=files) == weights_dir / NAME


def test_download_checks_sha_and_then_serves_from_cache(
    tmp_path: Path, server: _Server, weights_dir
):
    settings = Settings(data_dir=tmp_path / "data", weights_dir=tmp_path / "empty")
    files = _files_at(f"{server.base}/{NAME}")
    path = resolve_weight(NAME, settings, files=files)
    assert path == settings.weights_cache_dir / NAME
    assert path.read_bytes() == (weights_dir / NAME).read_bytes()
    assert server.hits == 1
    assert resolve_weight(NAME, settings, files=files) == path
    assert server.hits == 1  # second lookup came from the cache
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]


def test_checksum_mismatch_names_both_hashes_and_leaves_no_file(tmp_path: Path, server: _Server):
    settings = Settings(data_dir=tmp_path / "data")
    wrong = "0" * 64
    files = _files_at(f"{server.base}/{NAME}", sha=wrong)
    real = manifest()[NAME].sha256
    with pytest.raises(ConfigurationError) as err:
        resolve_weight(NAME, settings, files=files)
    assert wrong in str(err.value) and real in str(err.value)
    folder = settings.weights_cache_dir / "aasist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_damaged_file_in_the_weights_dir_is_refused_naming_both_hashes(
    tmp_path: Path, weights_dir: Path
):
    # A truncated or different file used to be exported and served under the
    # checkpoint's name (a F2F file saved as Meso4_DF.h5 was served as meso4_df).
    folder = tmp_path / "weights"
    (folder / "aasist").mkdir(parents=True)
    (folder / NAME).write_bytes((weights_dir / NAME).read_bytes()[:-10])
    settings = Settings(data_dir=tmp_path / "data", weights_dir=folder)
    files = _files_at("http://127.0.0.1:9/never")
    with pytest.raises(ConfigurationError, match="refusing to use it") as err:
        resolve_weight(NAME, settings, files=files)
    assert str(folder / NAME) in str(err.value)
    assert manifest()[NAME].sha256 in str(err.value)
    assert sha256_of(folder / NAME) in str(err.value)


def test_a_damaged_cache_entry_is_downloaded_again(tmp_path: Path, server: _Server, weights_dir):
    settings = Settings(data_dir=tmp_path / "data")
    files = _files_at(f"{server.base}/{NAME}")
    cached = settings.weights_cache_dir / NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the file")
    assert resolve_weight(NAME, settings, files=files) == cached
    assert cached.read_bytes() == (weights_dir / NAME).read_bytes()
    assert server.hits == 1


def test_a_download_sweeps_part_files_killed_downloads_left(tmp_path: Path, server: _Server):
    import os
    import time

    settings = Settings(data_dir=tmp_path / "data")
    folder = settings.weights_cache_dir / "aasist"
    folder.mkdir(parents=True)
    stale = folder / ".AASIST-L.conf.killed.part"
    live = folder / ".AASIST-L.conf.another-process.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    resolve_weight(NAME, settings, files=_files_at(f"{server.base}/{NAME}"))
    assert not stale.exists()
    assert live.exists()  # maybe another process's download in progress


def test_http_error_status_is_a_configuration_error(tmp_path: Path, server: _Server):
    settings = Settings(data_dir=tmp_path / "data")
    files = _files_at(f"{server.base}/aasist/absent.conf")
    with pytest.raises(ConfigurationError, match="404"):
        resolve_weight(NAME, settings, files=files)


def test_offline_and_missing_names_file_and_address(tmp_path: Path):
    port = free_port()  # a loopback port with nobody listening
    url = f"http://127.0.0.1:{port}/{NAME}"
    settings = Settings(data_dir=tmp_path / "data", fetch_connect_timeout_s=2)
    with pytest.raises(ConfigurationError) as err:
        resolve_weight(NAME, settings, files=_files_at(url))
    assert NAME in str(err.value) and url in str(err.value)


def test_unknown_name_lists_known_ones(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="mesonet/Meso4_DF.h5"):
        resolve_weight("nope.bin", Settings(data_dir=tmp_path))


def test_pull_all_resolves_every_file_of_the_checkpoints(tmp_path: Path, weights_dir: Path):
    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir)
    paths = pull_all(settings, ["aasist", "meso4_df"])
    assert set(paths) == {"aasist/AASIST.pth", "aasist/AASIST.conf", "mesonet/Meso4_DF.h5"}
    assert all(p.is_file() for p in paths.values())


def test_a_file_inside_a_wheel_is_extracted_and_checked(tmp_path: Path, weights_dir: Path):
    import hashlib
    import zipfile

    root = tmp_path / "served"
    root.mkdir()
    wheel = root / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "")
        z.write(weights_dir / NAME, "pkg/data/model.conf")
    srv = _Server(root)
    try:
        entry = replace(
            manifest()[NAME],
            url=f"{srv.base}/{wheel.name}",
            member="pkg/data/model.conf",
            archive_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        )
        settings = Settings(data_dir=tmp_path / "data", weights_dir=tmp_path / "empty")
        path = resolve_weight(NAME, settings, files={NAME: entry})
        assert path.read_bytes() == (weights_dir / NAME).read_bytes()
        other = Settings(data_dir=tmp_path / "other", weights_dir=tmp_path / "empty")
        with pytest.raises(ConfigurationError, match="archive .* has SHA-256"):
            resolve_weight(NAME, other, files={NAME: replace(entry, archive_sha256="0" * 64)})
        with pytest.raises(ConfigurationError, match="not a zip archive holding pkg/nope"):
            resolve_weight(NAME, other, files={NAME: replace(entry, member="pkg/nope")})
        assert not list((other.weights_cache_dir).rglob("*.part"))
    finally:
        srv.close()


def test_the_voice_encoder_is_pinned_inside_its_pypi_wheel():
    row = manifest()["resemblyzer/pretrained.pt"]
    assert row.url.startswith("https://files.pythonhosted.org/") and row.url.endswith(
        "Resemblyzer-0.1.4-py3-none-any.whl"
    )
    assert row.member == "resemblyzer/pretrained.pt" and row.archive_sha256
