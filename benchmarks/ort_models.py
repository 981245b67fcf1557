"""Exported models in one-thread onnxruntime sessions, called as the Triton client is.

The benchmarks of stages that call single models (the speech gate, the voice encoder, the
face mesh) measure them here instead of through a Triton server: ``infer`` answers as
``dispatcher.triton_client.TritonClient.infer`` does for one model, and each model's CPU
time is kept in ``cpu_s``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from dfd.settings import Settings


class OrtModels:
    """``models``: role (the Triton model name) -> checkpoint, each exported (or found
    exported) by ``export.onnx_export.export_one`` and run on one thread."""

    def __init__(self, settings: Settings, models: Mapping[str, str]) -> None:
        import onnxruntime as ort

        from export.onnx_export import export_one

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.sessions = {
            role: ort.InferenceSession(
                str(export_one(checkpoint, settings)), options, providers=["CPUExecutionProvider"]
            )
            for role, checkpoint in models.items()
        }
        self.cpu_s: dict[str, float] = {}

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        version: int | None = None,
    ) -> dict[str, np.ndarray]:
        session = self.sessions[model]
        started = time.process_time()
        got = session.run(None, dict(inputs))
        self.cpu_s[model] = self.cpu_s.get(model, 0.0) + time.process_time() - started
        return {o.name: v for o, v in zip(session.get_outputs(), got, strict=True)}
