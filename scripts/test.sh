#!/usr/bin/env bash
# Run every test: installs what is missing, builds once (debug), starts one real
# 3-node MariaDB cluster on loopback shared by all tests, runs the suite, tears down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets
work=$(mktemp -d /tmp/baton-test.XXXXXX)
chmod 755 "$work"   # mariadbd runs as user mysql and must reach its data dir
info="$work/cluster.json"
target/debug/baton-stack cluster --info "$info" --dir "$work/cluster" > "$work/stack.log" 2>&1 &
stack=$!
cleanup() { kill -TERM "$stack" 2>/dev/null || true; wait "$stack" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  [ -f "$info" ] && break
  kill -0 "$stack" 2>/dev/null || { cat "$work/stack.log"; echo "cluster failed to start" >&2; exit 1; }
  sleep 0.1
done
[ -f "$info" ] || { cat "$work/stack.log"; echo "cluster did not start in 60 s" >&2; exit 1; }
export BATON_TEST_CLUSTER="$info"
cargo test --workspace --all-targets "$@"
