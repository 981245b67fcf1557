"""Triton python-backend model that serves one ONNX file with onnxruntime (the ``cpu`` rendering).

``export.triton_repo`` copies this file into every model version folder of the ``cpu``
repository as ``model.py``, with the exported ``model.onnx`` beside it. The same file
serves every role: everything model-specific comes from the model's ``config.pbtxt``.

- ``initialize`` opens the ONNX session and checks every tensor the config declares
  against the session's (name, dtype, rank and fixed dims, a dynamic batch axis when the
  model batches); a mismatch fails the load with a message naming the model and tensor.
- ``execute`` runs what the dynamic batcher hands over as few onnxruntime calls as
  possible: requests whose non-batch shapes agree are concatenated along the batch axis,
  run as one batch and split back. Per-call overhead (Python, IPC, onnxruntime's
  dispatch) is paid once per batch instead of once per request.
- A batch of two or more items is split over the instance's threads by item, each part
  on a one-thread session, instead of splitting each item's operators over the threads:
  no thread waits for another inside an operator, so an item costs less CPU (on the
  2-core reference machine 1.31-1.45 instead of 1.72 ms per Meso4 crop, 131-142 instead
  of 154 ms per AASIST window: the one-thread floor of ``benchmarks.bench_triton``
  against the two-thread figures of ``benchmarks.bench_ort``). A single item still gets
  all the threads on its operators, for latency.

Config parameters (``parameters { key: ... value { string_value: ... } }``):
    onnx_file: file name in the version folder (default ``model.onnx``).
    intra_op_threads: the instance's threads (default 1): onnxruntime intra-op threads
        for a single item, parallel parts for a batch.
    ort_max_batch: the largest batch one onnxruntime call runs (default 0: no limit); a
        bigger merged batch runs in chunks of this size. On small CPUs per-item cost in
        onnxruntime grows with the batch (activations outgrow the caches), so merging
        requests pays for the per-request overhead only if the chunks stay small.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Triton config dtype -> onnxruntime type string.
_ORT_TYPES = {
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_UINT8": "tensor(uint8)",
}


class ModelConfigError(Exception):
    """The model's config.pbtxt and its ONNX file disagree."""


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


