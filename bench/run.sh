#!/usr/bin/env bash
# The one-command benchmark of safetake (issue 5). Builds release, then for each phase starts a
# fresh server on a free port with its own data directory, drives it with target/release/loadgen,
# and stops it. Results go to $RESULTS_DIR/*.json and a markdown summary to stdout (also saved
# as $RESULTS_DIR/summary.md); tables, progress and logs go to stderr.
#
# Every parameter is an environment variable; the defaults are the real figures. See
# bench/README.md. A short smoke run:
#   FIXED_STREAMS=20 FIXED_DURATION=5s RAMP_START=10 RAMP_STEP=10 RAMP_MAX=30 RAMP_DURATION=5s \
#   MAXRATE_STREAMS=4 MAXRATE_DURATION=5s SESSIONS=10000 RESULTS_DIR=/tmp/bench-smoke bench/run.sh
# The `peer` phase (issue 9) runs the same loads against safetake, the Node peer (installed with
# `npm ci` in a temporary copy) and the floor (target/release/floor), side by side:
#   PHASES=peer bench/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PHASES=${PHASES:-disk fixed ramp maxrate sessions peer}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# The server's data directories and the disk test live here: it must be the disk under test.
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}

FIXED_STREAMS=${FIXED_STREAMS:-2500}
FIXED_DURATION=${FIXED_DURATION:-30s}
RAMP_START=${RAMP_START:-250}
RAMP_STEP=${RAMP_STEP:-250}
RAMP_MAX=${RAMP_MAX:-6000}
RAMP_DURATION=${RAMP_DURATION:-20s}
RAMP_P99=${RAMP_P99:-1.5s}
MAXRATE_STREAMS=${MAXRATE_STREAMS:-8}
MAXRATE_DURATION=${MAXRATE_DURATION:-20s}
MAXRATE_FRAME_BYTES=${MAXRATE_FRAME_BYTES:-65536}
SESSIONS=${SESSIONS:-100000}
SESSIONS_ACTIVE=${SESSIONS_ACTIVE:-1000}

# The peer phase: fixed runs at each of COMPARE_STREAMS, a ramp and a burst, against each of
# COMPARE_SERVERS (safetake: this build; node: the Node peer; floor: the minimal tokio program).
COMPARE_SERVERS=${COMPARE_SERVERS:-safetake node floor}
COMPARE_STREAMS=${COMPARE_STREAMS:-1000 1500 2000 2500}
COMPARE_DURATION=${COMPARE_DURATION:-15s}
COMPARE_P99=${COMPARE_P99:-1.5s}
COMPARE_CLOSE_BOUND=${COMPARE_CLOSE_BOUND:-2s}
COMPARE_RAMP_START=${COMPARE_RAMP_START:-500}
COMPARE_RAMP_STEP=${COMPARE_RAMP_STEP:-500}
COMPARE_RAMP_MAX=${COMPARE_RAMP_MAX:-5000}
COMPARE_RAMP_DURATION=${COMPARE_RAMP_DURATION:-15s}
BURST_STREAMS=${BURST_STREAMS:-2500}
BURST_DURATION=${BURST_DURATION:-10s}
BURST_READY_BOUND=${BURST_READY_BOUND:-10s}
# The Node peer's sources (read-only is fine: it is installed in a copy).
NODEPEER_SRC=${NODEPEER_SRC:-$ROOT/../shared/peers/nodepeer}

CONNECT_RATE=${CONNECT_RATE:-200}
TRACKS_PER_SESSION=${TRACKS_PER_SESSION:-1}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
SYNC_INTERVAL=${SYNC_INTERVAL:-1s}
# Extra server flags, word-split on purpose (e.g. "--ping-interval 10s").
SERVER_FLAGS=${SERVER_FLAGS:-}
SERVER_LOG_LEVEL=${SERVER_LOG_LEVEL:-warn}
max_of() { printf '%s\n' "$@" | sort -n | tail -1; }
# shellcheck disable=SC2086 # COMPARE_STREAMS is a list
MAX_CONNECTIONS=${MAX_CONNECTIONS:-$(( $(max_of "$RAMP_MAX" "$FIXED_STREAMS" "$COMPARE_RAMP_MAX" "$BURST_STREAMS" $COMPARE_STREAMS) + 100 ))}

DISK_RAW_MB=${DISK_RAW_MB:-1024}
DISK_DSYNC_256K_COUNT=${DISK_DSYNC_256K_COUNT:-400}
DISK_DSYNC_96K_COUNT=${DISK_DSYNC_96K_COUNT:-500}
DISK_PARALLEL=${DISK_PARALLEL:-8}

