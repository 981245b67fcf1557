"""SBI's own crop (``dispatcher.sbi_crop``) and its Grad-CAM evidence.

- The crop: the authors' box (face box plus 1/8 of its width and height each side,
  truncated to integers as ``int()`` does, clamped) against boxes computed by hand on a
  real frame, resampled as ``cv2.resize`` does (checked against that formula written out
  in numpy: pixel centres aligned, edge pixels repeated, rounded, no anti-aliasing).
- Its map goes back over that region of the frame (``evidence.sbi_placement``).
- With a real Triton serving random-weight SBI: SBI is sent these 380 px crops of the
  frame (not the visual model's 256 px crop), in the sequential and the overlapped path;
  with sbi off none is cut; its heatmaps are stored as JPEGs and listed in the evidence
  when it runs, absent when it does not.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dfd.settings import Settings
from dfd.specs import SBI_SIZE
from dispatcher.evidence import overlay_maps, sbi_placement
from dispatcher.sbi_crop import sbi_box, sbi_crop


def cv2_linear(src: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize(src, (size, size), interpolation=INTER_LINEAR)`` in float: output pixel
    ``i`` reads input ``(i + 0.5) * in / out - 0.5``, clamped, edge pixels repeated."""

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = np.maximum((np.arange(size) + 0.5) * n / size - 0.5, 0.0)
        lo = np.floor(d).astype(int)
        return np.clip(lo, 0, n - 1), np.clip(lo + 1, 0, n - 1), d - lo

    y0, y1, fy = axis(src.shape[0])
    x0, x1, fx = axis(src.shape[1])
    s = src.astype(np.float64)
    fx3 = fx[None, :, None]
    top = s[y0][:, x0] * (1 - fx3) + s[y0][:, x1] * fx3
    bottom = s[y1][:, x0] * (1 - fx3) + s[y1][:, x1] * fx3
    return top * (1 - fy[:, None, None]) + bottom * fy[:, None, None]


@pytest.fixture(scope="module")
def astronaut(media_dir) -> np.ndarray:
    return np.asarray(Image.open(media_dir / "still" / "astronaut.png").convert("RGB"))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("face", "want"),
    [
        # w 119.8, h 160.6: 1/8 = 14.975, 20.075; int(155.625), int(305.375) + 1, ...
        ((170.6, 40.2, 290.4, 200.8), (155, 20, 306, 221)),
        # at the top-left corner: int(2 - 6) = -4 and int(3 - 7.125) = -4, clamped to 0
        ((2.0, 3.0, 50.0, 60.0), (0, 0, 57, 68)),
        # at the bottom-right: int(511 + 3.875) + 1 = 515 > 512, clamped to the frame
        ((480.0, 470.0, 511.0, 511.0), (476, 464, 512, 512)),
    ],
)
def test_the_crop_is_the_authors_box_resized_as_cv2_does(astronaut, face, want):
    assert sbi_box(face, (512, 512)) == want
    crop = sbi_crop(astronaut, face)
    assert crop.box == want
    assert crop.pixels.dtype == np.uint8 and crop.pixels.shape == (3, SBI_SIZE, SBI_SIZE)
    x0, y0, x1, y1 = want
    ref = cv2_linear(astronaut[y0:y1, x0:x1], SBI_SIZE).transpose(2, 0, 1)
    # rounded as OpenCV rounds: within half a level (a truncating resampler is off by 1)
    assert np.abs(crop.pixels - ref).max() <= 0.5 + 1e-3
    # unrotated and stretched, not squared: the region's corners are the crop's corners
    np.testing.assert_array_equal(crop.pixels[:, 0, 0], astronaut[y0, x0])
    np.testing.assert_array_equal(crop.pixels[:, -1, -1], astronaut[y1 - 1, x1 - 1])


@pytest.mark.unit
def test_a_large_face_is_shrunk_without_anti_aliasing():
    """A face larger than 380 px is sampled as cv2 samples it, not averaged: on a
    one-pixel checkerboard Pillow's smoothing ``resize`` gives near-uniform grey."""
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(board[:, :, None], 3, axis=2)
    crop = sbi_crop(image, (60.0, 60.0, 452.0, 452.0))
    x0, y0, x1, y1 = crop.box
    assert x1 - x0 > SBI_SIZE
    ref = cv2_linear(image[y0:y1, x0:x1], SBI_SIZE)
    assert np.abs(crop.pixels - ref.transpose(2, 0, 1)).max() <= 0.5 + 1e-3
    smooth = Image.fromarray(image[y0:y1, x0:x1]).resize((SBI_SIZE, SBI_SIZE))
    assert np.asarray(smooth).std() < 15 < 35 < crop.pixels.std()


