"""Evidence a person can look at: suspicious frames, heatmaps over the faces, a timeline.

- Thumbnails: the ``evidence_top_k`` most suspicious sampled frames (by their visual score,
  then the fused score of their second) as JPEG, face boxes drawn and scored.
- Heatmaps: the visual model's 8x8 Grad-CAM map of each of those frames' faces, upsampled
  bilinearly over the face crop, colour-mapped and alpha-blended onto the frame through
  the inverse of the crop's affine warp (so a tilted head gets a tilted map).
- SBI heatmaps (when sbi runs): its 12x12 Grad-CAM map of each face of the
  ``evidence_top_k`` frames it scored most suspicious, drawn the same way over its own
  crop's region of the frame (the face box with its margins, stretched back from
  380x380), each face boxed with its SBI score.
- Timeline: one point per sampled second (``dfd.schemas.TimelinePoint``) and a PNG chart of
  it drawn with Pillow.
- Track thumbnails: for each face track (at most ``max_faces_per_frame``: the one shown,
  then the most suspicious), one JPEG of its most suspicious crop (its highest visual
  score), the 256 px face the visual model scored, so every face can be seen beside its
  row, not only the one the frames show. One small JPEG per track (~2.6 ms, ~8.5 KB
  each on real crops, at most ``max_faces_per_frame`` of them).
- Spectrogram: for media with scored speech, the track's spectrogram with every scored
  window marked by its audio score (red above the threshold): where the voice was judged
  and how.

Everything goes through the evidence store and comes back as signed URLs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dfd.schemas import Evidence, FaceTrack, TimelinePoint
from dfd.settings import Settings
from dfd.specs import AUDIO_RATE, FACE_SIZE, SBI_SIZE
from dispatcher.aggregate import ScoredItems, SecondScore, suspicious_order
from dispatcher.faces import CropGeometry, FaceCrop, FaceResult
from dispatcher.media import DecodedMedia

THUMB_MAX_SIDE = 640
JPEG_QUALITY = 85
HEAT_ALPHA = 0.55  # opacity of the hottest heatmap cell
CHART_SIZE = (900, 320)
SERIES_COLOURS = {
    "score": (20, 20, 20),
    "visual": (31, 119, 180),
    "audio": (255, 127, 14),
    "lipsync": (44, 160, 44),
}


class EvidenceStore(Protocol):
    """What evidence needs from ``dispatcher.store`` (local folder or S3)."""

    def put(self, job_id: str, name: str, data: bytes, content_type: str) -> str: ...

    def url(self, key: str) -> str: ...


def timeline_points(points: Sequence[SecondScore]) -> list[TimelinePoint]:
    """The schema's timeline from aggregated seconds (scores rounded to 4 places)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(min(max(x, 0.0), 1.0), 4)

    return [
        TimelinePoint(
            frame=p.frame,
            time_s=round(p.time_s, 3),
            score=r(p.score),
            visual=r(p.modalities.get("visual")),
            audio=r(p.modalities.get("audio")),
            lipsync=r(p.modalities.get("lipsync")),
        )
        for p in points
    ]


# --- drawing -----------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _score_colour(score: float | None) -> tuple[int, int, int]:
    """Green (authentic) to red (manipulated); grey when unknown."""
    if score is None:
        return (160, 160, 160)
    s = min(max(score, 0.0), 1.0)
    return (int(255 * s), int(200 * (1 - s)), 40)


def colormap(values: np.ndarray) -> np.ndarray:
    """A jet-like colour map: ``[H, W]`` in [0, 1] -> RGB uint8 ``[H, W, 3]``, one channel
    at a time in float32 (a 15-minute spectrogram is 23 million values)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    out = np.empty((*v.shape, 3), np.uint8)
    for channel, centre in enumerate((3, 2, 1)):  # red, green, blue
        level = np.clip(1.5 - np.abs(4 * v - centre), 0, 1)
        np.multiply(level, 255, out=level)
        out[..., channel] = level  # truncated, as astype(np.uint8) truncates
    return out


# Where a map lies on its frame: the crop's side in pixels and the affine map from frame
# pixel (x, y) to crop pixel (u, v), as Pillow's AFFINE coefficients (a, b, c, d, e, f):
# u = a x + b y + c, v = d x + e y + f.
Placement = tuple[int, tuple[float, float, float, float, float, float]]


def visual_placement(g: CropGeometry) -> Placement:
    """The visual crop's placement: the inverse of its rotated square warp."""
    k = FACE_SIZE / g.side
    c, s = math.cos(g.angle_rad), math.sin(g.angle_rad)
    a, b, d, e = k * c, k * s, -k * s, k * c
    return FACE_SIZE, (
        a,
        b,
        FACE_SIZE / 2 - a * g.cx - b * g.cy,
        d,
        e,
        FACE_SIZE / 2 - d * g.cx - e * g.cy,
    )


