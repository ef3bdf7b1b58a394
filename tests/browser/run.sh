#!/usr/bin/env bash
# The browser tests of the recorder and history pages against the real server binary, which this
# script does not build: headless Chromium (Debian's) driven by playwright-core, and Firefox ESR
# and WebKitGTK (Debian's) driven over WebDriver by selenium-webdriver.
#   cargo build --release && tests/browser/run.sh [SCENARIO...]
# BROWSERS="chromium firefox webkit" (the default) chooses the browsers, BROWSER_JOBS=2 runs two
# of them side by side. What a chosen browser needs is installed when missing: Debian's packages,
# and geckodriver from crates.io into ~/.cargo/bin. SAFETAKE_BIN names another binary.
# The last line printed is `N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")"

BROWSERS="${BROWSERS:-chromium firefox webkit}"
export BROWSERS
wants() { [[ " ${BROWSERS//,/ } " == *" $1 "* ]]; }

# Debian's packages each chosen browser needs, by a file each one installs.
missing=()
need() { [[ -e "$1" ]] || missing+=("$2"); }
if wants chromium; then need /usr/bin/chromium chromium; fi
if wants firefox; then
  need /usr/bin/firefox-esr firefox-esr
  need /usr/bin/pulseaudio pulseaudio # its null sink is Firefox's audio output
fi
if wants webkit; then
  need /usr/bin/WebKitWebDriver webkit2gtk-driver
  need /usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser libwebkit2gtk-4.1-0
  need /usr/bin/Xvfb xvfb
fi
# With their Recommends, as tested: WebKit's mock microphone runs on GStreamer's plugins.
if (( ${#missing[@]} > 0 )); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
GECKODRIVER="${GECKODRIVER:-$(command -v geckodriver || echo "${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver")}"
export GECKODRIVER
if wants firefox && [[ ! -x "$GECKODRIVER" ]]; then
  echo "installing geckodriver from crates.io (once; a few minutes)" >&2
  cargo install geckodriver --version 0.37.1 --locked --quiet >&2
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
