"""Export every served model to ONNX, named and shaped exactly as its spec says.

``export_all(settings)`` writes ``<settings.onnx_dir>/<checkpoint>.onnx`` for each
checkpoint. PyTorch models (MesoNet, AASIST, RawGAT-ST, Light-ASD, Resemblyzer) go through the
TorchScript-based exporter (opset 17, dynamic batch axis where the spec batches); the
face detector is the published YuNet graph with our decoding appended. Each file has a
``.stamp`` beside it holding a hash of what it was built from (weights' SHA-256, the
model code, the spec, torch/onnx versions): an export whose stamp still matches is
skipped.

``verify()`` runs an exported file in onnxruntime against its PyTorch module (for YuNet:
against the published graph plus the numpy decoding) on the same inputs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from dfd.errors import ConfigurationError, InternalError
from dfd.settings import Settings
from dfd.specs import SPECS, ModelSpec, spec
from export.weights import expected_digest, manifest, resolve_weight

log = logging.getLogger(__name__)

OPSET = 17
_ROOT = Path(__file__).resolve().parent
_CODE = {
    "yunet": ["models/yunet.py"],
    "meso": ["models/meso.py"],
    "aasist": ["models/aasist.py"],
    "rawgat_st": ["models/rawgat_st.py", "models/aasist.py"],  # shares AASIST's sinc bank
    "light_asd": ["models/light_asd.py"],
    "resemblyzer": ["models/resemblyzer.py"],
    "ufd": ["models/clip_vit.py"],
    "sbi": ["models/sbi.py"],
    "packaged": [],
    "face_mesh": ["models/face_mesh.py"],
}


def _family(checkpoint: str) -> str:
    for prefix, family in (
        ("yunet", "yunet"),
        ("meso", "meso"),
        ("aasist", "aasist"),
        ("rawgat_st", "rawgat_st"),
        ("light_asd", "light_asd"),
        ("resemblyzer", "resemblyzer"),
        ("ufd", "ufd"),
        ("sbi", "sbi"),
        ("silero", "packaged"),
        ("mediapipe_face_mesh", "face_mesh"),
    ):
        if checkpoint.startswith(prefix):
            return family
    raise ConfigurationError(f"ONNX export: no exporter for checkpoint {checkpoint!r}")


def build_module(checkpoint: str, settings: Settings):
    """The PyTorch serving module of a checkpoint (not for the face detector)."""
    model = spec(checkpoint)
    family = _family(checkpoint)
    weights = [resolve_weight(w, settings) for w in model.weights]
    if family == "meso":
        from export.models import meso

        return meso.VisualServing(meso.build(checkpoint, weights[0])).eval()
    if family == "aasist":
        from export.models import aasist

        return aasist.AudioServing(aasist.build(weights[0], weights[1])).eval()
    if family == "rawgat_st":
        from export.models import rawgat_st
        from export.models.aasist import AudioServing  # the same [spoof, bonafide] logits

        return AudioServing(rawgat_st.build(weights[0], weights[1])).eval()
    if family == "light_asd":
        from export.models import light_asd

        return light_asd.LipsyncServing(light_asd.build(weights[0])).eval()
    if family == "resemblyzer":
        from export.models import resemblyzer

        return resemblyzer.VoiceServing(resemblyzer.build(weights[0])).eval()
    if family == "ufd":
        from export.models import clip_vit

        return clip_vit.build(weights[0], weights[1])
    if family == "sbi":
        from export.models import sbi

        return sbi.build(weights[0])
    raise ConfigurationError(f"ONNX export: {checkpoint} is not a PyTorch model")


def stamp(checkpoint: str, settings: Settings | None = None) -> str:
    """Hash of everything an export depends on; a changed stamp means re-export (a
    user-fetched file without a published digest counts by the one recorded for it)."""
    import onnx
    import torch

    model = spec(checkpoint)
    digest = hashlib.sha256()
    digest.update(f"{checkpoint}|{OPSET}|{torch.__version__}|{onnx.__version__}|{model!r}".encode())
    for name in model.weights:
        entry = manifest()[name]
        known = expected_digest(entry, settings) if settings is not None else None
        digest.update((entry.sha256 or known or "user-fetched").encode())
    for rel in ["onnx_export.py", *_CODE[_family(checkpoint)]]:
        digest.update((_ROOT / rel).read_bytes())
    return digest.hexdigest()


def shipped() -> list[str]:
    """The checkpoints none of whose weights is the user's to fetch (manifest ``"pull":
    "user"`` rows): those are exported when their detector is enabled and installed."""
    files = manifest()
    return [n for n, s in SPECS.items() if not any(files[w].user_fetched for w in s.weights)]


def _dummy(tensor, batch: int | None, rows: int = 2) -> np.ndarray:
    dims = [rows if d == -1 else d for d in tensor.dims]
    shape = ([batch] if batch is not None else []) + dims
    return np.zeros(shape, dtype=tensor.numpy_dtype)


def _export_torch(checkpoint: str, settings: Settings) -> bytes:
    return module_onnx(build_module(checkpoint, settings), spec(checkpoint))


def module_onnx(module, model: ModelSpec) -> bytes:  # noqa: ANN001 - a torch.nn.Module
    """A PyTorch serving module as ONNX, named, shaped and checked as ``model`` says: the
    export of every PyTorch checkpoint, also taken by stand-ins at the real shape (the cost
    benchmark's random-weight SBI and UFD, :mod:`export.random_weights`)."""
    import torch

    batched = model.max_batch_size > 0
    args = tuple(
        # mid-range values (an integer input, SBI's uint8 pixels, stays integer)
        torch.from_numpy(_dummy(t, 2 if batched else None) + (0.5 if t.dtype[0] == "F" else 128))
        for t in model.inputs
    )
    dynamic: dict[str, dict[int, str]] = {}
    for t in (*model.inputs, *model.outputs):
        axes = {0: "batch"} if batched else {}
        offset = 1 if batched else 0
        for i, d in enumerate(t.dims):
            if d == -1:
                axes[i + offset] = f"{t.name}_rows"
        if axes:
            dynamic[t.name] = axes
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,  # type: ignore[arg-type]  # torch accepts file objects; its stub says paths
            dynamo=False,
            opset_version=OPSET,
            input_names=[t.name for t in model.inputs],
            output_names=[t.name for t in model.outputs],
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    data = buf.getvalue()
    if _family(model.checkpoint) == "sbi":
        # the exporter names its heatmap's two dims after the Reshape that makes them
        # (``Reshapeheatmap_dim_1``) where the spec says 12 x 12
        data = _fix_output_dims(
            data,
            replace(model, outputs=tuple(replace(t, dims=(-1, *t.dims)) for t in model.outputs)),
        )
    check_against_spec(data, model)
    return data


def _export_yunet(checkpoint: str, settings: Settings) -> bytes:
    from export.models import yunet

    model = spec(checkpoint)
    graph = yunet.build(resolve_weight(model.weights[0], settings))
    return graph.SerializeToString()


def _export_packaged(checkpoint: str) -> bytes:
    """An ONNX file a Python package ships (silero-vad's), checked against the spec's SHA-256."""
    model = spec(checkpoint)
    package, name, want = (str(model.extra[k]) for k in ("package", "file", "sha256"))
    try:
        data = importlib.resources.files(package).joinpath(name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigurationError(
            f"ONNX export: {checkpoint} comes from the {package!r} package's {name}, which is "
            f"not installed here ({exc}); pip install silero-vad"
        ) from exc
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ConfigurationError(
            f"ONNX export: {package}/{name} has SHA-256 {got}, expected {want} (another "
            "release of the package; update the spec after checking the model)"
        )
    return _fix_output_dims(data, model)


def _fix_output_dims(data: bytes, model: ModelSpec) -> bytes:
    """Write the spec's fixed output dims into the graph where it left them symbolic.

    silero-vad's sequence graph declares its state outputs ``[1, LSTMhn_dim_1, 128]``
    while onnxruntime computes ``[1, 1, 128]``; Triton's config must agree with both.
    Only the declared shapes change, not a weight or an operator.
    """
    import onnx

    graph = onnx.load_from_string(data)
    wanted = {t.name: t.dims for t in model.outputs}
    for value in graph.graph.output:
        dims = wanted.get(value.name)
        if dims is None:
            continue
        for dim, want in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            if want != -1 and dim.dim_param:
                dim.dim_value = want  # clears dim_param (a oneof)
    return graph.SerializeToString()


def built_once(out: Path, want: str, build: Callable[[], bytes], *, force: bool = False) -> Path:
    """``out``, built by ``build`` unless it is there with the stamp ``want`` beside it
    (``<out>.stamp``); written to a ``.part`` file and renamed, so a reader never meets
    half a model and a failed build leaves the old one."""
    stamp_path = out.with_suffix(out.suffix + ".stamp")
    if (
        not force
        and out.is_file()
        and stamp_path.is_file()
        and stamp_path.read_text().strip() == want
    ):
        log.info("onnx export: %s is up to date", out)
        return out
    data = build()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix + ".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    stamp_path.write_text(want + "\n")
    log.info("onnx export: wrote %s (%d bytes)", out, len(data))
    return out


def export_one(checkpoint: str, settings: Settings, *, force: bool = False) -> Path:
    """Export one checkpoint unless an up-to-date file exists; returns its path."""
    if any(manifest()[w].user_fetched for w in spec(checkpoint).weights):
        # checked (and its digest recorded) before the stamp reads the digest
        for w in spec(checkpoint).weights:
            resolve_weight(w, settings)
    out = settings.onnx_dir / f"{checkpoint}.onnx"
    return built_once(
        out, stamp(checkpoint, settings), lambda: _export(checkpoint, settings), force=force
    )


def _export(checkpoint: str, settings: Settings) -> bytes:
    """One checkpoint's ONNX, checked against its spec."""
    family = _family(checkpoint)
    if family == "yunet":
        data = _export_yunet(checkpoint, settings)
    elif family == "packaged":
        data = _export_packaged(checkpoint)
    elif family == "face_mesh":
        from export.models import face_mesh

        model = face_mesh.build(resolve_weight(spec(checkpoint).weights[0], settings))
        data = model.SerializeToString()  # type: ignore[attr-defined]
    else:
        return _export_torch(checkpoint, settings)  # module_onnx checks it
    check_against_spec(data, spec(checkpoint))
    return data


def export_all(settings: Settings, checkpoints: Iterable[str] | None = None) -> dict[str, Path]:
    """Export the given checkpoints (default: every one in ``SPECS`` whose weights dfd
    ships, not those the user fetches) to ``settings.onnx_dir``.

    Returns:
        checkpoint -> path of its ``.onnx``.
    """
    names = shipped() if checkpoints is None else list(checkpoints)
    return {name: export_one(name, settings) for name in names}


_ONNX_DTYPES = {1: "FP32", 10: "FP16", 7: "INT64", 6: "INT32", 2: "UINT8"}


def onnx_signature(data: bytes | Path) -> dict[str, tuple[str, tuple[int | str, ...]]]:
    """Tensor name -> (Triton dtype, dims with symbolic ones as strings), inputs and outputs."""
    import onnx

    model = onnx.load_from_string(data) if isinstance(data, bytes) else onnx.load(str(data))
    sig = {}
    for value in (*model.graph.input, *model.graph.output):
        tt = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim)
        sig[value.name] = (_ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)), dims)
    return sig


