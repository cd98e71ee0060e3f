#!/usr/bin/env bash
# The benchmark command: install, build release, run benches/e2e.py.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p baton -p baton-testkit --bins
exec python3 benches/e2e.py "$@"
