# syntax=docker/dockerfile:1
#
# The vastgate image, in two targets (README "Docker image"):
#   docker build --target base  -t vastgate:base  .   gateway + supervisor, filebrowser, ttyd, logdy
#   docker build --target forge -t vastgate:forge .   base + Stable Diffusion WebUI Forge
#
# Downloads are pinned and verified against docker/versions.env (written by
# docker/update-versions.sh); a missing or different checksum stops the build.
#
# hadolint: DL3008 (pin apt package versions) is ignored on purpose: Ubuntu's and Debian's
# archives drop superseded versions, so exact pins break rebuilds within weeks; the base images
# are pinned by tag instead, and everything downloaded from elsewhere is pinned and hashed.
# hadolint global ignore=DL3008

ARG CUDA_TAG=12.4.1-runtime-ubuntu22.04
ARG RUST_VERSION=1.83

# ---- builder: vastgate as one static binary ----------------------------------------------------
# A static musl build, not a glibc one: the rust image is Debian 12 (glibc 2.36) and the CUDA
# runtime images are Ubuntu 22.04 (glibc 2.35), so a glibc binary built here would not start
# there; a static binary runs on any CUDA_TAG. C dependencies (ring) build with musl-gcc.
FROM rust:${RUST_VERSION}-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin vastgate \
    && install -m 0755 target/x86_64-unknown-linux-musl/release/vastgate /usr/local/bin/vastgate

# ---- downloads: filebrowser and logdy, verified --------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS downloads
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /downloads
COPY docker/versions.env docker/verify-download.sh ./
# verify-download.sh refuses an empty, malformed or different checksum, naming the script to run.
RUN . ./versions.env \
    && curl -fsSL --retry 3 -o filebrowser.tar.gz \
        "https://github.com/filebrowser/filebrowser/releases/download/v${FILEBROWSER_VERSION}/linux-amd64-filebrowser.tar.gz" \
    && ./verify-download.sh filebrowser.tar.gz FILEBROWSER ./versions.env \
    && tar -xzf filebrowser.tar.gz filebrowser \
    && curl -fsSL --retry 3 -o logdy \
        "https://github.com/logdyhq/logdy-core/releases/download/v${LOGDY_VERSION}/logdy_linux_amd64" \
    && ./verify-download.sh logdy LOGDY ./versions.env \
    && chmod 0755 filebrowser logdy

# ---- base: the gateway, the supervisor and the helper apps --------------------------------------
FROM nvidia/cuda:${CUDA_TAG} AS base
ARG DEBIAN_FRONTEND=noninteractive
# ttyd: the terminal; curl: provisioning scripts given as URLs (and most scripts themselves).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ttyd curl ca-certificates procps less nano \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/vastgate /usr/local/bin/vastgate
COPY --from=downloads /downloads/filebrowser /downloads/logdy /usr/local/bin/
COPY docker/ /tmp/vastgate-docker/
RUN /tmp/vastgate-docker/install.sh base \
    && rm -rf /tmp/vastgate-docker \
    && vastgate check --config /etc/vastgate/proxy.toml
WORKDIR /workspace
EXPOSE 8000
# No curl needed: vastgate asks its own /healthz (a TLS port's 308 to https counts as healthy).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/vastgate", "healthcheck", "--config", "/etc/vastgate/proxy.toml"]
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]

# ---- forge: base + Stable Diffusion WebUI Forge at /forge ---------------------------------------
FROM base AS forge
ARG DEBIAN_FRONTEND=noninteractive
# Empty: the FORGE_COMMIT of docker/versions.env. A full 40-character commit hash otherwise.
ARG FORGE_COMMIT=
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev git build-essential \
        libgl1 libglib2.0-0 libgoogle-perftools4 bc \
    && rm -rf /var/lib/apt/lists/*
COPY docker/versions.env /tmp/versions.env
# Forge's own installer (launch.py --exit) fills the venv once here, so that at run time
# --skip-prepare-environment starts it in seconds. appuser owns /forge: Forge writes tmp/ and
# extension installs write the venv.
WORKDIR /forge
RUN given="${FORGE_COMMIT}" \
    && . /tmp/versions.env \
    && commit="${given:-$FORGE_COMMIT}" \
    && if ! [[ "$commit" =~ ^[0-9a-f]{40}$ ]]; then \
        echo "FORGE_COMMIT is '${commit}', not a commit hash: run docker/update-versions.sh (or pass --build-arg FORGE_COMMIT=<40 hex digits>)" >&2; \
        exit 1; \
    fi \
    && git clone https://github.com/lllyasviel/stable-diffusion-webui-forge.git . \
    && git checkout --detach "$commit" \
    && python3 -m venv /forge/venv \
    && /forge/venv/bin/python launch.py --skip-torch-cuda-test --exit \
    && mkdir -p /forge/tmp \
    && chown -R appuser:appuser /forge \
    && rm -rf /root/.cache/pip /tmp/versions.env
COPY docker/proxy.toml /etc/vastgate/proxy.toml
RUN vastgate check --config /etc/vastgate/proxy.toml
WORKDIR /workspace
