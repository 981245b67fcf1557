"""User-fetched weights (research-only licences): never fetched unasked, pulled and checked
on request, and an enabled detector without them is "not installed", never silently skipped."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import export.weights as weights
from cli.main import main
from dfd.detectors import DETECTORS, Detector, LooksAt, not_installed, scorers
from dfd.ensemble import for_settings
from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import SPECS, spec
from dfd.states import Label
from dispatcher.aggregate import Verdict
from dispatcher.pipeline import detector_results, models_used
from dispatcher.speech import Speech
from export.triton_repo import role_specs
from export.weights import NotInstalledError, WeightFile, pull_all, pull_user, resolve_weight

pytestmark = pytest.mark.unit

REL = "userdet/weights.bin"
PAYLOAD = b"\x80\x02user-fetched checkpoint bytes" * 100
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Loopback HTTP: serves PAYLOAD (or a web page) and counts requests."""

    def __init__(self) -> None:
        self.hits = 0
        self.html = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.hits += 1
                body = b"<html>quota exceeded</html>" if outer.html else PAYLOAD
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if outer.html else "application/x-tar")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture
def userdet(monkeypatch, server) -> WeightFile:
    """A user-fetched visual detector ``userdet`` on its own role, with a manifest row."""
    entry = WeightFile(
        file=REL,
        url=server.url,
        sha256=None,
        licence="research-only (test)",
        what="a test checkpoint",
        pull="user",
        source="https://example.org/userdet",
        terms="for research only; no commercial use",
    )
    files = {**weights.manifest(), REL: entry}
    monkeypatch.setattr(weights, "manifest", lambda: files)
    visual = spec("meso4_df")
    monkeypatch.setitem(
        SPECS,
        "userdet_ckpt",
        replace(visual, name="userdet", checkpoint="userdet_ckpt", weights=(REL,)),
    )
    monkeypatch.setitem(
        DETECTORS,
        "userdet",
        Detector(
            name="userdet",
            modality="visual",
            looks_at=LooksAt.FACE_TRACK,
            model_setting="userdet_ckpt",
            licence="research-only (test)",
            default_on=False,
            fused=True,
            can_clear=False,
            about="a test detector",
            fetched_by_user=True,
            source="https://example.org/userdet",
        ),
    )
    return entry


