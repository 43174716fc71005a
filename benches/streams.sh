#!/usr/bin/env bash
# The stream workloads of issue 7: WebSocket tunnels (W5), 2 GiB uploads and downloads (W6) and
# server-sent events (W7), through vastgate and, for context, nginx, beside the same traffic sent
# straight to the upstream, in one run on this machine.
#
#   benches/streams.sh              # W5, W6 and W7 (about 2-3 minutes after the build)
#   benches/streams.sh ws           # only W5: 1,000 open WebSockets, memory per tunnel, echo p99
#   benches/streams.sh transfer     # only W6: 2 GiB up and down, proxy memory growth, throughput
#   benches/streams.sh sse          # only W7: delay each proxy adds to server-sent events
#
# The upstream and every client are `benches/streams.rs` (one binary, a subcommand per part): a
# WebSocket echo, an upload sink and a download source that touch no disk, and an event stream
# whose events carry the CLOCK_MONOTONIC time they were sent at. Each proxy is pinned to one core
# (`taskset -c $PROXY_CPU`; nginx `worker_processes 1`) and started afresh for every measurement
# (W6: for every transfer), so memory left over by one measurement cannot flatter the next.
# vastgate: `vastgate serve` with `auth = "basic"` and a bcrypt cost-10 htpasswd file; the
# clients send the Authorization header, so after the start-up check every request is a cache
# hit. nginx (context): the same user in an apr1 (`htpasswd -m`) file (bcrypt would cost nginx
# ~70 ms per WebSocket handshake), `proxy_http_version 1.1`, Upgrade/Connection passed for
# WebSocket, `proxy_buffering off`, `proxy_request_buffering off`, `client_max_body_size 0`,
# keep-alive to the upstream. Access logs are off in both. Before each measurement a proxy must
# answer 401 without and 200 with the credentials.
#
# Memory is VmRSS from /proc (nginx: master + worker), sampled by the clients themselves; CPU %
# is the proxy's utime + stime over the measured phase (100 = its whole core).
#   W5: WS_CONNECTIONS sockets opened (50 handshakes at a time), RSS idle (before) and with all
#       open; then each sends a 32-byte binary message every WS_INTERVAL for WS_DURATION and
#       waits for the echo. KiB/tunnel = (highest RSS while open - idle) / sockets.
#   W6: TRANSFER_MIB MiB per transfer, Content-Length and chunked, up (POST) and down (GET, the
#       upstream's answer framed either way); growth = highest RSS during the transfer - RSS just
#       before; throughput compared with the same transfer sent straight to the upstream.
#       direct, the bare relays and vastgate run TRANSFER_ROUNDS rounds (the best throughput and
#       the largest growth count), nginx one. The bare relays (`streams relay`, pinned like the
#       proxies) parse nothing: each client connection is relayed byte for byte to its own
#       upstream connection, through a buffer (relay-copy) or kernel-side with splice(2)
#       (relay-splice). They are the floor under any proxy: what they cannot reach, none can.
#   W7: SSE_EVENTS events SSE_INTERVAL_MS ms apart, requested with `Accept-Encoding: gzip, br`;
#       delay = arrival - send time; the target is on the added delay (proxy p50 - direct p50).
# Through a proxy every byte is copied twice more than direct, by a third busy process: on a
# 2-core machine the client, the upstream and the proxy share two cores, so W6's ratio to direct
# mostly measures that contention (the proxy's `CPU %` below 100 says it was not the limit). On a
# bigger machine give the clients and the upstream their own cores with LOAD_CPUS (e.g. 2-5).
#
# Environment (defaults in brackets): PROXY_CPU [1], LOAD_CPUS [unset: the clients and the
# upstream run unpinned; e.g. 0 keeps them off the proxy's core], WS_CONNECTIONS [1000],
# WS_INTERVAL [1s], WS_DURATION [10s], TRANSFER_MIB [2048], TRANSFER_ROUNDS [2],
# SSE_EVENTS [200], SSE_INTERVAL_MS [15], VASTGATE_TARGET [unset; as in compare.sh], KEEP=1
# keeps the work directory (configs, logs, raw client output).
# Installs nothing; says what to install when a tool is missing. Raises the open-file limit
# (`ulimit -n`) as far as W5 needs, within the hard limit.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-all}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPUS=${LOAD_CPUS:-}
WS_CONNECTIONS=${WS_CONNECTIONS:-1000}
WS_INTERVAL=${WS_INTERVAL:-1s}
WS_DURATION=${WS_DURATION:-10s}
TRANSFER_MIB=${TRANSFER_MIB:-2048}
TRANSFER_ROUNDS=${TRANSFER_ROUNDS:-2}
SSE_EVENTS=${SSE_EVENTS:-200}
SSE_INTERVAL_MS=${SSE_INTERVAL_MS:-15}
BENCH_USER=bench
BENCH_PASSWORD="bench-$RANDOM$RANDOM"
UPSTREAM_BODY="hello from the upstream"

