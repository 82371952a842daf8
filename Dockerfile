# syntax=docker/dockerfile:1
#
# The guard server, `qwen3guard serve`, as a container image (docs/DEPLOY.md).
#
#   docker build -t qwen3guard .
#   docker run --rm -p 8080:8080 --stop-timeout 65 -v qwen3guard-hf:/cache/huggingface \
#       -e QWEN3GUARD_GEN_MODEL=Qwen/Qwen3Guard-Gen-0.6B \
#       -e QWEN3GUARD_STREAM_MODEL=Qwen/Qwen3Guard-Stream-0.6B qwen3guard
#
# Two stages: the official Rust image (Debian) builds the one binary; a slim Debian of the
# same release runs it, so the glibc the binary was linked against is the one it finds.
# The build needs crates.io and nothing else: Cargo.lock has no git sources, the project
# has no submodules and its crates have no build scripts. The kernels choose the
# instruction set when the process starts (AVX-512, AVX2, NEON or portable loops), so one
# image fits every x86-64 (or, built for linux/arm64, every aarch64) machine.
#
# Linted by .ci/deploy-lint (hadolint); no container engine was available where it was
# written, so it has not been built there.

# The toolchain the tests run on; Cargo.toml's rust-version (1.89) is the oldest it allows.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Dependency caching: BuildKit keeps the downloaded crates and the target directory
# between builds, so a change to the project's sources recompiles only its own crates.
# (The usual alternative, building dependencies against stub sources in an earlier layer,
# needs a stub for every workspace member and goes wrong when the stubs' timestamps are
# newer than the real sources'.) The target directory lives in the cache, so the binary
# is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p qwen3guard-cli \
    && install -D -m 0755 target/release/qwen3guard /out/qwen3guard

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# curl for the HEALTHCHECK below (the binary has no probe subcommand); ca-certificates
# for Hugging Face downloads and HTTPS upstreams. Versions are left to the release's
# security updates rather than pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 qwen3guard \
    && useradd --system --uid 10001 --gid qwen3guard --home-dir /cache \
        --no-create-home --shell /usr/sbin/nologin qwen3guard \
    && mkdir -p /models /cache/huggingface \
    && chown -R qwen3guard:qwen3guard /models /cache
COPY --from=builder /out/qwen3guard /usr/local/bin/qwen3guard

LABEL org.opencontainers.image.title="qwen3guard" \
      org.opencontainers.image.description="Qwen3Guard safety guardrail server (qwen3guard serve)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Listen on every interface inside the container (the binary's own default is loopback).
# Checkpoints: mount directories under /models and name them (QWEN3GUARD_GEN_MODEL=
# /models/Qwen3Guard-Gen-0.6B), or name Hub repos, which are downloaded into HF_HOME on
# first start; keep that on a volume so that restarts do not download again.
ENV QWEN3GUARD_HOST=0.0.0.0 \
    QWEN3GUARD_PORT=8080 \
    HF_HOME=/cache/huggingface
VOLUME ["/models", "/cache/huggingface"]
EXPOSE 8080

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001

# /health is 503 while the models load (a first start may download them: hence the long
# start period) and while the server drains after SIGTERM; its own scheduler check may
# take up to 5 s. `docker stop` waits 10 s by default: give it more than the drain and
# the in-flight grace after it (--drain-seconds and --shutdown-grace-secs, 30 + 30 by
# default), e.g. `docker run --stop-timeout 65`.
# (A shell, to follow QWEN3GUARD_PORT; `exit 1` because curl's own codes are not Docker's.)
HEALTHCHECK --interval=15s --timeout=8s --start-period=5m --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${QWEN3GUARD_PORT:-8080}/health || exit 1"]

ENTRYPOINT ["qwen3guard"]
CMD ["serve"]
