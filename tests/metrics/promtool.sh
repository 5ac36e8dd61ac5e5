#!/usr/bin/env bash
# The metrics, the alert rules and the dashboard, with promtool:
#   - dashboards/alerts.yaml passes `promtool check rules`, and its unit
#     tests (tests/metrics/alerts.test.yaml: each alert fires on the bad
#     series and stays silent on the good) pass `promtool test rules`;
#     every alert has a severity, a summary and a description, and is seen
#     both firing and silent there;
#   - dashboards/mandate.json: panel ids unique, panels on the 24-column
#     grid without overlap, every panel and query on the ${datasource}
#     variable and every selector filtered by $job, every query valid PromQL
#     (promtool parses each as a recording rule); the chart ships the same
#     file (helm/mandate/files/dashboard.json);
#   - every mandate_ metric the dashboard and the rules name (queries,
#     expressions, annotations) is defined in src/;
#   - then a live server, the HTTP store in front of the reference store,
#     after an allow, a deny and a refusal: `promtool check metrics` on its
#     /metrics, and every metric family the dashboard and the rules name is
#     exported there already (no search, bus or history used), so no panel
#     is empty and no alert is blind for want of a series.
# With --no-server the live part is skipped (nothing to build).
# Prints one line per check and `N passed, N failed`; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
RULES=dashboards/alerts.yaml
RULE_TESTS=tests/metrics/alerts.test.yaml
DASHBOARD=dashboards/mandate.json
WORK=$(mktemp -d)
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
passed=0 failed=0
result() { # name status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok    $1"; else failed=$((failed + 1)); echo "FAIL  $1"; fi
}

promtool check rules "$RULES" >"$WORK/out" 2>&1
status=$?
[ $status -eq 0 ] || cat "$WORK/out"
result "promtool check rules $RULES ($(grep -o '[0-9]* rules found' "$WORK/out"))" $status

promtool test rules "$RULE_TESTS" >"$WORK/out" 2>&1
status=$?
[ $status -eq 0 ] || cat "$WORK/out"
result "promtool test rules $RULE_TESTS: each alert fires on the bad series, silent on the good" $status

# The rules' and the dashboard's shape; writes the dashboard's queries as a
# rule file and the metric names both use. One ok/FAIL line per check.
python3 - "$RULES" "$RULE_TESTS" "$DASHBOARD" "$WORK" >"$WORK/shape" 2>&1 <<'PY'
import json, pathlib, re, sys
import yaml

rules_path, tests_path, dashboard_path, work = sys.argv[1:]
work = pathlib.Path(work)
NAME = re.compile(r"\bmandate_[a-z0-9_]+")


def check(name, ok, detail=""):
    print(f"ok    {name}" if ok else f"FAIL  {name}: {detail}")


