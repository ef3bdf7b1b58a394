#!/usr/bin/env bash
# safetake behind the real nginx (Debian's, installed when missing), configured by
# dist/nginx.conf, on loopback: a WebSocket client and the recorder page in Chromium record
# through it; the Host and Origin rules and a Range download are checked through it. The server
# binary is not built here:
#   cargo build --release && tests/proxy/run.sh
# SAFETAKE_BIN names another binary, NGINX another nginx. The last line is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[[ -x "${NGINX:-/usr/sbin/nginx}" ]] || missing+=(nginx)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if (( ${#missing[@]} > 0 )); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged nginx on port 80 when it installs it; this test runs its own only.

SAFETAKE_BIN="$(realpath -m "${SAFETAKE_BIN:-../../target/release/safetake}")"
export SAFETAKE_BIN
if [[ ! -x "$SAFETAKE_BIN" ]]; then
  echo "no server binary at $SAFETAKE_BIN: run 'cargo build --release' first" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

# The browser suite's packages (ws, playwright-core) serve this test too.
(cd ../browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)

exec node proxy.mjs
