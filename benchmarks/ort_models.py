"""ONNX models in one-thread onnxruntime sessions, called as the Triton client is.

The benchmarks that measure a model's own compute (the mouth-sync and voice-change
benchmarks' single models, the floor benchmark's whole ``cpu`` repository) run them here
instead of through a Triton server: ``infer`` answers as
``dispatcher.triton_client.TritonClient.infer`` does, and each model's CPU time is kept
in ``cpu_s``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dfd.ensemble import ENSEMBLE_NAME, Ensemble
from dfd.settings import Settings


class OrtModels:
    """``files``: model name -> ONNX file, each run in its own session on one thread.

    With ``ensemble``, a request for ``deepfake_ensemble`` is composed as its config wires
    it (``dfd.ensemble``): each enabled detector's step on its input group.
    """

    def __init__(self, files: Mapping[str, Path], ensemble: Ensemble | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # no thread spins waiting for work: the CPU time counted is the model's own
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in files.items()
        }
        self.ensemble = ensemble
        self.cpu_s: dict[str, float] = {}

    @classmethod
    def exported(cls, settings: Settings, models: Mapping[str, str]) -> OrtModels:
        """``models``: role (the Triton model name) -> checkpoint, each exported (or found
        exported) by ``export.onnx_export.export_one``."""
        from export.onnx_export import export_one

        return cls({role: export_one(checkpoint, settings) for role, checkpoint in models.items()})

    @classmethod
    def of_repository(cls, repository: Path, ensemble: Ensemble) -> OrtModels:
        """Every ONNX model of a built Triton repository (``<model>/1/model.onnx``), and
        ``ensemble`` composed of them."""
        files = {p.parent.parent.name: p for p in sorted(repository.glob("*/1/model.onnx"))}
        return cls(files, ensemble)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        version: int | None = None,
    ) -> dict[str, np.ndarray]:
        if model == ENSEMBLE_NAME and self.ensemble is not None:
            out: dict[str, np.ndarray] = {}
            for step in self.ensemble.steps:
                got = self._run(step.model.name, {m: inputs[e] for m, e in step.inputs.items()})
                out.update({e: got[m] for m, e in step.outputs.items()})
            return out
        return self._run(model, inputs)

    def _run(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[model]
        started = time.process_time()
        got = session.run(None, dict(inputs))
        self.cpu_s[model] = self.cpu_s.get(model, 0.0) + time.process_time() - started
        return {o.name: v for o, v in zip(session.get_outputs(), got, strict=True)}
