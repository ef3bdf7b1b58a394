#!/usr/bin/env bash
# Runs every test of safetake on a fresh machine: installs what the tests need (Chromium and
# Node.js from Debian's packages, cargo-fuzz from crates.io), checks formatting and lints,
# builds the release binary, and runs every suite. The last line sums them up.
# Usage: bash tests/run-all.sh        (the README's test command; .ci/run calls it)
#        FUZZ_SECONDS=300 bash tests/run-all.sh   (a longer fuzz run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT

step "what the tests need"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if ! command -v mount >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mount >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version && node --version

step "format and lints"
cargo fmt --all -- --check
# The whole workspace: the server, the load generator (loadgen/) and the fuzz targets (fuzz/).
cargo clippy --release --all-targets --workspace --locked -- -D warnings

step "build"
cargo build --release --workspace --locked

step "unit, API, hostile-input, socket, crash, fault, shutdown and load generator tests"
cargo test --release --workspace --locked 2>&1 | tee "$log/cargo.txt"

step "fuzzing: frame decoder and WAV repair"
bash tests/fuzz.sh

step "browser tests: recorder and history pages in headless Chromium"
bash tests/browser/run.sh 2>&1 | tee "$log/browser.txt"

passed=$(( $(grep -o '[0-9]* passed' "$log/cargo.txt" | awk '{s+=$1} END {print s+0}') \
         + $(tail -n 1 "$log/browser.txt" | grep -o '[0-9]* passed' | awk '{print $1+0}') ))
failed=$(( $(grep -o '[0-9]* failed' "$log/cargo.txt" | awk '{s+=$1} END {print s+0}') \
         + $(tail -n 1 "$log/browser.txt" | grep -o '[0-9]* failed' | awk '{print $1+0}') ))
echo
echo "${passed} passed, ${failed} failed"
