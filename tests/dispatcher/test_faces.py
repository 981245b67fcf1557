"""Faces: letterboxing, detector output to faces, aligned crops, Light-ASD clips; real YuNet via Triton."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dfd.settings import Settings
from dfd.specs import (
    DETECTOR_SIZE,
    FACE_SIZE,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_COEFFS,
    MFCC_PER_FRAME,
)
from dispatcher.decode import decode
from dispatcher.faces import (
    DETECT_REQUEST_MAX_BYTES,
    LIGHT_ASD_PAD_GREY,
    CropGeometry,
    Face,
    clip_boxes,
    crop_geometry,
    detect,
    detect_batch,
    detector_canvas,
    find_faces,
    letterbox,
    light_asd_box,
    lipsync_clips,
    lipsync_crop,
    select_faces,
    track_faces,
    visual_crop,
)
from dispatcher.media import DecodedMedia, LipsyncSegment, SampledFrame


@pytest.mark.unit
def test_letterbox_is_bgr_nchw_top_left():
    img = np.zeros((300, 360, 3), np.uint8)
    img[..., 0] = 200  # red
    out, scale = letterbox(img)
    assert out.shape == (3, 544, DETECTOR_SIZE) and out.dtype == np.float32
    assert scale == pytest.approx(DETECTOR_SIZE / 360)
    h = round(300 * scale)
    assert h < 544
    assert out[2, :h, :].min() == 200 and out[0].max() == 0  # red lands in channel 2 (BGR)
    assert out[:, h:, :].max() == 0  # padding below
    # filling a reused buffer clears what the previous frame left
    buf = np.full((3, 544, DETECTOR_SIZE), 7, np.float32)
    again, _ = letterbox(img, buf)
    assert again is buf and np.array_equal(buf, out)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("size", "canvas"),
    [
        ((1920, 1080), (640, 384)),
        ((1080, 1920), (384, 640)),
        ((360, 288), (640, 512)),
        ((640, 640), (640, 640)),
    ],
)
def test_detector_canvas_pads_the_short_side_to_a_stride_multiple(size, canvas):
    cw, ch, scale = detector_canvas(*size)
    assert (cw, ch) == canvas
    assert cw % 32 == 0 and ch % 32 == 0 and max(cw, ch) == DETECTOR_SIZE
    assert round(size[0] * scale) <= cw and round(size[1] * scale) <= ch


@pytest.mark.unit
def test_select_faces_thresholds_nms_caps_and_rescales():
    boxes = np.array(
        [[100, 100, 200, 220], [104, 98, 204, 222], [400, 300, 460, 370], [10, 10, 50, 50]],
        np.float32,
    )
    lms = np.tile(np.arange(10, dtype=np.float32), (4, 1))
    scores = np.array([0.9, 0.85, 0.7, 0.3], np.float32)
    faces = select_faces(boxes, lms, scores, 2.0, 0.6, 5, (1000, 1000))
    assert [f.score for f in faces] == pytest.approx(
        [0.9, 0.7]
    )  # the overlapping 0.85 is suppressed
    assert faces[0].box == pytest.approx((50, 50, 100, 110))
    assert faces[0].landmarks.shape == (5, 2) and faces[0].landmarks[1, 0] == pytest.approx(1.0)
    assert len(select_faces(boxes, lms, scores, 2.0, 0.6, 1, (1000, 1000))) == 1
    assert select_faces(boxes, lms, scores, 2.0, 0.95, 5, (1000, 1000)) == ()
    # boxes are clipped to the frame
    (edge,) = select_faces(
        np.array([[-20, -10, 40, 60]], np.float32), lms[:1], scores[:1], 1.0, 0.6, 1, (30, 30)
    )
    assert edge.box == (0.0, 0.0, 30.0, 30.0)


def _face_image(angle_deg: float) -> tuple[np.ndarray, Face]:
    """A grey image with two white eye dots, the face turned by ``angle_deg`` around (200, 160)."""
    a = math.radians(angle_deg)
    upright = np.array(
        [(-30, -10), (30, -10), (0, 15), (-20, 40), (20, 40)], np.float64
    )  # eyes, nose, mouth
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lm = (upright @ rot.T + (200, 160)).astype(np.float32)
    img = Image.new("RGB", (400, 300), (60, 60, 60))
    draw = ImageDraw.Draw(img)
    for x, y in lm[:2]:
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(255, 255, 255))
    return np.asarray(img), Face((150, 100, 250, 220), lm, 0.9)


@pytest.mark.unit
@pytest.mark.parametrize("angle", [0.0, 20.0, -35.0])
def test_visual_crop_turns_the_face_upright(angle):
    img, face = _face_image(angle)
    geom = crop_geometry(face)
    assert geom.angle_rad == pytest.approx(math.radians(angle), abs=1e-5)
    crop = visual_crop(img, geom)
    assert crop.shape == (FACE_SIZE, FACE_SIZE, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 200)
    left, right = xs < FACE_SIZE / 2, xs >= FACE_SIZE / 2
    assert abs(ys[left].mean() - ys[right].mean()) < 2.0  # eyes level
    # and the crop maps back onto the frame where the eyes are
    fx, fy = geom.to_frame(np.array([xs[left].mean()]), np.array([ys[left].mean()]))
    assert math.hypot(fx[0] - face.landmarks[0, 0], fy[0] - face.landmarks[0, 1]) < 2.0


@pytest.mark.unit
def test_crop_geometry_follows_mesonet():
    _, face = _face_image(0.0)
    geom = crop_geometry(face)
    # side: 2.2 * 1.3 * max(eye distance 60, eyes-to-mouth 50); centre: the nose, a quarter up to the eyes
    assert geom.side == pytest.approx(2.2 * 1.3 * 60)
    assert (geom.cx, geom.cy) == pytest.approx((200, 160 + 0.75 * 15 + 0.25 * -10))
    _, tilted = _face_image(80.0)
    assert crop_geometry(tilted).angle_rad == 0.0  # too wild a tilt is not trusted


@pytest.mark.unit
def test_crop_geometry_falls_back_to_the_box_on_broken_landmarks():
    face = Face((100.0, 100.0, 200.0, 220.0), np.zeros((5, 2), np.float32), 0.9)
    geom = crop_geometry(face)
    assert (geom.cx, geom.cy, geom.angle_rad) == (150.0, 160.0, 0.0)
    assert geom.side == pytest.approx(120 * 1.3)


def _light_asd_reference(grey: np.ndarray, box) -> np.ndarray:
    """Light-ASD's crop_video + evaluate_network preprocessing, step by step (numpy/Pillow)."""
    x1, y1, x2, y2 = box
    bs = max(y2 - y1, x2 - x1) / 2
    cs = 0.40
    bsi = int(bs * (1 + 2 * cs))
    frame = np.pad(grey, ((bsi, bsi), (bsi, bsi)), "constant", constant_values=110)
    my, mx = (y1 + y2) / 2 + bsi, (x1 + x2) / 2 + bsi
    face = frame[
        int(my - bs) : int(my + bs * (1 + 2 * cs)),
        int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs)),
    ]
    face = np.asarray(Image.fromarray(face).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    return face[56:168, 56:168]


@pytest.mark.unit
@pytest.mark.parametrize("box", [(120.0, 80.0, 220.0, 200.0), (5.0, 10.0, 90.0, 120.0)])
def test_lipsync_crop_matches_light_asd(box):
    rng = np.random.default_rng(1)
    # smooth content, so interpolation details do not dominate the comparison
    grey = np.asarray(
        Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).resize(
            (400, 300), Image.BICUBIC
        )
    )
    ours = lipsync_crop(grey, box)
    ref = _light_asd_reference(grey, box)
    assert ours.shape == (LIPSYNC_SIZE, LIPSYNC_SIZE) and ours.dtype == np.float32
    assert np.abs(ours - ref).mean() < 6.0
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.95


