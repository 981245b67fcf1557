"""The generated Triton repository agrees with the specs and with the ONNX files, both targets."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from dfd.ensemble import ENSEMBLE_NAME
from dfd.errors import ConfigurationError
from dfd.specs import ModelSpec
from export import triton_repo
from export.triton_repo import (
    HOST_FILE,
    STAMP_FILE,
    RepositoryOptions,
    build_repository,
    model_config,
    parse,
    repository_current,
    role_specs,
)

_ORT_DTYPES = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}
_TRT = importlib.util.find_spec("tensorrt") is not None


def _dtype(value: int) -> str:
    return mc.DataType.Name(value).removeprefix("TYPE_")


def _assert_config_matches_spec(
    config: mc.ModelConfig, s: ModelSpec, *, batching: bool = True
) -> None:
    assert config.name == s.name
    assert config.max_batch_size == s.max_batch_size
    for declared, tensors in ((config.input, s.inputs), (config.output, s.outputs)):
        assert [(t.name, _dtype(t.data_type), tuple(t.dims)) for t in declared] == [
            (t.name, t.dtype, t.dims) for t in tensors
        ]
    assert list(config.version_policy.specific.versions) == [s.version]
    assert sum(g.count for g in config.instance_group) == s.instance_count
    if s.batching is not None and batching:
        db = config.dynamic_batching
        assert tuple(db.preferred_batch_size) == s.batching.preferred_batch_sizes
        assert db.max_queue_delay_microseconds == s.batching.max_queue_delay_us
        # Any queue policy stalls the last requests of a burst 0.5 s in Triton 2.51.
        assert not db.HasField("default_queue_policy")
        assert max(s.batching.preferred_batch_sizes) <= s.max_batch_size
    else:
        assert not config.HasField("dynamic_batching")
    (warmup,) = config.model_warmup
    assert set(warmup.inputs) == {t.name for t in s.inputs}
    for t in s.inputs:
        dims = list(warmup.inputs[t.name].dims)
        assert len(dims) == len(t.dims) and all(d > 0 for d in dims)
        assert all(w == d for w, d in zip(dims, t.dims, strict=True) if d != -1)


def _assert_config_matches_onnx(config: mc.ModelConfig, onnx_path: Path) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batched = config.max_batch_size > 0
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert sorted(t.name for t in declared) == sorted(a.name for a in actual), config.name
        by_name = {a.name: a for a in actual}
        for t in declared:
            onnx = by_name[t.name]
            assert _ORT_DTYPES[onnx.type] == _dtype(t.data_type), (config.name, t.name)
            dims = [d if isinstance(d, int) else -1 for d in onnx.shape]
            if batched:
                assert dims[0] == -1, f"{config.name}.{t.name}: ONNX batch axis is not dynamic"
                dims = dims[1:]
            assert len(dims) == len(t.dims), (config.name, t.name)
            for want, got in zip(t.dims, dims, strict=True):
                assert got == -1 or want == got, (config.name, t.name, list(t.dims), dims)


@pytest.mark.unit
@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_rendered_configs_follow_the_specs(target):
    from dfd.settings import Settings

    for role, s in role_specs(Settings()).items():
        config = model_config(s, target, RepositoryOptions())
        _assert_config_matches_spec(config, s)
        kind = mc.ModelInstanceGroup.KIND_CPU if target == "cpu" else mc.ModelInstanceGroup.KIND_GPU
        assert [g.kind for g in config.instance_group] == [kind], role


@pytest.mark.unit
def test_checkpoints_override_their_role():
    from dfd.settings import Settings

    roles = role_specs(Settings(), ["mesoinception_f2f", "aasist_l"])
    assert roles["visual"].checkpoint == "mesoinception_f2f"
    assert roles["audio"].checkpoint == "aasist_l"
    assert roles["lipsync"].checkpoint == "light_asd"
    assert set(roles) == {"face_detector", "vad", "visual", "audio", "lipsync"}
    with pytest.raises(ConfigurationError, match="not a role of these settings"):
        role_specs(Settings(detectors="audio"), ["meso4_f2f"])


@pytest.mark.unit
def test_the_voice_encoder_is_served_beside_the_speech_gate_when_its_check_is_on():
    from dfd.ensemble import for_settings
    from dfd.settings import Settings

    settings = Settings(detectors="visual,audio,lipsync,voice")
    roles = role_specs(settings)
    assert roles["voice"].checkpoint == "resemblyzer"
    # called by the dispatcher on the speech segments, not a step of the ensemble
    assert "voice" not in [s.model.name for s in for_settings(settings, roles).steps]
    assert "voice" not in role_specs(Settings(detectors="visual,audio,lipsync"))
    config = model_config(roles["voice"], "gpu", RepositoryOptions(), plan=False)
    _assert_config_matches_spec(config, roles["voice"])


@pytest.mark.integration
@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_repository_on_disk_agrees_with_specs_and_onnx(triton, tmp_path, target, caplog):
    settings = triton.settings
    with caplog.at_level(logging.WARNING, logger="export.triton_repo"):
        repo = build_repository(settings, target, destination=tmp_path / target)
    roles = role_specs(settings)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted([*roles, ENSEMBLE_NAME])
    for role, s in roles.items():
        config = parse((repo / role / "config.pbtxt").read_text())
        _assert_config_matches_spec(config, s)
        version = repo / role / str(s.version)
        onnx = settings.onnx_dir / f"{s.checkpoint}.onnx"
        if target == "cpu":
            assert config.backend == "python"
            assert (version / "model.py").read_bytes() == HOST_FILE.read_bytes()
            assert int(config.parameters["intra_op_threads"].string_value) >= 1
        elif not _TRT:
            assert config.backend == "onnxruntime"
            (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
            assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
        if (version / "model.onnx").exists():
            assert (version / "model.onnx").read_bytes() == onnx.read_bytes()
            _assert_config_matches_onnx(config, version / "model.onnx")
    if target == "gpu" and not _TRT:
        assert "TensorRT is missing" in caplog.text
    ensemble = parse((repo / ENSEMBLE_NAME / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0


@pytest.mark.integration
def test_unchanged_build_is_skipped_and_changes_rebuild(triton, tmp_path):
    settings = triton.settings
    repo = build_repository(settings, "cpu", destination=tmp_path / "repo")
    stamp = (repo / STAMP_FILE).read_text()
    config = repo / "visual" / "config.pbtxt"
    before = config.stat().st_mtime_ns
    assert build_repository(settings, "cpu", destination=tmp_path / "repo") == repo
    assert config.stat().st_mtime_ns == before

    unbatched = build_repository(
        settings,
        "cpu",
        options=RepositoryOptions(dynamic_batching=False),
        destination=tmp_path / "repo",
    )
    assert (unbatched / STAMP_FILE).read_text() != stamp
    visual = parse((unbatched / "visual" / "config.pbtxt").read_text())
    assert not visual.HasField("dynamic_batching") and visual.max_batch_size == 64
    assert not list(tmp_path.glob("repo.*")), "staging or old folders left behind"


@pytest.mark.integration
def test_cpu_threads_come_from_the_setting_unless_the_options_say(triton, tmp_path):
    settings = triton.settings.model_copy(update={"triton_cpu_threads": 1})

    def threads(repo) -> set[str]:
        return {
            parse((repo / role / "config.pbtxt").read_text())
            .parameters["intra_op_threads"]
            .string_value
            for role in role_specs(settings)
        }

    assert threads(build_repository(settings, "cpu", destination=tmp_path / "a")) == {"1"}
    options = RepositoryOptions(intra_op_threads=3)
    assert threads(
        build_repository(settings, "cpu", options=options, destination=tmp_path / "b")
    ) == {"3"}


def _own_copy(triton, tmp_path, **update):
    """Settings on ``tmp_path`` holding a copy of the session's ONNX files and repository."""
    settings = triton.settings.model_copy(update={"data_dir": tmp_path / "data", **update})
    shutil.copytree(triton.settings.onnx_dir, settings.onnx_dir)
    shutil.copytree(triton.settings.repository_dir("cpu"), settings.repository_dir("cpu"))
    return settings


