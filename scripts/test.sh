#!/usr/bin/env bash
# Run every test: installs what is missing, checks formatting and lints, builds
# once (debug), starts two real 3-node MariaDB clusters on loopback (one shared by
# the tests that leave the topology alone, one for those that move the primary),
# runs the suite, tears down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Style gates first: formatting and lints (rustup components, added when missing).
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
work=$(mktemp -d /tmp/baton-test.XXXXXX)
chmod 755 "$work"   # mariadbd runs as user mysql and must reach its data dir
# Two clusters: one shared by the tests that leave topology alone, one for the
# tests that move the primary (reparents), which run one at a time.
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Servers that tests killed and started again are not the harness's children:
  # stopped by the pid each one wrote (mariadbd.pid), then waited for.
  for f in "$work"/*/node*/mariadbd.pid; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for f in "$work"/*/node*/mariadbd.pid; do
    for _ in $(seq 1 100); do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
for name in shared reparent; do
  target/debug/baton-stack cluster --info "$work/$name.json" --dir "$work/$name" > "$work/$name.log" 2>&1 &
  pids+=($!)
done
for name in shared reparent; do
  for _ in $(seq 1 900); do
    [ -f "$work/$name.json" ] && break
    sleep 0.1
  done
  [ -f "$work/$name.json" ] || { cat "$work/$name.log"; echo "cluster $name did not start" >&2; exit 1; }
done
export BATON_TEST_CLUSTER="$work/shared.json"
export BATON_TEST_CLUSTER_REPARENT="$work/reparent.json"
cargo test --workspace --all-targets --no-fail-fast "$@"
