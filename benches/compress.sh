#!/usr/bin/env bash
# The gateway's own compression on Forge's front-end (issue 7, W10): bytes on the wire against
# the upstream's own gzip, and memory per compressing stream.
#
#   benches/compress.sh
#
# The upstream is a Starlette app from the project's .venv, served by uvicorn (as Gradio serves
# Forge), with Forge's GZipMiddleware(minimum_size=1000) (compresslevel 9, Starlette's default),
# serving Gradio's own front-end (`gradio/templates/frontend`: index.html at /, assets/ as
# static files). vastgate stands in front of it with Forge's route: `drop_accept_encoding = true`,
# compression on (the default). `benches/compression.rs` then:
#
#   1. memory: the heap of one stream of vastgate's own compress module (a counting allocator)
#      on the largest asset, what it keeps between chunks and its peak, with its bytes and CPU
#      over the corpus, at the shipped gzip level and at levels 1-6; and the compressor each
#      thread keeps for all its streams (EXPLORE=1: other encoder settings too);
#   2. page: a page load (index.html and every assets/*.js, *.css, over one keep-alive
#      connection) straight from the upstream with `Accept-Encoding: gzip, deflate, br` (its own
#      gzip: the reference) and without, then through vastgate with `gzip, deflate, br` and with
#      `gzip` alone (vastgate produces gzip only); every body is decoded and checked against the
#      file, and the upstream must not have seen an Accept-Encoding through vastgate;
#   3. hold: HOLD_STREAMS downloads of the largest asset through a fresh vastgate, each stalled
#      after its headers; vastgate's RSS growth per stream, without compression and with gzip.
#      This is the whole proxy's cost of a stalled download (hyper's buffers included, and only
#      the pages touched), so the W10 memory verdict comes from step 1.
#
# Environment (defaults in brackets): PROXY_CPU [1] (vastgate is pinned there), LOAD_CPUS [unset:
# the upstream and the client run unpinned], HOLD_STREAMS [32], REPEAT [3] page loads per
# configuration through vastgate for its CPU time, EXPLORE [0], PYTHON [.venv/bin/python],
# FRONTEND [Gradio's templates/frontend in PYTHON's site-packages], VASTGATE_TARGET [unset;
# as in compare.sh], KEEP=1 keeps the work directory (configs, logs, per-asset TSV).
# Installs nothing; says what to install when a tool is missing.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPUS=${LOAD_CPUS:-}
HOLD_STREAMS=${HOLD_STREAMS:-32}
REPEAT=${REPEAT:-3}
EXPLORE=${EXPLORE:-0}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

no_arguments "$@"

