"""Model side of dfd: specs, weights, PyTorch implementations, ONNX export, Triton repository.

``dfd.specs`` and ``export.weights`` import no ML library; everything else may.
"""
