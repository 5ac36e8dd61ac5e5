#!/usr/bin/env bash
# The load harness in one command: fetches the Cerbos PDP from npm (once,
# into target/cerbos) and runs benches/load.rs, which starts Mandate, the
# bare-hyper floor and Cerbos pinned to core 0 and loads them from core 1.
#   bash benches/run-load.sh [--duration 5] [--connections 32] [--cached-entities 200000]
# Results: benches/results/results.md and benches/results/latency.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CERBOS:-}" ] && [ ! -x target/cerbos/package/cerbos-linux-x64 ]; then
    mkdir -p target/cerbos
    (cd target/cerbos && npm pack --silent @cerbos/cerbos-linux-x64 >/dev/null && tar xzf cerbos-cerbos-linux-x64-*.tgz)
fi
command -v taskset >/dev/null || echo "warning: no taskset; servers and load generator will share cores" >&2
exec cargo bench --bench load -- "$@"
