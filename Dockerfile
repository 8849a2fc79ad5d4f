# syntax=docker/dockerfile:1
# spade: the inference server (spade-server), the CLI (spade) and the trainer in one image.
#   CPU (default):  docker build -t spade:cpu .
#   CUDA:           docker build --build-arg VARIANT=cuda -t spade:cuda .
# Environment (see `spade-server --help`): SPADE_LISTEN, SPADE_MODELS (NAME=PATH,...),
# SPADE_DEVICES, SPADE_WORKERS_PER_DEVICE, SPADE_MAX_BATCH_SIZE, SPADE_MAX_BATCH_DELAY_MS,
# SPADE_MAX_QUEUE, SPADE_REQUEST_TIMEOUT, SPADE_API_KEYS / SPADE_API_KEY_FILE,
# SPADE_MAX_BODY_BYTES, SPADE_MAX_PIXELS, SPADE_CORS_ORIGINS, SPADE_SHUTDOWN_GRACE.
# The image serves the bundled landscapes model (built into the binary) without any volume or
# SPADE_MODELS. Mount your own checkpoints (folders or converted .safetensors files,
# read-only) at /models and name them in SPADE_MODELS; /data (datasets in the official layouts, VGG19 weights) and /checkpoints for
# `trainer` (see deploy/training). Trainer environment for data-parallel runs: WORLD_SIZE,
# RANK / JOB_COMPLETION_INDEX, LOCAL_RANK and the NCCL id file (see README, Training).
ARG VARIANT=cpu
ARG RUST_VERSION=1.95
ARG CUDA_VERSION=11.8.0

# ---- build stages -----------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build-cpu
ENV CARGO_FEATURES="" \
    TRAINER_FEATURES=""

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS build-cuda
ARG RUST_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Build tools follow the base image's release; pinning each version would break on every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/* \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
ENV PATH=/root/.cargo/bin:$PATH \
    CARGO_FEATURES="cuda" \
    TRAINER_FEATURES="nccl" \
    CUDA_COMPUTE_CAP=80

# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
WORKDIR /src
# Dependencies first, with placeholder sources, so they stay cached while the code changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/spade-model/Cargo.toml crates/spade-model/
COPY crates/spade-cli/Cargo.toml crates/spade-cli/
COPY crates/spade-server/Cargo.toml crates/spade-server/
COPY crates/spade-landscapes/Cargo.toml crates/spade-landscapes/
RUN for c in spade-model spade-cli spade-server spade-landscapes; do mkdir -p crates/$c/src && echo 'fn main() {}' > crates/$c/src/main.rs && touch crates/$c/src/lib.rs; done \
    && mkdir -p crates/spade-model/src/bin && echo 'fn main() {}' > crates/spade-model/src/bin/trainer.rs \
    && cargo build --release --locked -p spade-server -p spade-cli --features "${CARGO_FEATURES}" \
    && cargo build --release --locked -p spade-model --bin trainer --features "${TRAINER_FEATURES}"
COPY crates crates
COPY openapi.yaml ./
RUN touch crates/*/src/*.rs crates/spade-model/src/bin/*.rs \
    && cargo build --release --locked -p spade-server -p spade-cli --features "${CARGO_FEATURES}" \
    && cargo build --release --locked -p spade-model --bin trainer --features "${TRAINER_FEATURES}" \
    && mkdir -p /out && cp target/release/spade-server target/release/spade target/release/trainer /out/

# ---- runtime stages ---------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04 AS runtime-cuda
ENV SPADE_DEVICES=cuda:0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3006
FROM runtime-${VARIANT}
# curl for HEALTHCHECK; versions follow the base image (see above).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin spade \
    && mkdir -p /models /data /checkpoints && chown spade /models /checkpoints
COPY --from=build /out/spade-server /out/spade /out/trainer /usr/local/bin/
ENV SPADE_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
USER 10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["spade-server"]