def _settings(tmp_path: Path, weights_dir: Path | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", weights_dir=weights_dir, detectors="visual,userdet")


def test_absent_user_weights_are_never_fetched_unasked(tmp_path, userdet, server, weights_dir):
    settings = _settings(tmp_path, weights_dir)
    with pytest.raises(NotInstalledError, match="not installed.*research-only.*dfd models pull"):
        resolve_weight(REL, settings)
    got = pull_all(settings, ["meso4_df", "userdet_ckpt"])  # `dfd models pull/build`
    assert REL not in got and "mesonet/Meso4_DF.h5" in got
    assert server.hits == 0


def test_an_enabled_detector_without_its_weights_is_not_installed_everywhere(
    tmp_path, userdet, weights_dir
):
    settings = _settings(tmp_path, weights_dir)
    why = not_installed(settings)
    assert list(why) == ["userdet"]
    assert "research-only (test)" in why["userdet"] and "dfd models pull userdet" in why["userdet"]
    assert "https://example.org/userdet" in why["userdet"]
    # not a step of the ensemble, not a model of the repository
    assert [d.name for d in scorers(settings)] == ["visual"]
    assert [s.detector.name for s in for_settings(settings).steps] == ["visual"]
    assert "userdet" not in role_specs(settings)
    assert "userdet" not in models_used(settings)
    # the result lists it, with the reason and where to get it
    final = Verdict(
        0.5, Label.INCONCLUSIVE, (), {"visual": 0.3}, {"visual": None}, {"visual": 1.0},
        {"visual": True}, {},
    )  # fmt: skip
    out = detector_results(final, Speech(np.zeros(0, np.float32), ()), False, settings)
    assert out["userdet"].reason == "not-installed" and not out["userdet"].used
    assert out["userdet"].detail == why["userdet"] and out["userdet"].score is None
    assert out["visual"].used
    # off by default: not listed at all unless enabled
    assert "userdet" not in not_installed(Settings(data_dir=tmp_path / "data"))


def test_pull_downloads_records_the_first_digest_and_checks_every_later_use(
    tmp_path, userdet, server
):
    settings = _settings(tmp_path)
    path, digest, first = pull_user(REL, settings)
    assert path == settings.weights_cache_dir / REL and path.read_bytes() == PAYLOAD
    assert digest == DIGEST and first
    record = json.loads((settings.weights_cache_dir / "user-pulled.json").read_text())
    assert record == {REL: DIGEST}
    # installed now: a step of the ensemble and a model of the repository
    assert not_installed(settings) == {}
    assert [d.name for d in scorers(settings)] == ["visual", "userdet"]
    assert "userdet" in role_specs(settings)
    assert resolve_weight(REL, settings) == path
    # a second pull only checks; a changed file is refused
    assert pull_user(REL, settings) == (path, DIGEST, False)
    assert server.hits == 1
    path.write_bytes(PAYLOAD + b"tampered")
    with pytest.raises(ConfigurationError, match="recorded in user-pulled.json"):
        resolve_weight(REL, settings)


def test_a_digest_the_user_gives_is_checked_before_anything_is_kept(tmp_path, userdet, server):
    settings = _settings(tmp_path)
    with pytest.raises(ConfigurationError, match="SHA-256"):
        pull_user(REL, settings, sha256="0" * 64)
    assert not (settings.weights_cache_dir / REL).exists()
    assert pull_user(REL, settings, sha256=DIGEST.upper())[1:] == (DIGEST, False)


def test_a_web_page_instead_of_the_file_is_a_clear_error(tmp_path, userdet, server):
    server.html = True  # e.g. Google Drive's quota or sign-in page
    settings = _settings(tmp_path)
    with pytest.raises(ConfigurationError, match="answered a web page.*example.org/userdet"):
        pull_user(REL, settings)
    assert not (settings.weights_cache_dir / REL).exists()
    assert not (settings.weights_cache_dir / "user-pulled.json").exists()


def test_a_file_placed_by_hand_is_used_and_its_digest_recorded(tmp_path, userdet, server):
    folder = tmp_path / "mine"
    (folder / "userdet").mkdir(parents=True)
    (folder / REL).write_bytes(PAYLOAD)
    settings = _settings(tmp_path, folder)
    assert not_installed(settings) == {}
    assert resolve_weight(REL, settings) == folder / REL
    assert pull_user(REL, settings) == (folder / REL, DIGEST, False)
    assert server.hits == 0


def test_the_cli_shows_the_terms_and_pulls_only_once_they_are_accepted(
    tmp_path, userdet, server, monkeypatch, capsys
):
    monkeypatch.setenv("DFD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DFD_WEIGHTS_DIR", raising=False)
    assert main(["models", "pull", "userdet"]) == 2
    captured = capsys.readouterr()
    assert "for research only; no commercial use" in captured.out
    assert "--accept-terms" in captured.err and server.hits == 0
    assert main(["models", "pull", "--detector", "userdet", "--accept-terms"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {DIGEST}" in out and "publish no SHA-256" in out
    assert (tmp_path / "data" / "weights" / REL).read_bytes() == PAYLOAD
    monkeypatch.setenv("DFD_DETECTORS", "visual,userdet")
    monkeypatch.delenv("DFD_TRITON_URL", raising=False)
    shutil.rmtree(tmp_path / "data" / "weights" / "userdet")
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "userdet" in listing and "not installed" in listing
    monkeypatch.delenv("DFD_DETECTORS")
    assert main(["models", "pull", "nope"]) != 0
    assert "no detector named nope" in capsys.readouterr().err