def sbi_placement(box: tuple[int, int, int, int]) -> Placement:
    """SBI's crop's placement: its frame region ``[x0, x1) x [y0, y1)`` stretched to
    380 x 380, unrotated."""
    x0, y0, x1, y1 = box
    kx, ky = SBI_SIZE / (x1 - x0), SBI_SIZE / (y1 - y0)
    return SBI_SIZE, (kx, 0.0, -kx * x0, 0.0, ky, -ky * y0)


def overlay_maps(
    image: np.ndarray, placements: Sequence[Placement], maps: Sequence[np.ndarray], norm: float
) -> Image.Image:
    """``image`` with each map drawn over its crop's region of the frame.

    Args:
        image: the frame, RGB uint8.
        placements: where each map's crop came from (:func:`visual_placement`,
            :func:`sbi_placement`).
        maps: one map per crop (>= 0), upsampled bilinearly over the crop.
        norm: the value drawn fully hot (the video's largest map value), so maps of
            different frames are comparable.
    """
    base = Image.fromarray(image).convert("RGBA")
    for (size, coeffs), cam in zip(placements, maps, strict=True):
        values = np.clip(np.asarray(cam, dtype=np.float32) / max(norm, 1e-12), 0.0, 1.0)
        up = np.asarray(
            Image.fromarray(values.astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.BILINEAR
            )
        )
        rgba = np.dstack([colormap(up), (np.clip(up, 0, 1) * HEAT_ALPHA * 255).astype(np.uint8)])
        layer = Image.fromarray(rgba, mode="RGBA")
        warped = layer.transform(
            base.size,
            Image.Transform.AFFINE,
            coeffs,
            resample=Image.Resampling.BILINEAR,
            fillcolor=(0, 0, 0, 0),
        )
        base = Image.alpha_composite(base, warped)
    return base.convert("RGB")


def heatmap_overlay(
    image: np.ndarray, crops: Sequence[FaceCrop], maps: Sequence[np.ndarray], norm: float
) -> Image.Image:
    """``image`` with each face's visual map drawn over its crop region (through the
    inverse of the crop's affine warp, so a tilted head gets a tilted map)."""
    return overlay_maps(image, [visual_placement(c.geometry) for c in crops], maps, norm)


