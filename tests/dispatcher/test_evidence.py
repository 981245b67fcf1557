"""Evidence: thumbnails with boxes, heatmaps placed on the faces, the timeline and its chart."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from dfd.schemas import Evidence
from dfd.settings import Settings
from dfd.specs import FACE_SIZE, HEATMAP_SIZE
from dispatcher.aggregate import SecondScore
from dispatcher.evidence import (
    build_evidence,
    colormap,
    heatmap_overlay,
    spectrogram,
    timeline_chart,
    timeline_points,
)
from dispatcher.faces import CropGeometry, Face, FaceCrop, FaceResult
from dispatcher.media import DecodedMedia, SampledFrame

pytestmark = pytest.mark.unit


class MemoryStore:
    """In-memory evidence store: keeps the bytes, hands out fake signed URLs."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put(self, job_id, name, data, content_type):
        key = f"{job_id}/{name}"
        self.objects[key] = (data, content_type)
        return key

    def url(self, key):
        return f"http://127.0.0.1/evidence/{key}?sig=x"


def _crop(frame_pos: int, box=(40.0, 30.0, 120.0, 130.0), angle=0.0) -> FaceCrop:
    face = Face(box, np.zeros((5, 2), np.float32), 0.95)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    geom = CropGeometry(cx, cy, 100.0 * 1.3, angle)
    return FaceCrop(frame_pos, face, geom, np.zeros((3, FACE_SIZE, FACE_SIZE), np.float32))


def test_colormap_runs_from_blue_to_red():
    cm = colormap(np.array([[0.0, 0.5, 1.0]]))
    assert cm[0, 0].tolist() == [0, 0, 127] or cm[0, 0, 2] > 100 and cm[0, 0, 0] == 0
    assert cm[0, 2, 0] > 100 and cm[0, 2, 2] == 0
    assert cm[0, 1, 1] == 255


def test_the_spectrogram_is_the_same_whatever_its_chunks():
    # A long track is transformed a chunk of frames at a time (bounded memory); each frame
    # is its own FFT, so the chunks change nothing, including across their seams.
    rng = np.random.default_rng(3)
    audio = rng.normal(0, 0.1, 16_000 * 3 + 77).astype(np.float32)
    whole = spectrogram(audio, chunk=10**9)
    assert whole.shape == (257, 1 + (audio.size - 512) // 160) and whole.dtype == np.float32
    np.testing.assert_array_equal(spectrogram(audio, chunk=7), whole)
    # a tone at 1 kHz peaks in its bin (1000 / 31.25 Hz = bin 32)
    tone = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000).astype(np.float32)
    assert int(np.argmax(spectrogram(tone).mean(axis=1))) == 32


def test_heatmap_lands_on_the_hot_part_of_the_face():
    image = np.full((200, 240, 3), 128, np.uint8)
    crop = _crop(0)
    cam = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), np.float32)
    cam[0, 0] = 1.0  # top-left cell of the crop
    out = np.asarray(heatmap_overlay(image, [crop], [cam], 1.0)).astype(int)
    changed = np.abs(out - 128).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    # the crop's top-left cell covers [cx - side/2, cx - side/2 + side/8) horizontally
    g = crop.geometry
    x0, y0 = g.cx - g.side / 2, g.cy - g.side / 2
    assert xs.min() >= x0 - 2 and xs.max() <= x0 + 2 * g.side / 8
    assert ys.min() >= y0 - 2 and ys.max() <= y0 + 2 * g.side / 8
    assert not changed[150:, 150:].any()


def test_heatmap_follows_a_rotated_crop():
    image = np.full((300, 300, 3), 128, np.uint8)
    crop = _crop(0, box=(100.0, 100.0, 200.0, 200.0), angle=math.radians(30))
    cam = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), np.float32)
    cam[0, 7] = 1.0  # top-right cell
    out = np.asarray(heatmap_overlay(image, [crop], [cam], 1.0)).astype(int)
    ys, xs = np.nonzero(np.abs(out - 128).sum(axis=2) > 30)
    cell = FACE_SIZE / HEATMAP_SIZE
    ex, ey = crop.geometry.to_frame(np.array([FACE_SIZE - cell / 2]), np.array([cell / 2]))
    assert math.hypot(xs.mean() - ex[0], ys.mean() - ey[0]) < 8


def test_timeline_points_match_the_schema():
    pts = [
        SecondScore(0, 0.0, 0.7, {"visual": 0.6, "audio": 0.8, "lipsync": None}),
        SecondScore(25, 1.0, None, dict.fromkeys(("visual", "audio", "lipsync"))),
    ]
    tl = timeline_points(pts)
    assert tl[0].model_dump() == {
        "frame": 0,
        "time_s": 0.0,
        "score": 0.7,
        "visual": 0.6,
        "audio": 0.8,
        "lipsync": None,
    }
    assert tl[1].score is None


