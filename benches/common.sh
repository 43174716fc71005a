# Helpers shared by the benchmark scripts (sourced, not run). A script that sources this sets
# `missing=()`, `PIDS=()`, `WORK` and `USED_PORTS=" "` before using them; `PORT_BASE` and
# `PORT_SPAN` choose the port range (default 10000-29999, below the ephemeral range), and
# `SAMPLER`, when set, is a background sampler that cleanup stops first.
# shellcheck shell=bash

need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

cleanup() { # stops every process in PIDS and removes WORK (KEEP=1 keeps it)
    local pid
    if [[ -n ${SAMPLER:-} ]]; then
        kill "$SAMPLER" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} = 1 ]]; then
        echo "work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}

free_port() { # sets PORT to a free 127.0.0.1 port not handed out before in this run
    while :; do
        PORT=$((${PORT_BASE:-10000} + RANDOM % ${PORT_SPAN:-20000}))
        [[ $USED_PORTS == *" $PORT "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            USED_PORTS+="$PORT "
            return
        fi
    done
}

wait_listening() { # wait_listening PORT NAME [PID]: until something accepts on the port
    local _
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return
        fi
        if [[ -n ${3:-} ]] && ! kill -0 "$3" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "${0##*/}: $2 did not start listening on 127.0.0.1:$1 (logs in $WORK)" >&2
    KEEP=1
    exit 1
}

pids_of() { # a target's processes: the one we started and its children (nginx's worker)
    echo "$1"
    pgrep -P "$1" || true
}

core_ticks() { # core_ticks CPU: "idle total" clock ticks of that CPU so far (/proc/stat; idle
    # counts iowait too)
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t }' /proc/stat
}

cpu_ticks() { # utime + stime of the target's processes (all threads), in clock ticks
    local pid sum=0 t
    for pid in $(pids_of "$1"); do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# Waits until the target has used no CPU for half a second (at most 30 s): nginx keeps hashing
# the requests a closed client connection left queued, and that must not land on the next run.
wait_idle() {
    local before after _
    for _ in $(seq 60); do
        before=$(cpu_ticks "$1")
        sleep 0.5
        after=$(cpu_ticks "$1")
        ((after - before <= 1)) && return
    done
}

# shellcheck disable=SC2034 # VASTGATE is the caller's
build_vastgate() { # builds vastgate and sets VASTGATE; VASTGATE_TARGET=x86_64-unknown-linux-musl
    # measures the image's static binary (needs `rustup target add` it and musl-tools)
    local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    if [[ -n ${VASTGATE_TARGET:-} ]]; then
        echo "== building vastgate for $VASTGATE_TARGET (the image's build)" >&2
        cargo build --release --locked --target "$VASTGATE_TARGET" --bin vastgate >&2
        VASTGATE=$target_dir/$VASTGATE_TARGET/release/vastgate
    else
        cargo build --release --locked >&2
        VASTGATE=$target_dir/release/vastgate
    fi
}

# shellcheck disable=SC2034 # BENCH_EXE is the caller's
build_bench() { # build_bench NAME: builds benches/NAME.rs and sets BENCH_EXE to its executable
    local log
    if ! log=$(cargo bench --locked --bench "$1" --no-run 2>&1); then
        echo "${0##*/}: could not build benches/$1.rs (cargo bench --bench $1 --no-run):" >&2
        tail -n 30 <<<"$log" >&2
        exit 1
    fi
    BENCH_EXE=$(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' <<<"$log" | tail -n 1)
    [[ $BENCH_EXE = /* ]] || BENCH_EXE=$ROOT/$BENCH_EXE
    [[ -x $BENCH_EXE ]] || {
        echo "${0##*/}: cargo named no executable for benches/$1.rs (cargo bench --bench $1 --no-run)" >&2
        exit 1
    }
}

no_arguments() { # no_arguments "$@": -h prints the script's header comment; anything else is refused
    case ${1:-} in
    "") ;;
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *)
        echo "usage: $0 (no arguments; see -h)" >&2
        exit 2
        ;;
    esac
}
