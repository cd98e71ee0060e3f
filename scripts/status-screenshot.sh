#!/usr/bin/env bash
# Screenshot baton's status page in headless Chromium while a planned reparent runs.
# Usage: scripts/status-screenshot.sh [ADMIN_ADDR] [CLUSTER] [OUT_DIR]
# Needs a running baton (e.g. scripts/stack.sh) and BATON_ADMIN_TOKEN for the reparent.
# Installs Debian's chromium when missing. Writes OUT_DIR/status-during.png and
# OUT_DIR/status-after.png.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${1:-127.0.0.1:6034}
cluster=${2:-main}
out=${3:-docs}
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
baton=$(ls -t target/release/baton target/debug/baton 2>/dev/null | head -1)
shot() {
  local profile; profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1200,1100 --virtual-time-budget=1500 \
    --screenshot="$1" "http://$admin/" >/dev/null 2>&1
  rm -rf "$profile"
}
mkdir -p "$out"
"$baton" ctl --admin "$admin" reparent "$cluster" &
ctl=$!
shot "$out/status-during.png"
wait "$ctl" || true
shot "$out/status-after.png"
echo "wrote $out/status-during.png and $out/status-after.png"