def test_timeline_chart_is_a_png_with_the_fused_line():
    pts = timeline_points(
        [
            SecondScore(
                i * 25, float(i), 0.2 + 0.1 * i, {"visual": 0.3, "audio": None, "lipsync": 0.8}
            )
            for i in range(6)
        ]
    )
    png = timeline_chart(pts, 0.5)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (900, 320)
    arr = np.asarray(img.convert("RGB")).astype(int)
    assert (np.abs(arr - [31, 119, 180]).sum(axis=2) < 10).sum() > 100  # visual series drawn
    assert (np.abs(arr - [200, 0, 0]).sum(axis=2) < 10).sum() > 50  # threshold line


def test_build_evidence_stores_top_k_frames_heatmaps_and_chart():
    rng = np.random.default_rng(0)
    frames = tuple(
        SampledFrame(i * 25, float(i), rng.integers(0, 255, (180, 240, 3), dtype=np.uint8))
        for i in range(6)
    )
    media = DecodedMedia(frames, None, (), 240, 180, 1.0, 25.0, 6.0, "pyav")
    crops = tuple(_crop(i) for i in (0, 1, 2, 4))  # no face at 3 s and 5 s
    faces = FaceResult(
        tuple(
            (c.face,) if any(c.frame_pos == i for c in crops) else () for i, c in enumerate(crops)
        ),
        crops,
        (),
    )
    visual = np.array([0.1, 0.9, 0.5, 0.7], np.float32)
    heat = rng.random((4, HEATMAP_SIZE, HEATMAP_SIZE)).astype(np.float32)
    points = [
        SecondScore(f.index, f.time_s, s, {"visual": v, "audio": None, "lipsync": None})
        for f, s, v in zip(
            frames, [0.1, 0.9, 0.5, None, 0.7, None], [0.1, 0.9, 0.5, None, 0.7, None], strict=True
        )
    ]
    store = MemoryStore()
    ev = build_evidence(
        "job1", media, faces, heat, visual, points, store, Settings(evidence_top_k=3)
    )
    assert isinstance(ev, Evidence)
    assert len(ev.thumbnails) == 3 and len(ev.heatmaps) == 3
    # most suspicious first: 1 s (0.9), 4 s (0.7), 2 s (0.5)
    assert [u.split("/")[-1].split("?")[0] for u in ev.thumbnails] == [
        "thumb_00_f25.jpg",
        "thumb_01_f100.jpg",
        "thumb_02_f50.jpg",
    ]
    assert ev.timeline_chart and ev.timeline_chart.endswith("timeline.png?sig=x")
    assert [p.frame for p in ev.timeline] == [0, 25, 50, 75, 100, 125]
    assert ev.expires_in_s == Settings().evidence_url_ttl_s
    for key, (data, ctype) in store.objects.items():
        img = Image.open(io.BytesIO(data))
        assert (img.format, ctype) in {("JPEG", "image/jpeg"), ("PNG", "image/png")}, key
    thumb = np.asarray(
        Image.open(io.BytesIO(store.objects["job1/thumb_00_f25.jpg"][0])).convert("RGB")
    ).astype(int)
    # the face box of a 0.9 score is drawn in red-ish
    x1, y1 = 40, 30
    assert thumb[y1, x1 + 20, 0] > 180 and thumb[y1, x1 + 20, 1] < 90


def test_no_faces_still_gives_frames_and_timeline():
    frames = tuple(
        SampledFrame(i * 25, float(i), np.zeros((90, 120, 3), np.uint8)) for i in range(3)
    )
    media = DecodedMedia(frames, None, (), 120, 90, 1.0, 25.0, 3.0, "pyav")
    points = [
        SecondScore(f.index, f.time_s, 0.3, {"visual": None, "audio": 0.3, "lipsync": None})
        for f in frames
    ]
    store = MemoryStore()
    ev = build_evidence(
        "j",
        media,
        FaceResult(((),) * 3, (), ()),
        np.zeros((0, 8, 8), np.float32),
        None,
        points,
        store,
        Settings(),
    )
    assert len(ev.thumbnails) == 3 and ev.heatmaps == []
    assert len(ev.timeline) == 3


def _track_crop(frame_pos: int, track: int, colour: tuple[int, int, int], conf=0.9) -> FaceCrop:
    """A crop of one track whose pixels are one flat colour (to tell crops apart)."""
    base = _crop(frame_pos)
    pixels = np.broadcast_to(
        (np.array(colour, np.float32) / 255)[:, None, None], (3, FACE_SIZE, FACE_SIZE)
    ).copy()
    face = Face(base.face.box, base.face.landmarks, conf)
    return FaceCrop(frame_pos, face, base.geometry, pixels, track)


