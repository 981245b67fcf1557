"""Decoding the corpus with PyAV (and DALI where it is installed): frames, audio, clips."""

from __future__ import annotations

import subprocess

import av
import numpy as np
import pytest

from dfd.errors import ConfigurationError, CorruptMediaError, UnsupportedMediaError
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, LIPSYNC_FRAMES
from dispatcher import decode_dali
from dispatcher import decode_pyav as pyav_module
from dispatcher.decode import choose_decoder, decode
from dispatcher.decode_pyav import decode_pyav
from dispatcher.media import audio_energy_db, output_size
from tests.fixtures.media import with_display_rotation

VIDEOS = [
    "grid_mpg",
    "mp4_h264",
    "mp4_hevc",
    "webm_vp9",
    "mov",
    "mkv",
    "mp4_silent",
    "no_face",
    "dubbed",
    "vfr_mkv",
]
WITH_AUDIO = set(VIDEOS) - {"mp4_silent"}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(decoder="pyav")


@pytest.mark.integration
@pytest.mark.parametrize("name", VIDEOS)
def test_every_video_decodes_to_the_same_structure(media_corpus, settings, name):
    media = decode(media_corpus[name], settings)
    assert media.decoder == "pyav"
    assert (media.width, media.height) == (360, 288)
    assert [round(f.time_s) for f in media.frames] == [0, 1, 2]
    for f in media.frames:
        assert f.image.shape == (288, 360, 3) and f.image.dtype == np.uint8
        assert abs(f.time_s - round(f.time_s)) <= 0.5 / 25 + 1e-6 or name == "vfr_mkv"
        assert f.image.std() > 5  # a real picture, not a blank buffer
    assert 2.9 <= media.duration_s <= 3.1
    if name in WITH_AUDIO:
        assert media.audio is not None and media.audio.dtype == np.float32 and media.audio.ndim == 1
        assert media.audio_duration_s == pytest.approx(3.0, abs=0.15)
        assert np.abs(media.audio).max() > 0.01
        # ~3 s video: clips start at 0 s, 1 s and, when the video lasts a full 3 s, 2 s.
        expected = [0.0, 1.0, 2.0] if media.duration_s >= 3.0 else [0.0, 1.0]
        assert [s.start_s for s in media.segments] == expected
        for seg in media.segments:
            assert seg.grey.shape == (LIPSYNC_FRAMES, 288, 360) and seg.grey.dtype == np.uint8
            assert list(seg.frame_indices) == sorted(seg.frame_indices)
    else:
        assert media.audio is None and media.segments == ()


@pytest.mark.integration
def test_cfr_clip_frames_are_consecutive_at_25fps(media_corpus, settings):
    media = decode(media_corpus["mp4_h264"], settings)
    assert [f.index for f in media.frames] == [0, 25, 50]
    assert media.segments[1].frame_indices == tuple(range(25, 50))
    # the clip's first frame is the sampled frame at 1 s (same pixels, grey)
    grey = media.frames[1].image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.abs(grey - media.segments[1].grey[0]).mean() < 4


@pytest.mark.integration
def test_vfr_stream_samples_nearest_frames_and_repeats_in_clips(media_corpus, settings):
    media = decode(media_corpus["vfr_mkv"], settings)
    for f in media.frames:
        # every third frame is gone: the nearest kept frame is at most one frame away
        assert abs(f.time_s - round(f.time_s)) <= 1 / 25 + 1e-6
    idx = media.segments[0].frame_indices
    assert len(idx) == LIPSYNC_FRAMES
    assert len(set(idx)) < LIPSYNC_FRAMES  # missing frames are filled by their neighbours


