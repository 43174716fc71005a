#!/usr/bin/env bash
# Start-up to the first authenticated 200 (issue 7, W9): from spawning vastgate to the first
# `200` answer to a request with the right Basic credentials, the user coming from USERNAME and
# PASSWORD in the environment (`env_credentials = true`, as in the Docker image's proxy.toml).
#
#   benches/startup.sh
#
# Three ways, RUNS times each:
#   serve        `vastgate serve --config F`, a fresh start: no htpasswd file and no
#                `.env-user` marker, so the env password is hashed (bcrypt cost 10) at start-up;
#   up           `vastgate up --config F` with one trivial supervised program (`sleep`), fresh
#                as above;
#   serve-kept   `vastgate serve` again, the htpasswd file and marker kept from the run before
#                (a container restart): the stored hash is verified instead of made.
# One upstream (`python3 -m http.server`, started once beforehand and not timed) answers the
# route. A small Python poller spawns vastgate pinned to CPU $PROXY_CPU (the poller itself runs
# off that core when there is another), then sends GET / with the credentials on a fresh
# connection every ~0.5 ms until one answers 200, and checks that a request without them gets 401.
# Printed per way: the time until the port first accepted a connection and until the first 200,
# min / median / max over the runs.
#
# Environment (defaults in brackets): RUNS [10], PROXY_CPU [1], VASTGATE_TARGET [unset; as in
# compare.sh], KEEP=1 keeps the work directory (configs, logs).
# Installs nothing; says what to install when a tool is missing.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-10}
PROXY_CPU=${PROXY_CPU:-1}
TARGET_MS=300

no_arguments "$@"