# perf: auto (sample the server during the fixed run if perf can), 1 (must), 0 (never).
PERF=${PERF:-auto}
PERF_SECONDS=${PERF_SECONDS:-10}

SERVER_BIN=$ROOT/target/release/safetake
LOADGEN_BIN=$ROOT/target/release/loadgen
FLOOR_BIN=$ROOT/target/release/floor

log() { echo "bench: $*" >&2; }

WORK=""
# Which server start_server starts: safetake, node or floor.
SERVER_KIND=safetake
# The Node peer's installed copy (under $WORK, so it goes with it).
NODEPEER=""
NPM_PID=""
SERVER_PID=""
PERF_PID=""
PORT=""

cleanup() {
    local status=$?
    if [ -n "$PERF_PID" ]; then kill "$PERF_PID" 2>/dev/null || true; fi
    # npm waits for its build children before it dies: stop its whole process group.
    if [ -n "$NPM_PID" ]; then kill -TERM -- "-$NPM_PID" 2>/dev/null || true; wait "$NPM_PID" 2>/dev/null || true; fi
    stop_server
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nobody listens on, below the ephemeral range: a port the kernel handed to an outgoing
# connection (thousands of them in TIME_WAIT after a run) cannot be bound either.
free_port() {
    local low=10000 high port
    high=$(awk '{ print $1 - 1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32767)
    for _ in $(seq 1 50); do
        port=$(( low + RANDOM % (high - low) ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

# start_server DATA_DIR [server flags...]: sets SERVER_PID and PORT once /healthz answers.
# A port taken between the check and the bind is retried with another.
start_server() {
    for _ in 1 2 3 4 5; do
        if try_start_server "$@"; then return 0; fi
        if ! tail -2 "$WORK/server.log" | grep -qE "Address already in use|EADDRINUSE"; then return 1; fi
        log "port $PORT was taken; trying another"
    done
    return 1
}

try_start_server() {
    local dir=$1 mark cmd
    shift
    mkdir -p "$dir"
    PORT=$(free_port)
    case $SERVER_KIND in
        # shellcheck disable=SC2206 # SERVER_FLAGS is a list of flags
        safetake) cmd=("$SERVER_BIN" --max-connections "$MAX_CONNECTIONS" "$@" $SERVER_FLAGS) ;;
        node) cmd=(node "$NODEPEER/server.js" --max-connections "$MAX_CONNECTIONS" "$@") ;;
        floor) cmd=("$FLOOR_BIN" "$@") ;;
    esac
    mark=$(stat -c %s "$WORK/server.log" 2>/dev/null || echo 0)
    echo "--- $SERVER_KIND" >>"$WORK/server.log"
    RUST_LOG=$SERVER_LOG_LEVEL "${cmd[@]}" --bind "127.0.0.1:$PORT" --data-dir "$dir" \
        --sync-interval "$SYNC_INTERVAL" >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 150); do
        if server_answers "$mark"; then
            log "$SERVER_KIND $SERVER_PID on port $PORT ($dir)"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "the server exited at start:"
            tail -3 "$WORK/server.log" >&2
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            return 1
        fi
        sleep 0.2
    done
    log "the server did not answer /healthz within 30 s"
    return 1
}

# The floor has no HTTP: it says on stderr when it listens.
server_answers() {
    if [ "$SERVER_KIND" = floor ]; then
        tail -c +"$(( $1 + 1 ))" "$WORK/server.log" | grep -q "floor listening"
    else
        curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1
    fi
}

# SIGTERM is the graceful stop (finalize every track); SIGKILL only if it hangs.
stop_server() {
    if [ -z "$SERVER_PID" ]; then return 0; fi
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        log "the server ignored SIGTERM for 20 s: killing it"
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# A run that did not hold exits 1 but still wrote its JSON: carry on with the other phases.
loadgen() {
    local mode=$1
    "$LOADGEN_BIN" --threads "$LOADGEN_THREADS" "$@" >&2 || log "loadgen $mode exited with $? (see its JSON's issues)"
}

# dd_test NAME FILE BS COUNT FLAG: one JSON object with MB/s and syncs/s.
dd_test() {
    local name=$1 file=$2 bs=$3 count=$4 flag=$5 start end bytes
    start=$(date +%s.%N)
    dd if=/dev/zero of="$file" bs="$bs" count="$count" "$flag" status=none
    end=$(date +%s.%N)
    bytes=$(stat -c %s "$file")
    rm -f "$file"
    awk -v n="$name" -v b="$bytes" -v c="$count" -v s="$start" -v e="$end" -v f="$flag" 'BEGIN {
        t = e - s; syncs = (f == "oflag=dsync") ? c : 1
        printf "{\"name\":\"%s\",\"bytes\":%d,\"seconds\":%.3f,\"mbPerS\":%.2f,\"syncsPerS\":%.1f}", n, b, t, b / t / 1e6, syncs / t
    }'
}

# Several files synced at once, as the server's writers do on its blocking threads.
dd_parallel_test() {
    local name=$1 dir=$2 bs=$3 count=$4 jobs=$5 start end each pids=()
    each=$(( count / jobs > 0 ? count / jobs : 1 ))
    start=$(date +%s.%N)
    for i in $(seq 1 "$jobs"); do
        dd if=/dev/zero of="$dir/par.$i" bs="$bs" count="$each" oflag=dsync status=none &
        pids+=($!)
    done
    wait "${pids[@]}"
    end=$(date +%s.%N)
    rm -f "$dir"/par.*
    awk -v n="$name" -v bs="$bs" -v c="$(( each * jobs ))" -v s="$start" -v e="$end" 'BEGIN {
        t = e - s
        printf "{\"name\":\"%s\",\"bytes\":%d,\"seconds\":%.3f,\"mbPerS\":%.2f,\"syncsPerS\":%.1f}", n, bs * c, t, bs * c / t / 1e6, c / t
    }'
}

