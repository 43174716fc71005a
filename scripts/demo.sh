#!/usr/bin/env bash
# Shows vastgate at work on any machine (no Docker, no GPU): stand-in apps on loopback ports
# behind one gateway on http://127.0.0.1:8000/. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$PWD" >/dev/null 2>&1 &
python3 examples/standin_app.py 7860 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
cat <<MSG
vastgate demo on http://127.0.0.1:8000/
  the stand-in app (live server-sent events): http://127.0.0.1:8000/
  a file server behind /files/:               http://127.0.0.1:8000/files/
  a slow API through the gateway:             curl -s -X POST -d '{"prompt":"cat"}' http://127.0.0.1:8000/sdapi/v1/txt2img
  the gateway's health:                       curl -s http://127.0.0.1:8000/healthz
Access-log lines (JSON) follow. Ctrl-C stops.
MSG
./target/release/vastgate serve --config examples/demo.toml
