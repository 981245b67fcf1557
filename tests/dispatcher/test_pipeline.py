"""The whole pipeline on the media corpus: real decoders, real Triton, a local evidence store."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from dfd.errors import CorruptMediaError, InternalError, UnsupportedMediaError
from dfd.known_fakes import BANK_KEY, KnownFake, MediaHashes, job_hashes_key
from dfd.schemas import JobSource, Result
from dfd.settings import Settings
from dfd.states import Label, Stage
from dispatcher.known_fakes import RedisBank
from dispatcher.pipeline import analyze
from dispatcher.store import LocalStore
from tests.dispatcher.c2pa_media import sign, to_mp4
from tests.dispatcher.media_server import MediaServer
from tests.fixtures.media import with_display_rotation

pytestmark = pytest.mark.integration

ALL_USED = {"visual": True, "audio": True, "lipsync": True}
EXPECTED_USE = {
    "grid_mpg": ALL_USED,
    "mp4_h264": ALL_USED,
    "mp4_hevc": ALL_USED,
    "webm_vp9": ALL_USED,
    "mov": ALL_USED,
    "mkv": ALL_USED,
    "vfr_mkv": ALL_USED,
    "dubbed": ALL_USED,
    "mp4_silent": {"visual": True, "audio": False, "lipsync": False},
    "no_face": {"visual": False, "audio": True, "lipsync": False},
}


@pytest.fixture
def settings(tmp_path, triton) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", decoder="pyav", public_base_url="http://127.0.0.1:9"
    )


@pytest.fixture
def store(settings) -> LocalStore:
    return LocalStore(settings)


def _leftovers(settings: Settings) -> list[str]:
    return [p.name for p in settings.tmp_dir.iterdir()] if settings.tmp_dir.exists() else []


def _run(source, settings, triton, store, job_id="job") -> tuple[Result, list[tuple[Stage, float]]]:
    seen: list[tuple[Stage, float]] = []
    result = analyze(
        source, settings, triton.client, store, lambda s, f: seen.append((s, f)), job_id=job_id
    )
    return result, seen


@pytest.mark.parametrize("name", sorted(EXPECTED_USE))
def test_every_corpus_video_gets_a_verdict(name, media_corpus, settings, store, triton):
    result, seen = _run(media_corpus[name], settings, triton, store, job_id=f"job-{name}")
    assert result.label in set(Label)
    assert 0.0 <= result.confidence <= 1.0
    assert {m: r.used for m, r in result.modalities.items()} == EXPECTED_USE[name]
    assert set(result.detectors) == {"visual", "audio", "lipsync", "speech"}
    for mod, r in result.modalities.items():
        assert (result.detectors[mod].used, result.detectors[mod].score) == (r.used, r.score)
    assert result.reasons, "a label always comes with its reasons"
    for mod in result.modalities.values():
        assert (mod.score is None) == (not mod.used)
        assert mod.weight == 0 or mod.used  # a share of the fusion only for what looked
    weighted = sum(m.weight for m in result.modalities.values())
    # the shares of those that looked sum to one (visual is fitted to weight 0 today)
    assert weighted == pytest.approx(1.0, abs=1e-3) or (
        weighted == 0 and result.label.value in ("inconclusive", "not_applicable")
    )
    assert set(result.timings_ms) - {"decode_audio", "branches"} == {
        "download",
        "probe",
        "decode",
        "speech",
        "faces",
        "inference",
        "evidence",
        "provenance",
        "hashes",
    }  # overlapped (a video): the audio track's own decode and both branches' wall time
    assert result.matches is None  # no bank given: no look-up
    assert result.provenance is not None and not result.provenance.present
    assert result.models["visual"] == "meso4_df@1" and result.models["face_detector"] == "yunet_n@1"
    assert result.media["duration_s"] == pytest.approx(3.0, abs=0.05)
    # evidence: one timeline point per sampled second, thumbnails stored and signed
    assert [round(p.time_s) for p in result.evidence.timeline] == [0, 1, 2]
    assert 1 <= len(result.evidence.thumbnails) <= settings.evidence_top_k
    assert len(result.evidence.heatmaps) == (
        len(result.evidence.thumbnails) if EXPECTED_USE[name]["visual"] else 0
    )
    # each face track (at most max_faces_per_frame) has a picture of its most suspicious crop
    tracks = result.evidence.tracks
    assert bool(tracks) == EXPECTED_USE[name]["visual"]
    assert sum(t.thumbnail is not None for t in tracks) == min(
        len(tracks), settings.max_faces_per_frame
    )
    for url in [
        *result.evidence.thumbnails,
        *result.evidence.heatmaps,
        result.evidence.timeline_chart,
        *(t.thumbnail for t in tracks if t.thumbnail),
    ]:
        parsed = urlparse(url)
        key = parsed.path.split("/evidence/", 1)[1]
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        assert store.verify(key, query["exp"], query["sig"])
        assert store.path(key).stat().st_size > 500
    # progress: every stage reported from 0 to 1, in order (speech, the audio branch,
    # runs beside decode and faces)
    stages = list(dict.fromkeys(s for s, f in seen if f == 1.0))
    assert [s for s in stages if s is not Stage.SPEECH] == [
        Stage.PROBE,
        Stage.DECODE,
        Stage.FACES,
        Stage.INFER,
        Stage.EVIDENCE,
    ]
    assert stages.index(Stage.PROBE) < stages.index(Stage.SPEECH) < stages.index(Stage.INFER)
    for stage in stages:
        fractions = [f for s, f in seen if s is stage]
        assert fractions[0] == 0.0 and fractions == sorted(fractions)
    assert _leftovers(settings) == []


def test_media_size_is_reported_as_players_show_it(media_corpus, settings, store, triton, tmp_path):
    # A phone's portrait video: landscape frames plus a display rotation. The result's
    # width and height describe the picture people see, as the evidence does.
    sideways = with_display_rotation(media_corpus["mp4_h264"], tmp_path / "sideways.mp4")
    upright, _ = _run(media_corpus["mp4_h264"], settings, triton, store, job_id="job-upright")
    turned, _ = _run(sideways, settings, triton, store, job_id="job-sideways")
    assert upright.media["width"] > upright.media["height"]
    assert (turned.media["width"], turned.media["height"]) == (
        upright.media["height"],
        upright.media["width"],
    )


def test_dubbed_audio_is_caught_and_the_original_passes(media_corpus, settings, store, triton):
    original, _ = _run(media_corpus["grid_mpg"], settings, triton, store, job_id="orig")
    dubbed, _ = _run(media_corpus["dubbed"], settings, triton, store, job_id="dub")
    assert original.modalities["audio"].score < 0.1
    assert original.label is Label.AUTHENTIC
    assert dubbed.modalities["audio"].score > 0.9
    assert dubbed.label in (Label.MANIPULATED, Label.INCONCLUSIVE)
    assert dubbed.confidence > original.confidence + 0.3
    # the audio timeline says so second by second
    assert all(p.audio is not None and p.audio > 0.9 for p in dubbed.evidence.timeline)


def test_an_audio_file_is_analysed_by_the_audio_detectors(media_corpus, settings, store, triton):
    result, seen = _run(media_corpus["audio_only"], settings, triton, store)
    assert result.media["kind"] == "audio"
    assert {m: r.used for m, r in result.modalities.items()} == {
        "visual": False,
        "audio": True,
        "lipsync": False,
    }
    assert result.modalities["visual"].reason == "no-video"
    assert result.evidence.thumbnails == [] and result.evidence.spectrogram
    assert result.evidence.timeline and all(p.audio is not None for p in result.evidence.timeline)
    assert Stage.FACES in {s for s, _ in seen}
    assert _leftovers(settings) == []


def test_corrupt_upload_is_a_clear_input_error(tmp_path, settings, store, triton):
    path = tmp_path / "upload.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(4000))
    source = JobSource(kind="upload", path=str(path), filename="upload.mp4")
    with pytest.raises((CorruptMediaError, UnsupportedMediaError)) as info:
        _run(source, settings, triton, store)
    assert info.value.stage is Stage.PROBE
    assert _leftovers(settings) == []


def test_unexpected_failure_names_its_stage(media_corpus, settings, store, triton):
    class Broken:
        def infer(self, model, inputs, outputs=None):
            raise RuntimeError("socket exploded")

    class Wrapper:
        client = Broken()

    with pytest.raises(
        InternalError, match="speech: unexpected RuntimeError: socket exploded"
    ) as info:
        _run(media_corpus["mp4_h264"], settings, Wrapper, store)
    assert info.value.stage is Stage.SPEECH  # the first stage that calls Triton
    assert _leftovers(settings) == []


def test_url_source_is_fetched_into_the_workspace(media_corpus, tmp_path, triton):
    settings = Settings(
        data_dir=tmp_path / "data", decoder="pyav", fetch_allowed_networks=["127.0.0.1/32"]
    )
    store = LocalStore(settings)
    data = media_corpus["mp4_h264"].read_bytes()
    with MediaServer() as server:
        server.route("/clip.mp4", lambda seen: (200, {"Content-Type": "video/mp4"}, data))
        result, seen = _run(
            JobSource(kind="url", url=server.url("/clip.mp4")), settings, triton, store
        )
    assert result.modalities["visual"].used
    assert result.timings_ms["download"] > 0
    assert seen[0] == (Stage.FETCH, 0.0)
    assert _leftovers(settings) == []


def test_a_signed_ai_declaration_decides_the_label(media_dir, settings, store, triton, tmp_path):
    """The GRID clip scores authentic; signed as an AI generator's output it is manipulated."""
    plain = to_mp4(media_dir / "grid" / "id2_vcd_swwp2s.mpg", tmp_path / "plain.mp4")
    signed = sign(
        plain, tmp_path / "ai.mp4", media_dir / "c2pa", ("Sora", "2.0"), "trainedAlgorithmicMedia"
    )
    result, _ = _run(signed, settings, triton, store, job_id="job-ai")
    assert result.label is Label.MANIPULATED
    assert (result.reasons[0].code, result.reasons[0].message) == (
        "declared-ai-generated",
        "declared AI-generated by Sora 2.0, signed by C2PA Test Signing Cert",
    )
    assert result.provenance.state == "valid" and result.provenance.ai_generated
    assert any(f.key == "format.encoder" for f in result.metadata)