phase_disk() {
    local dir=$WORK/disk tests=()
    mkdir -p "$dir"
    log "disk: raw write rate and sync rates in $BENCH_TMP"
    tests+=("$(dd_test "1 MiB writes, one fdatasync at the end (raw rate)" "$dir/raw" 1M "$DISK_RAW_MB" conv=fdatasync)")
    tests+=("$(dd_test "256 KiB writes, each synced (the server's cadence at saturation)" "$dir/s256" 256K "$DISK_DSYNC_256K_COUNT" oflag=dsync)")
    tests+=("$(dd_test "96000 B writes, each synced (one track-second per sync)" "$dir/s96" 96000 "$DISK_DSYNC_96K_COUNT" oflag=dsync)")
    tests+=("$(dd_parallel_test "96000 B writes, each synced, $DISK_PARALLEL files at once" "$dir" 96000 "$DISK_DSYNC_96K_COUNT" "$DISK_PARALLEL")")
    local joined
    joined=$(IFS=,; echo "${tests[*]}")
    printf '{"mode":"disk","tests":[%s]}\n' "$joined" >"$RESULTS_DIR/disk.json"
    rm -rf "$dir"
}

# Samples the server's stacks once every stream is connected (after the ramp-up).
start_perf() {
    local delay
    delay=$(awk -v n="$FIXED_STREAMS" -v r="$CONNECT_RATE" 'BEGIN { printf "%d", (r > 0 ? n / r : 0) + 3 }')
    (
        sleep "$delay"
        perf record -e cpu-clock -F 199 -p "$SERVER_PID" -o "$WORK/perf.data" -- sleep "$PERF_SECONDS" >/dev/null 2>&1 || true
    ) &
    PERF_PID=$!
}

finish_perf() {
    if [ -z "$PERF_PID" ]; then return 0; fi
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    if [ -s "$WORK/perf.data" ]; then
        perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null \
            | grep -E '^ +[0-9]' | head -60 >"$RESULTS_DIR/perf-fixed.txt" || true
    fi
}

perf_usable() {
    case $PERF in
        0) return 1 ;;
        1) return 0 ;;
    esac
    command -v perf >/dev/null 2>&1 && perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1
}

phase_fixed() {
    start_server "$WORK/fixed"
    if perf_usable; then start_perf; fi
    log "fixed: $FIXED_STREAMS streams for $FIXED_DURATION"
    loadgen fixed --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --streams "$FIXED_STREAMS" --duration "$FIXED_DURATION" --connect-rate "$CONNECT_RATE" \
        --tracks-per-session "$TRACKS_PER_SESSION" --json "$RESULTS_DIR/fixed.json"
    finish_perf
    stop_server
    rm -rf "$WORK/fixed"
}

phase_ramp() {
    start_server "$WORK/ramp"
    log "ramp: $RAMP_START..$RAMP_MAX step $RAMP_STEP, $RAMP_DURATION each, p99 bound $RAMP_P99"
    loadgen ramp --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --start "$RAMP_START" --step "$RAMP_STEP" --max "$RAMP_MAX" --duration "$RAMP_DURATION" \
        --p99-bound "$RAMP_P99" --connect-rate "$CONNECT_RATE" \
        --tracks-per-session "$TRACKS_PER_SESSION" --delete-after --json "$RESULTS_DIR/ramp.json"
    stop_server
    rm -rf "$WORK/ramp"
}

