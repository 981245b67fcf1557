"""Known fakes: PDQ of the decoded frames, re-uploads that must match, others that must not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfd.known_fakes import BANK_KEY, KnownFake, MediaHashes, job_hashes_key
from dfd.settings import Settings
from dispatcher.decode import decode
from dispatcher.known_fakes import RedisBank, distances, find_matches, hash_frames, pdq_hex
from tests.dispatcher.c2pa_media import to_mp4

GRID = "id2_vcd_swwp2s.mpg"


def _hashes(path: Path, settings: Settings) -> MediaHashes:
    return hash_frames(decode(path, settings).frames, settings)


def _entry(hashes: MediaHashes, label: str = "grid fake", entry_id: str = "0" * 16) -> KnownFake:
    return KnownFake(
        id=entry_id, label=label, created_at="2026-12-01T00:00:00+00:00", hashes=hashes
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), decoder="pyav")


@pytest.fixture(scope="module")
def reuploads(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The GRID clip as a platform or a re-uploader would change it."""
    out = tmp_path_factory.mktemp("reuploads")
    src = media_dir / "grid" / GRID
    logo = "drawbox=x=iw-90:y=10:w=80:h=30:color=white@0.8:t=fill"
    return {
        "low_bitrate": to_mp4(src, out / "low.mp4", "-b:v", "80k"),
        "resized": to_mp4(src, out / "small.mp4", "-vf", "scale=180:144"),
        "upscaled": to_mp4(src, out / "big.mp4", "-vf", "scale=1280:1024"),
        "trimmed": to_mp4(src, out / "trim.mp4", "-ss", "0.6"),
        "logo": to_mp4(src, out / "logo.mp4", "-vf", logo),
    }


@pytest.mark.unit
def test_pdq_is_stable_and_flat_frames_are_not_hashed(settings) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((288, 360, 3)) * 255).astype(np.uint8)
    a, quality = pdq_hex(image)
    assert len(a) == 64 and quality > 50
    assert pdq_hex(image) == (a, quality)
    flat = np.full((288, 360, 3), 128, np.uint8)
    assert pdq_hex(flat)[1] < settings.pdq_min_quality

    class Frame:
        def __init__(self, image: np.ndarray, time_s: float) -> None:
            self.image, self.time_s = image, time_s

    hashes = hash_frames([Frame(image, 0.0), Frame(flat, 1.0)], settings)
    assert [f.time_s for f in hashes.frames] == [0.0]


@pytest.mark.unit
def test_distances_count_differing_bits() -> None:
    def h(hexes: list[str]) -> MediaHashes:
        return MediaHashes.model_validate(
            {"frames": [{"time_s": i, "pdq": x, "quality": 100} for i, x in enumerate(hexes)]}
        )

    zero, one, full = "0" * 64, "0" * 63 + "1", "f" * 64
    assert distances(h([zero, full]), h([one])).tolist() == [[1], [255]]


@pytest.mark.unit
@pytest.mark.parametrize("change", ["low_bitrate", "resized", "upscaled", "trimmed", "logo"])
def test_a_changed_reupload_matches(change, media_dir, settings, reuploads) -> None:
    original = _hashes(media_dir / "grid" / GRID, settings)
    copy = _hashes(reuploads[change], settings)
    matches = find_matches(copy, [_entry(original)], settings)
    assert [m.label for m in matches] == ["grid fake"]
    assert matches[0].matched_share >= settings.known_fake_min_share
    assert matches[0].distance <= settings.known_fake_max_distance


@pytest.mark.unit
def test_other_grid_videos_do_not_match(media_dir, settings) -> None:
    """Same studio, same framing, other speakers and sentences: none may match another."""
    clips = sorted((media_dir / "grid").glob("*.mpg"))
    bank = [_entry(_hashes(c, settings), c.name, f"{i:016x}") for i, c in enumerate(clips)]
    for i, clip in enumerate(clips):
        found = find_matches(bank[i].hashes, bank, settings)
        assert [m.label for m in found] == [clip.name]  # only itself
        assert found[0].distance == 0 and found[0].matched_share == 1.0


@pytest.mark.integration
def test_the_bank_in_redis(redis, media_dir, settings) -> None:
    bank = RedisBank(redis, ttl_s=60)
    hashes = _hashes(media_dir / "grid" / GRID, settings)
    bank.keep("job1", hashes)
    assert MediaHashes.model_validate_json(redis.get(job_hashes_key("job1"))) == hashes
    assert 0 < redis.ttl(job_hashes_key("job1")) <= 60
    assert bank.entries() == []
    entry = _entry(hashes)
    redis.hset(BANK_KEY, entry.id, entry.model_dump_json())
    redis.hset(BANK_KEY, "f" * 16, "not json")  # skipped, not fatal
    assert bank.entries() == [entry]


