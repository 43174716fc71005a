#!/bin/bash
# Starts Forge for vastgate ([program.forge]): on loopback port 7860 (no --listen, so the
# Extensions tab stays enabled behind the gateway), with its API, without re-checking its
# packages at every start, its models, outputs, settings and extensions under /workspace/forge.
# FORGE_ARGS adds flags: split on whitespace, no quoting (e.g. FORGE_ARGS="--xformers --cuda-malloc").
set -euo pipefail

read -r -a extra <<<"${FORGE_ARGS:-}"
cd /forge
exec /forge/venv/bin/python launch.py \
    --port 7860 \
    --api \
    --skip-prepare-environment \
    --data-dir /workspace/forge \
    "${extra[@]}"