@pytest.mark.integration
def test_repository_current_follows_the_settings_and_the_files(triton, tmp_path):
    settings = _own_copy(triton, tmp_path)
    assert repository_current(settings, "cpu")
    assert not repository_current(settings, "gpu")
    # dfd serve kept serving meso4_df while results named the model the settings asked for
    changed = settings.model_copy(update={"visual_model": "mesoinception_df"})
    assert not repository_current(changed, "cpu")
    threads = settings.model_copy(update={"triton_cpu_threads": 3})
    assert not repository_current(threads, "cpu")
    onnx = settings.repository_dir("cpu") / "visual" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    assert not repository_current(settings, "cpu")


@pytest.mark.integration
def test_a_damaged_tree_is_rebuilt_and_force_rebuilds(triton, tmp_path):
    settings = _own_copy(triton, tmp_path)
    repo = build_repository(settings, "cpu")
    onnx = repo / "visual" / "1" / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[:1000])  # truncated: Triton would fail to load it
    assert build_repository(settings, "cpu") == repo
    assert onnx.read_bytes() == good
    before = (repo / STAMP_FILE).stat().st_mtime_ns
    build_repository(settings, "cpu", force=True)
    assert (repo / STAMP_FILE).stat().st_mtime_ns != before


@pytest.mark.integration
def test_an_interrupted_build_leaves_nothing_and_old_leftovers_are_swept(
    triton, tmp_path, monkeypatch
):
    settings = _own_copy(triton, tmp_path)
    parent = settings.repository_dir("cpu").parent
    (parent / "cpu.staging-999999").mkdir()  # a build killed earlier
    (parent / "cpu.old-999999").mkdir()
    copies = []

    def interrupted(src, dst, *args, **kwargs):
        copies.append(dst)
        if len(copies) == 3:
            raise KeyboardInterrupt
        return real_copy(src, dst, *args, **kwargs)

    real_copy = shutil.copyfile
    monkeypatch.setattr(triton_repo.shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_repository(settings, "cpu", force=True)
    monkeypatch.setattr(triton_repo.shutil, "copyfile", real_copy)
    assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) == ["cpu"]
    assert repository_current(settings, "cpu")


@pytest.mark.integration
def test_concurrent_builds_take_turns(triton, tmp_path):
    settings = _own_copy(triton, tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda _: build_repository(settings, "cpu", force=True), range(2)))
    assert done == [settings.repository_dir("cpu")] * 2
    parent = settings.repository_dir("cpu").parent
    assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) == ["cpu"]
    assert repository_current(settings, "cpu")


@pytest.mark.unit
def test_unknown_target_is_refused(tmp_path):
    from dfd.errors import ConfigurationError
    from dfd.settings import Settings

    with pytest.raises(ConfigurationError, match="cpu or gpu"):
        build_repository(Settings(data_dir=tmp_path), "tpu")  # type: ignore[arg-type]


@pytest.mark.unit
@pytest.mark.skipif(_TRT, reason="TensorRT is installed here")
def test_tensorrt_plan_without_tensorrt_says_what_is_missing(tmp_path):
    from dfd.errors import ConfigurationError
    from export.triton_repo import _tensorrt_available

    with pytest.raises(ConfigurationError, match="tensorrt"):
        _tensorrt_available("tensorrt_plan")
