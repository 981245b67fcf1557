"""The Triton benchmark's ceiling arithmetic and report, and the queue-policy probe's config edit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_triton import _item_cpu_ms, ceiling, markdown
from benchmarks.probe_queue_policy import VARIANTS

pytestmark = pytest.mark.unit


def _cell(rendering: str, rps: float, server: float, client: float, triton: float = 0.25) -> dict:
    return {
        "rendering": rendering,
        "model": "visual",
        "concurrency": 32,
        "requests": 100,
        "window_s": 1.0,
        "throughput_rps": rps,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "p99_ms": 3.0,
        "executions": 10 if rendering == "batching" else 100,
        "inferences": 100,
        "server_cpu_ms_per_request": server,
        "triton_cpu_ms_per_request": triton,
        "client_cpu_ms_per_request": client,
    }


def test_ceiling_counts_what_every_request_costs_batched_or_not():
    on = _cell("batching", 500.0, 2.4, 0.5, triton=0.3)
    off = _cell("no_batching", 400.0, 2.25, 0.5, triton=0.25)
    c = ceiling(1.25, on, off, cores=2)
    # 2 cores / (1.25 floor + 0.25 tritonserver (the lower) + 0.5 client) ms = 1000 rps.
    assert c["rps"] == pytest.approx(1000.0)
    assert c["speed_up_here"] == pytest.approx(2.5)
    # The server alone: 2.25 ms unbatched could fall to 1.25 + 0.25 ms, no lower.
    assert c["speed_up_server_alone"] == pytest.approx(1.5)


def test_report_quotes_the_ceiling_beside_the_measured_speed_up():
    result = {
        "when": "2026-11-28T00:00:00Z",
        "machine": {
            "cpu": "test cpu",
            "cores": 2,
            "ram_gib": 1.0,
            "platform": "linux",
            "python": "3.11",
            "triton": "2.51",
            "onnxruntime": "1",
            "load_average_at_start": [0.0, 0.0, 0.0],
        },
        "models": ["visual"],
        "concurrency": [32],
        "options": {"cores": 2},
        "floor_ms_per_request": {"visual": 1.5},
        "cells": [
            _cell("batching", 500.0, 2.4, 0.5),
            _cell("no_batching", 600.0, 2.0, 0.5),
        ],
    }
    text = markdown(result)
    # 2 cores / (1.5 + 0.25 + 0.5) ms = 888.9 rps
    assert "| visual | 32 | 1.50 | 0.25 | 0.50 | 2.0 | 888.9 | 1.48x | 1.14x | 0.83x |" in text


def test_floor_takes_the_cheaper_batch_per_item(tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64, 64])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    item = {"x": np.ones((1, 64, 64), np.float32)}
    ms = _item_cpu_ms(path, item, batches=(1, 4), runs=2, min_s=0.05)
    assert 0.0 <= ms < 1000.0


@pytest.mark.parametrize("name", [n for n in VARIANTS if "no queue policy" not in n])
def test_probe_adds_a_valid_queue_policy(name: str):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from dfd.settings import Settings
    from dfd.specs import spec
    from export.triton_repo import RepositoryOptions, model_config

    s = spec(Settings().visual_model)
    built = text_format.MessageToString(model_config(s, "cpu", RepositoryOptions()))
    assert "default_queue_policy" not in built
    edited = text_format.Parse(VARIANTS[name](built), mc.ModelConfig())
    assert edited.dynamic_batching.HasField("default_queue_policy")
    assert list(edited.dynamic_batching.preferred_batch_size) == list(
        s.batching.preferred_batch_sizes if s.batching else ()
    )
