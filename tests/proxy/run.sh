#!/usr/bin/env bash
# safetake behind the real nginx and Caddy (Debian's, installed when missing), configured by
# dist/nginx.conf and dist/Caddyfile, on loopback: a WebSocket client records through each, and
# the recorder page in Chromium through nginx; the Host and Origin rules and a Range download are
# checked through each. The server binary is not built here:
#   cargo build --release && tests/proxy/run.sh
# SAFETAKE_BIN names another binary, NGINX and CADDY other proxies. The last line is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
[[ -x "${NGINX:-/usr/sbin/nginx}" ]] || missing+=(nginx)
[[ -x "${CADDY:-/usr/bin/caddy}" ]] || missing+=(caddy)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if (( ${#missing[@]} > 0 )); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

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
