# syntax=docker/dockerfile:1
# dfd gateway: the HTTP API (FastAPI + uvicorn). It validates, rate-limits and enqueues;
# it never imports media or ML libraries, so this image has none (no torch, numpy, av).
# Build from the repository root:  docker build -f docker/gateway.Dockerfile -t dfd-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DFD_DATA_DIR=/var/lib/dfd

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dfd --create-home dfd

# The gateway's share of pyproject.toml's dependencies (until they are split into extras).
RUN pip install \
      "pydantic>=2.6" "pydantic-settings>=2.2" \
      "fastapi>=0.110" "uvicorn[standard]>=0.27" "python-multipart>=0.0.9" \
      "redis>=5" "hiredis>=2" "rq>=1.16,<3" "prometheus-client>=0.20" "httpx>=0.27" \
      "opentelemetry-api>=1.25" "opentelemetry-sdk>=1.25" "opentelemetry-exporter-otlp-proto-http>=1.25"

WORKDIR /opt/dfd
# Every package's source is copied (the `dfd` command registers all subcommands; heavy
# imports happen only inside the handlers), but only the gateway's dependencies installed.
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
EXPOSE 8000
# One process per container; scale with replicas rather than uvicorn workers.
CMD ["dfd", "gateway", "--host", "0.0.0.0", "--port", "8000"]