# --- tools -----------------------------------------------------------------------------------
missing=()
need curl curl
need taskset util-linux
need cargo "Rust (https://rustup.rs)"
if ((${#missing[@]})); then
    echo "compress.sh: missing tools; install them with:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import gradio, starlette, uvicorn' 2>/dev/null; then
    echo "compress.sh: $PYTHON cannot import gradio, starlette and uvicorn; make the project's" >&2
    echo "  virtual environment (python3 -m venv .venv && .venv/bin/pip install 'gradio==4.40.0')" >&2
    echo "  or point PYTHON at a Python that has them" >&2
    exit 1
fi
FRONTEND=${FRONTEND:-$("$PYTHON" -c 'import gradio, os; print(os.path.join(os.path.dirname(gradio.__file__), "templates", "frontend"))')}
[[ -f $FRONTEND/index.html && -d $FRONTEND/assets ]] || {
    echo "compress.sh: $FRONTEND has no index.html and assets/" >&2
    exit 1
}
if [[ $(nproc) -le $PROXY_CPU ]]; then
    PROXY_CPU=$(($(nproc) - 1))
fi
LOAD=() # the prefix that pins the upstream and the client, if asked
[[ -n $LOAD_CPUS ]] && LOAD=(taskset -c "$LOAD_CPUS")

# --- build -----------------------------------------------------------------------------------
cd "$ROOT"
echo "== building (cargo build --release --locked; benches/compression.rs)" >&2
build_vastgate
build_bench compression
BENCH=$BENCH_EXE

# --- processes, ports, files ---------------------------------------------------------------------
WORK=$(mktemp -d -t vastgate-compress.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "

# The upstream: Forge's middleware in front of Gradio's static front-end. The outer wrapper tells
# the client which Accept-Encoding reached the app (`-` for none), so the check below can see
# that vastgate dropped it.
cat >"$WORK/upstream.py" <<'EOF'
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

root, port = sys.argv[1], int(sys.argv[2])


async def index(request):
    # Gradio renders this template with the app's config; served here as shipped.
    return FileResponse(f"{root}/index.html")


app = Starlette(
    routes=[
        Route("/", index),
        Mount("/assets", StaticFiles(directory=f"{root}/assets")),
    ]
)
# Forge (modules/initialize_util.py, setup_middleware): GZipMiddleware(minimum_size=1000);
# compresslevel is Starlette's default, 9.
app.add_middleware(GZipMiddleware, minimum_size=1000)


def reports_accept_encoding(inner):
    async def wrapped(scope, receive, send):
        seen = b"-"
        for name, value in scope.get("headers", []):
            if name == b"accept-encoding":
                seen = value or b"-"

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-upstream-accept-encoding", seen)
                ]
            await send(message)

        if scope["type"] != "http":
            return await inner(scope, receive, send)
        await inner(scope, receive, send_with_header)

    return wrapped


uvicorn.run(
    reports_accept_encoding(app),
    host="127.0.0.1",
    port=port,
    log_level="warning",
    access_log=False,
)
EOF

free_port
UPSTREAM_PORT=$PORT
"${LOAD[@]}" "$PYTHON" "$WORK/upstream.py" "$FRONTEND" "$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_listening "$UPSTREAM_PORT" "the upstream (Starlette + uvicorn)" "$!"

VG_PID=
VG_PORT=
start_vastgate() { # a fresh vastgate, pinned; sets VG_PID and VG_PORT
    local dir=$WORK/vastgate
    mkdir -p "$dir"
    free_port
    VG_PORT=$PORT
    cat >"$dir/proxy.toml" <<EOF
[gateway]
listen = "127.0.0.1:$VG_PORT"
auth = "none"
access_log = "off"

# Forge's route as shipped (proxy.toml): the gateway drops Accept-Encoding and compresses.
[[route]]
prefix = "/"
name = "Forge"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
drop_accept_encoding = true
EOF
    taskset -c "$PROXY_CPU" "$VASTGATE" serve --config "$dir/proxy.toml" \
        >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
    VG_PID=$!
    PIDS+=("$VG_PID")
    wait_listening "$VG_PORT" vastgate "$VG_PID"
}

stop_vastgate() {
    kill -TERM "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" 2>/dev/null || true
}

LARGEST=$(find "$FRONTEND/assets" -maxdepth 1 -type f \( -name '*.js' -o -name '*.css' \) -printf '%s %f\n' |
    sort -n | tail -n 1 | cut -d' ' -f2)

check() { # check URL ACCEPT_ENCODING EXPECTED_CODING
    local got
    # %header{} needs curl 7.84 or later.
    got=$(curl -s -o /dev/null -w '%{http_code} %header{content-encoding}' -H "Accept-Encoding: $2" "$1")
    if [[ $got != "200 $3" ]]; then
        echo "compress.sh: $1 with Accept-Encoding '$2' answered '$got', expected '200 $3' (logs in $WORK)" >&2
        KEEP=1
        exit 1
    fi
    echo "  $1 (Accept-Encoding: $2): $got" >&2
}

start_vastgate
echo "== checking (200 and the expected Content-Encoding)" >&2
check "http://127.0.0.1:$UPSTREAM_PORT/assets/$LARGEST" "gzip, deflate, br" gzip
check "http://127.0.0.1:$VG_PORT/assets/$LARGEST" "gzip, deflate, br" gzip
check "http://127.0.0.1:$VG_PORT/assets/$LARGEST" gzip gzip

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vastgate: $("$VASTGATE" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty'))${VASTGATE_TARGET:+, built for $VASTGATE_TARGET}, pinned to CPU $PROXY_CPU"
echo "upstream: $("$PYTHON" -c 'import gradio, starlette, uvicorn; print(f"gradio {gradio.__version__} front-end, starlette {starlette.__version__}, uvicorn {uvicorn.__version__}")')"
echo

echo "== 1. one stream's memory and CPU (vastgate::gateway::compress, counting allocator)" >&2
memory_args=(memory --dir "$FRONTEND")
[[ $EXPLORE = 1 ]] && memory_args+=(--explore)
"$BENCH" "${memory_args[@]}" | tee "$WORK/memory.txt"
echo

echo "== 2. page load: bytes straight from the upstream and through vastgate" >&2
"${LOAD[@]}" "$BENCH" page --upstream "127.0.0.1:$UPSTREAM_PORT" --gateway "127.0.0.1:$VG_PORT" \
    --dir "$FRONTEND" --gateway-pid "$VG_PID" --repeat "$REPEAT" --out "$WORK/page.tsv" |
    tee "$WORK/page.txt"
echo
stop_vastgate

echo "== 3. $HOLD_STREAMS stalled downloads of /assets/$LARGEST: vastgate's RSS per stream" >&2
: >"$WORK/hold.tsv"
for coding in identity gzip; do
    start_vastgate
    hold_args=(hold --target "127.0.0.1:$VG_PORT" --pid "$VG_PID" --path "/assets/$LARGEST"
        --streams "$HOLD_STREAMS")
    [[ $coding != identity ]] && hold_args+=(--accept-encoding "$coding")
    "${LOAD[@]}" "$BENCH" "${hold_args[@]}" >"$WORK/hold-$coding.txt"
    grep -v '^RESULT' "$WORK/hold-$coding.txt"
    printf '%s\t%s\n' "$coding" "$(sed -n 's/^RESULT .*per_stream_kib=\([0-9.-]*\).*/\1/p' "$WORK/hold-$coding.txt")" \
        >>"$WORK/hold.tsv"
    stop_vastgate
done
echo

# --- verdicts ------------------------------------------------------------------------------------
awk '/^vastgate gzip-[0-9] \(shipped\)/ {
        printf "W10 memory per stream, counting allocator: %s held between chunks %4.0f KiB [<= 256: %s], peak %4.0f KiB [<= 256: %s]\n",
            $2, $5, $5 <= 256 ? "met" : "MISSED", $4, $4 <= 256 ? "met" : "MISSED"
    }' "$WORK/memory.txt"
grep '^vastgate per thread' "$WORK/memory.txt"
awk -F'\t' '{ per[$1] = $2 }
    END {
        printf "vastgate RSS per stalled download (whole proxy, informative): identity %.0f KiB, gzip %.0f KiB\n",
            per["identity"], per["gzip"]
    }' "$WORK/hold.tsv"
grep '^W10 bytes' "$WORK/page.txt"
sed -n 's/^RESULT .*cpu_ms_browser=\([0-9.-]*\) cpu_ms_gzip=\([0-9.-]*\) cpu_ms_identity=\([0-9.-]*\).*/vastgate CPU per page load: gzip (browser'"'"'s Accept-Encoding) \1 ms, gzip alone \2 ms, identity \3 ms/p' \
    "$WORK/page.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
