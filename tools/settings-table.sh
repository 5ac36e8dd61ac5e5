#!/usr/bin/env bash
# Rewrites the settings table in docs/configuration.md from `mandate
# settings` (tests/e2e/readme.rs checks they are the same).
set -euo pipefail
cd "$(dirname "$0")/.."
MANDATE=${MANDATE:-target/debug/mandate}
python3 - "$("$MANDATE" settings)" <<'PY'
import sys
table = sys.argv[1].rstrip("\n") + "\n"
path = "docs/configuration.md"
lines = open(path).read().splitlines(keepends=True)
start = next(i for i, l in enumerate(lines) if l.startswith("| key | env | flag | default | what |"))
end = start
while end < len(lines) and lines[end].startswith("|"):
    end += 1
open(path, "w").write("".join(lines[:start]) + table + "".join(lines[end:]))
PY
