"""ONNX export: every file agrees with its spec, batches dynamically, and is rebuilt only when stale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from dfd.errors import InternalError
from dfd.settings import Settings
from dfd.specs import SPECS, TensorSpec, spec
from export.onnx_export import (
    OPSET,
    check_against_spec,
    export_all,
    onnx_signature,
    run_onnx,
    shipped,
)

pytestmark = pytest.mark.unit


def test_every_checkpoint_is_exported(onnx_models):
    # all but those whose weights the user fetches (tests/export/test_ufd.py exports UFD's)
    assert set(onnx_models) == set(shipped())
    assert "ufd_clip_vitl14" in SPECS and "ufd_clip_vitl14" not in shipped()
    assert all(p.is_file() and p.name == f"{name}.onnx" for name, p in onnx_models.items())


@pytest.mark.parametrize("checkpoint", sorted(shipped()))
def test_exported_tensors_match_the_spec(onnx_models, checkpoint):
    model = spec(checkpoint)
    path = onnx_models[checkpoint]
    sig = onnx_signature(path)
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == [t.name for t in model.inputs]
    assert [o.name for o in graph.graph.output] == [t.name for t in model.outputs]
    for t in (*model.inputs, *model.outputs):
        dtype, dims = sig[t.name]
        assert dtype == t.dtype
        if model.max_batch_size > 0:
            assert isinstance(dims[0], str), f"{t.name}: batch axis must be dynamic"
            dims = dims[1:]
        assert len(dims) == len(t.dims)
        for got, want in zip(dims, t.dims, strict=True):
            assert isinstance(got, str) if want == -1 else got == want, (t.name, dims, t.dims)
    if "package" not in model.extra:  # ours; a packaged graph keeps its authors' opset
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    check_against_spec(path, model)


@pytest.mark.parametrize(
    "checkpoint", [c for c in sorted(shipped()) if SPECS[c].max_batch_size > 0 and c != "yunet_n"]
)
def test_batch_axis_is_really_dynamic(onnx_models, checkpoint):
    model = spec(checkpoint)
    rng = np.random.default_rng(0)
    inputs = {t.name: rng.uniform(0, 1, (3, *t.dims)).astype(np.float32) for t in model.inputs}
    outputs = run_onnx(onnx_models[checkpoint], inputs)
    for t in model.outputs:
        assert outputs[t.name].shape == (3, *t.dims)


def test_check_against_spec_catches_a_wrong_tensor(onnx_models):
    model = spec("meso4_df")
    wrong = type(model)(
        **{**model.__dict__, "outputs": (TensorSpec("score", "FP32", (2,)), model.outputs[1])}
    )
    with pytest.raises(InternalError, match="score"):
        check_against_spec(onnx_models["meso4_df"], wrong)


def test_up_to_date_exports_are_skipped_and_stale_ones_rebuilt(tmp_path: Path, weights_dir: Path):
    settings = Settings(data_dir=tmp_path, weights_dir=weights_dir)
    path = export_all(settings, ["silero_vad"])["silero_vad"]
    stamp = path.with_suffix(".onnx.stamp")
    first = path.stat().st_mtime_ns
    assert export_all(settings, ["silero_vad"])["silero_vad"].stat().st_mtime_ns == first
    stamp.write_text("stale\n")
    path.write_bytes(b"not onnx")
    export_all(settings, ["silero_vad"])
    onnx.checker.check_model(onnx.load(str(path)))
    assert stamp.read_text().strip() != "stale"


def test_built_once_builds_on_a_new_stamp_only_and_a_failed_build_keeps_the_old_file(tmp_path):
    from export.onnx_export import built_once

    out = tmp_path / "models" / "m.onnx"
    calls: list[str] = []

    def build(data: bytes) -> Callable[[], bytes]:
        def run() -> bytes:
            calls.append(data.decode())
            return data

        return run

    assert built_once(out, "a", build(b"one")) == out and out.read_bytes() == b"one"
    built_once(out, "a", build(b"two"))  # same stamp: not built
    assert calls == ["one"] and out.read_bytes() == b"one"
    built_once(out, "a", build(b"two"), force=True)
    assert calls == ["one", "two"] and out.read_bytes() == b"two"

    def broken() -> bytes:
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        built_once(out, "b", broken)
    assert out.read_bytes() == b"two" and out.with_suffix(".onnx.stamp").read_text() == "a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.stamp"]
