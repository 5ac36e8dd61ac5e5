#!/usr/bin/env bash
# Instructions per decision, exactly: each binary serves the embedded pack
# under `valgrind --tool=callgrind` and answers one decision (carol places an
# order, decision log on) N and 5N times over one keep-alive connection; the
# difference over 4N is one request's cost, start-up and shutdown cancelled.
# Unlike CPU time it does not move with the machine's noise, so a change of
# a few hundred instructions shows. Build with `--profile profiling` to have
# `callgrind_annotate` name the functions (outputs in $OUT).
#
#   bash benches/instructions.sh target/profiling/mandate /tmp/before/mandate
#
# SERVE_ARGS adds flags to `serve` (the load harness's own store:
# SERVE_ARGS="--upstream http://127.0.0.1:PORT" beside `mandate serve-store`).
set -euo pipefail
N=${N:-500}
OUT=${OUT:-target/instructions}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }

drive() { # PORT COUNT: COUNT decisions over one connection; fails on any non-200
  python3 - "$1" "$2" <<'PY'
import http.client, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
body = '{"subject":{"type":"user","id":"carol"},"action":{"name":"place_order"},"resource":{"type":"account","id":"alice-personal"},"context":{"side":"buy","instrument":"AAPL"}}'
for _ in range(600):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.connect()
        break
    except OSError:
        time.sleep(0.1)
for _ in range(count):
    connection.request("POST", "/access/v1/evaluation", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    text = answer.read()
    if answer.status != 200 or b'"decision":true' not in text:
        sys.exit(f"unexpected answer {answer.status}: {text[:200]!r}")
PY
}

total() { # BINARY COUNT NAME: the process's instructions answering COUNT decisions
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  MANDATE_LOG_LEVEL=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/$3.$2.out" \
    "$1" serve --listen "127.0.0.1:$port" ${SERVE_ARGS:-} >"$OUT/$3.$2.log" 2>"$OUT/$3.$2.err" &
  local pid=$!
  drive "$port" "$2" || { kill "$pid"; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^totals:/ {print $2}' "$OUT/$3.$2.out"
}

task() { # OUTPUT: the connection task's inclusive count (its largest entry), or nothing
  callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk '/mandate::server::serve::\{\{closure\}\}::\{\{closure\}\}/ {
           gsub(",", "", $1); if ($1 + 0 > best) best = $1 + 0 }
         END { if (best > 0) print best }'
}

# The total moves by ±500 a request with startup (Cedar's parser fills its
# lexer's lazy DFA differently from run to run); the connection task's own
# count (a `--profile profiling` build names it) is untouched by startup.
printf '| binary | instructions per decision | of which the connection task |\n|---|---:|---:|\n'
for binary in "$@"; do
  name=$(echo "$binary" | tr '/' '_')
  few=$(total "$binary" "$N" "$name")
  many=$(total "$binary" $((5 * N)) "$name")
  # No count read (callgrind wrote no totals) is a failure, never a 0.
  [[ "$few" =~ ^[0-9]+$ && "$many" =~ ^[0-9]+$ ]] || { echo "no instruction count for $binary (see $OUT)" >&2; exit 1; }
  few_task=$(task "$OUT/$name.$N.out")
  many_task=$(task "$OUT/$name.$((5 * N)).out")
  if [[ "$few_task" =~ ^[0-9]+$ && "$many_task" =~ ^[0-9]+$ ]]; then
    of_task=$(((many_task - few_task) / (4 * N)))
  else
    of_task="n/a (no symbols: build with --profile profiling)"
  fi
  printf '| %s | %d | %s |\n' "$binary" $(((many - few) / (4 * N))) "$of_task"
done