@pytest.mark.integration
def test_containers_agree_on_audio(media_corpus, settings):
    ref = decode(media_corpus["grid_mpg"], settings).audio
    for name in ("mp4_h264", "mkv", "mov", "webm_vp9"):
        audio = decode(media_corpus[name], settings).audio
        n = min(len(ref), len(audio)) - 2000
        # lossy codecs and their priming delay: allow a few ms of shift, demand strong correlation
        best = max(
            np.corrcoef(ref[1000 : 1000 + n - 200], audio[1000 + lag : 1000 + lag + n - 200])[0, 1]
            for lag in range(-400, 401, 4)
        )
        assert best > 0.9, name


@pytest.mark.integration
def test_audio_is_16khz_mono(media_corpus, settings):
    media = decode(media_corpus["grid_mpg"], settings)
    assert len(media.audio) == pytest.approx(3.0 * AUDIO_RATE, rel=0.02)


@pytest.mark.integration
def test_size_cap_scales_frames_and_clips_down(media_corpus):
    media = decode(media_corpus["mp4_h264"], Settings(decoder="pyav", decode_max_side_px=256))
    assert (media.width, media.height) == output_size(360, 288, 256) == (256, 204)
    assert media.frames[0].image.shape == (204, 256, 3)
    assert media.segments[0].grey.shape[1:] == (204, 256)
    assert media.scale == pytest.approx(256 / 360)


@pytest.mark.integration
def test_sample_rate_setting(media_corpus):
    media = decode(media_corpus["mp4_h264"], Settings(decoder="pyav", sample_fps=2.0))
    assert [f.index for f in media.frames] == [
        0,
        12,
        25,
        37,
        50,
        62,
    ]  # ties go to the earlier frame


@pytest.mark.integration
def test_an_audio_file_decodes_to_its_track_alone(media_corpus, settings):
    media = decode(media_corpus["audio_only"], settings, audio_only=True)
    assert media.frames == () and media.segments == ()
    assert media.audio is not None and media.audio.dtype == np.float32
    assert media.audio.size / AUDIO_RATE == pytest.approx(3.0, abs=0.1)
    # without saying so it is decoded as a video, and that needs a video stream
    with pytest.raises(UnsupportedMediaError, match="no video stream"):
        decode(media_corpus["audio_only"], settings)


@pytest.mark.unit
def test_random_bytes_are_corrupt(tmp_path, settings):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises((CorruptMediaError, UnsupportedMediaError)):
        decode_pyav(path, settings)


@pytest.mark.unit
def test_output_size_never_upscales():
    assert output_size(360, 288, 1280) == (360, 288)
    assert output_size(1920, 1080, 1280) == (1280, 720)
    assert output_size(1080, 1920, 1280) == (720, 1280)


@pytest.mark.unit
def test_dali_requested_without_dali_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr("dispatcher.decode.dali_available", lambda: False)
    with pytest.raises(ConfigurationError, match="DALI"):
        choose_decoder(Settings(decoder="dali"))
    assert choose_decoder(Settings(decoder="auto")) == "pyav"


@pytest.mark.unit
def test_auto_picks_dali_only_with_a_gpu(monkeypatch):
    monkeypatch.setattr("dispatcher.decode.dali_available", lambda: True)
    monkeypatch.setattr("dispatcher.decode.gpu_present", lambda: False)
    assert choose_decoder(Settings(decoder="auto")) == "pyav"
    monkeypatch.setattr("dispatcher.decode.gpu_present", lambda: True)
    assert choose_decoder(Settings(decoder="auto")) == "dali"
    assert choose_decoder(Settings(decoder="pyav")) == "pyav"


@pytest.mark.gpu
@pytest.mark.skipif(
    not decode_dali.dali_available(),
    reason="NVIDIA DALI is not installed (nvidia-dali comes from NVIDIA's package index, "
    "not reachable here); its CPU build would decode this VP9 clip",
)
def test_dali_matches_pyav_on_vp9(media_corpus, settings):
    path = media_corpus["webm_vp9"]
    ref = decode_pyav(path, settings)
    device = "mixed" if decode_dali.gpu_present() else "cpu"
    got = decode_dali.decode_dali(path, settings, device=device)
    assert got.decoder == "dali"
    assert [f.index for f in got.frames] == [f.index for f in ref.frames]
    assert [f.time_s for f in got.frames] == pytest.approx([f.time_s for f in ref.frames], abs=1e-3)
    for a, b in zip(got.frames, ref.frames, strict=True):
        # different YUV->RGB code paths: small differences, no shifted frames
        assert np.abs(a.image.astype(np.int16) - b.image).mean() < 3
    assert [s.frame_indices for s in got.segments] == [s.frame_indices for s in ref.segments]
    assert np.allclose(got.audio, ref.audio)


