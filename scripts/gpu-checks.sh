#!/usr/bin/env bash
# The GPU checks this project owes, as one command for a lent H100/H200 machine.
# Prepare here with scripts/gpu-pack.sh; run there with carry [".gpu"]. Results go to
# $OUT (the device tool brings them back); copy them into benchmarks/results/.
#
# What that machine's image has and lacks: PyTorch with CUDA, yes; TensorRT, DALI,
# onnxruntime-gpu and a Triton server, no. So this times the models in PyTorch on CUDA
# (fp32 and fp16, batches 1, 8, 32) and checks that CUDA computes what the CPU does,
# and records which of the absent parts really are absent.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/dfd-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/dfd-site .gpu/whl/*.whl || { echo "gpu-checks: wheels did not install"; exit 1; }
export PYTHONPATH="/tmp/dfd-site:$PWD" DFD_WEIGHTS_DIR="$PWD/.gpu/weights" DFD_DATA_DIR=/tmp/dfd-data
{
    nvidia-smi -L
    python3 - <<'PY'
import importlib.util
import platform

import torch

print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("tensorrt", "nvidia.dali", "onnxruntime", "tritonclient"):
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    print(name, "present" if found else "absent")
PY
} 2>&1 | tee "$OUT/device.txt"
python3 -m benchmarks.bench_triton --torch-cuda --duration-s 4 --out "$OUT" 2>&1 | tee "$OUT/torch_cuda.log"
status=${PIPESTATUS[0]}
ls -l "$OUT"
exit "$status"