def _vpdq_distances(path: Path, ours: MediaHashes) -> list[tuple[float, int, int]]:
    """``(time, quality difference, bits apart)`` of Meta's reference vPDQ and ours, per second."""
    import vpdq

    reference = vpdq.computeHash(str(path), seconds_per_hash=1.0)
    assert [round(f.timestamp) for f in reference] == [round(f.time_s) for f in ours.frames]
    return [
        (f.time_s, abs(r.quality - f.quality), int(distances(ours, _one(r.hex))[i, 0]))
        for i, (r, f) in enumerate(zip(reference, ours.frames, strict=True))
    ]


def _one(pdq: str) -> MediaHashes:
    return MediaHashes.model_validate({"frames": [{"time_s": 0, "pdq": pdq, "quality": 100}]})


@pytest.mark.unit
def test_the_frame_hashes_are_vpdq_features(media_dir, settings) -> None:
    """At the source size, dfd's per-second hashes are bit for bit Meta's vPDQ features."""
    clip = media_dir / "grid" / GRID
    ours = _hashes(clip, settings)
    for frame in ours.frames:
        frame.pdq_center = None  # the full-frame hash is the vPDQ one
    assert {(q, bits) for _, q, bits in _vpdq_distances(clip, ours)} == {(0, 0)}


@pytest.mark.unit
@pytest.mark.slow
def test_hashes_of_scaled_down_hd_frames_stay_within_matching_distance_of_vpdq(
    media_dir, settings, tmp_path
) -> None:
    """dfd hashes the frames it decoded (HD scaled to 1280, then 512): vPDQ's full-size
    hashes of the same video are 16-20 bits away (measured), well inside the 31 that match."""
    big = to_mp4(
        media_dir / "grid" / GRID, tmp_path / "hd.mp4", "-t", "2",
        "-vf", "scale=-2:1080:flags=bicubic,pad=1920:1080:(ow-iw)/2:0",
    )  # fmt: skip
    ours = _hashes(big, settings)
    for frame in ours.frames:
        frame.pdq_center = None
    found = _vpdq_distances(big, ours)
    assert all(bits <= 24 for _, _, bits in found), found


def _ffmpeg(*args: object) -> None:
    import subprocess

    subprocess.run(["ffmpeg", "-loglevel", "error", "-nostdin", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def audio_copies(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GRID voices joined into 12 s as WAV, the same as a 48 kbit/s MP3 trimmed by 0.7 s,
    and other clips' voices joined the same way (Chromaprint needs a few seconds)."""
    out = tmp_path_factory.mktemp("audio_fp")
    clips = sorted((media_dir / "grid").glob("*.mpg"))
    paths = {
        "original": out / "original.wav",
        "reupload": out / "reupload.mp3",
        "other": out / "other.wav",
    }
    for name, chosen in (("original", clips[:4]), ("other", clips[4:8])):
        inputs = [a for c in chosen for a in ("-i", c)]
        streams = "".join(f"[{i}:a]" for i in range(len(chosen)))
        _ffmpeg(
            *inputs,
            "-filter_complex",
            f"{streams}concat=n={len(chosen)}:v=0:a=1,aformat=channel_layouts=mono",
            paths[name],
        )
    _ffmpeg(
        "-ss",
        "0.7",
        "-i",
        paths["original"],
        "-c:a",
        "libmp3lame",
        "-b:a",
        "48k",
        paths["reupload"],
    )
    return paths


@pytest.mark.integration
def test_an_audio_file_is_matched_by_its_fingerprint(audio_copies, settings) -> None:
    from dispatcher.known_fakes import audio_fingerprint

    prints = {name: audio_fingerprint(path) for name, path in audio_copies.items()}
    assert all(prints.values()), "fpcalc (libchromaprint-tools) must fingerprint every file"
    bank = [_entry(MediaHashes(audio_fingerprint=prints["original"]), label="cloned voice")]
    (hit,) = find_matches(MediaHashes(audio_fingerprint=prints["reupload"]), bank, settings)
    assert hit.label == "cloned voice" and hit.matched_share > 0.5
    assert find_matches(MediaHashes(audio_fingerprint=prints["other"]), bank, settings) == []
