#!/usr/bin/env bash
# Fuzzes the frame decoder and WAV crash repair with cargo-fuzz (libFuzzer), for a bounded time.
# Usage: bash tests/fuzz.sh              (FUZZ_SECONDS=30 per target by default)
#        FUZZ_SECONDS=300 bash tests/fuzz.sh
# Exits non-zero if a target crashes; the input is kept under fuzz/artifacts/<target>/ and
# `cargo fuzz run -s none <target> <file>` (in fuzz/) replays it.
#
# Runs on the stable toolchain: `-s none` (no sanitizer) needs no nightly-only rustc flag, and
# the targets are safe Rust, where a bug shows as a panic, which libFuzzer catches.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'" >&2
    exit 2
fi
targets=(frame_decode wav_repair)

# Logs and the wav_repair scratch files (it writes under $TMPDIR) live in one directory that is
# removed on any exit; a fuzzer still running when the script is interrupted is stopped first.
base=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
work="$(mktemp -d "$base/safetake-fuzz.XXXXXX")"
child=""
cleanup() {
    if [[ -n "$child" ]]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n==> %s\n' "$*"; }

step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

step "build (instrumented, release with debug assertions)"
started=$SECONDS
for target in "${targets[@]}"; do
    cargo fuzz build -s none "$target"
done
echo "built in $((SECONDS - started)) s"

[[ -d corpus/wav_repair ]] || ./seeds.sh

failed=0
summary=()
for target in "${targets[@]}"; do
    step "fuzz $target for ${seconds} s"
    log="$work/$target.log"
    mkdir -p "$work/tmp"
    # `timeout` runs the fuzzer in its own process group and kills the whole group if libFuzzer
    # ever overruns its own -max_total_time (a hang in a target). Backgrounded so the trap
    # above can stop it on Ctrl-C.
    TMPDIR="$work/tmp" timeout -k 10 $((seconds + 300)) \
        cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$log" 2>&1 &
    child=$!
    started=$SECONDS
    status=0
    wait "$child" || status=$?
    child=""
    elapsed=$((SECONDS - started))

    done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
    if [[ "$status" -eq 0 && -n "$done_line" ]]; then
        read -r _ runs _ _ secs _ <<<"$done_line"
        summary+=("$target: $runs runs in $secs s, no crash")
        echo "${summary[-1]}"
        continue
    fi
    failed=1
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [[ -n "$artifact" ]]; then
        runs="$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)"
        summary+=("$target: CRASH after about ${runs:-?} runs in ${elapsed} s, input in fuzz/${artifact#"$PWD/"}")
        # Where the panic was raised and its message, up to the backtrace or libFuzzer's report.
        sed -n '/panicked at/,/^stack backtrace\|^note: \|^==/p' "$log" | sed '$d'
        echo "base64 of the input: $(base64 -w 0 "$artifact")"
    else
        summary+=("$target: FAILED (exit $status) without a crash input; log follows")
        tail -n 40 "$log"
    fi
    echo "${summary[-1]}"
done

step "summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
