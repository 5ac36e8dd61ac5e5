#!/usr/bin/env bash
# The TypeScript SDK's checks, as CI runs them: install the locked dev
# dependencies, build both module formats, lint (tsc --strict, eslint) and
# run the tests (node --test) against a real `mandate serve`.
#
# The server binary is MANDATE_BIN, else <repo root>/target/debug/mandate.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

echo "== node $(node --version), npm $(npm --version)"
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "mandate-client needs Node.js 20 or later" >&2
  exit 1
fi

echo "== npm ci"
npm ci --ignore-scripts --no-audit --no-fund

echo "== build (ESM + CommonJS + .d.ts)"
npm run build

echo "== lint: tsc --strict --noEmit, eslint"
npx tsc -p tsconfig.json --strict --noEmit
npx eslint --max-warnings 0 .

echo "== test: node --test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
node --test --test-reporter=tap test/*.test.mjs 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n 1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n 1)
cancelled=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$log" | tail -n 1)
# A test cancelled (its suite's setup failed) counts as failed.
failed=$(( ${failed:-0} + ${cancelled:-0} ))
echo "typescript: ${passed:-0} passed, ${failed} failed"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ "${passed:-0}" -eq 0 ]; then
  echo "no test ran" >&2
  exit 1
fi