@pytest.mark.integration
def test_skipping_unneeded_frames_changes_nothing_picked(media_corpus):
    # Sparse targets (0 s, 2 s and one clip at 0 s) leave 1.2-1.7 s free to skip.
    settings = Settings(decoder="pyav", sample_fps=0.5, lipsync_max_clips=1)
    full = decode_pyav(media_corpus["mp4_h264"], settings, skip_unneeded=False)
    fast = decode_pyav(media_corpus["mp4_h264"], settings, skip_unneeded=True)
    assert fast.frames_decoded < full.frames_decoded == 75
    assert (
        [(f.index, f.time_s) for f in fast.frames]
        == [(f.index, f.time_s) for f in full.frames]
        == [(0, 0.0), (50, 2.0)]
    )
    for a, b in zip(fast.frames, full.frames, strict=True):
        assert np.array_equal(a.image, b.image)
    assert [s.frame_indices for s in fast.segments] == [s.frame_indices for s in full.segments]
    assert np.array_equal(fast.segments[0].grey, full.segments[0].grey)
    assert np.array_equal(fast.audio, full.audio)


@pytest.mark.unit
@pytest.mark.skipif(decode_dali.dali_available(), reason="DALI is installed here")
def test_dali_path_without_dali_says_what_is_missing(tmp_path):
    path = tmp_path / "clip.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3")
    with pytest.raises(ConfigurationError, match="NVIDIA DALI is not installed"):
        decode_dali.decode_dali(path, Settings(decoder="dali"))
    with pytest.raises(ConfigurationError, match="DALI"):
        decode(path, Settings(decoder="dali"))


@pytest.mark.integration
def test_memory_cap_decodes_long_videos_smaller(media_corpus):
    # 3 RGB samples + 3 grey clips of 25 frames = 84 bytes per pixel of frame size
    budget = 84 * 300 * 240
    media = decode(media_corpus["mp4_h264"], Settings(decoder="pyav", decode_max_bytes=budget))
    assert (media.width, media.height) == (300, 240)
    assert media.frames[0].image.shape == (240, 300, 3)
    assert media.segments[0].grey.shape == (25, 240, 300)
    total = sum(f.image.nbytes for f in media.frames) + sum(s.grey.nbytes for s in media.segments)
    assert total <= budget


@pytest.mark.unit
def test_output_size_memory_cap_has_a_floor():
    assert output_size(1920, 1080, 1280, max_pixels=1280 * 720) == (1280, 720)
    assert output_size(1920, 1080, 1280, max_pixels=640 * 360) == (640, 360)
    assert output_size(1920, 1080, 1280, max_pixels=10) == (256, 144)


@pytest.mark.integration
def test_rotation_metadata_is_applied_as_players_show_it(media_corpus, settings, tmp_path):
    # Phones store portrait video as landscape frames plus a display rotation; the faces
    # stand upright only once the rotation is applied (ffmpeg's autorotate does the same).
    rotated = with_display_rotation(media_corpus["mp4_h264"], tmp_path / "rotated.mp4")
    upright = decode_pyav(media_corpus["mp4_h264"], settings)
    media = decode_pyav(rotated, settings)
    assert (media.width, media.height) == (288, 360)
    assert (media.quarter_turns, upright.quarter_turns) == (1, 0)
    assert len(media.frames) == len(upright.frames)
    for f, g in zip(media.frames, upright.frames, strict=True):
        assert f.image.shape == (360, 288, 3) and f.image.flags["C_CONTIGUOUS"]
        assert np.array_equal(f.image, np.rot90(g.image, 1))
    assert [s.start_s for s in media.segments] == [s.start_s for s in upright.segments]
    for s, u in zip(media.segments, upright.segments, strict=True):
        assert s.grey.shape == (LIPSYNC_FRAMES, 360, 288)
        assert np.array_equal(s.grey, np.rot90(u.grey, 1, axes=(1, 2)))


