"""TritonClient against the real server: same outputs as onnxruntime, batching, errors, retries."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cli.local_triton import LocalTriton
from dfd.errors import ConfigurationError, InputError, UpstreamUnavailableError
from dfd.ports import free_port
from dfd.specs import VAD_CONTEXT, VAD_FRAME, VAD_STATE
from dispatcher import triton_client as tc
from dispatcher.triton_client import TritonClient
from export.triton_repo import role_specs
from tests.export import model_inputs


def _inputs(media_dir, role: str) -> dict[str, np.ndarray]:
    if role == "face_detector":
        return {"image": model_inputs.detector_image(media_dir)}
    if role == "visual":
        return {"face": model_inputs.faces(media_dir, 4)}
    if role == "audio":
        return {"waveform": model_inputs.waveforms(media_dir, 5)}
    if role == "lipsync":
        video, mfcc = model_inputs.lipsync_clip(media_dir)
        return {"video": video, "mfcc": mfcc}
    # the speech gate: one block of 32 ms frames and a zero LSTM state
    rng = np.random.default_rng(0)
    return {
        "input": (rng.standard_normal((8, VAD_CONTEXT + VAD_FRAME)) * 0.1).astype(np.float32),
        "h": np.zeros((1, 1, VAD_STATE), np.float32),
        "c": np.zeros((1, 1, VAD_STATE), np.float32),
    }


def _count(stats: dict, kind: str) -> int:
    """Requests counted under ``inference_stats.<kind>`` (JSON leaves out zeros)."""
    return int(stats.get("inference_stats", {}).get(kind, {}).get("count", 0))


def settled_statistics(client, model: str, until=None, timeout_s: float = 10.0) -> dict:
    """The model's statistics once they stop changing (two reads 0.1 s apart agree) and
    ``until(stats)`` holds: Triton records a request's statistics after sending its
    response, so a read right after the last response may miss some (once 19 of 32)."""
    deadline = time.monotonic() + timeout_s
    last = client.model_statistics(model)
    while True:
        time.sleep(0.1)
        stats = client.model_statistics(model)
        if stats == last and (until is None or until(stats)):
            return stats
        if time.monotonic() > deadline:
            return stats  # the caller's assertions say what is missing
        last = stats


@pytest.mark.integration
@pytest.mark.parametrize("role", ["face_detector", "visual", "audio", "lipsync", "vad"])
def test_every_model_matches_onnxruntime_on_real_inputs(triton, media_dir, role):
    s = role_specs(triton.settings)[role]
    inputs = _inputs(media_dir, role)
    got = triton.client.infer(role, inputs)
    want = model_inputs.ort_run(triton.settings.onnx_dir / f"{s.checkpoint}.onnx", inputs)
    assert set(got) == {t.name for t in s.outputs}
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=f"{role}.{name}")
    only = triton.client.infer(role, inputs, outputs=[s.outputs[0].name])
    assert list(only) == [s.outputs[0].name]


@pytest.mark.integration
def test_concurrent_requests_are_dynamically_batched(triton, media_dir):
    client = triton.client
    face = model_inputs.faces(media_dir, 1)
    before = settled_statistics(client, "visual")
    n = 32
    with ThreadPoolExecutor(max_workers=n) as pool:
        scores = list(pool.map(lambda _: client.infer("visual", {"face": face})["score"], range(n)))
    after = settled_statistics(
        client, "visual", until=lambda s: _count(s, "success") - _count(before, "success") >= n
    )
    requests = _count(after, "success") - _count(before, "success")
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    print(f"visual: {requests} requests -> {executions} executions")
    assert requests == n
    assert executions < n
    assert all(np.allclose(s, scores[0], atol=1e-5) for s in scores)


_FACE = (1, 3, 256, 256)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"face": np.zeros((1, 3, 128, 128), np.float32)},
            r"visual.face: expected shape \[batch, 3, 256, 256\]",
        ),
        ({"face": np.zeros(_FACE, np.float64)}, "visual.face: expected dtype float32, got float64"),
        ({"face": np.zeros((0, 3, 256, 256), np.float32)}, "visual.face: empty batch"),
        (
            {"face": np.zeros((65, 3, 256, 256), np.float32)},
            "batch of 65 is over max_batch_size 64",
        ),
        ({"faces": np.zeros(_FACE, np.float32)}, r"missing \['face'\]"),
        ({"face": np.full(_FACE, np.nan, np.float32)}, "NaN"),
    ],
    ids=["shape", "dtype", "empty", "oversized", "name", "nan"],
)
def test_bad_inputs_fail_before_sending_with_clear_errors(triton, inputs, message):
    before = settled_statistics(triton.client, "visual")
    with pytest.raises(InputError, match=message):
        triton.client.infer("visual", inputs)
    after = settled_statistics(triton.client, "visual")
    assert _count(after, "fail") == _count(before, "fail")
    assert after.get("inference_count") == before.get("inference_count")


def _raw_infer(url: str, model: str, name: str, array: np.ndarray, dtype: str):
    client = grpcclient.InferenceServerClient(url)
    try:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        return client.infer(model, [tensor], client_timeout=60)
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("array", "dtype", "message"),
    [
        (np.zeros((1, 3, 128, 128), np.float32), "FP32", "unexpected shape"),
        (np.zeros(_FACE, np.float64), "FP64", "data-type"),
        (np.zeros((65, 3, 256, 256), np.float32), "FP32", "batch-size must be <= 64"),
        (np.zeros((0, 3, 256, 256), np.float32), "FP32", "byte size mismatch"),
    ],
    ids=["shape", "dtype", "oversized", "empty"],
)
def test_server_refuses_bad_raw_requests_and_stays_ready(triton, media_dir, array, dtype, message):
    with pytest.raises(InferenceServerException) as info:
        _raw_infer(triton.grpc_url, "visual", "face", array, dtype)
    assert "INVALID_ARGUMENT" in str(info.value.status())
    assert message in info.value.message()
    assert triton.client.is_ready() and triton.client.is_ready("visual")
    out = triton.client.infer("visual", {"face": model_inputs.faces(media_dir, 1)})
    assert out["score"].shape == (1, 1)


@pytest.mark.integration
def test_server_side_rejection_maps_to_input_error(triton):
    client = TritonClient(triton.grpc_url, timeout_s=30, retries=3)
    client.models = {}  # skip client-side validation: let the server judge
    try:
        with pytest.raises(InputError, match="triton visual: request rejected"):
            client.infer("visual", {"face": np.zeros((1, 3, 128, 128), np.float32)})
        with pytest.raises(ConfigurationError, match="does not serve it"):
            client.infer("no_such_model", {"x": np.zeros((1,), np.float32)})
    finally:
        client.close()


@pytest.mark.integration
def test_unreachable_server_is_retried_then_unavailable(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(tc.time, "sleep", sleeps.append)
    client = TritonClient(f"127.0.0.1:{free_port()}", timeout_s=5, retries=3, backoff_s=0.1)
    try:
        with pytest.raises(UpstreamUnavailableError, match="after 4 attempts"):
            client.infer("vad", _inputs(None, "vad"))
        assert sleeps == [0.1, 0.2, 0.4]
        assert not client.is_ready()
    finally:
        client.close()


@pytest.mark.integration
def test_stopped_server_becomes_unavailable_and_a_restarted_one_is_found(triton, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(triton.repository / "vad", repo / "vad")
    server = LocalTriton(triton.settings, repo, ready_timeout_s=60).start()
    client = TritonClient(server.grpc_url, timeout_s=10, retries=2, backoff_s=0.05)
    try:
        assert client.infer("vad", _inputs(None, "vad"))["speech_probs"].shape == (8,)
        server.stop()
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailableError, match="unavailable"):
            client.infer("vad", _inputs(None, "vad"))
        assert time.monotonic() - started < 10
    finally:
        client.close()
        server.stop()


@pytest.mark.integration
def test_deadline_is_not_retried_and_maps_to_unavailable(triton, media_dir, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(tc.time, "sleep", sleeps.append)
    client = TritonClient(triton.grpc_url, timeout_s=0.001, retries=3)
    try:
        with pytest.raises(UpstreamUnavailableError, match="deadline"):
            client.infer("audio", {"waveform": model_inputs.waveforms(media_dir, 8)})
    finally:
        client.close()
    assert sleeps == []
    assert triton.client.is_ready("audio")


@pytest.mark.integration
def test_concurrent_detector_requests_of_different_sizes_are_answered_each_right(triton, media_dir):
    # The host concatenates only requests whose non-batch shapes agree; the others run apart.
    s = role_specs(triton.settings)["face_detector"]
    onnx = triton.settings.onnx_dir / f"{s.checkpoint}.onnx"
    images = [model_inputs.detector_image(media_dir, size) for size in (640, 320, 640, 480, 320)]
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        results = list(
            pool.map(lambda image: triton.client.infer("face_detector", {"image": image}), images)
        )
    for image, got in zip(images, results, strict=True):
        want = model_inputs.ort_run(onnx, {"image": image})
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-3, err_msg=name)