phase_maxrate() {
    start_server "$WORK/maxrate"
    log "max-rate: $MAXRATE_STREAMS streams of $MAXRATE_FRAME_BYTES B frames for $MAXRATE_DURATION"
    loadgen max-rate --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --streams "$MAXRATE_STREAMS" --duration "$MAXRATE_DURATION" \
        --frame-bytes "$MAXRATE_FRAME_BYTES" --delete-after --json "$RESULTS_DIR/maxrate.json"
    stop_server
    rm -rf "$WORK/maxrate"
}

phase_sessions() {
    local dir=$WORK/sessions
    mkdir -p "$dir"
    log "sessions: seeding $SESSIONS ($SESSIONS_ACTIVE active)"
    "$LOADGEN_BIN" seed --database-url "$dir/safetake.db" --sessions "$SESSIONS" \
        --active "$SESSIONS_ACTIVE" --json "$WORK/seed.json" >&2
    # A long timeout: only the measured check-timeouts may time the seeded active sessions out.
    start_server "$dir" --session-timeout 24h
    loadgen sessions --url "http://127.0.0.1:$PORT" --seed-report "$WORK/seed.json" \
        --json "$RESULTS_DIR/sessions.json"
    stop_server
    rm -rf "$dir"
}

# The Node peer, installed with `npm ci` in a copy under $WORK (removed on exit, even on Ctrl-C).
install_nodepeer() {
    if [ -n "$NODEPEER" ]; then return 0; fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "peer: node and npm are needed for the Node peer"
        return 1
    fi
    if [ ! -f "$NODEPEER_SRC/package-lock.json" ]; then
        log "peer: no Node peer at $NODEPEER_SRC (set NODEPEER_SRC)"
        return 1
    fi
    log "peer: npm ci of the Node peer in a temporary copy (builds better-sqlite3: a minute or more)"
    cp -r "$NODEPEER_SRC" "$WORK/nodepeer"
    chmod -R u+w "$WORK/nodepeer"
    # In the background, in its own process group, and waited for: a stop of the benchmark
    # (Ctrl-C, SIGTERM) then stops npm and the compiler it runs too.
    (cd "$WORK/nodepeer" && exec setsid npm ci --no-audit --no-fund --loglevel=error) >&2 &
    NPM_PID=$!
    if ! wait "$NPM_PID"; then
        NPM_PID=""
        log "peer: npm ci of the Node peer failed"
        return 1
    fi
    NPM_PID=""
    NODEPEER=$WORK/nodepeer
}

# peer_loadgen KIND MODE ARGS...: loadgen against the running KIND server.
peer_loadgen() {
    local kind=$1 mode=$2 protocol=ws
    shift 2
    if [ "$kind" = floor ]; then protocol=raw; fi
    loadgen "$mode" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --protocol "$protocol" \
        --close-bound "$COMPARE_CLOSE_BOUND" "$@"
}

# peer_run KIND NAME [server flags...] -- loadgen mode and args: one fresh server, one run.
peer_run() {
    local kind=$1 name=$2 flags=()
    shift 2
    while [ "$1" != "--" ]; do flags+=("$1"); shift; done
    shift
    SERVER_KIND=$kind
    start_server "$WORK/peer-$kind" "${flags[@]}"
    peer_loadgen "$kind" "$@"
    stop_server
    SERVER_KIND=safetake
    rm -rf "$WORK/peer-$kind"
}