def draw_faces(
    image: Image.Image, crops: Sequence[FaceCrop], scores: Sequence[float | None]
) -> Image.Image:
    """Face boxes coloured and labelled by their visual score."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font = _font(max(12, out.size[0] // 40))
    for crop, score in zip(crops, scores, strict=True):
        x1, y1, x2, y2 = crop.face.box
        colour = _score_colour(score)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        if score is not None:
            draw.text(
                (x1 + 2, max(0, y1 - font.size - 4) if hasattr(font, "size") else y1),
                f"{score:.2f}",
                fill=colour,
                font=font,
            )
    return out


def _shrink(image: Image.Image, max_side: int = THUMB_MAX_SIDE) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize(
        (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
        Image.Resampling.BILINEAR,
    )


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def timeline_chart(
    points: Sequence[TimelinePoint], threshold: float, size: tuple[int, int] = CHART_SIZE
) -> bytes:
    """A PNG line chart of the timeline: fused score and each modality over time."""
    w, h = size
    left, right, top, bottom = 48, 120, 16, 36
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(12)
    pw, ph = w - left - right, h - top - bottom
    t_max = max([p.time_s for p in points] + [1.0])

    def xy(t: float, v: float) -> tuple[float, float]:
        return left + pw * t / t_max, top + ph * (1 - v)

    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = xy(0, v)[1]
        draw.line((left, y, left + pw, y), fill=(230, 230, 230))
        draw.text((6, y - 7), f"{v:.2f}", fill=(90, 90, 90), font=font)
    for k in range(int(t_max) + 1):
        if int(t_max) <= 20 or k % math.ceil(t_max / 20) == 0:
            x = xy(k, 0)[0]
            draw.text((x - 4, top + ph + 6), f"{k}", fill=(90, 90, 90), font=font)
    draw.text((left + pw / 2 - 20, h - 16), "time (s)", fill=(90, 90, 90), font=font)
    ty = xy(0, threshold)[1]
    for x in range(left, left + pw, 8):  # dashed threshold line
        draw.line((x, ty, min(x + 4, left + pw), ty), fill=(200, 0, 0))
    draw.rectangle((left, top, left + pw, top + ph), outline=(120, 120, 120))
    for i, (key, colour) in enumerate(SERIES_COLOURS.items()):
        series = [(p.time_s, getattr(p, key)) for p in points]
        width = 3 if key == "score" else 2
        run: list[tuple[float, float]] = []
        for t, v in [*series, (0.0, None)]:
            if v is None:
                if len(run) == 1:
                    x, y = run[0]
                    draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
                elif run:
                    draw.line(run, fill=colour, width=width)
                run = []
            else:
                run.append(xy(t, v))
        ly = top + 10 + 18 * i
        draw.line((left + pw + 12, ly, left + pw + 32, ly), fill=colour, width=3)
        draw.text(
            (left + pw + 38, ly - 7),
            "fused" if key == "score" else key,
            fill=(40, 40, 40),
            font=font,
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


SPECTRO_HEIGHT = 200  # frequency rows drawn (0 .. 8 kHz)
SPECTRO_MAX_WIDTH = 1200


def spectrogram(
    audio: np.ndarray, n_fft: int = 512, hop: int = 160, chunk: int = 4096
) -> np.ndarray:
    """Power in dB, float32 ``[n_fft // 2 + 1, frames]`` (Hann window, 10 ms hop at 16 kHz),
    ``chunk`` frames at a time: all at once, a 15-minute track's framed copy, its complex
    transform and their powers took about 1 GB of the worker for a 1200-pixel picture."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    frames = 1 + (audio.size - n_fft) // hop
    window = np.hanning(n_fft).astype(np.float32)
    out = np.empty((n_fft // 2 + 1, frames), np.float32)
    for start in range(0, frames, chunk):
        count = min(chunk, frames - start)
        index = np.arange(n_fft)[None, :] + hop * (start + np.arange(count))[:, None]
        power = np.abs(np.fft.rfft(audio[index] * window, axis=1)) ** 2
        out[:, start : start + count] = (10 * np.log10(power + 1e-10)).T
    return out


def spectrogram_chart(
    audio: np.ndarray, windows: ScoredItems | None, threshold: float, font_size: int = 12
) -> bytes:
    """A PNG of the track's spectrogram with each scored window marked by its score."""
    norm = spectrogram(audio)
    top_db = float(norm.max())
    norm -= top_db - 80.0  # the top 80 dB, in place
    norm /= 80.0
    norm = np.clip(norm, 0.0, 1.0, out=norm)[::-1]  # high frequencies up
    duration = audio.size / AUDIO_RATE
    width = int(min(SPECTRO_MAX_WIDTH, max(300, 100 * duration)))
    picture = Image.fromarray(colormap(norm)).resize(
        (width, SPECTRO_HEIGHT), Image.Resampling.BILINEAR
    )
    band, left, bottom = 28, 48, 22
    img = Image.new("RGB", (left + width + 8, band + SPECTRO_HEIGHT + bottom), (255, 255, 255))
    img.paste(picture, (left, band))
    draw = ImageDraw.Draw(img)
    font = _font(font_size)
    for khz in (0, 2, 4, 6, 8):
        y = band + SPECTRO_HEIGHT * (1 - khz / 8)
        draw.text(
            (4, min(y, band + SPECTRO_HEIGHT - 12) - 6), f"{khz} kHz", fill=(90, 90, 90), font=font
        )
    step = max(1, math.ceil(duration / 12))
    for k in range(0, int(duration) + 1, step):
        x = left + width * k / max(duration, 1e-9)
        draw.text((x - 4, band + SPECTRO_HEIGHT + 4), f"{k}s", fill=(90, 90, 90), font=font)
    if windows is not None:
        for score, (a, b) in zip(
            np.asarray(windows.scores).reshape(-1), windows.spans, strict=True
        ):
            x0 = left + width * a / max(duration, 1e-9)
            x1 = left + width * min(b, duration) / max(duration, 1e-9)
            colour = _score_colour(float(score))
            draw.rectangle((x0, 4, x1 - 1, band - 4), fill=colour)
            if float(score) > threshold:  # outline the suspicious window on the spectrogram
                draw.rectangle(
                    (x0, band, x1 - 1, band + SPECTRO_HEIGHT - 1), outline=(255, 0, 0), width=2
                )
            draw.text((x0 + 3, 6), f"{float(score):.2f}", fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --- the stage ---------------------------------------------------------------------------


def _shown_track(faces: FaceResult, visual_scores: np.ndarray | None) -> int | None:
    if not faces.crops:
        return None
    if visual_scores is None:
        return faces.crops[0].track
    items = ScoredItems(
        np.asarray(visual_scores, np.float32).reshape(-1),
        tuple((0.0, 0.0) for _ in faces.crops),
        tuple(c.track for c in faces.crops),
    )
    return items.most_suspicious_track()


def face_tracks(
    media: DecodedMedia, faces: FaceResult, visual_scores: np.ndarray | None
) -> list[FaceTrack]:
    """Every face track: where it was seen and its mean visual score."""
    out: dict[int, list[int]] = {}
    for i, crop in enumerate(faces.crops):
        out.setdefault(crop.track, []).append(i)
    tracks = []
    for track, idx in out.items():
        times = [media.frames[faces.crops[i].frame_pos].time_s for i in idx]
        score = (
            round(float(np.mean([visual_scores[i] for i in idx])), 4)
            if visual_scores is not None
            else None
        )
        tracks.append(
            FaceTrack(
                track=track,
                frames=len(idx),
                first_s=round(min(times), 3),
                last_s=round(max(times), 3),
                score=score,
            )
        )
    return tracks


def _crop_jpeg(crop: FaceCrop) -> bytes:
    """The crop as the visual model saw it (RGB ``[3, S, S]`` in [0, 1]) as a JPEG."""
    pixels = np.clip(np.asarray(crop.pixels, np.float32), 0.0, 1.0)
    rgb = np.ascontiguousarray((pixels.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))
    return _jpeg(Image.fromarray(rgb))


def track_thumbnails(
    job_id: str,
    media: DecodedMedia,
    faces: FaceResult,
    visual_scores: np.ndarray | None,
    tracks: Sequence[FaceTrack],
    shown: int | None,
    store: EvidenceStore,
    limit: int,
) -> list[FaceTrack]:
    """``tracks`` with a thumbnail of each one's most suspicious crop, for at most
    ``limit`` tracks: ``shown`` first, then by mean score and length (the others keep
    none, so a crowd costs at most ``limit`` JPEGs).

    The crop pictured is the track's highest visual score (its most confident detection
    when visual was unused); ties go to the earliest.
    """
    best: dict[int, int] = {}
    for i, crop in enumerate(faces.crops):
        j = best.get(crop.track)
        if visual_scores is not None:
            better = j is None or float(visual_scores[i]) > float(visual_scores[j])
        else:
            better = j is None or crop.face.score > faces.crops[j].face.score
        if better:
            best[crop.track] = i
    order = sorted(
        (t for t in tracks if t.track in best),
        key=lambda t: (t.track != shown, -(t.score if t.score is not None else -1.0), -t.frames),
    )
    chosen = {t.track for t in order[: max(limit, 0)]}
    out = []
    for t in tracks:
        if t.track not in chosen:
            out.append(t)
            continue
        crop = faces.crops[best[t.track]]
        frame = media.frames[crop.frame_pos]
        key = store.put(
            job_id, f"track_{t.track:02d}_f{frame.index}.jpg", _crop_jpeg(crop), "image/jpeg"
        )
        out.append(
            t.model_copy(
                update={"thumbnail": store.url(key), "thumbnail_s": round(frame.time_s, 3)}
            )
        )
    return out


def sbi_heatmaps(
    job_id: str,
    media: DecodedMedia,
    faces: FaceResult,
    maps: np.ndarray | None,
    scores: np.ndarray | None,
    store: EvidenceStore,
    top_k: int,
) -> list[str]:
    """SBI's Grad-CAM overlays (``heatmap_sbi_<rank>_f<frame>.jpg``) of the ``top_k``
    frames it scored most suspicious (a frame by its faces' highest SBI score, ties to
    the earliest): each face's map over its SBI crop's region, the face boxed with its
    SBI score. None when SBI did not run (no maps or no SBI crops).

    Raises:
        ValueError: the maps or scores are not one per face crop.
    """
    if maps is None or scores is None or not len(maps) or not faces.sbi_crops:
        return []
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not len(maps) == len(scores) == len(faces.sbi_crops) == len(faces.crops):
        raise ValueError(
            f"evidence: {len(maps)} SBI maps and {len(scores)} scores for "
            f"{len(faces.sbi_crops)} SBI crops of {len(faces.crops)} faces"
        )
    by_frame: dict[int, list[int]] = {}
    for i, crop in enumerate(faces.crops):
        by_frame.setdefault(crop.frame_pos, []).append(i)
    ranked = sorted(by_frame, key=lambda pos: (-max(float(scores[i]) for i in by_frame[pos]), pos))
    norm = float(np.max(maps))
    urls = []
    for rank, pos in enumerate(ranked[: max(top_k, 0)]):
        idx = by_frame[pos]
        frame = media.frames[pos]
        placements = [sbi_placement(faces.sbi_crops[i].box) for i in idx]
        overlay = overlay_maps(frame.image, placements, [maps[i] for i in idx], norm)
        boxed = draw_faces(overlay, [faces.crops[i] for i in idx], [float(scores[i]) for i in idx])
        key = store.put(
            job_id,
            f"heatmap_sbi_{rank:02d}_f{frame.index}.jpg",
            _jpeg(_shrink(boxed)),
            "image/jpeg",
        )
        urls.append(store.url(key))
    return urls


def build_evidence(
    job_id: str,
    media: DecodedMedia,
    faces: FaceResult,
    heatmaps: np.ndarray,
    visual_scores: np.ndarray | None,
    points: Sequence[SecondScore],
    store: EvidenceStore,
    settings: Settings,
    audio_windows: ScoredItems | None = None,
    sbi_maps: np.ndarray | None = None,
    sbi_scores: np.ndarray | None = None,
) -> Evidence:
    """Render and store the evidence of one video; returns it with signed URLs.

    Args:
        job_id: the store's prefix for this job.
        media: decoded frames (thumbnails are drawn on them).
        faces: the crops, in the order the ensemble scored them.
        heatmaps: ``[len(faces.crops), 8, 8]``.
        visual_scores: per crop P(manipulated) (None when visual was unused).
        points: the per-second timeline, one per sampled frame.
        store: where the files go.
        settings: top-k, threshold, URL lifetime, tracks pictured (``max_faces_per_frame``).
        audio_windows: the audio detector's scored windows (a spectrogram is drawn when
            there are any).
        sbi_maps: SBI's ``[len(faces.crops), 12, 12]`` maps over its own crops
            (``faces.sbi_crops``), when it ran; drawn by :func:`sbi_heatmaps`.
        sbi_scores: SBI's score of each face crop, when it ran.
    """
    timeline = timeline_points(points)
    tracks = face_tracks(media, faces, visual_scores)
    # The frames shown are those of the most suspicious face (the one the verdict used).
    shown = _shown_track(faces, visual_scores)
    tracks = track_thumbnails(
        job_id, media, faces, visual_scores, tracks, shown, store, settings.max_faces_per_frame
    )
    by_frame: dict[int, list[int]] = {}
    for i, crop in enumerate(faces.crops):
        if shown is None or crop.track == shown:
            by_frame.setdefault(crop.frame_pos, []).append(i)

    thumbs: list[str] = []
    heats: list[str] = []
    norm = float(heatmaps.max()) if heatmaps.size else 1.0
    ranked = [i for i in suspicious_order(points) if points[i].score is not None or i in by_frame]
    if not media.frames:
        ranked = []  # an audio file: its points are seconds, not frames
    for rank, pos in enumerate(ranked[: settings.evidence_top_k]):
        frame = media.frames[pos]
        idx = by_frame.get(pos, [])
        crops = [faces.crops[i] for i in idx]
        scores = [float(visual_scores[i]) if visual_scores is not None else None for i in idx]
        thumb = _shrink(draw_faces(Image.fromarray(frame.image), crops, scores))
        key = store.put(job_id, f"thumb_{rank:02d}_f{frame.index}.jpg", _jpeg(thumb), "image/jpeg")
        thumbs.append(store.url(key))
        if crops and heatmaps.size:
            overlay = _shrink(heatmap_overlay(frame.image, crops, [heatmaps[i] for i in idx], norm))
            key = store.put(
                job_id, f"heatmap_{rank:02d}_f{frame.index}.jpg", _jpeg(overlay), "image/jpeg"
            )
            heats.append(store.url(key))

    chart_url = None
    if timeline:
        key = store.put(
            job_id, "timeline.png", timeline_chart(timeline, settings.threshold), "image/png"
        )
        chart_url = store.url(key)
    spectro_url = None
    if audio_windows is not None and media.audio is not None and media.audio.size:
        png = spectrogram_chart(media.audio, audio_windows, settings.threshold)
        spectro_url = store.url(store.put(job_id, "spectrogram.png", png, "image/png"))
    return Evidence(
        face_track=shown,
        tracks=tracks,
        thumbnails=thumbs,
        heatmaps=heats,
        timeline=timeline,
        timeline_chart=chart_url,
        spectrogram=spectro_url,
        expires_in_s=settings.evidence_url_ttl_s,
        sbi_heatmaps=sbi_heatmaps(
            job_id, media, faces, sbi_maps, sbi_scores, store, settings.evidence_top_k
        ),
    )