def test_a_reupload_of_a_known_fake_is_caught(media_dir, settings, store, triton, tmp_path, redis):
    bank = RedisBank(redis, ttl_s=60)
    source = media_dir / "grid" / "id2_vcd_swwp2s.mpg"
    first = analyze(source, settings, triton.client, store, job_id="job-first", bank=bank)
    assert first.matches == [] and first.label is Label.AUTHENTIC
    hashes = MediaHashes.model_validate_json(redis.get(job_hashes_key("job-first")))
    entry = KnownFake(id="a" * 16, label="swwp2s dub", created_at="2026-12-01", hashes=hashes)
    redis.hset(BANK_KEY, entry.id, entry.model_dump_json())
    copy = to_mp4(source, tmp_path / "copy.mp4", "-b:v", "100k", "-vf", "scale=240:192")
    again = analyze(copy, settings, triton.client, store, job_id="job-again", bank=bank)
    assert [m.label for m in again.matches] == ["swwp2s dub"]
    assert again.label is Label.MANIPULATED
    assert again.reasons[0].message == "matches known fake swwp2s dub"


def test_a_long_video_is_sampled_more_sparsely_within_the_frame_bound(
    media_corpus, settings, store, triton
):
    from dispatcher.pipeline import bounded_sampling

    assert bounded_sampling(settings, 60.0) is settings  # 60 frames at 1 fps: within 1800
    slow = bounded_sampling(settings.model_copy(update={"max_sampled_frames": 100}), 400.0)
    assert slow.sample_fps == pytest.approx(0.25)
    # through the pipeline: a 3 s clip held to 2 frames
    bounded = settings.model_copy(update={"max_sampled_frames": 2})
    result, _ = _run(media_corpus["grid_mpg"], bounded, triton, store, job_id="job-bounded")
    assert result.media["frames_sampled"] <= 2
    assert result.media["sample_fps"] < 1.0
    assert result.label in set(Label)