rules = [r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"]]
alerts = [r for r in rules if "alert" in r]
bad = [r["alert"] for r in alerts
       if r.get("labels", {}).get("severity") not in ("page", "warning")
       or not {"summary", "description"} <= set(r.get("annotations", {}))]
check(f"{rules_path}: every alert has a severity (page, warning), a summary and a description", not bad, bad)
tests = yaml.safe_load(open(tests_path))["tests"]
evals = [e for t in tests for e in t.get("alert_rule_test", [])]
untested = [a["alert"] for a in alerts
            if not any(e["alertname"] == a["alert"] and e.get("exp_alerts") for e in evals)
            or not any(e["alertname"] == a["alert"] and not e.get("exp_alerts") for e in evals)]
check(f"{tests_path}: every alert is seen firing and seen silent", not untested, untested)

board = json.loads(open(dashboard_path).read())
panels = board["panels"]
ids = [p["id"] for p in panels]
check(f"{dashboard_path}: {len(panels)} panels, ids unique", len(ids) == len(set(ids)), ids)
cells, clashes = {}, []
for p in panels:
    g = p["gridPos"]
    if g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
        clashes.append(f"panel {p['id']} off the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                clashes.append(f"panels {cells[(x, y)]} and {p['id']} overlap")
            cells.setdefault((x, y), p["id"])
check(f"{dashboard_path}: panels on the 24-column grid, none overlapping", not clashes, sorted(set(clashes)))
SOURCE = {"type": "prometheus", "uid": "${datasource}"}
off = [p["id"] for p in panels
       if p.get("datasource") != SOURCE or any(t.get("datasource") != SOURCE for t in p["targets"])]
check(f"{dashboard_path}: every panel and query on the $datasource variable", not off, off)
unfiltered = []
recording = []
for p in panels:
    refs = [t["refId"] for t in p["targets"]]
    if not p["targets"] or len(refs) != len(set(refs)):
        unfiltered.append(f"panel {p['id']}: no query, or refIds repeated")
    for t in p["targets"]:
        expr = t["expr"]
        for m in NAME.finditer(expr):
            if not expr[m.end():].startswith('{job=~"$job"'):
                unfiltered.append(f"panel {p['id']} {t['refId']}: {m.group()}")
        recording.append({"record": f"dashboard:panel_{p['id']}:{t['refId']}", "expr": expr})
check(f"{dashboard_path}: every selector filtered by $job", not unfiltered, unfiltered)
(work / "dashboard-queries.yaml").write_text(
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))

names = set()
for p in panels:
    for t in p["targets"]:
        names |= set(NAME.findall(t["expr"]))
for r in rules:
    names |= set(NAME.findall(r["expr"]))
    for text in r.get("annotations", {}).values():
        names |= set(NAME.findall(text))
(work / "names").write_text("\n".join(sorted(names)) + "\n")
PY
status=$?
cat "$WORK/shape"
passed=$((passed + $(grep -c '^ok ' "$WORK/shape")))
failed=$((failed + $(grep -c '^FAIL ' "$WORK/shape")))
[ $status -eq 0 ] || result "the rules' and the dashboard's shape (python3 and PyYAML)" $status

if [ -f "$WORK/dashboard-queries.yaml" ]; then
    promtool check rules "$WORK/dashboard-queries.yaml" >"$WORK/out" 2>&1
    status=$?
    [ $status -eq 0 ] || cat "$WORK/out"
    result "$DASHBOARD: every query is valid PromQL ($(grep -c "record:" "$WORK/dashboard-queries.yaml") parsed by promtool check rules)" $status
fi

cmp -s "$DASHBOARD" helm/mandate/files/dashboard.json
result "the chart ships $DASHBOARD (helm/mandate/files/dashboard.json is the same)" $?

# A histogram is named by its family in src/ and in /metrics' # TYPE line.
family() { sed -E 's/_(bucket|sum|count)$//' <<<"$1"; }
undefined=()
while read -r name; do
    [ -n "$name" ] || continue
    grep -rqF "\"$name\"" src/ || grep -rqF "\"$(family "$name")\"" src/ || undefined+=("$name")
done <"$WORK/names"
result "every metric the dashboard and the rules name ($(grep -c . "$WORK/names")) is defined in src/${undefined[*]:+; not: ${undefined[*]}}" ${#undefined[@]}

if [ "${1:-}" != --no-server ]; then
    MANDATE=${MANDATE:-target/debug/mandate}
    [ -x "$MANDATE" ] || cargo build --quiet
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
    grep -q '^mandate_decisions_total' "$WORK/metrics.txt" && grep -q '^mandate_entity_cache_misses_total' "$WORK/metrics.txt"
    status=$?
    [ $status -eq 0 ] || cat "$WORK/mandate.log"
    result "a live server's /metrics has its decisions and entity cache series" $status
    [ -s "$WORK/metrics.txt" ] && promtool check metrics <"$WORK/metrics.txt"
    result "promtool check metrics on a live /metrics ($(grep -c '^mandate_' "$WORK/metrics.txt") series)" $?
    absent=()
    while read -r name; do
        [ -n "$name" ] || continue
        grep -q "^# TYPE $(family "$name") " "$WORK/metrics.txt" || absent+=("$name")
    done <"$WORK/names"
    result "every metric family the dashboard and the rules name is exported before any search, bus or history event${absent[*]:+; absent: ${absent[*]}}" ${#absent[@]}
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