def check_against_spec(data: bytes | Path, model: ModelSpec) -> None:
    """Raise if the ONNX graph's tensor names, dtypes or dims disagree with the spec.

    A spec dim of -1 must be symbolic in the graph; a fixed one must match; with
    ``max_batch_size > 0`` the graph has one extra, symbolic, leading batch axis.
    """
    sig = onnx_signature(data)
    names = [t.name for t in (*model.inputs, *model.outputs)]
    if sorted(sig) != sorted(names):
        raise InternalError(
            f"ONNX {model.checkpoint}: tensors {sorted(sig)} differ from the spec's {sorted(names)}"
        )
    for t in (*model.inputs, *model.outputs):
        dtype, dims = sig[t.name]
        if model.max_batch_size > 0:
            if not dims or not isinstance(dims[0], str):
                raise InternalError(
                    f"ONNX {model.checkpoint}: {t.name} has no dynamic batch axis ({dims})"
                )
            dims = dims[1:]
        ok = dtype == t.dtype and len(dims) == len(t.dims)
        ok = ok and all(
            (isinstance(g, str)) if want == -1 else g == want
            for g, want in zip(dims, t.dims, strict=False)
        )
        if not ok:
            raise InternalError(
                f"ONNX {model.checkpoint}: {t.name} is {dtype}{list(dims)}, spec says {t.dtype}{list(t.dims)}"
            )


