#!/usr/bin/env bash
# Gathers, here, what scripts/gpu-checks.sh needs on a lent GPU machine, which has no
# internet: wheels (Python 3.12, x86-64) of the packages its image lacks, pinned to the
# versions this project's venv runs, and the checkpoints the checks load.
#
#   DFD_WEIGHTS_DIR=../shared/weights bash scripts/gpu-pack.sh
#   then: device run, carry [".gpu"], command "bash scripts/gpu-checks.sh", timeout_s 480
#
# Everything lands in .gpu/ (git-ignored; under the device tool's 64 MiB carry limit).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
WEIGHTS="${DFD_WEIGHTS_DIR:-../shared/weights}"
# The GPU image has torch, numpy, h5py, onnx, httpx; dfd.settings needs these too.
PACKAGES=(pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection)
# The checkpoints of the default visual, audio and lip-sync models.
CHECKPOINTS=(mesonet/Meso4_DF.h5 aasist/AASIST.pth aasist/AASIST.conf light_asd/pretrain_AVA_CVPR.model)

rm -rf .gpu
mkdir -p .gpu/whl .gpu/weights
pins=()
for name in "${PACKAGES[@]}"; do
    version="$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
    if [[ -z "$version" ]]; then
        echo "gpu-pack: $name is not installed in $PY's environment (run make venv first)" >&2
        exit 1
    fi
    pins+=("$name==$version")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl "${pins[@]}"
for file in "${CHECKPOINTS[@]}"; do
    if [[ ! -f "$WEIGHTS/$file" ]]; then
        echo "gpu-pack: $WEIGHTS/$file not found (set DFD_WEIGHTS_DIR)" >&2
        exit 1
    fi
    mkdir -p ".gpu/weights/$(dirname "$file")"
    cp "$WEIGHTS/$file" ".gpu/weights/$file"
done
echo "gpu-pack: ${pins[*]}"
du -sh .gpu
