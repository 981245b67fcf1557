"""A small typed gRPC client for Triton, used by the dispatcher and by internal services.

    client = TritonClient("127.0.0.1:8001", timeout_s=60, retries=3)
    out = client.infer("visual", {"face": crops})          # {"score": ..., "heatmap": ...}

What it adds to ``tritonclient.grpc``:

- inputs to a known model (a role in ``dfd.specs`` or ``deepfake_ensemble``) are
  checked against the spec before anything is sent: names, dtypes, shapes, an empty
  batch and a batch over ``max_batch_size`` each fail with an ``InputError`` naming the
  model, the tensor, what was expected and what came;
- one deadline per request (``timeout_s``);
- retries with exponential backoff, only when Triton is UNAVAILABLE (down, not ready,
  restarting, overloaded); when they run out, ``UpstreamUnavailableError``;
- every other gRPC status translated once into the ``dfd.errors`` tree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from dfd.ensemble import ENSEMBLE_NAME, Ensemble, for_settings
from dfd.errors import (
    ConfigurationError,
    DfdError,
    InputError,
    InternalError,
    UpstreamUnavailableError,
)
from dfd.settings import Settings
from dfd.specs import SPECS, TensorSpec

_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class ModelInputs:
    """What a model accepts, as the client checks it.

    Attributes:
        inputs: input tensors by name; dims exclude the batch axis when batched.
        max_batch_size: 0 for models that do not batch.
        item_limits: for the ensemble, the most items per input (the composing model's
            max_batch_size).
    """

    inputs: Mapping[str, TensorSpec]
    max_batch_size: int
    item_limits: Mapping[str, int]


def known_models(ensemble: Ensemble) -> dict[str, ModelInputs]:
    """Every Triton model name the specs define, with its inputs, and ``ensemble``'s."""
    models: dict[str, ModelInputs] = {}
    for s in SPECS.values():
        # Checkpoints sharing a role share its tensors; the first one describes the role.
        models.setdefault(s.name, ModelInputs({t.name: t for t in s.inputs}, s.max_batch_size, {}))
    models[ENSEMBLE_NAME] = ModelInputs(
        {t.name: t for t in ensemble.inputs}, 0, ensemble.item_limits
    )
    return models


def check_inputs(model: str, spec: ModelInputs, inputs: Mapping[str, np.ndarray]) -> None:
    """Raises ``InputError`` when ``inputs`` cannot be a valid request to ``model``."""
    missing = sorted(set(spec.inputs) - set(inputs))
    unknown = sorted(set(inputs) - set(spec.inputs))
    if missing or unknown:
        raise InputError(
            f"triton {model}: expected inputs {sorted(spec.inputs)}, got {sorted(inputs)}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unknown {unknown})" if unknown else "")
        )
    batch_sizes = set()
    for name, t in spec.inputs.items():
        array = inputs[name]
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"triton {model}.{name}: expected a numpy array, got {type(array).__name__}"
            )
        if array.dtype != np.dtype(t.numpy_dtype):
            raise InputError(
                f"triton {model}.{name}: expected dtype {t.numpy_dtype}, got {array.dtype}"
            )
        want = ((-1,) if spec.max_batch_size > 0 else ()) + t.dims
        shape = array.shape
        shown = (
            "[batch, " + ", ".join(map(str, t.dims)) + "]"
            if spec.max_batch_size > 0
            else list(t.dims)
        )
        if len(shape) != len(want) or any(
            w not in (-1, s) for w, s in zip(want, shape, strict=True)
        ):
            raise InputError(
                f"triton {model}.{name}: expected shape {shown} (-1: any), got {list(shape)}"
            )
        if spec.max_batch_size > 0:
            if shape[0] == 0:
                raise InputError(f"triton {model}.{name}: empty batch (0 items)")
            if shape[0] > spec.max_batch_size:
                raise InputError(
                    f"triton {model}.{name}: batch of {shape[0]} is over max_batch_size "
                    f"{spec.max_batch_size}; split the request"
                )
            batch_sizes.add(shape[0])
        elif want and want[0] == -1:
            if shape[0] == 0:
                raise InputError(f"triton {model}.{name}: empty (0 items); send at least one row")
            limit = spec.item_limits.get(name)
            if limit is not None and shape[0] > limit:
                raise InputError(
                    f"triton {model}.{name}: {shape[0]} items is over the limit of {limit} "
                    "per request; split the video into several requests"
                )
        if array.size and not np.all(np.isfinite(array)) and array.dtype.kind == "f":
            raise InputError(f"triton {model}.{name}: contains NaN or infinity")
    if len(batch_sizes) > 1:
        raise InputError(
            f"triton {model}: inputs disagree on the batch size: {sorted(batch_sizes)}"
        )


