#!/usr/bin/env bash
# Shows vastgate at work on any machine (no Docker, no GPU): `vastgate up` supervises two
# stand-in apps and serves them behind a login on http://127.0.0.1:8000/. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
cat <<'MSG'
vastgate demo on http://127.0.0.1:8000/  (user: demo, password: vastgate-demo)
  the portal (programs, routes):        http://127.0.0.1:8000/_vastgate/
  the stand-in app (live SSE):          http://127.0.0.1:8000/
  a file server behind /files/:         http://127.0.0.1:8000/files/
  a slow API:   curl -su demo:vastgate-demo -H 'Content-Type: application/json' -d '{"prompt":"cat"}' http://127.0.0.1:8000/sdapi/v1/txt2img
  status:       target/release/vastgate status --config examples/demo.toml
  restart one:  target/release/vastgate restart app --config examples/demo.toml
Programs' output and one JSON access-log line per request follow. Ctrl-C stops.
MSG
exec ./target/release/vastgate up --config examples/demo.toml