phase_peer() {
    local out=$RESULTS_DIR/peer kind n servers=""
    rm -rf "$out"
    mkdir -p "$out"
    for kind in $COMPARE_SERVERS; do
        case $kind in
            node) if install_nodepeer; then servers+=" node"; else log "peer: skipping the Node peer"; fi ;;
            safetake | floor) servers+=" $kind" ;;
            *) log "peer: unknown server '$kind' (safetake node floor)"; exit 2 ;;
        esac
    done
    # Interleaved, so that whatever else the machine does falls on all of them alike.
    for n in $COMPARE_STREAMS; do
        for kind in $servers; do
            log "peer: $kind, $n streams for $COMPARE_DURATION"
            peer_run "$kind" "$n" -- fixed --streams "$n" --duration "$COMPARE_DURATION" \
                --connect-rate "$CONNECT_RATE" --p99-bound "$COMPARE_P99" --json "$out/$kind-$n.json"
        done
    done
    for kind in $servers; do
        log "peer: $kind, burst: $BURST_STREAMS sockets connecting at once, all finishing at once"
        peer_run "$kind" burst -- fixed --streams "$BURST_STREAMS" --duration "$BURST_DURATION" \
            --ramp-up 0s --create-first --aligned-end --connect-timeout "$BURST_READY_BOUND" \
            --json "$out/$kind-burst.json"
    done
    for kind in $servers; do
        local delete=(--delete-after) floor_flags=()
        if [ "$kind" = floor ]; then delete=(); floor_flags=(--delete-on-close); fi
        log "peer: $kind, ramp $COMPARE_RAMP_START..$COMPARE_RAMP_MAX step $COMPARE_RAMP_STEP"
        peer_run "$kind" ramp "${floor_flags[@]}" -- ramp --start "$COMPARE_RAMP_START" \
            --step "$COMPARE_RAMP_STEP" --max "$COMPARE_RAMP_MAX" --duration "$COMPARE_RAMP_DURATION" \
            --p99-bound "$COMPARE_P99" --connect-rate "$CONNECT_RATE" "${delete[@]}" \
            --json "$out/$kind-ramp.json"
    done
    "$LOADGEN_BIN" compare --dir "$out" >&2
}

# Warnings and errors the servers logged, grouped by message (timestamps and fields dropped).
server_log_summary() {
    local log=$WORK/server.log count
    [ -s "$log" ] || return 0
    count=$(grep -cE ' (WARN|ERROR) ' "$log" || true)
    [ "$count" -gt 0 ] || return 0
    echo
    echo "The servers logged $count warnings and errors (RUST_LOG=$SERVER_LOG_LEVEL), most frequent first:"
    echo
    grep -E ' (WARN|ERROR) ' "$log" | sed -E 's/^[^ ]+ +//; s/ [a-z_]+=.*$//' \
        | sort | uniq -c | sort -rn | head -8 | awk '{ $1 = $1 " x"; print "- " $0 }'
}

summary() {
    local commit changes=""
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || changes=" (with uncommitted changes)"
    echo "## safetake benchmark"
    echo
    echo "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit$changes"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); data on $(df -P "$BENCH_TMP" | awk 'NR == 2 { print $1 }') ($(stat -f -c %T "$BENCH_TMP"))"
    echo "- server: --sync-interval $SYNC_INTERVAL${SERVER_FLAGS:+ $SERVER_FLAGS}; loadgen: $LOADGEN_THREADS threads on the same machine, $CONNECT_RATE connects/s, $TRACKS_PER_SESSION track(s) per session, 48 kHz mono s16le, 20 ms frames"
    echo "- phases run: $PHASES. Latencies read p50 / p90 / p99 / max. CPU: 100% = one core."
    echo
    "$LOADGEN_BIN" summary --dir "$RESULTS_DIR"
    if [ -s "$RESULTS_DIR/perf-fixed.txt" ]; then
        echo
        echo "Server profile during the fixed run (perf, cpu-clock, self time; full list in perf-fixed.txt):"
        echo
        echo '```'
        head -15 "$RESULTS_DIR/perf-fixed.txt" | cut -c1-110
        echo '```'
    elif [[ " $PHASES " == *" fixed "* ]]; then
        echo
        echo "No profile: perf is not usable here (PERF=$PERF)."
    fi
    server_log_summary
    if perf stat -e instructions -- true 2>&1 | grep -q "not supported"; then
        echo
        echo "Hardware counters (instructions, cycles) are not available on this machine; profiles use cpu-clock sampling."
    fi
}

main() {
    mkdir -p "$RESULTS_DIR" "$BENCH_TMP"
    WORK=$(mktemp -d "$BENCH_TMP/safetake-bench.XXXXXX")
    log "building release binaries"
    cargo build --release --locked -p safetake -p loadgen >&2
    # The Node peer needs a descriptor per socket too (safetake and loadgen raise their own).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    for phase in $PHASES; do
        case $phase in
            disk | fixed | ramp | maxrate | sessions | peer) ;;
            *) log "unknown phase '$phase' (disk fixed ramp maxrate sessions peer)"; exit 2 ;;
        esac
        # A stale result of a phase being rerun must not reach the summary.
        rm -f "$RESULTS_DIR/$phase.json"
        if [ "$phase" = fixed ]; then rm -f "$RESULTS_DIR/perf-fixed.txt"; fi
    done
    for phase in $PHASES; do
        "phase_$phase"
    done
    summary | tee "$RESULTS_DIR/summary.md"
}

main "$@"
