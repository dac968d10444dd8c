# syntax=docker/dockerfile:1
#
# miLLM container images.
#
#   CPU (default):  docker build -t millm .
#   NVIDIA CUDA:    docker build --target runtime-cuda --build-arg CUDA_COMPUTE_CAP=86 -t millm:cuda .
#                   (CUDA_COMPUTE_CAP: 80 = A100, 86 = RTX 30xx/A10, 89 = RTX 40xx/L4, 90 = H100)
#                   run with: docker run --gpus all -p 8000:8000 -v millm-data:/data millm:cuda
#
# Stages: `web` builds the web UI (Node), `builder` / `builder-cuda` build the binary with the UI
# embedded, `runtime-cuda` and `runtime` (the last, so the default target) are the images.
# Their HEALTHCHECK asks /api/health/live (the process answers), not /api/health (readiness,
# which fails while the database is away), so a database outage never restarts the container.

ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm
ARG CUDA_VERSION=12.4.1

# --- Web UI -----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# --- CPU build --------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=web /src/web/dist web/dist
# The UI is already built in the `web` stage: build.rs must not run npm.
ENV MILLM_SKIP_WEB_BUILD=1
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin millm \
 && cp target/release/millm /usr/local/bin/millm

# --- CUDA build -------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS builder-cuda
ARG CUDA_COMPUTE_CAP=80
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl build-essential pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
WORKDIR /src
COPY . .
COPY --from=web /src/web/dist web/dist
# No GPU is visible while building, so candle's kernels are compiled for this compute capability.
ENV MILLM_SKIP_WEB_BUILD=1 CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --features cuda --bin millm \
 && cp target/release/millm /usr/local/bin/millm

# --- CUDA runtime -----------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04 AS runtime-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home millm \
 && mkdir -p /data && chown millm:millm /data
COPY --from=builder-cuda /usr/local/bin/millm /usr/local/bin/millm
# Every interface inside the container: start-up then requires MILLM_API_KEY (docker run -e).
ENV HOST=0.0.0.0 PORT=8000 MILLM_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
USER millm
WORKDIR /data
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/api/health/live" >/dev/null || exit 1
ENTRYPOINT ["millm"]
CMD ["serve"]

# --- CPU runtime (default target) -------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home millm \
 && mkdir -p /data && chown millm:millm /data
COPY --from=builder /usr/local/bin/millm /usr/local/bin/millm
# Every interface inside the container: start-up then requires MILLM_API_KEY (docker run -e).
ENV HOST=0.0.0.0 PORT=8000 MILLM_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
USER millm
WORKDIR /data
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/api/health/live" >/dev/null || exit 1
ENTRYPOINT ["millm"]
CMD ["serve"]
