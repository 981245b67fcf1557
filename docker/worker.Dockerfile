# syntax=docker/dockerfile:1
# dfd worker: fetch, probe, decode (PyAV, whose wheels bundle FFmpeg), face crops,
# Triton requests, evidence. All inference runs in Triton, so no torch or onnxruntime.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t dfd-worker .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DFD_DATA_DIR=/var/lib/dfd

# fpcalc (Chromaprint): the fingerprint of audio files, for the bank of known fakes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libchromaprint-tools \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/dfd --create-home dfd

# The worker's share of pyproject.toml's dependencies (until they are split into extras).
# numpy<2: the wire format Triton's python backend expects (see ARCHITECTURE.md).
RUN pip install \
      "pydantic>=2.6" "pydantic-settings>=2.2" "numpy>=1.24,<2" \
      "redis>=5" "rq>=1.16,<3" "prometheus-client>=0.20" "psutil>=5.9" \
      "httpx>=0.27" "av>=12" "pillow>=10" "yt-dlp>=2024.1" "minio>=7.2" \
      "c2pa-python>=0.38,<0.39" "pdqhash>=0.2.8" \
      "tritonclient[grpc,http]>=2.40" \
      "opentelemetry-api>=1.25" "opentelemetry-sdk>=1.25" "opentelemetry-exporter-otlp-proto-http>=1.25"

WORKDIR /opt/dfd
COPY pyproject.toml README.md ./
COPY dfd ./dfd
COPY cli ./cli
COPY gateway ./gateway
COPY dispatcher ./dispatcher
COPY export ./export
COPY ensemble_config ./ensemble_config
COPY model_repository ./model_repository
# Editable: export/ finds model_repository/python_onnx beside it in the source tree.
RUN pip install --no-deps -e .

USER dfd
WORKDIR /var/lib/dfd
CMD ["dfd", "worker"]