def run_onnx(path: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX file on CPU in onnxruntime; outputs by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def reference_outputs(
    checkpoint: str, settings: Settings, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What the exported model must output: the PyTorch module (YuNet: published graph + numpy decode)."""
    model = spec(checkpoint)
    if _family(checkpoint) == "yunet":
        from export.models import yunet

        raw = run_onnx(resolve_weight(model.weights[0], settings), {"input": inputs["image"]})
        height, width = inputs["image"].shape[2:]
        boxes, landmarks, scores = yunet.decode_reference(raw, height, width)
        return {"boxes": boxes, "landmarks": landmarks, "scores": scores}
    if _family(checkpoint) == "face_mesh":
        from export.models import face_mesh

        return face_mesh.reference(resolve_weight(model.weights[0], settings), inputs["image"])
    import torch

    module = build_module(checkpoint, settings)
    with torch.no_grad():
        outs = module(
            *(torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in model.inputs)
        )
    return {t.name: o.numpy() for t, o in zip(model.outputs, outs, strict=True)}


def verify(
    checkpoint: str,
    settings: Settings,
    inputs: Mapping[str, np.ndarray],
    *,
    onnx_path: Path | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-6,
) -> dict[str, float]:
    """Compare an exported model with its reference on ``inputs``.

    Returns:
        Output name -> max absolute difference.

    Raises:
        InternalError: an output differs by more than ``atol + rtol * |reference|``
            (rtol covers float32 rounding of pixel coordinates in the hundreds).
    """
    path = onnx_path or settings.onnx_dir / f"{checkpoint}.onnx"
    got = run_onnx(path, inputs)
    want = reference_outputs(checkpoint, settings, inputs)
    diffs = {}
    for name, ref in want.items():
        out = got[name]
        if out.shape != ref.shape:
            raise InternalError(
                f"verify {checkpoint}: {name} has shape {out.shape}, reference {ref.shape}"
            )
        err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        diffs[name] = float(err.max()) if err.size else 0.0
        if np.any(err > atol + rtol * np.abs(ref)):
            raise InternalError(
                f"verify {checkpoint}: {name} differs from the reference by up to {diffs[name]:.3g}"
            )
    return diffs
