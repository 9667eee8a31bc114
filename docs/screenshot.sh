#!/usr/bin/env bash
# Screenshot built pages of the site in headless Chromium, to check that formulas (MathJax)
# and figures render offline. Usage: docs/screenshot.sh [HTML_DIR] [OUT_DIR]
# (defaults: docs/_build/html and /tmp). Pages are served from a local http.server, so
# the site is checked as a browser loads it; nothing is fetched from the network.
set -euo pipefail
html="${1:-docs/_build/html}"
out="${2:-/tmp}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
port="${PORT:-8765}"
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$html" > /dev/null 2>&1 &
server=$!
trap 'kill "$server"' EXIT
sleep 1
shoot() {  # page, png[, height]
  "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --virtual-time-budget=15000 --hide-scrollbars \
    --window-size=1280,"${3:-1600}" --screenshot="$2" "http://127.0.0.1:$port/$1" > /dev/null 2>&1
  echo "wrote $2 ($1)"
}
shoot api/generated/bonmath.bon_log_probs.html "$out/shot_bon.png"
shoot tutorials/hf_exact.html "$out/shot_tutorial.png" 6000  # the whole page, figures included
shoot math.html "$out/shot_math.png"