case $MODE in
all | ws | transfer | sse) ;;
-h | --help)
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
*)
    echo "usage: $0 [all|ws|transfer|sse] (-h for help)" >&2
    exit 2
    ;;
esac

# --- tools -----------------------------------------------------------------------------------
missing=()
need nginx nginx-light
need taskset util-linux
need htpasswd apache2-utils
need curl curl
need cargo "Rust (https://rustup.rs)"
if ((${#missing[@]})); then
    echo "streams.sh: missing tools; install them with:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if [[ $(nproc) -le $PROXY_CPU ]]; then
    PROXY_CPU=$(($(nproc) - 1))
fi
LOAD=() # the prefix that pins the clients and the upstream, if asked
[[ -n $LOAD_CPUS ]] && LOAD=(taskset -c "$LOAD_CPUS")

# W5 holds WS_CONNECTIONS sockets in the client, twice that in the proxy (client and upstream
# side) and as many in the upstream; every process started from here inherits the limit.
want_files=$((2 * WS_CONNECTIONS + 1024))
if (($(ulimit -n) < want_files)); then
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < want_files)); then
        echo "streams.sh: W5 needs $want_files open files per process, the hard limit is $hard" \
            "(raise it, or lower WS_CONNECTIONS)" >&2
        exit 1
    fi
    ulimit -n "$want_files"
fi

# --- build -----------------------------------------------------------------------------------
cd "$ROOT"
echo "== building (cargo build --release --locked; the stream clients)" >&2
build_vastgate
build_bench streams
STREAMS=$BENCH_EXE

# --- processes, ports, files ---------------------------------------------------------------------
WORK=$(mktemp -d -t vastgate-streams.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody and read the htpasswd file per request
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # stop_pid PID: ends one process started here and forgets it
    local pid=$1 kept=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        [[ $p = "$pid" ]] || kept+=("$p")
    done
    PIDS=("${kept[@]}")
}

# Ports for the servers come from below the kernel's ephemeral range when there is room there:
# the clients' own connections (W5's thousands among them, and other programs' on this machine)
# take ports from that range, and a port bound by a connection cannot be listened on.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range || EPHEMERAL_LOW=32768
if ((EPHEMERAL_LOW > 12000)); then
    PORT_BASE=10000 PORT_SPAN=$((EPHEMERAL_LOW - 10000))
else
    PORT_BASE=20000 PORT_SPAN=40000
fi
USED_PORTS=" "

# wait_listening PORT NAME PID: returns once something listens on PORT; fails when PID exited
# first (the caller may try another port); gives up the run after 10 s.
wait_listening() {
    local _
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    echo "streams.sh: $2 did not start listening on 127.0.0.1:$1 (logs in $WORK)" >&2
    KEEP=1
    exit 1
}

# retry_start NAME LOG: NAME exited at start; succeeds when its port had been taken in the
# meantime (the caller tries another), otherwise ends the run.
retry_start() {
    if grep -qi "address already in use" "$2" 2>/dev/null; then
        echo "streams.sh: $1's port was taken; trying another" >&2
        return 0
    fi
    echo "streams.sh: $1 exited at start; the end of $2:" >&2
    tail -n 5 "$2" >&2
    KEEP=1
    exit 1
}

htpasswd -cbB -C 10 "$WORK/htpasswd.bcrypt" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
htpasswd -cbm "$WORK/htpasswd.apr1" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
chmod 644 "$WORK"/htpasswd.*
AUTHORIZATION="Basic $(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64 -w0)"

# The upstream: one for the whole run, unpinned (or on LOAD_CPUS).
while :; do
    free_port
    UPSTREAM_PORT=$PORT
    "${LOAD[@]}" "$STREAMS" upstream --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
    PIDS+=($!)
    wait_listening "$UPSTREAM_PORT" "the upstream" "$!" && break
    stop_pid "${PIDS[-1]}"
    retry_start "the upstream" "$WORK/upstream.log"
done

# Each start_* sets TARGET_PORT and TARGET_PID (the process to stop) and RSS_PIDS (the processes
# whose memory counts).
TARGET_PORT='' TARGET_PID='' RSS_PIDS=()
START=0 # numbers the proxies' directories

start_vastgate() {
    local dir
    START=$((START + 1))
    dir=$WORK/vastgate-$START
    mkdir -p "$dir"
    free_port
    cat >"$dir/proxy.toml" <<EOF
[gateway]
listen = "127.0.0.1:$PORT"
auth = "basic"
htpasswd = "$WORK/htpasswd.bcrypt"
access_log = "off"

[[route]]
prefix = "/"
name = "upstream"
upstream = "http://127.0.0.1:$UPSTREAM_PORT"
EOF
    taskset -c "$PROXY_CPU" "$VASTGATE" serve --config "$dir/proxy.toml" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=($!)
    TARGET_PID=$! TARGET_PORT=$PORT RSS_PIDS=("$TARGET_PID")
    wait_listening "$PORT" vastgate "$TARGET_PID" && return
    stop_pid "$TARGET_PID"
    retry_start vastgate "$dir/stderr.log"
    start_vastgate
}

start_nginx() {
    local dir
    START=$((START + 1))
    dir=$WORK/nginx-$START
    mkdir -p "$dir/tmp"
    free_port
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $want_files;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $want_files; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$PORT;
        client_max_body_size 0;
        location / {
            auth_basic "vastgate-bench";
            auth_basic_user_file $WORK/htpasswd.apr1;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        2>"$dir/stderr.log" &
    PIDS+=($!)
    TARGET_PID=$! TARGET_PORT=$PORT
    if ! wait_listening "$PORT" nginx "$TARGET_PID"; then
        stop_pid "$TARGET_PID"
        retry_start nginx "$dir/error.log"
        start_nginx
        return
    fi
    local _ worker=
    for _ in $(seq 50); do
        worker=$(pgrep -P "$TARGET_PID" || true)
        [[ -n $worker ]] && break
        sleep 0.1
    done
    [[ -n $worker ]] || {
        echo "streams.sh: nginx started no worker (logs in $dir)" >&2
        KEEP=1
        exit 1
    }
    # shellcheck disable=SC2206 # one PID per line
    RSS_PIDS=("$TARGET_PID" $worker)
}

start_direct() {
    TARGET_PID='' TARGET_PORT=$UPSTREAM_PORT RSS_PIDS=()
}

start_relay() { # start_relay copy|splice: the floor under any proxy, pinned like the proxies
    START=$((START + 1))
    free_port
    taskset -c "$PROXY_CPU" "$STREAMS" relay --mode "$1" --listen "127.0.0.1:$PORT" \
        --upstream "127.0.0.1:$UPSTREAM_PORT" >"$WORK/relay-$START.log" 2>&1 &
    PIDS+=($!)
    TARGET_PID=$! TARGET_PORT=$PORT
    if ! wait_listening "$PORT" "the relay" "$TARGET_PID"; then
        stop_pid "$TARGET_PID"
        retry_start "the relay" "$WORK/relay-$START.log"
        start_relay "$1"
        return
    fi
    RSS_PIDS=("$TARGET_PID")
}
start_relay-copy() { start_relay copy; }
start_relay-splice() { start_relay splice; }

# start NAME: starts a fresh proxy (nothing for `direct`) and checks it answers 401 without and
# 200 with the credentials (the check also puts them in vastgate's cache).
start() {
    local name=$1 url without body with expected=401
    "start_$name"
    url="http://127.0.0.1:$TARGET_PORT/hello"
    [[ $name = direct || $name = relay-* ]] && expected=200
    without=$(curl -s -o /dev/null -w '%{http_code}' "$url")
    body=$(curl -s -w '\n%{http_code}' -H "Authorization: $AUTHORIZATION" "$url")
    with=${body##*$'\n'}
    if [[ $without != "$expected" || $with != 200 || $body != *"$UPSTREAM_BODY"* ]]; then
        echo "streams.sh: $name answered $without without and $with with credentials" \
            "(expected $expected and 200 with the upstream's body); logs in $WORK" >&2
        KEEP=1
        exit 1
    fi
}

stop() {
    [[ -n $TARGET_PID ]] && stop_pid "$TARGET_PID"
    TARGET_PID='' TARGET_PORT='' RSS_PIDS=()
}

# measure WORKLOAD TARGET VARIANT SUBCOMMAND ARGS...: runs one client against the running target
# and appends `WORKLOAD TARGET VARIANT RESULT-fields` to $WORK/results.tsv (`failed` when the
# client printed no RESULT line; its output is shown).
measure() {
    local workload=$1 target=$2 variant=$3 out result pid auth=()
    shift 3
    out=$WORK/$workload-$target-$variant.txt
    [[ $target != direct ]] && auth=(env "STREAMS_AUTHORIZATION=$AUTHORIZATION")
    local rss=()
    for pid in "${RSS_PIDS[@]}"; do
        rss+=(--rss-pid "$pid")
    done
    echo "== $workload: $target $variant" >&2
    if ! "${auth[@]}" "${LOAD[@]}" "$STREAMS" "$@" --target "127.0.0.1:$TARGET_PORT" "${rss[@]}" \
        >"$out" 2>&1; then
        echo "streams.sh: the $workload client reported a problem against $target ($variant):" >&2
        tail -n 5 "$out" >&2
        KEEP=1
    fi
    result=$(sed -n 's/^RESULT //p' "$out" | tail -n 1)
    printf '%s\t%s\t%s\t%s\n' "$workload" "$target" "$variant" "${result:-failed=1}" \
        >>"$WORK/results.tsv"
}

versions() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "vastgate: $("$VASTGATE" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty'))${VASTGATE_TARGET:+, built for $VASTGATE_TARGET}, $(rustc --version)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') (auth_basic with an apr1 file)"
    echo "proxies pinned to CPU $PROXY_CPU, clients and upstream $([[ -n $LOAD_CPUS ]] && echo "pinned to CPU $LOAD_CPUS" || echo unpinned); open files $(ulimit -n)"
}

versions | tee "$WORK/versions.txt"
echo
: >"$WORK/results.tsv"

# The awk helper every table uses: the RESULT fields of a row as kv[], verdicts.
AWK_LIB='
function parse(s,    n, f, i, p) {
    delete kv
    n = split(s, f, " ")
    for (i = 1; i <= n; i++) { split(f[i], p, "="); kv[p[1]] = p[2] }
}
function verdict(ok) { return ok ? "met" : "MISSED" }
'

# --- W5: 1,000 WebSockets ------------------------------------------------------------------------
if [[ $MODE = all || $MODE = ws ]]; then
    for target in direct vastgate nginx; do
        start "$target"
        measure W5 "$target" ws ws-load --connections "$WS_CONNECTIONS" \
            --interval "$WS_INTERVAL" --duration "$WS_DURATION"
        stop
    done
    awk -F'\t' -v conns="$WS_CONNECTIONS" -v every="$WS_INTERVAL" -v dur="$WS_DURATION" "$AWK_LIB"'
    BEGIN {
        printf "W5: %d WebSockets open at once, each sending a 32-byte message every %s for %s (echo)\n", conns, every, dur
        printf "%-9s %7s %7s %9s %9s %9s %10s %8s %8s %8s %7s %7s %6s\n", "target", "opened", "open s",
            "idle KiB", "open KiB", "peak KiB", "KiB/tunnel", "p50 ms", "p99 ms", "max ms", "echoes", "failed", "CPU %"
    }
    $1 != "W5" { next }
    {
        parse($4); t = $2
        if (kv["failed"]) { printf "%-9s failed (see above)\n", t; bad[t] = 1; next }
        printf "%-9s %7d %7.2f %9s %9s %9s %10s %8.3f %8.3f %8.3f %7d %7d %6s\n", t, kv["opened"], kv["open_s"],
            t == "direct" ? "-" : kv["idle_rss_kib"], t == "direct" ? "-" : kv["open_rss_kib"],
            t == "direct" ? "-" : kv["peak_rss_kib"], t == "direct" ? "-" : kv["per_tunnel_kib"],
            kv["p50_ms"], kv["p99_ms"], kv["max_ms"], kv["echoes"], kv["open_failed"] + kv["echo_failed"],
            t == "direct" ? "-" : kv["cpu_pct"]
        per[t] = kv["per_tunnel_kib"]; p99[t] = kv["p99_ms"]
        ok[t] = kv["opened"] == conns && kv["open_failed"] == 0 && kv["echo_failed"] == 0
    }
    END {
        print ""
        if (bad["vastgate"]) { print "W5 vastgate: the measurement failed: MISSED"; exit }
        printf "W5 vastgate all %d tunnels open and echoing [%s]; %.1f KiB per tunnel [<= 40: %s]; echo p99 %.3f ms [<= 5: %s] (direct %.3f ms, nginx %.3f ms, nginx %.1f KiB per tunnel)\n",
            conns, verdict(ok["vastgate"]), per["vastgate"], verdict(ok["vastgate"] && per["vastgate"] <= 40),
            p99["vastgate"], verdict(ok["vastgate"] && p99["vastgate"] <= 5), p99["direct"], p99["nginx"], per["nginx"]
    }' "$WORK/results.tsv" | tee "$WORK/w5.txt"
    echo
fi

# --- W6: 2 GiB up and down ------------------------------------------------------------------------
if [[ $MODE = all || $MODE = transfer ]]; then
    bytes=$((TRANSFER_MIB * 1024 * 1024))
    for round in $(seq "$TRANSFER_ROUNDS"); do
        for direction in up down; do
            for framing in length chunked; do
                targets=(direct relay-copy relay-splice vastgate)
                ((round == 1)) && targets+=(nginx) # context; slow with proxy_buffering off
                for target in "${targets[@]}"; do
                    start "$target"
                    measure W6 "$target" "$direction-$framing" transfer --direction "$direction" \
                        --framing "$framing" --bytes "$bytes"
                    stop
                done
            done
        done
    done
    awk -F'\t' -v mib="$TRANSFER_MIB" -v rounds="$TRANSFER_ROUNDS" "$AWK_LIB"'
    $1 != "W6" { next }
    {
        parse($4); t = $2; v = $3; k = t SUBSEP v
        if (!(k in runs)) order[++n] = k
        runs[k]++
        if (kv["failed"]) { fail[k]++; next }
        # The best throughput of the rounds, and with it its CPU; the largest memory growth.
        if (kv["mib_s"] > rate[k]) {
            rate[k] = kv["mib_s"]; cpu[k] = kv["cpu_pct"]
            cpug[k] = kv["cpu_s"] / (kv["bytes"] / 1073741824)
            upf[k] = kv["upstream_framing"]
        }
        if (!(k in growth) || kv["rss_growth_kib"] > growth[k]) {
            growth[k] = kv["rss_growth_kib"]; rss0[k] = kv["rss_before_kib"]; peak[k] = kv["rss_peak_kib"]
        }
        if (kv["content_encoding"] != "none") enc[k] = kv["content_encoding"]
    }
    END {
        printf "W6: %d MiB per transfer (up: POST to a sink; down: GET from a generator), Accept-Encoding: gzip, br;\n", mib
        printf "direct, the bare relays and vastgate best of %d rounds (growth: the largest), nginx 1 round\n", rounds
        printf "%-14s %-12s %6s %8s %8s %6s %9s %10s %10s %10s %9s %9s\n", "transfer", "target", "rounds", "MiB/s",
            "xdirect", "CPU %", "CPU s/GiB", "RSS0 KiB", "peak KiB", "growth KiB", "upstream", "encoding"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, p, SUBSEP); t = p[1]; v = p[2]; d = "direct" SUBSEP v
            if (!(k in rate)) { printf "%-14s %-12s failed (see above)\n", v, t; continue }
            x = rate[d] > 0 ? sprintf("%.2f", rate[k] / rate[d]) : "-"
            printf "%-14s %-12s %6s %8.0f %8s %6s %9s %10s %10s %10s %9s %9s\n", v, t,
                (runs[k] - fail[k]) "/" runs[k], rate[k], t == "direct" ? "-" : x,
                t == "direct" ? "-" : cpu[k], t == "direct" ? "-" : sprintf("%.2f", cpug[k]),
                t == "direct" ? "-" : rss0[k], t == "direct" ? "-" : peak[k],
                t == "direct" ? "-" : growth[k], upf[k], (k in enc) ? enc[k] : "none"
            if (t == "vastgate") vs[++m] = v
        }
        print ""
        for (i = 1; i <= m; i++) {
            v = vs[i]; k = "vastgate" SUBSEP v; d = "direct" SUBSEP v; g = "nginx" SUBSEP v
            rc = "relay-copy" SUBSEP v; rs = "relay-splice" SUBSEP v
            # (In awk a bare ">" among print arguments redirects the output: compute first.)
            x = rate[d] > 0 ? rate[k] / rate[d] : 0
            xn = rate[d] > 0 ? rate[g] / rate[d] : 0
            xc = rate[d] > 0 ? rate[rc] / rate[d] : 0
            xs = rate[d] > 0 ? rate[rs] / rate[d] : 0
            ok = !fail[k] && !(k in enc)
            printf "W6 vastgate %-13s RSS growth %5.0f KiB [<= 16384: %s]; throughput %.2fx direct [>= 0.8: %s] (bare relay: copy %.2fx, splice %.2fx; nginx %.0f KiB, %.2fx)\n",
                v, growth[k], verdict(ok && growth[k] <= 16384), x, verdict(ok && x >= 0.8), xc, xs, growth[g], xn
        }
    }' "$WORK/results.tsv" | tee "$WORK/w6.txt"
    echo