@pytest.mark.unit
def test_lipsync_crop_outside_the_frame_is_light_asd_grey():
    grey = np.zeros((100, 100), np.uint8)
    crop = lipsync_crop(grey, (-300.0, -300.0, -200.0, -200.0))
    assert np.all(crop == LIGHT_ASD_PAD_GREY)


@pytest.mark.unit
def test_light_asd_box_covers_mouth_region():
    x0, y0, x1, y1 = light_asd_box((100, 100, 200, 200))
    assert (x1 - x0) == pytest.approx(y1 - y0) == pytest.approx(70)  # 1.4 x half-size
    assert (x0 + x1) / 2 == pytest.approx(150)
    assert y0 == pytest.approx(135) and y1 == pytest.approx(205)  # from mid-face to below the chin


@pytest.mark.unit
def test_clip_boxes_interpolate_a_moving_face_and_hold_on_a_cut():
    a, b = (100.0, 100.0, 200.0, 200.0), (125.0, 100.0, 225.0, 200.0)
    boxes = clip_boxes(a, b)
    assert len(boxes) == LIPSYNC_FRAMES
    assert boxes[0] == a and boxes[5][0] == pytest.approx(105.0)
    assert clip_boxes(a, (500.0, 500.0, 600.0, 600.0)) == [a] * LIPSYNC_FRAMES
    assert clip_boxes(a, None) == [a] * LIPSYNC_FRAMES


