#!/usr/bin/env bash
# The browser tests of the recorder and history pages: headless Chromium (Debian's) driven by
# playwright-core against the real server binary, which this script does not build:
#   cargo build --release && tests/browser/run.sh [SCENARIO...]
# SAFETAKE_BIN names another binary. The last line printed is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -x /usr/bin/chromium ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

SAFETAKE_BIN="$(realpath -m "${SAFETAKE_BIN:-../../target/release/safetake}")"
export SAFETAKE_BIN
if [[ ! -x "$SAFETAKE_BIN" ]]; then
  echo "no server binary at $SAFETAKE_BIN: run 'cargo build --release' first" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# playwright-core never downloads a browser; the variable makes sure nothing else tries.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2

exec node run.mjs "$@"