class InferClient(Protocol):
    """What the stages need of :class:`TritonClient` (tests pass in-memory stand-ins)."""

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        version: int | None = None,
    ) -> dict[str, np.ndarray]: ...


class TritonClient:
    """Typed, validating gRPC client for one Triton server.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        timeout_s: deadline of one request (each attempt).
        retries: extra attempts when Triton is UNAVAILABLE.
        backoff_s: first retry delay; doubles each retry, at most 5 s.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 60.0,
        retries: int = 3,
        *,
        backoff_s: float = 0.2,
        ensemble: Ensemble | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        # the ensemble the server was built with: by default, that of this process's settings
        self.models = known_models(ensemble or for_settings(Settings()))
        self._client = grpcclient.InferenceServerClient(url)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        version: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs one request; returns the outputs by name (all of them when ``outputs`` is None).

        ``version`` asks for one version of the model (a rollout's candidate loaded beside
        the current one); ``None``: the one Triton's version policy serves by default.

        Raises:
            InputError: the inputs do not fit the model (checked before sending), or
                Triton rejected them.
            UpstreamUnavailableError: Triton stayed unavailable through every retry, or
                the deadline passed.
            ConfigurationError: the server does not have the model.
            InternalError: any other server failure.
        """
        if model in self.models:
            check_inputs(model, self.models[model], inputs)
        request = []
        for name, array in inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            request.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(name) for name in outputs] if outputs else None
        result = self._call(
            model,
            lambda: self._client.infer(
                model,
                request,
                model_version="" if version is None else str(version),
                outputs=wanted,
                client_timeout=self.timeout_s,
            ),
        )
        names = list(outputs) if outputs else [o.name for o in result.get_response().outputs]
        return {name: result.as_numpy(name) for name in names}

    def is_ready(self, model: str | None = None) -> bool:
        """Whether the server (or one model on it) is ready; False when unreachable."""
        try:
            if model is None:
                return bool(self._client.is_server_ready(client_timeout=self.timeout_s))
            return bool(self._client.is_model_ready(model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def model_statistics(self, model: str) -> dict[str, Any]:
        """Triton's statistics of ``model`` (JSON form: ``inference_count``, ``execution_count``...)."""
        stats = self._call(
            model,
            lambda: self._client.get_inference_statistics(
                model, as_json=True, client_timeout=self.timeout_s
            ),
        )
        entries = stats.get("model_stats", [])
        if not entries:
            raise ConfigurationError(f"triton {model}: no statistics (is the model loaded?)")
        return dict(entries[0])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, model: str, fn: Any) -> Any:
        attempt = 0
        while True:
            try:
                return fn()
            except InferenceServerException as exc:
                error = translate(model, self.url, exc)
                if not isinstance(error, UpstreamUnavailableError) or _status(exc) != "UNAVAILABLE":
                    raise error from exc
                if attempt >= self.retries:
                    raise UpstreamUnavailableError(
                        f"triton {model}: unavailable at {self.url} after {attempt + 1} attempts: {exc.message()}"
                    ) from exc
            time.sleep(min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S))
            attempt += 1


def _status(exc: InferenceServerException) -> str:
    return (exc.status() or "").removeprefix("StatusCode.")


def translate(model: str, url: str, exc: InferenceServerException) -> DfdError:
    """The ``dfd.errors`` type for a failed Triton call."""
    status, message = _status(exc), exc.message() or str(exc)
    if status == "UNAVAILABLE":
        return UpstreamUnavailableError(f"triton {model}: unavailable at {url}: {message}")
    if status == "DEADLINE_EXCEEDED":
        return UpstreamUnavailableError(f"triton {model}: no answer from {url} within the deadline")
    if status == "INVALID_ARGUMENT":
        return InputError(f"triton {model}: request rejected: {message}")
    if status == "NOT_FOUND" or "unknown model" in message or "is not found" in message:
        return ConfigurationError(
            f"triton {model}: the server at {url} does not serve it: {message}"
        )
    return InternalError(f"triton {model}: server error {status or 'unknown'}: {message}")
