"""The ``deepfake_ensemble`` Triton config, rendered from the contract in ``dfd.ensemble``.

One request per video: its face crops, audio windows and lip-sync clips (leading ``-1``
dims are the per-video item counts) plus the fusion mask and weights. Inside Triton the
steps run ``visual``, ``audio`` and ``lipsync`` (independent, so Triton runs them
concurrently) and then ``fusion`` on their per-item scores. A modality the video lacks is
sent as one dummy row with mask 0; fusion ignores it.

The ensemble does not batch (``max_batch_size: 0``): its item axis is the composing
models' batch axis, so the whole ``[N, 3, 256, 256]`` of one video reaches ``visual``
(``max_batch_size: 64``, dims ``[3, 256, 256]``) as one request of batch N, and
``visual``'s dynamic batcher merges those requests from concurrent videos
(``tests/export/test_ensemble.py`` checks both against the real server). Hence N must
stay within each composing model's ``max_batch_size``: the dispatcher chunks long videos
(``Settings.max_items_per_request``).

``face_detector`` is not a step: the dispatcher calls it first to find the crops.
"""

from __future__ import annotations

from collections.abc import Mapping

from tritonclient.grpc import model_config_pb2 as mc

from dfd.ensemble import ENSEMBLE_INPUTS, ENSEMBLE_NAME, ENSEMBLE_OUTPUTS, WIRING, check_wiring
from dfd.specs import ModelSpec

ENSEMBLE_HEADER = """\
deepfake_ensemble: one request per video; steps visual, audio, lipsync, then fusion.
In every step's input_map and output_map, `key` is the composing model's tensor and
`value` is the ensemble's tensor."""


def ensemble_config(roles: Mapping[str, ModelSpec]) -> mc.ModelConfig:
    """The ensemble's ``ModelConfig`` over the role specs (``export.triton_repo.role_specs``)."""
    check_wiring(roles)
    config = mc.ModelConfig(name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=0)
    for tensors, field in ((ENSEMBLE_INPUTS, config.input), (ENSEMBLE_OUTPUTS, config.output)):
        for t in tensors:
            field.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.dtype}"), dims=t.dims)
    for role, (inputs, outputs) in WIRING.items():
        step = config.ensemble_scheduling.step.add(
            model_name=role, model_version=roles[role].version
        )
        # key: composing model's tensor; value: ensemble tensor.
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return config
