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
