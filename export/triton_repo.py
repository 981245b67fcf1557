"""Generates the Triton model repository from the model specs (never hand-copied).

``build_repository(settings, "cpu" | "gpu")`` writes ``settings.repository_dir(target)``:

    <repository>/
      face_detector/config.pbtxt   1/model.onnx (+ model.py on cpu)
      vad/ and one folder per enabled detector (visual/ audio/ lipsync/ ...): same layout
      deepfake_ensemble/config.pbtxt  1/   (ensemble_config.ensemble)
      .build-stamp.json               hash of everything the build read

Every ``config.pbtxt`` is derived from ``dfd.specs``: tensor names, dims, dtypes,
``max_batch_size``, dynamic batching (preferred sizes, bounded queue delay),
instance groups, version policy and warm-up. The two renderings differ only in how a
model is executed:

- ``cpu``: Triton's python backend hosting onnxruntime; the host is the committed
  ``model_repository/python_onnx/model.py``, copied beside each ONNX file.
- ``gpu``: ``backend: "onnxruntime"`` with the TensorRT execution provider in FP16 and
  ``KIND_GPU`` instances; or, when the ``tensorrt`` Python package is importable, FP16
  ``tensorrt_plan`` engines for the fixed-shape models (visual, audio, lipsync).

A build whose inputs (configs, ONNX bytes, host code) hash to the stamp already in the
folder is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import model_repository.python_onnx as python_onnx
from dfd.detectors import enabled, scorers
from dfd.ensemble import for_settings
from dfd.errors import ConfigurationError
from dfd.settings import Settings
from dfd.specs import ModelSpec, spec

log = logging.getLogger(__name__)

Target = Literal["cpu", "gpu"]
Engine = Literal["auto", "onnxruntime", "tensorrt_plan"]

# The cpu host, found through its package so that a non-editable install finds it too
# (importing the package does not import model.py, which needs Triton's python backend).
HOST_FILE = Path(python_onnx.__file__).resolve().parent / "model.py"
STAMP_FILE = ".build-stamp.json"
# Roles that stay on onnxruntime with the TRT provider when plans are built for every
# detector: the face detector (free height and width), the speech gate and the voice
# encoder (evidence only; its LSTM is not worth an engine).
ONNXRUNTIME_ROLES = ("face_detector", "vad", "voice")
# Shape the face detector is warmed up with (the dispatcher letterboxes to 640x640).
_DETECTOR_WARMUP_HW = (640, 640)


@dataclass(frozen=True)
class RepositoryOptions:
    """How a repository is rendered beyond what the specs say.

    Attributes:
        dynamic_batching: False renders the same models without a dynamic_batching block
            (max_batch_size kept), each request executed alone: the benchmark's baseline.
        intra_op_threads: threads per instance on ``cpu`` (a single item's operators are
            split over them, a batch's items are split over them); None:
            ``DFD_TRITON_CPU_THREADS``, else all cores, at most 4.
        ort_max_batch: ``cpu`` only: the largest batch one onnxruntime call runs; merged
            batches run in chunks of this size (0: no limit). On the 2-core reference
            machine no batch is cheaper per item than one item: Meso4 costs 1.46, 1.87,
            2.13, 2.12 ms of CPU per item at batch 1, 4, 16, 32 (one thread; its
            activations outgrow the caches), AASIST a flat 142-145 ms, and a batch of 32
            AASIST windows needs several GiB. So merged requests run one by one: batching
            still saves Triton's per-request scheduling and IPC. Raise it on machines where
            onnxruntime gains from batches (``python -m benchmarks.bench_ort`` measures it).
            See python_onnx/model.py and model_repository/README.md.
        engine: ``gpu`` only: ``auto`` builds TensorRT plans when TensorRT is importable.
    """

    dynamic_batching: bool = True
    intra_op_threads: int | None = None
    ort_max_batch: int = 1
    engine: Engine = "auto"


def role_specs(
    settings: Settings, checkpoints: Sequence[str] | None = None
) -> dict[str, ModelSpec]:
    """The spec serving each role: the face detector, the speech gate, the voice encoder
    when its check is on, and every enabled detector (``DFD_DETECTORS``) as the settings
    choose them, overridden by ``checkpoints``."""
    chosen = {"face_detector": spec(settings.face_model), "vad": spec("silero_vad")}
    for d in scorers(settings):
        chosen[d.name] = spec(d.checkpoint(settings))
    for d in enabled(settings):  # detectors measured by the dispatcher (mouth sync)
        if not d.scorer:
            chosen.setdefault(spec(d.checkpoint(settings)).name, spec(d.checkpoint(settings)))
    for checkpoint in checkpoints or ():
        s = spec(checkpoint)
        if s.name not in chosen:
            raise ConfigurationError(
                f"model repository: {checkpoint} serves {s.name!r}, which is not a role of "
                f"these settings ({', '.join(chosen)}); enable its detector (DFD_DETECTORS)"
            )
        chosen[s.name] = s
    return chosen


# --- config rendering ---------------------------------------------------------------


def _tensor(t, message) -> None:  # noqa: ANN001 - protobuf messages are untyped
    message.name = t.name
    message.data_type = mc.DataType.Value(f"TYPE_{t.dtype}")
    message.dims.extend(t.dims)


def _warmup_dims(s: ModelSpec, dims: tuple[int, ...]) -> list[int]:
    if s.name == "face_detector":
        return [dims[0], *_DETECTOR_WARMUP_HW]
    # Unbatched models with variable item counts are warmed up with one item.
    return [1 if d == -1 else d for d in dims]


def model_config(
    s: ModelSpec, target: Target, options: RepositoryOptions, *, plan: bool = False
) -> mc.ModelConfig:
    """The ``ModelConfig`` of one role model, derived from its spec."""
    config = mc.ModelConfig(name=s.name, max_batch_size=s.max_batch_size)
    for t in s.inputs:
        _tensor(t, config.input.add())
    for t in s.outputs:
        _tensor(t, config.output.add())
    config.version_policy.specific.versions.append(s.version)
    if s.batching is not None and options.dynamic_batching:
        batching = config.dynamic_batching
        batching.preferred_batch_size.extend(s.batching.preferred_batch_sizes)
        batching.max_queue_delay_microseconds = s.batching.max_queue_delay_us
        # No default_queue_policy: in Triton 2.51 any queue policy (max_queue_size, or a
        # timeout) makes the dynamic batcher miss the wake-up for the last requests of a
        # burst, which then sit in the queue for its 500 ms idle wait (measured: 8 of 12
        # bursts of 32 crops stalled 0.5 s with one, 0 of 12 without; reproduce with
        # `python -m benchmarks.probe_queue_policy`). Load is bounded upstream instead: a
        # worker sends one request at a time, and every client call carries a deadline.
    group = config.instance_group.add()
    group.count = s.instance_count
    if target == "cpu":
        config.backend = "python"
        group.kind = mc.ModelInstanceGroup.KIND_CPU
        config.parameters["intra_op_threads"].string_value = str(_threads(options))
        config.parameters["onnx_file"].string_value = "model.onnx"
        config.parameters["ort_max_batch"].string_value = str(options.ort_max_batch)
    else:
        group.kind = mc.ModelInstanceGroup.KIND_GPU
        if plan:
            config.backend = "tensorrt"
            config.platform = "tensorrt_plan"
            config.default_model_filename = "model.plan"
        else:
            config.backend = "onnxruntime"
            config.default_model_filename = "model.onnx"
            accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accel.name = "tensorrt"
            accel.parameters["precision_mode"] = "FP16"
            accel.parameters["max_workspace_size_bytes"] = str(1 << 30)
    warmup = config.model_warmup.add()
    warmup.name = f"{s.name}_warmup"
    warmup.batch_size = 1 if s.max_batch_size > 0 else 0
    for t in s.inputs:
        data = warmup.inputs[t.name]
        data.data_type = mc.DataType.Value(f"TYPE_{t.dtype}")
        data.dims.extend(_warmup_dims(s, t.dims))
        data.random_data = True  # random data exercises the real kernels
    return config


def render(config: mc.ModelConfig, header: str = "") -> str:
    """``config.pbtxt`` text, with an optional ``#`` comment header."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []
    return "\n".join(lines) + ("\n" if lines else "") + text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    """Reads a ``config.pbtxt`` back (tests compare it with the specs)."""
    return text_format.Parse(text, mc.ModelConfig())


_GENERATED = "Generated by `dfd models build` from dfd/specs.py; do not edit."


# --- building -----------------------------------------------------------------------


def _onnx_files(settings: Settings, roles: Mapping[str, ModelSpec]) -> dict[str, Path]:
    """ONNX file per role; ``export_all`` re-exports only those whose stamp is stale."""
    from export.onnx_export import export_all

    exported = export_all(settings, checkpoints=[s.checkpoint for s in roles.values()])
    paths = {
        role: Path(exported.get(s.checkpoint, settings.onnx_dir / f"{s.checkpoint}.onnx"))
        for role, s in roles.items()
    }
    for role, path in paths.items():
        if not path.is_file():
            raise ConfigurationError(
                f"model repository: ONNX for role {role!r} not found at {path}"
            )
    return paths


def _tensorrt_available(engine: Engine) -> bool:
    if engine == "onnxruntime":
        return False
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        if engine == "tensorrt_plan":
            raise ConfigurationError(
                "gpu repository: engine tensorrt_plan needs the `tensorrt` Python package "
                "(pip install tensorrt from NVIDIA's index); it is not installed"
            ) from exc
        log.warning(
            "TensorRT is missing (no `tensorrt` Python package): rendering the gpu repository "
            "with the onnxruntime backend and its TensorRT execution provider (FP16) instead "
            "of tensorrt_plan engines"
        )
        return False
    return True


def build_plan(onnx_path: Path, plan_path: Path, s: ModelSpec) -> None:
    """Builds an FP16 TensorRT engine with one profile spanning batch 1..max_batch_size."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigurationError(f"TensorRT: cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = max(s.batching.preferred_batch_sizes) if s.batching else s.max_batch_size
    for t in s.inputs:
        profile.set_shape(t.name, (1, *t.dims), (opt, *t.dims), (s.max_batch_size, *t.dims))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ConfigurationError(f"TensorRT: building the engine for {onnx_path} failed")
    plan_path.write_bytes(bytes(engine))


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def build_repository(
    settings: Settings,
    target: Target,
    checkpoints: Sequence[str] | None = None,
    *,
    options: RepositoryOptions | None = None,
    destination: Path | None = None,
    force: bool = False,
) -> Path:
    """Writes the Triton repository for ``target`` and returns its folder.

    Args:
        settings: where ONNX files are and the repository goes, which checkpoints serve.
        target: ``cpu`` (python backend + onnxruntime) or ``gpu``.
        checkpoints: checkpoints overriding the settings' choice for their roles.
        options: rendering options (dynamic batching off for the benchmark baseline).
        destination: folder to write instead of ``settings.repository_dir(target)``.
        force: rebuild even when the folder is current.

    Returns:
        The repository folder, ready for ``tritonserver --model-repository``.
    """
    from ensemble_config.ensemble import ensemble_config, ensemble_header

    options = _with_settings(options or RepositoryOptions(), settings)
    if target not in ("cpu", "gpu"):
        raise ConfigurationError(f"model repository: target must be cpu or gpu, got {target!r}")
    roles = role_specs(settings, checkpoints)
    onnx = _onnx_files(settings, roles)
    plans = target == "gpu" and _tensorrt_available(options.engine)

    texts = {
        role: render(
            model_config(s, target, options, plan=plans and role not in ONNXRUNTIME_ROLES),
            _GENERATED,
        )
        for role, s in roles.items()
    }
    graph = for_settings(settings, roles)
    ensemble = ensemble_config(graph)
    texts[ensemble.name] = render(ensemble, f"{_GENERATED}\n{ensemble_header(graph)}")
    host = HOST_FILE.read_bytes()
    stamp = _digest(
        [target.encode(), repr(options).encode(), str(plans).encode(), host]
        + [texts[k].encode() for k in sorted(texts)]
        + [onnx[r].read_bytes() for r in sorted(onnx)]
    )

    folder = Path(destination or settings.repository_dir(target))
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per repository (`dfd serve` and `make models` may overlap):
    # the second waits, then finds the first's tree current.
    with _build_lock(folder):
        _remove_leftovers(folder)
        if force:
            log.info("model repository %s: rebuilding as asked (--force)", folder)
        elif _intact(folder, stamp):
            log.info("model repository %s is current; not rebuilt", folder)
            return folder
        staging = folder.with_name(f"{folder.name}.staging-{os.getpid()}")
        try:
            _write_tree(staging, texts, ensemble.name, roles, onnx, plans, target)
            (staging / STAMP_FILE).write_text(
                json.dumps(
                    {
                        "digest": stamp,
                        "target": target,
                        "plans": plans,
                        "models": {r: s.tag for r, s in roles.items()},
                        "intra_op_threads": _threads(options) if target == "cpu" else None,
                        # Sizes of what was written: a damaged tree is not "current".
                        "files": {
                            str(p.relative_to(staging)): p.stat().st_size
                            for p in sorted(staging.rglob("*"))
                            if p.is_file()
                        },
                    },
                    indent=2,
                )
            )
            # Swap in the new tree whole, so a reader never sees half a repository.
            old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
            if folder.exists():
                folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("model repository %s written (%s)", folder, target)
    return folder


def _write_tree(staging, texts, ensemble_name, roles, onnx, plans, target) -> None:  # noqa: ANN001
    """The repository's folders and files under ``staging``."""
    shutil.rmtree(staging, ignore_errors=True)
    for name, text in texts.items():
        (staging / name).mkdir(parents=True)
        (staging / name / "config.pbtxt").write_text(text)
    (staging / ensemble_name / "1").mkdir()
    for role, s in roles.items():
        version = staging / role / str(s.version)
        version.mkdir()
        if plans and role not in ONNXRUNTIME_ROLES:
            build_plan(onnx[role], version / "model.plan", s)
            continue
        shutil.copyfile(onnx[role], version / "model.onnx")
        if target == "cpu":
            shutil.copyfile(HOST_FILE, version / "model.py")


def _threads(options: RepositoryOptions) -> int:
    return options.intra_op_threads or min(4, os.cpu_count() or 1)


def _with_settings(options: RepositoryOptions, settings: Settings) -> RepositoryOptions:
    """``options`` with what they leave open taken from the settings (DFD_TRITON_CPU_THREADS)."""
    if options.intra_op_threads is None and settings.triton_cpu_threads is not None:
        return replace(options, intra_op_threads=settings.triton_cpu_threads)
    return options


def _read_stamp(folder: Path) -> dict | None:
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _intact(folder: Path, digest: str) -> bool:
    """Whether ``folder`` was built from these inputs and still holds what was written."""
    stamp = _read_stamp(folder)
    return stamp is not None and stamp.get("digest") == digest and _files_hold(folder, stamp)


def _files_hold(folder: Path, stamp: dict) -> bool:
    """Whether every file the stamp lists is there with its size.

    A stamp without its file list was written by an older dfd: it does not hold.
    """
    files = stamp.get("files")
    if not files:
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            log.warning("model repository %s: %s is missing or changed", folder, name)
            return False
    return True


def repository_current(settings: Settings, target: Target) -> bool:
    """A quick check that the built repository serves what ``settings`` ask for.

    No export and no rendering (``build_repository`` does the full check, and is a
    no-op when nothing changed): the stamp's models and threads against the settings,
    and the files it lists. ``dfd serve`` and ``dfd demo`` rebuild when this is False.
    """
    folder = settings.repository_dir(target)
    stamp = _read_stamp(folder)
    if stamp is None or stamp.get("target") != target:
        return False
    wanted = {role: s.tag for role, s in role_specs(settings).items()}
    if stamp.get("models") != wanted:
        return False
    if target == "cpu" and stamp.get("intra_op_threads") != _threads(
        _with_settings(RepositoryOptions(), settings)
    ):
        return False
    return _files_hold(folder, stamp)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    lock_path = folder.with_name(f".{folder.name}.build.lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Staging and old trees an interrupted build left (the lock says none is running)."""
    for leftover in folder.parent.glob(f"{folder.name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in folder.parent.glob(f"{folder.name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
