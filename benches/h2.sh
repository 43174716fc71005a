#!/usr/bin/env bash
# HTTP/2 over TLS: vastgate side by side with nginx and Caddy, in one run on this machine (issue 7).
#
#   benches/h2.sh
#
# One fast upstream (nginx answering `return 200` over plain HTTP, unpinned) stands behind every
# proxy. Each proxy terminates TLS with the same self-signed ECDSA P-256 certificate (made here
# by `openssl req -x509`) and speaks HTTP/2 (ALPN h2): nginx `listen ... ssl http2`, Caddy
# `tls CERT KEY`, vastgate `[gateway.tls]`. Each is pinned to the same core (`taskset -c
# $PROXY_CPU`, nginx `worker_processes 1`) with keep-alive to the upstream. Auth: off for all,
# then on: bcrypt cost 10 (`htpasswd -B -C 10`) for vastgate and Caddy, apr1 (`htpasswd -m`) for
# nginx (nginx hashes bcrypt on every request: ~14 req/s, not worth a run). Before measuring,
# every target must answer over HTTP/2 (`curl --http2 -k`) 401 without and 200 with the
# credentials (200 both ways when auth is off). Then
#   h2load -c $CONNECTIONS -m $STREAMS -t 2 -D $DURATION -H 'authorization: Basic ...'
# (or `-n $REQUESTS` instead of `-D` when REQUESTS is set); the proxy's CPU time (utime + stime
# from /proc/PID/stat, nginx's worker included) gives CPU µs per request.
#
# Environment (defaults in brackets): DURATION seconds per run [5], REQUESTS [unset; e.g.
# 100000 runs `-n 100000` instead of a duration], CONNECTIONS [50], STREAMS concurrent streams
# per connection [10], ROUNDS [1], PROXY_CPU [1], LOAD_CPUS [unset: h2load and the upstream run
# unpinned], VASTGATE_TARGET [unset; as in compare.sh], KEEP=1 keeps the work directory (configs,
# logs, raw h2load output).
# Installs nothing; says what to install when a tool is missing.

set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-5}
REQUESTS=${REQUESTS:-}
CONNECTIONS=${CONNECTIONS:-50}
STREAMS=${STREAMS:-10}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPUS=${LOAD_CPUS:-}
BENCH_USER=bench
BENCH_PASSWORD="bench-$RANDOM$RANDOM"
UPSTREAM_BODY="hello from the upstream"

no_arguments "$@"

# --- tools -----------------------------------------------------------------------------------
missing=()
need h2load nghttp2-client
need nginx nginx-light
need caddy caddy
need openssl openssl
need taskset util-linux
need htpasswd apache2-utils
need curl curl
need cargo "Rust (https://rustup.rs)"
if ((${#missing[@]})); then
    echo "h2.sh: missing tools; install them with:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if [[ $(nproc) -le $PROXY_CPU ]]; then
    PROXY_CPU=$(($(nproc) - 1))
fi
LOAD=() # the prefix that pins h2load and the upstream, if asked
[[ -n $LOAD_CPUS ]] && LOAD=(taskset -c "$LOAD_CPUS")
if [[ -n $REQUESTS ]]; then
    AMOUNT=(-n "$REQUESTS")
else
    AMOUNT=(-D "$DURATION")
fi

# --- build -----------------------------------------------------------------------------------
cd "$ROOT"
echo "== building (cargo build --release --locked)" >&2
build_vastgate

# --- processes, ports, files ---------------------------------------------------------------------
WORK=$(mktemp -d -t vastgate-h2.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody and read the htpasswd file per request
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "

htpasswd -cbB -C 10 "$WORK/htpasswd.bcrypt" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
htpasswd -cbm "$WORK/htpasswd.apr1" "$BENCH_USER" "$BENCH_PASSWORD" 2>/dev/null
chmod 644 "$WORK"/htpasswd.*
BCRYPT_HASH=$(cut -d: -f2 "$WORK/htpasswd.bcrypt")
AUTHORIZATION="Basic $(printf '%s:%s' "$BENCH_USER" "$BENCH_PASSWORD" | base64 -w0)"

CERT=$WORK/cert.pem
KEY=$WORK/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$KEY" -out "$CERT" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 644 "$KEY" "$CERT" # nginx reads them as root before dropping privileges; the rest as root

# Targets: NAME -> port, pid, whether auth is on.
declare -A T_PORT T_PID T_AUTH
TARGETS=()

add_target() { # add_target NAME PORT PID AUTH
    TARGETS+=("$1")
    T_PORT[$1]=$2 T_PID[$1]=$3 T_AUTH[$1]=$4
}

nginx_conf() { # nginx_conf DIR LISTEN WORKERS LOCATION_BODY
    mkdir -p "$1/tmp"
    cat >"$1/nginx.conf" <<EOF
worker_processes $3;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    server {
        listen $2;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
$4
        }
    }
EOF
}

start_upstream() {
    local dir=$WORK/upstream
    free_port
    UPSTREAM_PORT=$PORT
    nginx_conf "$dir" "127.0.0.1:$PORT" auto "            default_type text/plain;
            return 200 \"$UPSTREAM_BODY\\n\";"
    echo "}" >>"$dir/nginx.conf"
    "${LOAD[@]}" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    PIDS+=($!)
    wait_listening "$PORT" "the upstream" "$!"
}

start_nginx() { # start_nginx NAME off|FILE
    local name=$1 dir=$WORK/$1 auth=""
    free_port
    if [[ $2 != off ]]; then
        auth="            auth_basic \"vastgate-bench\";
            auth_basic_user_file $2;"
    fi
    nginx_conf "$dir" "127.0.0.1:$PORT ssl http2" 1 "$auth
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Real-IP \$remote_addr;"
    cat >>"$dir/nginx.conf" <<EOF
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }
}
EOF
    taskset -c "$PROXY_CPU" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    PIDS+=($!)
    wait_listening "$PORT" "$name" "$!"
    add_target "$name" "$PORT" "$!" "$([[ $2 = off ]] && echo 0 || echo 1)"
}

# Caddy 2.6: `tls CERT KEY` loads the pair; `default_sni` lets clients that send no SNI (h2load
# and curl connecting to an IP address) get it.
start_caddy() { # start_caddy NAME off|bcrypt
    local name=$1 dir=$WORK/$1 auth=""
    mkdir -p "$dir"
    free_port
    if [[ $2 = bcrypt ]]; then
        auth="	basicauth bcrypt vastgate-bench {
		$BENCH_USER $BCRYPT_HASH
	}"
    fi
    cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	default_sni localhost
	storage file_system $dir/data
}
https://localhost:$PORT, https://127.0.0.1:$PORT {
	bind 127.0.0.1
	tls $CERT $KEY
