"""The overlapped stages (``dispatcher.branches``) give the sequential stages' result."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dfd.errors import InternalError, JobCancelledError
from dfd.schemas import Result
from dfd.settings import Settings
from dfd.states import Stage
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore

pytestmark = pytest.mark.integration

# What may differ: the wall times, and how many requests carried the items (one ensemble
# request per chunk one after another; one per composing model per chunk overlapped).
_MAY_DIFFER = {"timings_ms"}


def _analyze(source, settings: Settings, triton, overlap: bool, progress=None) -> Result:
    mine = settings.model_copy(
        update={"overlap_stages": overlap, "data_dir": settings.data_dir / str(overlap)}
    )
    return analyze(source, mine, triton.client, LocalStore(mine), progress, job_id="same-job")


def _comparable(result: Result, data_dir: Path) -> dict:
    """The result without wall times and request counts, each evidence URL replaced by the
    digest of the bytes stored under it."""
    data = result.model_dump(mode="json", exclude=_MAY_DIFFER)
    data["media"].pop("requests")
    stored = {p.name: p for p in data_dir.rglob("*") if p.is_file()}

    def digest(value):
        if isinstance(value, dict):
            return {k: digest(v) for k, v in value.items()}
        if isinstance(value, list):
            return [digest(v) for v in value]
        if isinstance(value, str) and value.startswith("http://127.0.0.1:9/"):
            name = value.split("?")[0].rsplit("/", 1)[-1]
            return hashlib.sha256(stored[name].read_bytes()).hexdigest()
        return value

    return digest(data)


@pytest.fixture
def settings(tmp_path, triton) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", decoder="pyav", public_base_url="http://127.0.0.1:9"
    )


@pytest.mark.parametrize("name", ["grid_mpg", "audio_only", "no_face"])
def test_overlapped_stages_give_the_sequential_result(name, media_corpus, settings, triton):
    sequential = _analyze(media_corpus[name], settings, triton, overlap=False)
    overlapped = _analyze(media_corpus[name], settings, triton, overlap=True)
    assert _comparable(overlapped, settings.data_dir / "True") == _comparable(
        sequential, settings.data_dir / "False"
    )
    if name == "grid_mpg":  # every detector had items: scores, timeline and heatmaps agree
        assert all(d.score is not None for n, d in overlapped.detectors.items() if n != "speech")
        assert overlapped.evidence.heatmaps
        # each stage is timed; the branches' wall time is at most what their stages took
        keys = set(overlapped.timings_ms)
        assert {"decode", "decode_audio", "speech", "faces", "inference", "branches"} <= keys
        t = overlapped.timings_ms
        assert t["branches"] <= t["decode"] + t["decode_audio"] + t["speech"] + t["faces"] + (
            t["inference"] + t["hashes"] + 50
        )


@pytest.mark.parametrize(
    ("broken", "stage", "message"),
    [
        ("vad", Stage.SPEECH, "speech: unexpected RuntimeError"),
        ("face_detector", Stage.FACES, "faces: unexpected RuntimeError"),
    ],
    ids=["audio branch", "video branch"],
)
def test_a_failure_in_a_branch_names_its_stage(
    broken, stage, message, media_corpus, settings, triton
):
    class Broken:
        def infer(self, model, inputs, outputs=None, *, version=None):
            if model == broken:
                raise RuntimeError("socket exploded")
            return triton.client.infer(model, inputs, outputs, version=version)

    class Wrapper:
        client = Broken()

    with pytest.raises(InternalError, match=message) as info:
        _analyze(media_corpus["grid_mpg"], settings, Wrapper, overlap=True)
    assert info.value.stage is stage


def test_a_cancel_stops_both_branches(media_corpus, settings, triton):
    seen: list[Stage] = []

    def progress(stage: Stage, fraction: float) -> None:
        seen.append(stage)
        if stage is Stage.FACES:
            raise JobCancelledError("job: cancelled by the client")

    with pytest.raises(JobCancelledError):
        _analyze(media_corpus["grid_mpg"], settings, triton, overlap=True, progress=progress)
    assert Stage.DECODE in seen and Stage.INFER not in seen
    assert not (settings.tmp_dir.exists() and any(settings.tmp_dir.iterdir()))


@pytest.mark.slow
def test_with_sbi_the_overlapped_stages_give_the_sequential_result(
    media_corpus, sbi_triton, tmp_path
):
    """SBI's own 380 px crops and its heatmaps: the same in both paths (random weights,
    a visual + sbi Triton: ``tests/fixtures/sbi.py``)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        weights_dir=sbi_triton.weights_dir,
        detectors="visual,sbi",
        decoder="pyav",
        public_base_url="http://127.0.0.1:9",
    )
    sequential = _analyze(media_corpus["grid_mpg"], settings, sbi_triton, overlap=False)
    overlapped = _analyze(media_corpus["grid_mpg"], settings, sbi_triton, overlap=True)
    assert overlapped.detectors["sbi"].score is not None
    assert overlapped.evidence.sbi_heatmaps and overlapped.evidence.heatmaps
    assert _comparable(overlapped, settings.data_dir / "True") == _comparable(
        sequential, settings.data_dir / "False"
    )
