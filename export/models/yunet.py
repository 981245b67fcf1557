"""YuNet face detector: the published dynamic-size ONNX plus our own decoding graph.

The published ``yunet_n_dynamic.onnx`` (libfacedetection.train) outputs raw per-stride
heads: ``cls_s``, ``obj_s`` (sigmoids, (N, A_s, 1)), ``bbox_s`` (N, A_s, 4) and ``kps_s``
(N, A_s, 10) for strides 8, 16 and 32, where A_s = (H/s)(W/s) priors in row-major order.
We append ONNX nodes that decode them, per prior at grid cell (r, c) of stride s:

- centre ``((c + dx) s, (r + dy) s)``, size ``(exp(dw) s, exp(dh) s)`` -> ``x1, y1, x2, y2``;
- landmark k ``((c + kx_k) s, (r + ky_k) s)``;
- score ``sqrt(clip(cls, 0, 1) * clip(obj, 0, 1))``;

so the served model maps ``image`` (N, 3, H, W) BGR 0..255 (H, W multiples of 32) to
``boxes`` (N, A, 4), ``landmarks`` (N, A, 10) and ``scores`` (N, A), A = sum of A_s.
NMS stays with the caller (``dfd.yunet_post``). :func:`decode_reference` is the same
decoding in numpy, used to check the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

STRIDES = (8, 16, 32)
OPSET = 17
_RAW_INPUT = "input"


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(value, name + "_v")
    )


def _decode_nodes(image: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """Nodes decoding every stride's raw heads; returns (nodes, [boxes, landmarks, scores])."""
    nodes = [
        _const("dec_i2", np.array(2, np.int64)),
        _const("dec_i3", np.array(3, np.int64)),
        _const("dec_zero", np.array(0, np.int64)),
        _const("dec_one", np.array(1, np.int64)),
        _const("dec_ax0", np.array([0], np.int64)),
        _const("dec_ax1", np.array([1], np.int64)),
        _const("dec_ax2", np.array([2], np.int64)),
        _const("dec_flat", np.array([-1], np.int64)),
        _const("dec_kps_pairs", np.array([0, 0, 5, 2], np.int64)),
        _const("dec_kps_flat", np.array([0, 0, 10], np.int64)),
        _const("dec_f0", np.array(0.0, np.float32)),
        _const("dec_f1", np.array(1.0, np.float32)),
        _const("dec_half", np.array(0.5, np.float32)),
        _const("dec_s0", np.array([0], np.int64)),
        _const("dec_s2", np.array([2], np.int64)),
        _const("dec_s4", np.array([4], np.int64)),
        helper.make_node("Shape", [image], ["dec_shape"]),
        helper.make_node("Gather", ["dec_shape", "dec_i2"], ["dec_h"], axis=0),
        helper.make_node("Gather", ["dec_shape", "dec_i3"], ["dec_w"], axis=0),
    ]
    boxes, landmarks, scores = [], [], []
    for s in STRIDES:
        p = f"dec{s}_"

        def n(op: str, inputs: list[str], out: str, p: str = p, **attrs) -> str:
            nodes.append(helper.make_node(op, inputs, [p + out], **attrs))
            return p + out

        nodes.append(_const(p + "si", np.array(s, np.int64)))
        nodes.append(_const(p + "sf", np.array(float(s), np.float32)))
        rows = n("Div", ["dec_h", p + "si"], "rows")
        cols = n("Div", ["dec_w", p + "si"], "cols")
        r = n("Cast", [n("Range", ["dec_zero", rows, "dec_one"], "r")], "rf", to=TensorProto.FLOAT)
        c = n("Cast", [n("Range", ["dec_zero", cols, "dec_one"], "c")], "cf", to=TensorProto.FLOAT)
        r_col = n("Unsqueeze", [r, "dec_ax1"], "r_col")  # (rows, 1)
        c_row = n("Unsqueeze", [c, "dec_ax0"], "c_row")  # (1, cols)
        # broadcast to the (rows, cols) grid, then flatten row-major like the heads
        gx = n("Add", [c_row, n("Mul", [r_col, "dec_f0"], "r0")], "gx")
        gy = n("Add", [r_col, n("Mul", [c_row, "dec_f0"], "c0")], "gy")
        gx = n("Unsqueeze", [n("Reshape", [gx, "dec_flat"], "gx_flat"), "dec_ax1"], "gx_col")
        gy = n("Unsqueeze", [n("Reshape", [gy, "dec_flat"], "gy_flat"), "dec_ax1"], "gy_col")
        prior = n(
            "Unsqueeze", [n("Concat", [gx, gy], "prior2", axis=1), "dec_ax0"], "prior"
        )  # (1, A, 2)

        xy = n("Slice", [f"bbox_{s}", "dec_s0", "dec_s2", "dec_ax2"], "xy")
        wh = n("Slice", [f"bbox_{s}", "dec_s2", "dec_s4", "dec_ax2"], "wh")
        centre = n("Mul", [n("Add", [xy, prior], "xy_abs"), p + "sf"], "centre")
        half = n(
            "Mul", [n("Mul", [n("Exp", [wh], "ewh"), p + "sf"], "size"), "dec_half"], "halfsize"
        )
        x1y1 = n("Sub", [centre, half], "x1y1")
        x2y2 = n("Add", [centre, half], "x2y2")
        boxes.append(n("Concat", [x1y1, x2y2], "boxes", axis=2))

        kps = n("Reshape", [f"kps_{s}", "dec_kps_pairs"], "kps_pairs")  # (N, A, 5, 2)
        kps = n("Add", [kps, n("Unsqueeze", [prior, "dec_ax2"], "prior_k")], "kps_abs")
        kps = n("Mul", [kps, p + "sf"], "kps_px")
        landmarks.append(n("Reshape", [kps, "dec_kps_flat"], "landmarks"))

        cls = n("Clip", [f"cls_{s}", "dec_f0", "dec_f1"], "cls_c")
        obj = n("Clip", [f"obj_{s}", "dec_f0", "dec_f1"], "obj_c")
        score = n("Sqrt", [n("Mul", [cls, obj], "co")], "score3")
        scores.append(n("Squeeze", [score, "dec_ax2"], "scores"))

    nodes.append(helper.make_node("Concat", boxes, ["boxes"], axis=1))
    nodes.append(helper.make_node("Concat", landmarks, ["landmarks"], axis=1))
    nodes.append(helper.make_node("Concat", scores, ["scores"], axis=1))
    return nodes, ["boxes", "landmarks", "scores"]


