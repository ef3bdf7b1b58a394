#!/usr/bin/env bash
# Runs every test of safetake on a fresh machine: installs what the tests need, checks
# formatting and lints, builds the release binary, and runs the Rust suites.
# Usage: bash tests/run-all.sh        (the README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format and lints"
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings

step "build"
cargo build --release --locked

step "unit, API, socket, crash and shutdown tests"
cargo test --release --locked