def _media_with_segments() -> DecodedMedia:
    frames = tuple(
        SampledFrame(i * 25, float(i), np.zeros((120, 160, 3), np.uint8)) for i in range(3)
    )
    segs = tuple(
        LipsyncSegment(
            float(s), tuple(range(25 * s, 25 * s + 25)), np.full((25, 120, 160), 50 + s, np.uint8)
        )
        for s in range(2)
    )
    return DecodedMedia(frames, np.zeros(48000, np.float32), segs, 160, 120, 1.0, 25.0, 3.0, "pyav")


@pytest.mark.unit
def test_lipsync_clips_need_a_face_at_their_start_and_take_their_second_of_mfcc():
    media = _media_with_segments()
    face = Face((40.0, 20.0, 100.0, 90.0), np.zeros((5, 2), np.float32), 0.9)
    feats = np.arange(300 * MFCC_COEFFS, dtype=np.float32).reshape(300, MFCC_COEFFS)
    clips = lipsync_clips(media, [(), (face,), (face,)], feats)
    assert [c.start_s for c in clips] == [1.0]  # no face on frame 0: no clip at 0 s
    (clip,) = clips
    assert clip.video.shape == (LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE)
    assert np.all(clip.video == 51)
    assert clip.mfcc.shape == (LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS)
    assert np.array_equal(clip.mfcc, feats[100:200])
    assert lipsync_clips(media, [(face,)] * 3, None) == ()


# --- the real detector through Triton ----------------------------------------------------


@pytest.mark.integration
def test_yunet_finds_the_astronaut(triton, media_dir):
    image = np.asarray(Image.open(media_dir / "still" / "astronaut.png").convert("RGB"))
    (faces,) = detect([SampledFrame(0, 0.0, image)], triton.client, Settings(max_faces_per_frame=3))
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
    assert faces[0].score > 0.8
    re, le = faces[0].landmarks[0], faces[0].landmarks[1]
    assert (
        x1 < re[0] < le[0] < x2 and y1 < re[1] < y2
    )  # eyes inside the box, subject's right on the left


@pytest.mark.integration
def test_grid_clip_faces_crops_and_clips(triton, media_corpus):
    settings = Settings(decoder="pyav")
    media = decode(media_corpus["mp4_h264"], settings)
    result = find_faces(media, triton.client, settings)
    assert all(len(d) == 1 for d in result.detections)  # one speaker in every sampled frame
    assert len(result.crops) == len(media.frames)
    for crop in result.crops:
        assert (
            crop.pixels.shape == (3, FACE_SIZE, FACE_SIZE)
            and 0 <= crop.pixels.min() <= crop.pixels.max() <= 1
        )
        x1, y1, x2, y2 = crop.face.box
        assert 100 < (x1 + x2) / 2 < 260 and (x2 - x1) > 40  # the GRID speaker sits mid-frame
    assert [c.start_s for c in result.clips] == [s.start_s for s in media.segments]
    for clip in result.clips:
        assert clip.video.std() > 10  # a face, not the grey padding


@pytest.mark.integration
def test_no_face_clip_has_no_crops_or_clips(triton, media_corpus):
    settings = Settings(decoder="pyav")
    media = decode(media_corpus["no_face"], settings)
    result = find_faces(media, triton.client, settings)
    assert not result.any_face and result.crops == () and result.clips == ()


@pytest.mark.integration
def test_batches_respect_the_detector_max_batch_size(triton):
    class Counting:
        def __init__(self, inner):
            self.inner, self.batches = inner, []

        def infer(self, model, inputs, outputs=None):
            self.batches.append(len(next(iter(inputs.values()))))
            return self.inner.infer(model, inputs, outputs)

    # A strip goes in as a 640x32 canvas (240 KiB): the model's batch of 16 is the limit.
    frames = [SampledFrame(i, float(i), np.zeros((10, 400, 3), np.uint8)) for i in range(20)]
    client = Counting(triton.client)
    found = detect(frames, client, Settings())
    assert client.batches == [16, 4]
    assert found == ((),) * 20
    # A 4:3 frame goes in as 640x480 (3.5 MiB): the byte cap allows 4 a request.
    frames = [SampledFrame(i, float(i), np.zeros((48, 64, 3), np.uint8)) for i in range(10)]
    client = Counting(triton.client)
    assert detect(frames, client, Settings()) == ((),) * 10
    assert client.batches == [4, 4, 2]