def with_decoder(published: onnx.ModelProto, input_name: str = "image") -> onnx.ModelProto:
    """The published YuNet graph with decoding appended and its raw outputs replaced."""
    model = version_converter.convert_version(published, OPSET)
    graph = model.graph
    if [i.name for i in graph.input if i.name == _RAW_INPUT] != [_RAW_INPUT]:
        raise ValueError(f"YuNet ONNX: expected an input named {_RAW_INPUT!r}")
    for node in graph.node:
        node.input[:] = [input_name if x == _RAW_INPUT else x for x in node.input]
    graph.input[0].name = input_name
    raw = {o.name for o in graph.output}
    wanted = {f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES}
    if not wanted <= raw:
        raise ValueError(f"YuNet ONNX: expected raw outputs {sorted(wanted)}, got {sorted(raw)}")
    nodes, outputs = _decode_nodes(input_name)
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", "priors", 4]),
            helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["batch", "priors", 10]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "priors"]),
        ]
    )
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model, full_check=True)
    return model


def build(path: Path) -> onnx.ModelProto:
    """The served face detector built from the published ONNX at ``path``."""
    return with_decoder(onnx.load(str(path)))


def decode_reference(raw: dict[str, np.ndarray], height: int, width: int) -> tuple[np.ndarray, ...]:
    """The decoding in numpy, from the published model's raw outputs (by name)."""
    boxes, landmarks, scores = [], [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        r, c = np.divmod(np.arange(rows * cols), cols)
        prior = np.stack([c, r], axis=1).astype(np.float32)[None]  # (1, A, 2)
        bbox = raw[f"bbox_{s}"]
        centre = (bbox[..., :2] + prior) * s
        size = np.exp(bbox[..., 2:]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=-1))
        kps = raw[f"kps_{s}"].reshape(*bbox.shape[:2], 5, 2)
        landmarks.append(((kps + prior[:, :, None, :]) * s).reshape(*bbox.shape[:2], 10))
        score = np.sqrt(np.clip(raw[f"cls_{s}"], 0, 1) * np.clip(raw[f"obj_{s}"], 0, 1))
        scores.append(score[..., 0])
    return np.concatenate(boxes, 1), np.concatenate(landmarks, 1), np.concatenate(scores, 1)