$auth
	reverse_proxy 127.0.0.1:$UPSTREAM_PORT
}
EOF
    XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir HOME=$dir \
        taskset -c "$PROXY_CPU" caddy run --config "$dir/Caddyfile" --adapter caddyfile \
        >"$dir/caddy.log" 2>&1 &
    PIDS+=($!)
    wait_listening "$PORT" "$name" "$!"
    add_target "$name" "$PORT" "$!" "$([[ $2 = off ]] && echo 0 || echo 1)"
}

start_vastgate() { # start_vastgate NAME none|basic
    local name=$1 dir=$WORK/$1
    mkdir -p "$dir"
    free_port
    {
        echo "[gateway]"
        echo "listen = \"127.0.0.1:$PORT\""
        echo "auth = \"$2\""
        [[ $2 = basic ]] && echo "htpasswd = \"$WORK/htpasswd.bcrypt\""
        echo "access_log = \"off\""
        echo
        echo "[gateway.tls]"
        echo "cert = \"$CERT\""
        echo "key = \"$KEY\""
        echo
        echo "[[route]]"
        echo "prefix = \"/\""
        echo "name = \"upstream\""
        echo "upstream = \"http://127.0.0.1:$UPSTREAM_PORT\""
    } >"$dir/proxy.toml"
    env -u ENABLE_HTTPS -u OPEN_BUTTON_TOKEN \
        taskset -c "$PROXY_CPU" "$VASTGATE" serve --config "$dir/proxy.toml" \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PIDS+=($!)
    wait_listening "$PORT" "$name" "$!"
    add_target "$name" "$PORT" "$!" "$([[ $2 = none ]] && echo 0 || echo 1)"
}

# --- measuring -------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

