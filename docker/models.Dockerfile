# syntax=docker/dockerfile:1
# dfd models: a one-shot job that fetches the weights (checked by SHA-256, or read from
# DFD_WEIGHTS_DIR), exports ONNX and writes a Triton repository rendering into
# $DFD_DATA_DIR/model_repository/<target>. It is skipped when that rendering is current.
# Runs on CPU: the gpu rendering is ONNX for Triton's onnxruntime backend with the
# TensorRT execution provider, whose engines Triton builds on the GPU at load time.
# Build from the repository root:  docker build -f docker/models.Dockerfile -t dfd-models .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DFD_DATA_DIR=/var/lib/dfd

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dfd --create-home dfd

# The CPU build of torch (a fraction of the size of the default CUDA one); export needs no GPU.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /opt/dfd
COPY pyproject.toml README.md ./
COPY dfd ./dfd
COPY cli ./cli
COPY gateway ./gateway
COPY dispatcher ./dispatcher
COPY export ./export
COPY ensemble_config ./ensemble_config
COPY model_repository ./model_repository
# Full dependencies (torch is already satisfied by the CPU build above). Editable:
# export/ finds model_repository/python_onnx beside it in the source tree.
RUN pip install -e .

USER dfd
WORKDIR /var/lib/dfd
ENTRYPOINT ["dfd", "models", "build"]
CMD ["--target", "gpu"]
