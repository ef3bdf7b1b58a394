#!/usr/bin/env bash
# Runs every test of safetake on a fresh machine: installs what the tests need (Chromium, Firefox
# ESR, WebKitGTK's WebDriver, Xvfb, PulseAudio, nginx, Caddy, PostgreSQL, flac (the aligned
# export's reference decoder) and Node.js from Debian's packages,
# cargo-fuzz and geckodriver from crates.io), checks formatting and lints, builds the release
# binary, and runs every suite. The last line sums them up.
# Usage: bash tests/run-all.sh        (the README's test command; .ci/run calls it)
#        FUZZ_SECONDS=300 bash tests/run-all.sh   (a longer fuzz run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
log="$(mktemp -d)"
# The PostgreSQL pass's throwaway cluster (tests/pg-cluster.sh) goes too, however the run ends.
source tests/pg-cluster.sh
trap 'pg_cluster_stop; rm -rf "$log"' EXIT

step "what the tests need"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if ! command -v mount >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mount >/dev/null
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The browsers and the proxy: Debian's packages, each skipped when present (the suites' own
# scripts check the same files, so each also runs alone).
missing=()
for need in /usr/bin/chromium:chromium /usr/bin/firefox-esr:firefox-esr /usr/bin/pulseaudio:pulseaudio \
    /usr/bin/WebKitWebDriver:webkit2gtk-driver /usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser:libwebkit2gtk-4.1-0 \
    /usr/bin/Xvfb:xvfb /usr/sbin/nginx:nginx /usr/bin/caddy:caddy /usr/bin/systemd-analyze:systemd \
    /usr/bin/flac:flac; do
    [[ -e "${need%%:*}" ]] || missing+=("${need#*:}")
done
if (( ${#missing[@]} > 0 )); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v geckodriver >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver" ]]; then
    cargo install geckodriver --version 0.37.1 --locked --quiet
fi
# PostgreSQL for the second pass of the API and process suites (the server needs no libpq:
# it is built in).
pg_install
cargo --version && node --version

step "format and lints"
cargo fmt --all -- --check
# The whole workspace: the server, the load generator (loadgen/) and the fuzz targets (fuzz/).
cargo clippy --release --all-targets --workspace --locked -- -D warnings

step "build"
cargo build --release --workspace --locked

step "unit, API, hostile-input, socket, crash, fault, shutdown and load generator tests"
# The tests that need PostgreSQL (several nodes, the database going down) run in the next pass.
cargo test --release --workspace --locked -- --skip nodes:: --skip while_postgres_is_down \
    2>&1 | tee "$log/cargo.txt"

step "the API and process suites again, against PostgreSQL (a throwaway cluster on a free port)"
pg_cluster_start
# The process suite's tests that read or lock SQLite's file themselves, or run the SQLite-only
# subcommands (backup, repair), stay with the first pass.
SAFETAKE_TEST_DATABASE_URL="$PG_TEST_URL" cargo test --release --locked --test api --test process -- \
    --skip stored:: --skip a_locked_database --skip a_full_disk --skip backup_ --skip repair_ \
    --skip a_binary_copied_alone 2>&1 | tee "$log/postgres.txt"
pg_cluster_stop

step "fuzzing: frame decoder and WAV repair"
bash tests/fuzz.sh

step "browser tests: recorder and history pages in Chromium, Firefox ESR and WebKitGTK"
# Two browsers side by side (nothing else runs meanwhile): Chromium's scenarios beside Firefox's,
# then WebKit's.
BROWSERS="chromium firefox webkit" BROWSER_JOBS=2 bash tests/browser/run.sh 2>&1 | tee "$log/browser.txt" || true

step "reverse proxy: the server behind nginx and Caddy (dist/nginx.conf, dist/Caddyfile)"
bash tests/proxy/run.sh 2>&1 | tee "$log/proxy.txt" || true

# A suite's last line is its tally; one that died before printing it counts as one failure.
tally() { # FILE WORD
    local line
    line="$(tail -n 1 "$1")"
    if [[ "$line" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        [[ "$2" == passed ]] && echo "${BASH_REMATCH[1]}" || echo "${BASH_REMATCH[2]}"
    else
        [[ "$2" == passed ]] && echo 0 || echo 1
    fi
}
passed=$(( $(cat "$log/cargo.txt" "$log/postgres.txt" | grep -o '[0-9]* passed' | awk '{s+=$1} END {print s+0}') \
         + $(tally "$log/browser.txt" passed) + $(tally "$log/proxy.txt" passed) ))
failed=$(( $(cat "$log/cargo.txt" "$log/postgres.txt" | grep -o '[0-9]* failed' | awk '{s+=$1} END {print s+0}') \
         + $(tally "$log/browser.txt" failed) + $(tally "$log/proxy.txt" failed) ))
echo
echo "${passed} passed, ${failed} failed"
# The browser and proxy suites run to the end even when one fails; their failures fail the run.
(( failed == 0 ))