verify() { # verify NAME: over HTTP/2, 401 without credentials and 200 with them (200 both ways without auth)
    local name=$1 url="https://127.0.0.1:${T_PORT[$1]}/" without with body expected=401
    [[ ${T_AUTH[$name]} = 0 ]] && expected=200
    without=$(curl -sk --http2 -o /dev/null -w '%{http_code} HTTP/%{http_version}' "$url")
    body=$(curl -sk --http2 -w '\n%{http_code} HTTP/%{http_version}' -H "Authorization: $AUTHORIZATION" "$url")
    with=${body##*$'\n'}
    if [[ $without != "$expected HTTP/2" || $with != "200 HTTP/2" || $body != *"$UPSTREAM_BODY"* ]]; then
        echo "h2.sh: $name answered '$without' without and '$with' with credentials" \
            "(expected '$expected HTTP/2' and '200 HTTP/2' with the upstream's body); logs in $WORK" >&2
        KEEP=1
        exit 1
    fi
    echo "  $name (https://127.0.0.1:${T_PORT[$name]}/): $without without, $with with credentials" >&2
}

run_h2load() { # run_h2load NAME ROUND -> appends a line to $WORK/results.tsv
    local name=$1 round=$2 out cpu0 cpu1 start_ns end_ns
    out=$WORK/h2load-$name-r$round.txt
    wait_idle "${T_PID[$name]}"
    cpu0=$(cpu_ticks "${T_PID[$name]}")
    start_ns=$(date +%s%N)
    "${LOAD[@]}" h2load "${AMOUNT[@]}" -c "$CONNECTIONS" -m "$STREAMS" -t 2 \
        -H "authorization: $AUTHORIZATION" "https://127.0.0.1:${T_PORT[$name]}/" >"$out" 2>&1 || true
    end_ns=$(date +%s%N)
    cpu1=$(cpu_ticks "${T_PID[$name]}")
    awk -v round="$round" -v name="$name" -v ticks=$((cpu1 - cpu0)) -v ms=$(((end_ns - start_ns) / 1000000)) '
        /^finished in/ { rps = $4 }
        /^requests:/ { done = $6; errors = $12 + $14 } # errored + timeout
        /^status codes:/ { s2xx = $3 }
        /^time for request:/ { mean = $6 }
        /^Cipher:/ { cipher = $2 }
        /^Application protocol:/ { alpn = $3 }
        END {
            printf "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", round, name, rps + 0, done, s2xx,
                errors, mean, ticks, ms, cipher, alpn
        }' "$out" >>"$WORK/results.tsv"
}

# --- start everything ----------------------------------------------------------------------------
start_upstream
start_nginx nginx off
start_nginx nginx-apr1 "$WORK/htpasswd.apr1"
start_caddy caddy off
start_caddy caddy-bcrypt bcrypt
start_vastgate vastgate none
start_vastgate vastgate-bcrypt basic

echo "== checking every target over HTTP/2 (401 without credentials, 200 with them)" >&2
for name in "${TARGETS[@]}"; do
    verify "$name"
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "vastgate: $("$VASTGATE" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty'))${VASTGATE_TARGET:+, built for $VASTGATE_TARGET}, $(rustc --version)"
echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'); caddy: $(caddy version | cut -d' ' -f1); $(h2load --version | head -n1)"
echo "proxies pinned to CPU $PROXY_CPU, h2load and upstream $([[ -n $LOAD_CPUS ]] && echo "pinned to CPU $LOAD_CPUS" || echo unpinned); h2load ${AMOUNT[*]} -c $CONNECTIONS -m $STREAMS -t 2, $ROUNDS round(s)"
echo

: >"$WORK/results.tsv"
for round in $(seq "$ROUNDS"); do
    for name in "${TARGETS[@]}"; do
        echo "== round $round/$ROUNDS: $name" >&2
        run_h2load "$name" "$round"
    done
done
for name in "${TARGETS[@]}"; do
    printf '%s\t%s\n' "$name" "${T_AUTH[$name]}"
done >"$WORK/targets.tsv"

awk -F'\t' -v tck="$CLK_TCK" '
    FNR == NR { order[++n] = $1; auth[$1] = $2; next }
    {
        t = $2; cnt[t]++
        rps[t] += $3; if (!(t in lo) || $3 < lo[t]) lo[t] = $3; if ($3 > hi[t]) hi[t] = $3
        done[t] += $4; ok[t] += $5; bad[t] += ($4 > $5 ? $4 - $5 : 0); errors[t] += $6
        lat[t] += $7 + 0; unit[t] = $7; cpu[t] += $8 / tck; secs[t] += $9 / 1000
        cipher[t] = $10; alpn[t] = $11
    }
    function mean(a, k) { return cnt[k] ? a[k] / cnt[k] : 0 }
    function ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "-" }
    END {
        printf "%-16s %5s %9s %7s %7s %9s %8s %7s %10s %6s %8s  %s\n", "target", "auth", "req/s", "spread",
            "xnginx", "2xx", "not 2xx", "errors", "mean lat", "CPU %", "µs/req", "protocol"
        for (i = 1; i <= n; i++) {
            t = order[i]; m = mean(rps, t)
            spread = (m > 0 && cnt[t] > 1) ? sprintf("%.1f%%", 100 * (hi[t] - lo[t]) / m) : "-"
            usreq = done[t] > 0 ? sprintf("%.1f", 1e6 * cpu[t] / done[t]) : "-"
            latency = unit[t]; sub(/^[0-9.]+/, "", latency)
            printf "%-16s %5s %9.0f %7s %7s %9d %8d %7d %10s %6.0f %8s  %s %s\n", t, auth[t] ? "on" : "off", m,
                spread, ratio(m, mean(rps, "nginx")), ok[t], bad[t], errors[t],
                sprintf("%.2f%s", mean(lat, t), latency), (secs[t] > 0 ? 100 * cpu[t] / secs[t] : 0), usreq,
                alpn[t], cipher[t]
        }
        vb = mean(rps, "vastgate-bcrypt"); vo = mean(rps, "vastgate")
        print ""
        printf "vastgate-bcrypt req/s over h2 = %sx nginx (auth off), %sx nginx-apr1, %sx caddy-bcrypt, %sx vastgate (auth off)\n",
            ratio(vb, mean(rps, "nginx")), ratio(vb, mean(rps, "nginx-apr1")), ratio(vb, mean(rps, "caddy-bcrypt")), ratio(vb, vo)
    }' "$WORK/targets.tsv" "$WORK/results.tsv" | tee "$WORK/table.txt"
echo
echo "xnginx: req/s over nginx with auth off, same run; CPU %: of the one pinned core while h2load ran;"
echo "µs/req: the proxy's CPU time / requests done; mean lat: h2load's mean time for request."
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
