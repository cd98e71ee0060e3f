#!/usr/bin/env bash
# Bring up the local stack: 3 real MariaDB servers (GTID replication, semi-sync)
# on loopback and baton in front of them on the embedded file topology store.
# Installs what is missing. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p baton -p baton-testkit --bins
exec target/release/baton-stack up --baton target/release/baton --dir var/stack "$@"