@pytest.mark.unit
def test_the_map_lies_over_the_crops_region_of_the_frame():
    image = np.zeros((100, 120, 3), np.uint8)
    box = (10, 20, 50, 80)  # 40 x 60, stretched from the 380 x 380 crop
    out = np.asarray(overlay_maps(image, [sbi_placement(box)], [np.ones((12, 12))], 1.0))
    drawn = out.max(axis=2) > 0
    rows, cols = np.nonzero(drawn)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (20, 80, 10, 50)
    assert drawn[21:79, 11:49].all()


@pytest.mark.unit
def test_sbi_rides_in_the_face_requests_and_must_have_a_crop_per_face():
    from dfd.detectors import DETECTORS
    from dfd.ensemble import ensemble
    from dfd.specs import spec
    from dispatcher.infer import VideoItems, _empty, chunk_requests

    graph = ensemble(
        [DETECTORS["visual"], DETECTORS["sbi"]], {"visual": spec("meso4_df"), "sbi": spec("sbi")}
    )
    faces = np.zeros((3, 3, 256, 256), np.float32)
    own = np.full((3, 3, SBI_SIZE, SBI_SIZE), 7, np.uint8)
    none = (_empty("audio"), (), _empty("lipsync_video"), _empty("lipsync_mfcc"), ())

    def items(sbi_faces: np.ndarray) -> VideoItems:
        spans = ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0))
        return VideoItems(faces, spans, (0, 0, 0), *none, sbi_faces=sbi_faces)

    requests = chunk_requests(items(own), graph, max_items=2)
    assert [sorted(r) for r, _ in requests] == [["faces", "sbi_faces"]] * 2
    assert [len(r["sbi_faces"]) for r, _ in requests] == [2, 1]
    assert requests[0][0]["sbi_faces"].dtype == np.uint8  # uint8 on the wire, a quarter of float32
    with pytest.raises(ValueError, match="disagree on their item count"):
        chunk_requests(items(own[:0]), graph, max_items=2)


@pytest.mark.unit
def test_sbi_heatmaps_are_the_frames_sbi_scored_highest_each_face_over_its_own_crop():
    from dispatcher.evidence import sbi_heatmaps
    from dispatcher.faces import CropGeometry, Face, FaceCrop, FaceResult
    from dispatcher.media import DecodedMedia, SampledFrame
    from tests.dispatcher.test_evidence import MemoryStore

    frames = tuple(
        SampledFrame(i * 25, float(i), np.zeros((120, 160, 3), np.uint8)) for i in range(3)
    )
    media = DecodedMedia(frames, None, (), 160, 120, 1.0, 25.0, 3.0, "pyav")
    box = (40.0, 30.0, 100.0, 90.0)
    face = Face(box=box, landmarks=np.zeros((5, 2), np.float32), score=0.9)
    crops = tuple(
        FaceCrop(i, face, CropGeometry(70, 60, 80, 0.0), np.zeros((3, 256, 256), np.float32))
        for i in range(3)
    )
    own = tuple(sbi_crop(f.image, box) for f in frames)
    faces = FaceResult(tuple((face,) for _ in frames), crops, (), sbi_crops=own)
    maps = np.ones((3, 12, 12), np.float32)
    store = MemoryStore()
    urls = sbi_heatmaps("job", media, faces, maps, np.array([0.2, 0.9, 0.6]), store, 2)
    assert [u.split("?")[0].rsplit("/", 1)[-1] for u in urls] == [
        "heatmap_sbi_00_f25.jpg",  # SBI's highest score first
        "heatmap_sbi_01_f50.jpg",
    ]
    data, kind = store.objects["job/heatmap_sbi_00_f25.jpg"]
    assert kind == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).max(axis=2) > 40
    x0, y0, x1, y1 = own[1].box  # the map covers SBI's crop region, not only the face box
    assert picture[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].mean() > 0.9
    # nothing outside it (above it is the face's score label)
    assert not picture[y1 + 3 :].any() and not picture[:, : x0 - 3].any()
    assert not picture[:, x1 + 3 :].any()
    assert sbi_heatmaps("job", media, faces, None, None, store, 2) == []
    with pytest.raises(ValueError, match="SBI maps"):
        sbi_heatmaps("job", media, faces, maps[:2], np.array([0.2, 0.9]), store, 2)


# --- with Triton serving random-weight SBI -----------------------------------------------


class Recording:
    """A Triton client that keeps what each model was sent."""

    def __init__(self, client) -> None:
        self._client = client
        self.sent: list[tuple[str, dict[str, np.ndarray]]] = []

    def infer(self, model, inputs, outputs=None, *, version=None):
        self.sent.append((model, {k: np.array(v) for k, v in inputs.items()}))
        return self._client.infer(model, inputs, outputs, version=version)


def _settings(sbi_triton, tmp_path, detectors: str, overlap: bool) -> Settings:
    return Settings(
        data_dir=tmp_path / f"{detectors}-{overlap}",
        weights_dir=sbi_triton.weights_dir,
        detectors=detectors,
        decoder="pyav",
        overlap_stages=overlap,
        public_base_url="http://127.0.0.1:9",
    )