@pytest.mark.unit
def test_detect_batch_caps_the_bytes_of_one_request():
    square = 3 * 640 * 640 * 4
    assert detect_batch(16, square) == DETECT_REQUEST_MAX_BYTES // square == 3
    assert detect_batch(16, 3 * 640 * 32 * 4) == 16  # the model's own limit
    assert detect_batch(16, DETECT_REQUEST_MAX_BYTES * 2) == 1  # one frame always goes
    assert detect_batch(0, 100) == 1


@pytest.mark.unit
def test_crop_geometry_to_frame_identity_without_rotation():
    g = CropGeometry(100.0, 50.0, 64.0, 0.0)
    x, y = g.to_frame(np.array([0.0, FACE_SIZE]), np.array([0.0, FACE_SIZE]))
    assert x.tolist() == pytest.approx([68.0, 132.0]) and y.tolist() == pytest.approx([18.0, 82.0])


@pytest.mark.unit
def test_lipsync_clips_start_on_the_sampled_frame_of_a_slow_source():
    # 15 fps sampled at 2 fps: the frame nearest 0.5 s is frame 7 at 0.467 s (33 ms off,
    # more than half a 25 fps frame). The clip starting at 0.5 s begins on that same frame,
    # so the face found there places it.
    times = [0.0, 7 / 15, 1.0, 22 / 15, 2.0]
    frames = tuple(SampledFrame(round(t * 15), t, np.zeros((120, 160, 3), np.uint8)) for t in times)
    segs = tuple(
        LipsyncSegment(
            s,
            tuple(round(s * 15 + k * 15 / 25) for k in range(25)),
            np.full((25, 120, 160), 60, np.uint8),
        )
        for s in (0.0, 0.5, 1.0)
    )
    media = DecodedMedia(
        frames, np.zeros(40000, np.float32), segs, 160, 120, 1.0, 15.0, 2.5, "pyav"
    )
    face = Face((40.0, 20.0, 100.0, 90.0), np.zeros((5, 2), np.float32), 0.9)
    feats = np.zeros((250, MFCC_COEFFS), np.float32)
    clips = lipsync_clips(media, [(face,)] * len(frames), feats)
    assert [c.start_s for c in clips] == [0.0, 0.5, 1.0]


@pytest.mark.integration
def test_a_phone_video_stored_sideways_shows_its_face(triton, media_corpus, tmp_path):
    # Phones store portrait video as sideways frames plus a display rotation; decoded
    # upright, the speaker's face is found upright on every sampled frame.
    ff = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    turned, sideways = tmp_path / "turned.mp4", tmp_path / "portrait.mp4"
    # frames turned a quarter clockwise, then (stream copy) tagged to be shown turned back
    for args in (
        [
            "-i",
            str(media_corpus["mp4_h264"]),
            "-vf",
            "transpose=1",
            "-c:v",
            "libx264",
            "-c:a",
            "copy",
            str(turned),
        ],
        ["-i", str(turned), "-c", "copy", "-metadata:s:v", "rotate=90", str(sideways)],
    ):
        subprocess.run([*ff, *args], check=True, capture_output=True, timeout=60)
    settings = Settings(decoder="pyav")
    media = decode(sideways, settings)
    assert (media.width, media.height) == (360, 288)
    result = find_faces(media, triton.client, settings)
    assert all(len(d) == 1 for d in result.detections)
    # Where the upright clip has its face (sideways, YuNet still finds one, at turned
    # coordinates, and the crops the models read would be turned a quarter).
    upright = find_faces(decode(media_corpus["mp4_h264"], settings), triton.client, settings)
    for (face,), (want,) in zip(result.detections, upright.detections, strict=True):
        assert np.allclose(face.center, want.center, atol=8)
        assert np.allclose(face.landmarks, want.landmarks, atol=8)
    assert len(result.clips) == len(media.segments) > 0


def _face(cx: float, cy: float, side: float) -> Face:
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return Face(box=box, landmarks=np.zeros((5, 2), np.float32), score=0.9)


@pytest.mark.unit
def test_faces_are_tracked_across_frames_by_position_and_size():
    left, right = (100.0, 100.0), (400.0, 100.0)
    detections = [
        [_face(*left, 80), _face(*right, 80)],
        [_face(right[0] + 20, 105, 85), _face(left[0] - 10, 95, 75)],  # order swapped
        [_face(*left, 80)],  # the right face looks away for a frame
        [_face(*right, 80), _face(*left, 82), _face(700, 300, 40)],  # and a newcomer
    ]
    assert track_faces(detections) == [[0, 1], [1, 0], [0], [1, 0, 2]]
    # a face much larger or far away is someone else
    assert track_faces([[_face(*left, 80)], [_face(*left, 300)]]) == [[0], [1]]