def _session_dims(shape: list) -> list[int]:
    """ONNX dims with symbolic or unknown dims as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def check_tensors(model_name: str, config: dict, session: ort.InferenceSession) -> None:
    """Fails with a message naming the model and the tensor when config and ONNX disagree."""
    batched = int(config.get("max_batch_size", 0)) > 0
    for kind, declared, actual in (
        ("input", config.get("input", []), session.get_inputs()),
        ("output", config.get("output", []), session.get_outputs()),
    ):
        by_name = {t.name: t for t in actual}
        for tensor in declared:
            name = tensor["name"]
            if name not in by_name:
                raise ModelConfigError(
                    f"model {model_name!r}: config {kind} {name!r} not in the ONNX graph; "
                    f"the graph has {sorted(by_name)}"
                )
            onnx_tensor = by_name[name]
            want_type = _ORT_TYPES.get(tensor["data_type"])
            if want_type != onnx_tensor.type:
                raise ModelConfigError(
                    f"model {model_name!r}: {kind} {name!r} is {tensor['data_type']} in the "
                    f"config, {onnx_tensor.type} in the ONNX graph"
                )
            dims = [int(d) for d in tensor["dims"]]
            want = ([-1] if batched else []) + dims
            got = _session_dims(onnx_tensor.shape)
            if len(want) != len(got):
                raise ModelConfigError(
                    f"model {model_name!r}: {kind} {name!r} has shape {want} in the config "
                    f"(batch axis included), {got} in the ONNX graph"
                )
            if batched and got[0] != -1:
                raise ModelConfigError(
                    f"model {model_name!r}: {kind} {name!r} needs a dynamic batch axis, "
                    f"the ONNX graph fixes it to {got[0]}"
                )
            for axis, (w, g) in enumerate(zip(want, got, strict=True)):
                # A fixed ONNX dim must be fixed to the same size in the config; a dynamic
                # one may be declared fixed (the config narrows it).
                if g != -1 and w != g:
                    raise ModelConfigError(
                        f"model {model_name!r}: {kind} {name!r} axis {axis} is {w} in the "
                        f"config, {g} in the ONNX graph"
                    )
        if kind == "input":
            missing = sorted(set(by_name) - {t["name"] for t in declared})
            if missing:
                raise ModelConfigError(
                    f"model {model_name!r}: ONNX inputs {missing} are not declared in the config"
                )


def _session(onnx_path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Several models (and instances) share few cores: spinning threads would burn the
    # cores the others need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The dynamic batcher hands over a different batch size almost every time; the
    # memory pattern onnxruntime plans per input shape then costs more than it saves
    # (measured on Meso4 with batches of 1..32: 6.3 ms/item with it, 2.8 without).
    options.enable_mem_pattern = False
    return ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


class TritonPythonModel:
    """Serves ``model.onnx`` from its version folder with onnxruntime."""

    def initialize(self, args: dict) -> None:
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        onnx_path = os.path.join(folder, _parameter(self.config, "onnx_file", "model.onnx"))
        if not os.path.isfile(onnx_path):
            raise ModelConfigError(f"model {self.name!r}: ONNX file {onnx_path} not found")
        self.threads = max(1, int(_parameter(self.config, "intra_op_threads", "1")))
        self.session = _session(onnx_path, self.threads)
        check_tensors(self.name, self.config, self.session)
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        # Batches are split by item over the threads, each part on a one-thread session.
        self.pool: ThreadPoolExecutor | None = None
        self.single_thread = self.session
        if self.batched and self.threads > 1:
            self.single_thread = _session(onnx_path, 1)
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"{self.name}-part")
        self.ort_max_batch = int(_parameter(self.config, "ort_max_batch", "0"))
        self.input_names = [t["name"] for t in self.config["input"]]
        self.output_names = [t["name"] for t in self.config["output"]]

    def execute(self, requests: list) -> list:
        arrays = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
            for r in requests
        ]
        responses: list = [None] * len(requests)
        for indices in self._groups(arrays):
            try:
                outputs = self._run([arrays[i] for i in indices])
            except Exception as exc:  # one bad group must not fail the others
                error = pb_utils.TritonError(f"model {self.name!r}: onnxruntime failed: {exc}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            for i, result in zip(indices, outputs, strict=True):
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(result[n])) for n in self.output_names
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def _groups(self, arrays: list[dict]) -> list[list[int]]:
        """Request indices that can share one onnxruntime call (same non-batch shapes)."""
        if not self.batched:
            return [[i] for i in range(len(arrays))]
        groups: dict[tuple, list[int]] = {}
        for i, feed in enumerate(arrays):
            key = tuple(feed[n].shape[1:] for n in self.input_names)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _session_run(self, feed: dict) -> list:
        """One batch through onnxruntime: split by item over the threads when it has several."""
        size = feed[self.input_names[0]].shape[0] if self.batched else 0
        if self.pool is None or size < 2:
            return self._chunked(self.session, feed)
        parts = min(self.threads, size)
        bounds = [size * k // parts for k in range(parts + 1)]
        futures = [
            self.pool.submit(
                self._chunked, self.single_thread, {n: a[lo:hi] for n, a in feed.items()}
            )
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]
        return self._concat([f.result() for f in futures])

    def _chunked(self, session: ort.InferenceSession, feed: dict) -> list:
        """``feed`` through ``session`` in chunks of at most ``ort_max_batch`` items."""
        size = feed[self.input_names[0]].shape[0] if self.batched else 0
        step = self.ort_max_batch
        if not self.batched or step <= 0 or size <= step:
            return session.run(self.output_names, feed)
        return self._concat(
            [
                session.run(self.output_names, {n: a[i : i + step] for n, a in feed.items()})
                for i in range(0, size, step)
            ]
        )

    def _concat(self, parts: list[list]) -> list:
        """Outputs of consecutive parts of a batch, joined along the batch axis."""
        if len(parts) == 1:
            return parts[0]
        return [
            np.concatenate([p[k] for p in parts], axis=0) for k in range(len(self.output_names))
        ]

    def _run(self, feeds: list[dict]) -> list[dict]:
        if len(feeds) == 1:
            result = self._session_run(feeds[0])
            return [dict(zip(self.output_names, result, strict=True))]
        sizes = [feed[self.input_names[0]].shape[0] for feed in feeds]
        merged = {n: np.concatenate([feed[n] for feed in feeds], axis=0) for n in self.input_names}
        result = self._session_run(merged)
        bounds = np.cumsum(sizes)[:-1]
        parts = [np.split(r, bounds, axis=0) for r in result]
        return [
            {n: parts[k][j] for k, n in enumerate(self.output_names)} for j in range(len(feeds))
        ]

    def finalize(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.session = self.single_thread = None
