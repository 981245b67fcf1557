"""The ``deepfake_ensemble`` Triton config, rendered from the contract in ``dfd.ensemble``.

One request per video: its face crops, audio windows and lip-sync clips (leading ``-1``
dims are the per-video item counts). Inside Triton each enabled detector is a step fed the
input group of what it looks at; the steps are independent, so Triton runs them
concurrently. An input group the video lacks is sent as one zero row; the dispatcher
ignores the scores of that row.

The ensemble does not batch (``max_batch_size: 0``): its item axis is the composing
models' batch axis, so the whole ``[N, 3, 256, 256]`` of one video reaches ``visual``
(``max_batch_size: 64``, dims ``[3, 256, 256]``) as one request of batch N, and
``visual``'s dynamic batcher merges those requests from concurrent videos
(``tests/export/test_ensemble.py`` checks both against the real server). Hence N must
stay within each composing model's ``max_batch_size``: the dispatcher chunks long videos
(``Settings.max_items_per_request``).

``face_detector`` and ``vad`` are not steps: the dispatcher calls them first to find the
crops and the speech.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from dfd.ensemble import ENSEMBLE_NAME, Ensemble


def ensemble_header(ensemble: Ensemble) -> str:
    steps = ", ".join(s.model.name for s in ensemble.steps)
    return (
        f"deepfake_ensemble: one request per video; steps {steps} (no fusion in the graph).\n"
        "In every step's input_map and output_map, `key` is the composing model's tensor and\n"
        "`value` is the ensemble's tensor."
    )


def ensemble_config(ensemble: Ensemble) -> mc.ModelConfig:
    """The ensemble's ``ModelConfig`` (``dfd.ensemble.for_settings``)."""
    config = mc.ModelConfig(name=ENSEMBLE_NAME, platform="ensemble", max_batch_size=0)
    for tensors, field in ((ensemble.inputs, config.input), (ensemble.outputs, config.output)):
        for t in tensors:
            field.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.dtype}"), dims=t.dims)
    for step in ensemble.steps:
        s = config.ensemble_scheduling.step.add(
            model_name=step.model.name, model_version=step.model.version
        )
        # key: composing model's tensor; value: ensemble tensor.
        s.input_map.update(step.inputs)
        s.output_map.update(step.outputs)
    return config