fi

# --- W7: server-sent events -------------------------------------------------------------------------
if [[ $MODE = all || $MODE = sse ]]; then
    for target in direct vastgate nginx; do
        start "$target"
        measure W7 "$target" sse sse --events "$SSE_EVENTS" --interval "${SSE_INTERVAL_MS}ms"
        stop
    done
    awk -F'\t' -v events="$SSE_EVENTS" -v every="$SSE_INTERVAL_MS" "$AWK_LIB"'
    BEGIN {
        printf "W7: %d server-sent events %d ms apart, Accept-Encoding: gzip, br; delay = arrival - send time\n", events, every
        printf "%-9s %7s %6s %9s %9s %8s %8s %8s %8s %12s %12s\n", "target", "events", "reads", "max/read",
            "encoding", "p50 ms", "p99 ms", "max ms", "mean ms", "added p50 ms", "added p99 ms"
    }
    $1 != "W7" { next }
    {
        parse($4); t = $2
        if (kv["failed"]) { printf "%-9s failed (see above)\n", t; bad[t] = 1; next }
        p50[t] = kv["p50_ms"]; p99[t] = kv["p99_ms"]
        ok[t] = kv["events"] == events && kv["max_per_read"] == 1 && kv["content_encoding"] == "none"
        printf "%-9s %7d %6d %9d %9s %8.3f %8.3f %8.3f %8.3f %12s %12s\n", t, kv["events"], kv["reads"],
            kv["max_per_read"], kv["content_encoding"], kv["p50_ms"], kv["p99_ms"], kv["max_ms"], kv["mean_ms"],
            t == "direct" ? "-" : sprintf("%.3f", kv["p50_ms"] - p50["direct"]),
            t == "direct" ? "-" : sprintf("%.3f", kv["p99_ms"] - p99["direct"])
    }
    END {
        print ""
        if (bad["vastgate"] || bad["direct"]) { print "W7 vastgate: the measurement failed: MISSED"; exit }
        added = p50["vastgate"] - p50["direct"]
        printf "W7 vastgate every event, uncompressed, one per read [%s]; added delay p50 %.3f ms [<= 2: %s] (nginx %.3f ms)\n",
            verdict(ok["vastgate"]), added, verdict(ok["vastgate"] && added <= 2), p50["nginx"] - p50["direct"]
    }' "$WORK/results.tsv" | tee "$WORK/w7.txt"
    echo
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