@pytest.mark.integration
def test_dali_path_applies_the_rotation_too(media_corpus, settings, tmp_path, monkeypatch):
    # DALI returns the frames as stored; without the rotation a phone's portrait video
    # came out sideways on GPU machines only. DALI is stood in for by PyAV frames as
    # stored (to_ndarray applies no rotation), so the path runs without a GPU.
    rotated = with_display_rotation(media_corpus["mp4_h264"], tmp_path / "rotated.mp4")

    def stored_frames(path, device):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    monkeypatch.setattr(decode_dali, "dali_available", lambda: True)
    monkeypatch.setattr(decode_dali, "_dali_frames", stored_frames)
    assert stored_frames(rotated, "cpu").shape[1:] == (288, 360, 3)  # stored sideways
    ref = decode_pyav(rotated, settings)
    got = decode_dali.decode_dali(rotated, settings, device="cpu")
    assert (got.width, got.height, got.quarter_turns) == (ref.width, ref.height, 1)
    assert [f.index for f in got.frames] == [f.index for f in ref.frames]
    for a, b in zip(got.frames, ref.frames, strict=True):
        assert a.image.shape == b.image.shape == (360, 288, 3)
        assert np.abs(a.image.astype(np.int16) - b.image).mean() < 3
    for s, r in zip(got.segments, ref.segments, strict=True):
        assert s.grey.shape == r.grey.shape == (LIPSYNC_FRAMES, 360, 288)