def _analyze(path, settings, client):
    from dispatcher.pipeline import analyze
    from dispatcher.store import LocalStore

    return analyze(path, settings, client, LocalStore(settings), job_id="sbi-job")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True])
def test_sbi_is_sent_its_own_crops_of_the_frame_and_its_heatmaps_are_evidence(
    overlap, sbi_triton, media_corpus, tmp_path
):
    from dispatcher.decode import decode
    from dispatcher.faces import face_crops
    from dispatcher.probe import probe

    settings = _settings(sbi_triton, tmp_path, "visual,sbi", overlap)
    client = Recording(sbi_triton.client)
    result = _analyze(media_corpus["grid_mpg"], settings, client)
    assert result.detectors["sbi"].score is not None

    # what SBI was sent: per face, the authors' box of YuNet's box cut from the frame
    media = decode(
        media_corpus["grid_mpg"], settings, probe(media_corpus["grid_mpg"], settings).duration_s
    )
    found = face_crops(media, sbi_triton.client, settings)
    assert found.crops and len(found.sbi_crops) == len(found.crops)
    # cut into one block each, whose rows are the crops (sent as they are, not copied)
    for cut in (found.crops, found.sbi_crops):
        block = cut[0].pixels.base
        assert len(block) == len(cut)
        assert all(
            c.pixels.base is block and np.shares_memory(c.pixels, block[i])
            for i, c in enumerate(cut)
        )
    want = []
    for crop, own in zip(found.crops, found.sbi_crops, strict=True):
        x0, y0, x1, y1 = crop.face.box
        w, h = x1 - x0, y1 - y0
        frame = media.frames[crop.frame_pos].image
        box = (
            max(0, int(x0 - w / 8)),
            max(0, int(y0 - h / 8)),
            min(frame.shape[1], int(x1 + w / 8) + 1),
            min(frame.shape[0], int(y1 + h / 8) + 1),
        )
        assert own.box == box
        want.append(cv2_linear(frame[box[1] : box[3], box[0] : box[2]], SBI_SIZE))
    expected = np.stack(want).transpose(0, 3, 1, 2)
    if overlap:  # the composing model called directly
        sent = [i["face"] for m, i in client.sent if m == "sbi"]
    else:  # the ensemble's own tensor for it
        sent = [i["sbi_faces"] for m, i in client.sent if m == "deepfake_ensemble"]
    got = np.concatenate(sent)
    assert got.dtype == np.uint8 and got.shape == (len(found.crops), 3, SBI_SIZE, SBI_SIZE)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3
    # and not the visual crop upsampled (the 256 px crop went to the visual model only)
    visual = np.stack([c.pixels for c in found.crops])
    up = np.stack(
        [
            np.asarray(
                Image.fromarray((v.transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
                    (SBI_SIZE, SBI_SIZE), Image.Resampling.BILINEAR
                )
            )
            for v in visual
        ]
    ).transpose(0, 3, 1, 2)
    assert np.abs(got.astype(float) - up).mean() > 10

    # its heatmaps: listed, stored, valid JPEGs of the frame, named by rank and frame
    urls = result.evidence.sbi_heatmaps
    assert 0 < len(urls) <= settings.evidence_top_k
    stored = {p.name: p for p in settings.data_dir.rglob("*-heatmap_sbi_*.jpg")}
    assert len(stored) == len(urls)
    for rank, url in enumerate(urls):
        name = url.split("?")[0].rsplit("/", 1)[-1]
        # the store's keys are "<random>-<name>"
        assert name.split("-", 1)[1].startswith(f"heatmap_sbi_{rank:02d}_f") and name in stored
        with Image.open(io.BytesIO(stored[name].read_bytes())) as img:
            assert img.format == "JPEG" and img.size == (media.width, media.height)
            img.verify()
    assert result.evidence.heatmaps  # the visual model's beside them


@pytest.mark.integration
@pytest.mark.slow
def test_with_sbi_off_no_380_crop_is_cut_and_no_sbi_heatmap_stored(
    sbi_triton, media_corpus, tmp_path
):
    from dispatcher.decode import decode
    from dispatcher.faces import face_crops
    from dispatcher.probe import probe

    # overlapped: the composing models are called directly, so the visual + sbi server
    # serves a visual-only analysis
    settings = _settings(sbi_triton, tmp_path, "visual", True)
    client = Recording(sbi_triton.client)
    result = _analyze(media_corpus["grid_mpg"], settings, client)
    assert "sbi" not in result.detectors and result.evidence.heatmaps
    assert result.evidence.sbi_heatmaps == []
    assert not list(settings.data_dir.rglob("*heatmap_sbi_*"))
    assert not any(m == "sbi" or "sbi_faces" in i for m, i in client.sent)
    media = decode(
        media_corpus["grid_mpg"], settings, probe(media_corpus["grid_mpg"], settings).duration_s
    )
    found = face_crops(media, sbi_triton.client, settings)
    assert found.crops and found.sbi_crops == ()