def _tracks_case(visual: np.ndarray | None, max_faces: int):
    """Three tracks over four frames: track 0 in frames 0-3, track 1 in 1-2, track 2 in 3."""
    frames = tuple(
        SampledFrame(i * 25, float(i), np.zeros((180, 240, 3), np.uint8)) for i in range(4)
    )
    media = DecodedMedia(frames, None, (), 240, 180, 1.0, 25.0, 4.0, "pyav")
    crops = (
        _track_crop(0, 0, (200, 0, 0), 0.7),
        _track_crop(1, 0, (0, 200, 0), 0.99),
        _track_crop(2, 0, (0, 0, 200), 0.8),
        _track_crop(3, 0, (200, 200, 0), 0.6),
        _track_crop(1, 1, (0, 200, 200), 0.8),
        _track_crop(2, 1, (200, 0, 200), 0.9),
        _track_crop(3, 2, (90, 90, 90), 0.9),
    )
    per_frame = tuple(tuple(c.face for c in crops if c.frame_pos == i) for i in range(4))
    faces = FaceResult(per_frame, crops, ())
    points = [
        SecondScore(f.index, f.time_s, 0.5, {"visual": 0.5, "audio": None, "lipsync": None})
        for f in frames
    ]
    store = MemoryStore()
    ev = build_evidence(
        "j",
        media,
        faces,
        np.zeros((len(crops), HEATMAP_SIZE, HEATMAP_SIZE), np.float32),
        visual,
        points,
        store,
        Settings(evidence_top_k=1, max_faces_per_frame=max_faces),
    )
    return ev, store


def _mean_colour(store: MemoryStore, url: str) -> list[int]:
    key = url.split("/evidence/")[1].split("?")[0]
    data, ctype = store.objects[key]
    image = Image.open(io.BytesIO(data))
    assert (image.format, ctype, image.size) == ("JPEG", "image/jpeg", (FACE_SIZE, FACE_SIZE))
    return np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0).round().tolist()


def test_every_track_gets_a_thumbnail_of_its_most_suspicious_crop():
    # track 0: mean 0.5, peak 0.8 at frame 2; track 1: mean 0.75, peak 0.9 at frame 1;
    # track 2: one crop, 0.3.
    visual = np.array([0.2, 0.4, 0.8, 0.6, 0.9, 0.6, 0.3], np.float32)
    ev, store = _tracks_case(visual, max_faces=4)
    assert ev.face_track == 1
    by_track = {t.track: t for t in ev.tracks}
    assert sorted(by_track) == [0, 1, 2]
    names = {k: t.thumbnail.split("/")[-1].split("?")[0] for k, t in by_track.items()}
    assert names == {0: "track_00_f50.jpg", 1: "track_01_f25.jpg", 2: "track_02_f75.jpg"}
    assert [by_track[k].thumbnail_s for k in (0, 1, 2)] == [2.0, 1.0, 3.0]
    # The picture is that crop, as the model saw it (JPEG within a few levels).
    for k, colour in {0: (0, 0, 200), 1: (0, 200, 200), 2: (90, 90, 90)}.items():
        got = _mean_colour(store, by_track[k].thumbnail)
        assert max(abs(g - c) for g, c in zip(got, colour, strict=True)) <= 4, (k, got)
    # One JPEG per track beside the frame thumbnail, heatmap and chart: no more.
    assert sum(key.startswith("j/track_") for key in store.objects) == 3


def test_track_thumbnails_are_bounded_shown_track_first():
    # track 2's lone crop is the highest score of all, but a one-frame track never decides:
    # track 1 (mean 0.75) is shown; with room for 2, track 2 (mean 0.95) beats track 0.
    visual = np.array([0.2, 0.4, 0.8, 0.6, 0.9, 0.6, 0.95], np.float32)
    ev, store = _tracks_case(visual, max_faces=2)
    assert ev.face_track == 1
    kept = {t.track: t.thumbnail is not None for t in ev.tracks}
    assert kept == {0: False, 1: True, 2: True}
    assert next(t for t in ev.tracks if t.track == 0).thumbnail_s is None
    assert sum(key.startswith("j/track_") for key in store.objects) == 2
    ev, _ = _tracks_case(visual, max_faces=1)
    assert [t.track for t in ev.tracks if t.thumbnail] == [1]


def test_without_visual_scores_the_most_confident_detection_is_pictured():
    ev, store = _tracks_case(None, max_faces=4)
    by_track = {t.track: t for t in ev.tracks}
    assert by_track[0].thumbnail.split("/")[-1].startswith("track_00_f25.jpg")  # conf 0.99
    assert by_track[1].thumbnail.split("/")[-1].startswith("track_01_f50.jpg")  # conf 0.9
    assert _mean_colour(store, by_track[0].thumbnail)[1] >= 196
