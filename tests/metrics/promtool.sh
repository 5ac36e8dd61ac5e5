#!/usr/bin/env bash
# Starts Mandate with the HTTP store in front of the reference store, makes
# decisions (an allow, a deny, a refusal), and checks /metrics with
# `promtool check metrics`. Exits non-zero on any problem.
set -uo pipefail
cd "$(dirname "$0")/../.."
MANDATE=${MANDATE:-target/debug/mandate}
[ -x "$MANDATE" ] || cargo build --quiet
WORK=$(mktemp -d)
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$MANDATE" serve-store --listen 127.0.0.1:18290 >"$WORK/store.log" 2>&1 &
PIDS+=($!)
MANDATE_LOG_DECISIONS=off "$MANDATE" serve --listen 127.0.0.1:18280 --upstream http://127.0.0.1:18290 >"$WORK/mandate.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:18280/healthz >/dev/null && break
    sleep 0.1
done
ask() { curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18280/access/v1/evaluation -H 'content-type: application/json' -d "$1"; }
ask '{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}' >/dev/null
ask '{"subject":{"type":"user","id":"bob"},"action":{"name":"cancel_order"},"resource":{"type":"account","id":"alice-personal"}}' >/dev/null
head -c 2000000 /dev/zero | tr '\0' 'x' | curl -s -o /dev/null http://127.0.0.1:18280/access/v1/evaluation -H 'content-type: application/json' --data-binary @-
curl -s http://127.0.0.1:18280/metrics >"$WORK/metrics.txt"
grep -q '^mandate_decisions_total' "$WORK/metrics.txt" || { echo "no decisions in /metrics"; cat "$WORK/mandate.log"; exit 1; }
grep -q '^mandate_entity_cache_misses_total' "$WORK/metrics.txt" || { echo "no cache metrics in /metrics"; exit 1; }
if promtool check metrics <"$WORK/metrics.txt"; then
    echo "promtool check metrics: ok ($(grep -c '^mandate_' "$WORK/metrics.txt") series)"
else
    echo "promtool check metrics: FAILED"
    exit 1
fi
