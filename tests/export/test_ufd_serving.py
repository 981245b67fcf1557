"""UniversalFakeDetect served by the real Triton: its repository entry, its config, and
whole frames through ``deepfake_ensemble`` as the dispatcher sends them.

The real export needs OpenAI's CLIP checkpoint, which cannot be fetched here. The small
random-weight encoder of ``test_ufd`` has the real spec's tensors (224 px frames in, one
score and logit out), so its ONNX file stands in for the real one: it is put where the
export writes, with the stamp the export would write, and the repository build takes it
as current, exactly as it takes an earlier export of the real checkpoint. A CLIP archive
(the small encoder's) lies where ``dfd models pull ufd`` puts OpenAI's, so the detector
counts as installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from dfd.ensemble import ALL_INPUTS, for_settings
from dfd.settings import Settings
from dfd.specs import spec
from dispatcher.frames import clip_frame
from dispatcher.infer import VideoItems, run_ensemble
from export.onnx_export import run_onnx, stamp
from export.triton_repo import RepositoryOptions, build_repository, model_config, parse
from tests.export.test_ufd import export_small, save_openai_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHECKPOINT = "ufd_clip_vitl14"


def _no(name: str) -> np.ndarray:
    t = ALL_INPUTS[name]
    return np.zeros((0, *t.dims[1:]), t.numpy_dtype)


def test_ufd_is_served_through_the_ensemble(tmp_path, weights_dir, monkeypatch):
    import dataclasses
    import hashlib

    from cli.local_triton import LocalTriton
    from dispatcher.triton_client import TritonClient
    from export.weights import manifest

    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir, detectors="ufd")
    data, model = export_small(weights_dir)
    # "installed": a CLIP archive where `dfd models pull ufd` puts OpenAI's (this one the
    # small encoder's; the export is not rerun, its stamp being current)
    archive = settings.weights_cache_dir / "clip" / "ViT-L-14.pt"
    archive.parent.mkdir(parents=True)
    save_openai_archive(model.encoder, archive)
    # ... checked as the real one would be, against the manifest's digest: this one's
    row = "clip/ViT-L-14.pt"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(manifest(), row, dataclasses.replace(manifest()[row], sha256=digest))
    onnx_path = settings.onnx_dir / f"{CHECKPOINT}.onnx"
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path.write_bytes(data)
    onnx_path.with_suffix(".onnx.stamp").write_text(stamp(CHECKPOINT) + "\n")

    repository = build_repository(settings, "cpu")
    s = spec(CHECKPOINT)
    config = parse((repository / "ufd" / "config.pbtxt").read_text())
    expected = model_config(s, "cpu", RepositoryOptions(intra_op_threads=config_threads(config)))
    assert config == expected
    assert (repository / "ufd" / "1" / "model.onnx").read_bytes() == data
    graph = for_settings(settings)
    assert [step.detector.name for step in graph.steps] == ["ufd"]
    assert [t.name for t in graph.inputs] == ["frames"]

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(3)]
    frames = np.stack([clip_frame(i) for i in images])
    items = VideoItems(
        faces=_no("faces"),
        face_spans=(),
        face_tracks=(),
        audio=_no("audio"),
        audio_spans=(),
        lipsync_video=_no("lipsync_video"),
        lipsync_mfcc=_no("lipsync_mfcc"),
        lipsync_spans=(),
        frames=frames,
        frame_spans=((0.0, 1.0), (1.0, 2.0), (2.0, 3.0)),
    )
    want = run_onnx(onnx_path, {"frame": frames})["score"].reshape(-1)

    server = LocalTriton(settings, repository)
    server.start()
    client = TritonClient(server.grpc_url, timeout_s=120.0, retries=2, ensemble=graph)
    try:
        out = run_ensemble(items, client, settings, ensemble=graph)
        direct = client.infer("ufd", {"frame": frames}, ["score", "logit"])
    finally:
        client.close()
        server.stop()
    scored = out.items["ufd"]
    assert scored is not None and scored.spans == items.frame_spans
    np.testing.assert_allclose(scored.scores, want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(direct["score"]).reshape(-1), want, atol=1e-5)
    assert np.ptp(want) > 0  # three different frames, three different scores


def config_threads(config) -> int:  # noqa: ANN001 - a protobuf message
    return int(config.parameters["intra_op_threads"].string_value)
