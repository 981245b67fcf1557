"""Faces: detect them on the sampled frames through Triton, cut the crops the detectors read.

- Detection: frames letterboxed to ``DETECTOR_SIZE`` (BGR, float 0..255, NCHW) and sent to
  Triton's ``face_detector`` in batches of at most its ``max_batch_size``; score threshold,
  NMS and the per-frame cap on the caller's side (:mod:`dfd.yunet_post`), boxes mapped
  back to frame pixels.
- Visual crops: the square MesoNet's authors cut (centred on the nose, sized from the eye
  and mouth distances, the face turned upright; one affine warp in Pillow), 256x256 RGB
  in [0, 1].
- SBI crops, only when the ensemble reads them (``sbi`` enabled): its authors' own crop
  of each face (:mod:`dispatcher.sbi_crop`), 380x380 RGB uint8.
- Lip-sync clips: Light-ASD's own crop (``Columbia_test.py``: a square of 2.8x the half
  box size, starting one half-size above the box centre, grey, resized to 224 and the
  centre 112x112 kept; outside the frame filled with grey 110) on each of 25 frames, plus
  the MFCC of the same second of audio.

Tracking for the clips costs no detector call: a clip starts on a sampled frame (see
:func:`dispatcher.sampling.clip_starts`), so the face found there places it; where the
next sampled second also has the face, the box is interpolated linearly between the two.
Light-ASD itself interpolates between detections and median-filters boxes over 13 frames
(half a second), so per-frame detection would buy little for a talking face.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from dfd.ensemble import SBI_FACES, for_settings
from dfd.features import mfcc
from dfd.settings import Settings
from dfd.specs import (
    DETECTOR_SIZE,
    FACE_SIZE,
    LIPSYNC_FPS,
    LIPSYNC_FRAMES,
    LIPSYNC_SIZE,
    MFCC_PER_FRAME,
    SBI_SIZE,
)
from dfd.specs import spec as model_spec
from dfd.yunet_post import select
from dispatcher.media import DecodedMedia, LipsyncSegment, SampledFrame
from dispatcher.sampling import frame_duration_s
from dispatcher.sbi_crop import SbiCrop, sbi_crop
from dispatcher.triton_client import InferClient

NMS_IOU = 0.3  # YuNet's own default (OpenCV FaceDetectorYN)
# MesoNet's own face extraction (its pipeline.py): side = K * l_factor * max(eye distance,
# eyes-to-mouth distance), centred on the nose, rotated so the eyes-mouth axis is vertical.
MESO_K = 2.2
MESO_L_FACTOR = 1.3
BOX_MARGIN = 0.3  # fallback when the landmarks are unusable: (1 + margin) x the box side
LIGHT_ASD_CROP_SCALE = 0.40  # Light-ASD's --cropScale
LIGHT_ASD_PAD_GREY = 110  # Light-ASD pads frames with this value
TRACK_MIN_IOU = 0.3  # below this the next second's face is someone else (or a cut)


@dataclass(frozen=True)
class Face:
    """One detected face in decoded-frame pixels.

    Attributes:
        box: ``(x1, y1, x2, y2)``.
        landmarks: ``[5, 2]``: right eye, left eye, nose tip, right and left mouth corner
            (YuNet's order; "right" is the subject's right, on the image's left).
        score: detector confidence.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def size(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)


@dataclass(frozen=True)
class CropGeometry:
    """Where a visual crop came from: centre, side and rotation in frame pixels."""

    cx: float
    cy: float
    side: float
    angle_rad: float

    def to_frame(
        self, u: np.ndarray, v: np.ndarray, size: int = FACE_SIZE
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crop pixel coordinates (``u`` right, ``v`` down) to frame coordinates."""
        s = self.side / size
        du, dv = (u - size / 2) * s, (v - size / 2) * s
        c, sn = math.cos(self.angle_rad), math.sin(self.angle_rad)
        return self.cx + du * c - dv * sn, self.cy + du * sn + dv * c


@dataclass(frozen=True)
class FaceCrop:
    """A visual-model input and where it came from.

    Attributes:
        frame_pos: position in ``DecodedMedia.frames``.
        face: the detection.
        geometry: the crop's placement, for drawing heatmaps back onto the frame.
        pixels: RGB float32 ``[3, FACE_SIZE, FACE_SIZE]`` in [0, 1].
        track: the face track it belongs to (:func:`track_faces`), numbered from 0.
    """

    frame_pos: int
    face: Face
    geometry: CropGeometry
    pixels: np.ndarray
    track: int = 0


@dataclass(frozen=True)
class LipsyncClip:
    """A lip-sync-model input: 25 grey face crops and the MFCC of the same second."""

    start_s: float
    video: np.ndarray  # float32 [LIPSYNC_FRAMES, LIPSYNC_SIZE, LIPSYNC_SIZE], 0..255
    mfcc: np.ndarray  # float32 [LIPSYNC_FRAMES * MFCC_PER_FRAME, MFCC_COEFFS]


@dataclass(frozen=True)
class FaceResult:
    """Everything the faces stage found.

    Attributes:
        detections: per sampled frame, its kept faces (most confident first).
        crops: visual crops of every kept face.
        clips: lip-sync clips (none without audio or without a face at their start).
        sbi_crops: SBI's own crop of each face, one per crop in ``crops``' order, when
            the ensemble reads them (none otherwise).

    :func:`face_crops` cuts each kind of crop into one array whose rows are their
    ``pixels`` (``crops[i].pixels`` is row ``i`` of ``crops[0].pixels.base``): inference
    sends that array as it is, where stacking the crops would copy every one of them (a
    15-minute video's 900 faces: 700 MiB of visual crops, 390 MiB of SBI's).
    """

    detections: tuple[tuple[Face, ...], ...]
    crops: tuple[FaceCrop, ...]
    clips: tuple[LipsyncClip, ...]
    sbi_crops: tuple[SbiCrop, ...] = ()

    @property
    def any_face(self) -> bool:
        return any(self.detections)


NO_FACES = FaceResult((), (), ())
"""What an audio file (no picture) has of faces."""


# --- detection ---------------------------------------------------------------------------


def detector_canvas(width: int, height: int, size: int = DETECTOR_SIZE) -> tuple[int, int, float]:
    """The detector input for a ``width`` x ``height`` frame: ``(canvas w, canvas h, scale)``.

    The longer side is scaled to ``size``; the shorter one is padded up to the next
    multiple of 32 (YuNet's stride) instead of to ``size``: a 16:9 frame goes in as
    640x384 rather than 640x640, 40 % fewer pixels to send and to convolve, the same faces.
    """
    scale = size / max(width, height)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return -(-nw // 32) * 32, -(-nh // 32) * 32, scale


def letterbox(
    image: np.ndarray, out: np.ndarray | None = None, size: int = DETECTOR_SIZE
) -> tuple[np.ndarray, float]:
    """RGB uint8 ``[H, W, 3]`` -> BGR float32 ``[3, ch, cw]`` (see :func:`detector_canvas`).

    The frame is scaled to fit and placed top-left on black, so frame coordinates are
    detector coordinates divided by the scale (no offset to undo). ``out``, when given,
    is filled in place (one batch array, no copies).
    """
    h, w = image.shape[:2]
    cw, ch, scale = detector_canvas(w, h, size)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = (
        np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
        if (nw, nh) != (w, h)
        else image
    )
    if out is None:
        out = np.empty((3, ch, cw), dtype=np.float32)
    out[:, nh:, :] = 0
    out[:, :nh, nw:] = 0
    out[:, :nh, :nw] = resized[:, :, ::-1].transpose(2, 0, 1)
    return out, scale


def select_faces(
    boxes: np.ndarray,
    landmarks: np.ndarray,
    scores: np.ndarray,
    scale: float,
    min_score: float,
    max_faces: int,
    frame_size: tuple[int, int],
) -> tuple[Face, ...]:
    """One image's detector output (per prior) -> its kept faces in frame pixels."""
    kept = select(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(landmarks, dtype=np.float32).reshape(-1, 10),
        np.asarray(scores, dtype=np.float32).reshape(-1),
        score_threshold=min_score,
        iou=NMS_IOU,
        top_k=max_faces,
    )
    w, h = frame_size
    faces = []
    for box, lm, score in zip(kept.boxes / scale, kept.landmarks / scale, kept.scores, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = max(0.0, x1), min(float(w), x2)
        y1, y2 = max(0.0, y1), min(float(h), y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        faces.append(Face(box=(x1, y1, x2, y2), landmarks=lm.reshape(5, 2), score=float(score)))
    return tuple(faces)


DETECT_REQUEST_MAX_BYTES = 16 * 2**20
"""Input bytes of one detector request. Every frame is scaled up or down to the 640-pixel
canvas (up to 640x640, 4.7 MiB as float32); the gRPC client holds three copies of a request while sending it,
so a full batch of 16 square frames (a tiny GIF's) cost about 390 MiB of peak memory."""


def detect_batch(max_batch_size: int, frame_bytes: int) -> int:
    """Frames per detector request: the model's batch, fewer where they pass the byte cap."""
    return max(1, min(max(1, max_batch_size), DETECT_REQUEST_MAX_BYTES // max(1, frame_bytes)))


def detect(
    frames: Sequence[SampledFrame],
    client: InferClient,
    settings: Settings,
    progress: Callable[[float], None] | None = None,
) -> tuple[tuple[Face, ...], ...]:
    """Faces on every sampled frame, batched to the detector's ``max_batch_size``."""
    detector = model_spec(settings.face_model)
    image_in = detector.inputs[0].name
    out_boxes, out_lm, out_scores = (t.name for t in detector.outputs)
    found: list[tuple[Face, ...]] = []
    if not frames:
        return ()
    h, w = frames[0].image.shape[:2]
    cw, ch, _ = detector_canvas(w, h)
    batch = detect_batch(detector.max_batch_size, 3 * ch * cw * 4)
    buffer = np.empty((min(batch, len(frames)), 3, ch, cw), dtype=np.float32)
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        scales = [letterbox(f.image, buffer[j])[1] for j, f in enumerate(chunk)]
        out = client.infer(
            detector.name,
            {image_in: buffer[: len(chunk)]},
            [out_boxes, out_lm, out_scores],
        )
        for j, (frame, scale) in enumerate(zip(chunk, scales, strict=True)):
            found.append(
                select_faces(
                    out[out_boxes][j],
                    out[out_lm][j],
                    out[out_scores][j],
                    scale,
                    settings.face_min_score,
                    settings.max_faces_per_frame,
                    (frame.image.shape[1], frame.image.shape[0]),
                )
            )
        if progress is not None:
            progress(min(1.0, (start + len(chunk)) / max(1, len(frames))))
    return tuple(found)


# --- crops -------------------------------------------------------------------------------


def crop_geometry(face: Face, align: bool = True) -> CropGeometry:
    """The square MesoNet's authors cut around a face, from YuNet's five landmarks.

    MesoNet centres on the nose (mean of dlib's nose tip and bridge; YuNet gives the tip,
    and the bridge runs up towards the eyes, hence a quarter of the way to the eyes),
    takes ``2.2 * 1.3 * max(eye distance, eyes-to-mouth distance)`` as the side and turns
    the eyes-mouth axis upright. Measured on the GRID clips this framing gives Meso4_DF
    manipulation scores of 0.04-0.34 on real faces, against 0.05-0.88 for a box with a
    30 % margin. Landmarks that make no sense (outside a box twice the face) fall back to
    the box with a margin; tilts beyond 45 degrees are not trusted and left unrotated.
    """
    lm = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
    eyes = (lm[0] + lm[1]) / 2
    mouth = (lm[3] + lm[4]) / 2
    nose = 0.75 * lm[2] + 0.25 * eyes
    side = (
        max(float(np.linalg.norm(lm[0] - lm[1])), float(np.linalg.norm(mouth - eyes)))
        * MESO_K
        * MESO_L_FACTOR
    )
    cx, cy = face.center
    sane = (
        np.all(np.isfinite(lm))
        and 0.5 * face.size <= side <= 4 * face.size
        and abs(nose[0] - cx) <= face.size
        and abs(nose[1] - cy) <= face.size
    )
    if not sane:
        return CropGeometry(cx=cx, cy=cy, side=face.size * (1 + BOX_MARGIN), angle_rad=0.0)
    angle = 0.0
    if align:
        dx, dy = mouth - eyes
        angle = math.atan2(-float(dx), float(dy))
        if abs(angle) > math.radians(45):
            angle = 0.0
    return CropGeometry(cx=float(nose[0]), cy=float(nose[1]), side=side, angle_rad=angle)


def visual_crop(image: np.ndarray, geometry: CropGeometry, size: int = FACE_SIZE) -> np.ndarray:
    """The crop as RGB uint8 ``[size, size, 3]`` (one affine warp; outside the frame black)."""
    s = geometry.side / size
    c, sn = math.cos(geometry.angle_rad), math.sin(geometry.angle_rad)
    # Pillow's AFFINE maps each output pixel (u, v) to input (a u + b v + c0, d u + e v + f0).
    a, b, d, e = s * c, -s * sn, s * sn, s * c
    c0 = geometry.cx - (a + b) * size / 2
    f0 = geometry.cy - (d + e) * size / 2
    out = Image.fromarray(image).transform(
        (size, size),
        Image.Transform.AFFINE,
        (a, b, c0, d, e, f0),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(out)


def light_asd_box(face_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The frame region Light-ASD's crop keeps, as ``(x0, y0, x1, y1)``.

    Light-ASD cuts ``rows [cy - bs, cy + bs(1 + 2cs))``, ``cols [cx - bs(1 + cs), cx +
    bs(1 + cs))`` (bs = half the longer box side, cs = 0.4), resizes that to 224 and keeps
    the centre 112: in frame terms the middle half of the square, computed here directly.
    """
    x1, y1, x2, y2 = face_box
    bs = max(x2 - x1, y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cs = LIGHT_ASD_CROP_SCALE
    side = 2 * bs * (1 + cs)
    left, top = cx - bs * (1 + cs), cy - bs
    return (left + side / 4, top + side / 4, left + 3 * side / 4, top + 3 * side / 4)


def lipsync_crop(grey: np.ndarray, face_box: tuple[float, float, float, float]) -> np.ndarray:
    """One grey ``LIPSYNC_SIZE`` square crop, float32 0..255, as Light-ASD prepares it."""
    x0, y0, x1, y1 = light_asd_box(face_box)
    img = Image.fromarray(grey)
    out = img.transform(
        (LIPSYNC_SIZE, LIPSYNC_SIZE),
        Image.Transform.EXTENT,
        (x0, y0, x1, y1),
        resample=Image.Resampling.BILINEAR,
        fillcolor=LIGHT_ASD_PAD_GREY,
    )
    return np.asarray(out, dtype=np.float32)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def clip_boxes(
    start_box: tuple[float, float, float, float], end_box: tuple[float, float, float, float] | None
) -> list[tuple[float, float, float, float]]:
    """Per-frame boxes of a clip: interpolated towards ``end_box`` (the face one second on)."""
    if end_box is None or _iou(start_box, end_box) < TRACK_MIN_IOU:
        return [start_box] * LIPSYNC_FRAMES
    a, b = np.asarray(start_box), np.asarray(end_box)
    # frame j is at j/25 s; the end box is at 1 s (frame 25, one past the clip)
    boxes = []
    for j in range(LIPSYNC_FRAMES):
        x1, y1, x2, y2 = (float(v) for v in a + (b - a) * j / LIPSYNC_FPS)
        boxes.append((x1, y1, x2, y2))
    return boxes


def _nearest_frame(frames: Sequence[SampledFrame], t: float, tol_s: float) -> int | None:
    if not frames:
        return None
    i = min(range(len(frames)), key=lambda k: abs(frames[k].time_s - t))
    return i if abs(frames[i].time_s - t) < tol_s + 1e-6 else None


def _start_frame(frames: Sequence[SampledFrame], seg: LipsyncSegment, tol_s: float) -> int | None:
    """The sampled frame a clip starts on: the same source frame (the decoder picked both
    by the nearest-time rule from the same target), else the nearest one in time."""
    first = seg.frame_indices[0] if seg.frame_indices else None
    for i, frame in enumerate(frames):
        if frame.index == first:
            return i
    return _nearest_frame(frames, seg.start_s, tol_s)


def lipsync_clips(
    media: DecodedMedia, detections: Sequence[Sequence[Face]], audio_mfcc: np.ndarray | None
) -> tuple[LipsyncClip, ...]:
    """Lip-sync clips for the segments whose first frame shows a face."""
    if audio_mfcc is None:
        return ()
    per_clip = LIPSYNC_FRAMES * MFCC_PER_FRAME
    # A sampled frame lies up to half a source frame from its target time (more than half
    # a 25 fps frame when the source is slower than 25 fps).
    tol_s = max(0.5 / LIPSYNC_FPS, frame_duration_s(media.fps) / 2)
    clips = []
    for seg in media.segments:
        start = _start_frame(media.frames, seg, tol_s)
        if start is None or not detections[start]:
            continue
        nxt = _nearest_frame(media.frames, seg.start_s + LIPSYNC_FRAMES / LIPSYNC_FPS, tol_s)
        end_box = detections[nxt][0].box if nxt is not None and detections[nxt] else None
        video = _clip_video(seg, clip_boxes(detections[start][0].box, end_box))
        row = int(round(seg.start_s * LIPSYNC_FPS * MFCC_PER_FRAME))
        feats = audio_mfcc[row : row + per_clip]
        if feats.shape[0] < per_clip // 2:
            continue  # the audio track ends before this clip does
        if feats.shape[0] < per_clip:
            feats = np.concatenate(
                [feats, np.repeat(feats[-1:], per_clip - feats.shape[0], axis=0)]
            )
        clips.append(LipsyncClip(start_s=seg.start_s, video=video, mfcc=feats.astype(np.float32)))
    return tuple(clips)


def _clip_video(
    seg: LipsyncSegment, boxes: Sequence[tuple[float, float, float, float]]
) -> np.ndarray:
    return np.stack([lipsync_crop(seg.grey[j], boxes[j]) for j in range(LIPSYNC_FRAMES)])


# A face in the next sampled frame continues a track when its centre moved less than this
# many face sizes and its size changed by less than this factor (sampled at 1 fps, a head
# turns and moves; IoU alone loses it).
TRACK_MAX_SHIFT = 1.0
TRACK_MAX_SCALE = 2.0
# A track unseen for this many sampled frames ends.
TRACK_MAX_GAP = 2


def track_faces(detections: Sequence[Sequence[Face]]) -> list[list[int]]:
    """A track id for each face of each frame: greedy matching of each frame's faces to
    the tracks alive in the frames before it, nearest centre first."""
    ids: list[list[int]] = []
    last: dict[int, tuple[int, Face]] = {}  # track -> (frame position, face)
    next_id = 0
    for pos, faces in enumerate(detections):
        pairs = []
        for i, face in enumerate(faces):
            for track, (seen, prev) in last.items():
                if pos - seen > TRACK_MAX_GAP:
                    continue
                size = max(prev.size, 1.0)
                shift = math.dist(face.center, prev.center) / size
                ratio = max(face.size, 1.0) / size
                if shift <= TRACK_MAX_SHIFT and 1 / TRACK_MAX_SCALE <= ratio <= TRACK_MAX_SCALE:
                    pairs.append((shift, i, track))
        chosen: dict[int, int] = {}
        taken: set[int] = set()
        for _, i, track in sorted(pairs):
            if i not in chosen and track not in taken:
                chosen[i] = track
                taken.add(track)
        frame_ids = []
        for i, face in enumerate(faces):
            if i in chosen:
                track_id = chosen[i]
            else:
                track_id, next_id = next_id, next_id + 1
            last[track_id] = (pos, face)
            frame_ids.append(track_id)
        ids.append(frame_ids)
    return ids


def find_faces(
    media: DecodedMedia,
    client: InferClient,
    settings: Settings,
    speech: bool = True,
    progress: Callable[[float], None] | None = None,
) -> FaceResult:
    """Detect faces on the sampled frames, track them, and cut the visual crops (every
    face, up to ``max_faces_per_frame`` per frame) and the lip-sync clips.

    Args:
        media: the decoded video.
        client: reaches Triton's ``face_detector``.
        settings: score threshold and per-frame cap.
        speech: False when the audio track is silent: no lip-sync clips then.
        progress: called with 0..1 as detection batches complete.
    """
    found = face_crops(media, client, settings, progress)
    return with_clips(media, found, speech)


def face_crops(
    media: DecodedMedia,
    client: InferClient,
    settings: Settings,
    progress: Callable[[float], None] | None = None,
) -> FaceResult:
    """The first half of :func:`find_faces`: detections, tracks and visual crops, no
    lip-sync clips yet (they need the audio track and its speech)."""
    detections = detect(media.frames, client, settings, progress)
    tracks = track_faces(detections)
    # SBI's crops cost nothing unless its step reads them
    wide = any(t.name == SBI_FACES for t in for_settings(settings).inputs)
    count = sum(len(faces) for faces in detections)
    block = np.empty((count, 3, FACE_SIZE, FACE_SIZE), np.float32)
    sbi_block = np.empty((count if wide else 0, 3, SBI_SIZE, SBI_SIZE), np.uint8)
    crops: list[FaceCrop] = []
    sbi_crops: list[SbiCrop] = []
    for pos, (frame, faces) in enumerate(zip(media.frames, detections, strict=True)):
        for face, track in zip(faces, tracks[pos], strict=True):
            i = len(crops)
            geom = crop_geometry(face)
            np.divide(
                visual_crop(frame.image, geom).transpose(2, 0, 1), np.float32(255), out=block[i]
            )
            crops.append(
                FaceCrop(frame_pos=pos, face=face, geometry=geom, pixels=block[i], track=track)
            )
            if wide:
                sbi_crops.append(sbi_crop(frame.image, face.box, out=sbi_block[i]))
    return FaceResult(
        detections=detections, crops=tuple(crops), clips=(), sbi_crops=tuple(sbi_crops)
    )


def with_clips(media: DecodedMedia, found: FaceResult, speech: bool = True) -> FaceResult:
    """The second half of :func:`find_faces`: ``found`` with its lip-sync clips, cut from
    ``media`` (its audio track included); none when ``speech`` is False."""
    audio_mfcc = (
        mfcc(media.audio) if (speech and media.audio is not None and media.audio.size) else None
    )
    clips = lipsync_clips(media, found.detections, audio_mfcc) if found.crops else ()
    return replace(found, clips=clips)