@pytest.mark.integration
def test_a_nan_sample_in_a_float_track_does_not_silence_the_audio(media_corpus, settings, tmp_path):
    # One NaN in a float PCM track made the whole track's level NaN, so it counted as
    # silence: audio and lip-sync left unused, an easy way to dodge two of three checks.
    raw = tmp_path / "speech.f32"
    ff = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    pcm = ["-f", "f32le", "-ac", "1", "-ar", str(AUDIO_RATE)]
    subprocess.run([*ff, "-i", str(media_corpus["grid_mpg"]), "-vn", *pcm, str(raw)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    samples = np.fromfile(raw, np.float32)
    samples[1000] = np.nan
    samples[2000] = np.inf
    samples.tofile(raw)
    mov = tmp_path / "nan_audio.mov"
    subprocess.run(
        [*ff, "-i", str(media_corpus["grid_mpg"]), *pcm, "-i", str(raw), "-map", "0:v",
         "-map", "1:a", "-c:v", "libx264", "-c:a", "pcm_f32le", str(mov)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    media = decode_pyav(mov, settings)
    assert media.audio is not None and np.all(np.isfinite(media.audio))
    assert audio_energy_db(media.audio) > -50


@pytest.mark.integration
def test_a_gap_in_the_audio_timestamps_stays_a_gap(media_corpus, settings, tmp_path):
    # Two joined recordings, the first with half a second less audio than video: the
    # audio's timestamps skip 1.0 -> 1.5 s. Concatenated as decoded, everything after the
    # gap would play half a second early against the video (lip-sync reads that as a dub).
    ff = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    src = str(media_corpus["grid_mpg"])
    enc = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le"]
    a, b, joined = tmp_path / "a.mkv", tmp_path / "b.mkv", tmp_path / "joined.mkv"
    listing = tmp_path / "list.txt"
    listing.write_text(f"file '{a}'\nfile '{b}'\n")
    for args in (
        ["-i", src, "-t", "1.5", "-af", "atrim=0:1.0", *enc, str(a)],
        ["-ss", "1.5", "-i", src, *enc, str(b)],
        ["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined)],
    ):
        subprocess.run([*ff, *args], check=True, capture_output=True, timeout=60)
    media = decode_pyav(joined, settings)
    whole = decode_pyav(media_corpus["grid_mpg"], settings)
    assert media.audio is not None and whole.audio is not None
    assert media.audio_duration_s == pytest.approx(3.0, abs=0.1)
    gap = media.audio[int(1.05 * AUDIO_RATE) : int(1.45 * AUDIO_RATE)]
    assert not gap.any()
    # after the gap, the track lines up with the original again (loudness per 20 ms;
    # half a second early it anti-correlates)

    def loudness(audio: np.ndarray) -> np.ndarray:
        part = audio[int(1.6 * AUDIO_RATE) : int(2.8 * AUDIO_RATE)]
        return np.sqrt(np.square(part.reshape(-1, AUDIO_RATE // 50)).mean(axis=1))

    assert np.corrcoef(loudness(media.audio), loudness(whole.audio))[0, 1] > 0.8


@pytest.mark.integration
def test_an_animated_webp_is_probed_and_decoded_with_pillow(tmp_path, settings):
    from PIL import Image

    from dispatcher.probe import probe

    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)) for _ in range(12)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=250, loop=0)
    info = probe(path, settings)
    assert (info.kind, info.width, info.height, info.frame_count) == ("webp", 64, 48, 12)
    assert info.duration_s == pytest.approx(3.0) and not info.has_audio
    media = decode(path, settings, info.duration_s, animation=True)
    assert [f.time_s for f in media.frames] == [0.0, 1.0, 2.0]
    assert [f.index for f in media.frames] == [0, 4, 8]
    assert media.frames[0].image.shape == (48, 64, 3) and media.audio is None


def _same_picks(a, b) -> None:
    """The same frames at the same times and pixels, the same clips, the same audio."""
    assert [(f.index, f.time_s) for f in a.frames] == [(f.index, f.time_s) for f in b.frames]
    for x, y in zip(a.frames, b.frames, strict=True):
        assert np.array_equal(x.image, y.image)
    assert [s.frame_indices for s in a.segments] == [s.frame_indices for s in b.segments]
    for x, y in zip(a.segments, b.segments, strict=True):
        assert np.array_equal(x.grey, y.grey)
    assert np.array_equal(a.audio, b.audio)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["mp4_h264", "webm_vp9", "vfr_mkv", "mkv"])
def test_planned_pass_picks_what_the_streaming_samplers_pick(media_corpus, name):
    # The demux-only plan knows the picks before decoding; without it the decoder keeps
    # every frame near a target and the samplers pick while decoding (the former path).
    settings = Settings(decoder="pyav", sample_fps=0.5, lipsync_max_clips=1)
    path = media_corpus[name]
    plan = pyav_module.frame_plan(path, settings)
    assert plan is not None and plan.wanted
    planned = decode_pyav(path, settings)
    streaming = pyav_module._decode_pass(path, settings, None, None, True, None)
    _same_picks(planned, streaming)
    assert planned.frames_decoded <= streaming.frames_decoded


@pytest.mark.integration
def test_planned_pass_decodes_only_reference_and_picked_frames(media_corpus):
    # 1 fps and a clip: the planned pass skips the non-reference frames the margins kept.
    settings = Settings(decoder="pyav", lipsync_max_clips=1)
    path = media_corpus["mp4_h264"]
    planned = decode_pyav(path, settings)
    streaming = pyav_module._decode_pass(path, settings, None, None, True, None)
    full = decode_pyav(path, settings, skip_unneeded=False)
    _same_picks(planned, streaming)
    assert [f.time_s for f in planned.frames] == [f.time_s for f in full.frames]
    for x, y in zip(planned.frames, full.frames, strict=True):
        assert np.array_equal(x.image, y.image)
    assert planned.frames_decoded < streaming.frames_decoded < full.frames_decoded


@pytest.mark.integration
def test_a_plan_the_decoder_disagrees_with_falls_back(media_corpus, monkeypatch, caplog):
    # A picked frame the decoder never produces: the pass starts again without the plan.
    settings = Settings(decoder="pyav", sample_fps=0.5, lipsync_max_clips=1)
    path = media_corpus["mp4_h264"]
    real = pyav_module.frame_plan(path, settings)
    assert real is not None
    bogus = pyav_module.Wanted(index=10**6, samples=[0], clips=[])
    wrong = pyav_module.FramePlan(real.pts, {**real.wanted, -12345: bogus})
    monkeypatch.setattr(pyav_module, "frame_plan", lambda *a, **k: wrong)
    with caplog.at_level("INFO", logger="dispatcher.decode_pyav"):
        got = decode_pyav(path, settings)
    assert "were not produced" in caplog.text
    _same_picks(got, pyav_module._decode_pass(path, settings, None, None, True, None))


@pytest.mark.integration
def test_timestamps_are_read_without_decoding(media_corpus):
    path = media_corpus["mp4_h264"]
    pts = pyav_module.read_timestamps(path, 0)
    assert pts is not None and len(pts) == 75 and pts == sorted(set(pts))


def _with_broken_audio_packets(source, out, count: int):
    """``source``'s audio track remuxed into Matroska, packets 10 to ``10 + count`` replaced
    by random bytes of their size (the AAC decoder refuses each)."""
    rng = np.random.default_rng(0)
    with av.open(str(source)) as src, av.open(str(out), "w", format="matroska") as dst:
        track = src.streams.audio[0]
        copy = dst.add_stream_from_template(track)
        for k, packet in enumerate(p for p in src.demux(track) if p.size):
            if 10 <= k < 10 + count:
                junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.duration = packet.pts, packet.dts, packet.duration
                junk.time_base = packet.time_base
                packet = junk
            packet.stream = copy
            dst.mux(packet)
    return out


@pytest.mark.integration
def test_a_few_broken_audio_packets_are_skipped_and_many_are_corrupt(
    media_corpus, settings, tmp_path, caplog
):
    # Audio files, DALI and the overlapped audio branch all read the track with read_audio,
    # which skips what the video pass skips: a few broken packets, not more than eight.
    intact = _with_broken_audio_packets(media_corpus["audio_only"], tmp_path / "intact.mka", 0)
    whole = decode(intact, settings, audio_only=True)
    few = _with_broken_audio_packets(media_corpus["audio_only"], tmp_path / "few.mka", 3)
    with caplog.at_level("WARNING", logger="dispatcher.decode_pyav"):
        media = decode(few, settings, audio_only=True)
    assert caplog.text.count("skipped a broken audio packet in few.mka") == 3
    assert media.audio is not None and whole.audio is not None
    # the lost packets are a gap of silence: what follows stays in place
    assert abs(media.audio.size - whole.audio.size) <= AUDIO_RATE // 1000  # 1 ms

    def loudness(audio: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
        part = audio[int(start_s * AUDIO_RATE) : int(end_s * AUDIO_RATE)]
        return np.sqrt(np.square(part.reshape(-1, AUDIO_RATE // 50)).mean(axis=1))

    after = np.corrcoef(loudness(media.audio, 1.0, 2.8), loudness(whole.audio, 1.0, 2.8))
    assert after[0, 1] > 0.99
    assert not np.allclose(media.audio[: AUDIO_RATE // 2], whole.audio[: AUDIO_RATE // 2])
    many = _with_broken_audio_packets(media_corpus["audio_only"], tmp_path / "many.mka", 20)
    with pytest.raises(CorruptMediaError, match="many.mka: more than 8 undecodable audio"):
        decode(many, settings, audio_only=True)
    with pytest.raises(CorruptMediaError, match="more than 8 undecodable audio"):
        pyav_module.read_audio(many)