# --- tools -----------------------------------------------------------------------------------
missing=()
need python3 python3
need cargo "Rust (https://rustup.rs)"
if ((${#missing[@]})); then
    echo "startup.sh: missing tools; install them with:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if [[ $(nproc) -le $PROXY_CPU ]]; then
    PROXY_CPU=$(($(nproc) - 1))
fi

# --- build -----------------------------------------------------------------------------------
cd "$ROOT"
echo "== building (cargo build --release --locked)" >&2
build_vastgate

# --- processes, ports, files ---------------------------------------------------------------------
WORK=$(mktemp -d -t vastgate-startup.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "

# The poller: spawns the command RUNS times and times each start-up to the first 200.
cat >"$WORK/poll.py" <<'EOF'
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

runs, port, cpu, authorization, keep, log = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
fresh = [] if keep == "keep" else sys.argv[7].split(",")
command = sys.argv[sys.argv.index("--") + 1:]


def request(with_credentials):
    lines = [f"GET / HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if with_credentials:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


WITH, WITHOUT = request(True), request(False)


def attempt(req):
    """(connected at, status) with status None when refused and 0 when no status line came."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        return None, None
    connected = time.perf_counter()
    data = b""
    try:
        s.sendall(req)
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        s.close()
    parts = data.split(b" ", 2)
    return connected, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


everything = os.sched_getaffinity(0)
elsewhere = everything - {cpu} or everything
os.sched_setaffinity(0, elsewhere)
listen_ms, ready_ms = [], []
with open(log, "ab") as out:
    for run in range(1, runs + 1):
        for path in fresh:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.sched_setaffinity(0, {cpu})  # the child inherits this
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        os.sched_setaffinity(0, elsewhere)
        listening, seen = None, {}
        while True:
            connected, status = attempt(WITH)
            if status == 200:
                done = time.perf_counter()
                listening = listening or connected
                break
            if connected is not None:
                listening = listening or connected
                seen[status] = seen.get(status, 0) + 1
            if child.poll() is not None:
                sys.exit(f"run {run}: {' '.join(command)} exited with {child.returncode} before a 200")
            if time.perf_counter() - start > 30:
                child.kill()
                sys.exit(f"run {run}: no 200 within 30 s (answers before: {seen})")
            time.sleep(0.0005 if connected is None else 0.001)
        _, without = attempt(WITHOUT)
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if without != 401:
            sys.exit(f"run {run}: a request without credentials got {without}, expected 401")
        listen_ms.append((listening - start) * 1000)
        ready_ms.append((done - start) * 1000)
        other = ", ".join(f"{n}x {s or 'no answer'}" for s, n in sorted(seen.items())) or "none"
        print(f"  run {run:2}: accepting {listen_ms[-1]:6.1f} ms, first 200 {ready_ms[-1]:6.1f} ms "
              f"(answers before it: {other})", file=sys.stderr)
        time.sleep(0.2)


def stats(xs):
    return f"{min(xs):.1f}\t{statistics.median(xs):.1f}\t{max(xs):.1f}"


print(f"{stats(listen_ms)}\t{stats(ready_ms)}")
EOF

# The upstream, started once.
mkdir -p "$WORK/www"
echo "hello from the upstream" >"$WORK/www/index.html"
free_port
UPSTREAM_PORT=$PORT
python3 -m http.server "$UPSTREAM_PORT" --bind 127.0.0.1 --directory "$WORK/www" \
    >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_listening "$UPSTREAM_PORT" "the upstream (python3 -m http.server)" "$!"

BENCH_USER=bench
BENCH_PASSWORD="bench-$RANDOM$RANDOM"
AUTHORIZATION="Basic $(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64 -w0)"
# Only USERNAME/PASSWORD reach vastgate from this environment's gateway settings.
unset VASTGATE_CONFIG ENABLE_HTTPS OPEN_BUTTON_TOKEN VAST_CONTAINERLABEL

write_config() { # write_config DIR PORT serve|up
    mkdir -p "$1/logs"
    {
        echo "[gateway]"
        echo "listen = \"127.0.0.1:$2\""
        echo "auth = \"basic\""
        echo "htpasswd = \"htpasswd\""
        echo "env_credentials = true"
        echo "access_log = \"off\""
        echo
        echo "[[route]]"
        echo "prefix = \"/\""
        echo "name = \"upstream\""
        echo "upstream = \"http://127.0.0.1:$UPSTREAM_PORT\""
        if [[ $3 = up ]]; then
            echo
            echo "[supervisor]"
            echo "socket = \"$1/vastgate.sock\""
            echo "log_dir = \"$1/logs\""
            echo "environment_file = \"off\""
            echo "echo_output = false"
            echo
            echo "[program.idle]"
            echo "command = [\"sleep\", \"600\"]"
        fi
    } >"$1/proxy.toml"
}

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vastgate: $("$VASTGATE" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty'))${VASTGATE_TARGET:+, built for $VASTGATE_TARGET}, pinned to CPU $PROXY_CPU; $RUNS runs per way; $(python3 --version)"
echo

: >"$WORK/results.tsv"
for way in serve up serve-kept; do
    command=serve keep=fresh dir=$WORK/serve
    case $way in
    up) command=up dir=$WORK/up ;;
    serve-kept) keep=keep ;; # serve's directory, configuration and port, files kept
    esac
    if [[ $way != serve-kept ]]; then
        free_port
        write_config "$dir" "$PORT" "$command"
        echo "$PORT" >"$dir/port"
    fi
    port=$(cat "$dir/port")
    echo "== $way: vastgate $command --config $dir/proxy.toml" >&2
    result=$(USERNAME=$BENCH_USER PASSWORD=$BENCH_PASSWORD python3 "$WORK/poll.py" "$RUNS" "$port" \
        "$PROXY_CPU" "$AUTHORIZATION" "$keep" "$dir/vastgate.log" \
        "$dir/htpasswd,$dir/htpasswd.env-user" -- "$VASTGATE" "$command" --config "$dir/proxy.toml") || {
        echo "startup.sh: $way failed (vastgate's output in $dir/vastgate.log)" >&2
        KEEP=1
        exit 1
    }
    printf '%s\t%s\n' "$way" "$result" >>"$WORK/results.tsv"
done

awk -F'\t' -v target="$TARGET_MS" '
    BEGIN {
        printf "%-12s %26s   %26s\n", "", "accepting connections, ms", "first authenticated 200, ms"
        printf "%-12s %8s %8s %8s   %8s %8s %8s\n", "way", "min", "median", "max", "min", "median", "max"
    }
    {
        printf "%-12s %8.1f %8.1f %8.1f   %8.1f %8.1f %8.1f\n", $1, $2, $3, $4, $5, $6, $7
        verdict = verdict sprintf("%s%s median %.0f ms, max %.0f ms [%s]", verdict ? "; " : "", $1, $6, $7,
            $7 <= target ? "met" : ($6 <= target ? "median met, max MISSED" : "MISSED"))
    }
    END { print ""; print "W9 start-up to the first authenticated 200 (<= " target " ms): " verdict }
' "$WORK/results.tsv"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
