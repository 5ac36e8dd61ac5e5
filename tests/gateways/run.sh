#!/usr/bin/env bash
# Real gateways in front of a small app, asking Mandate: nginx (auth_request),
# Envoy (HTTP ext_authz and gRPC ext_authz), Traefik (ForwardAuth) and Caddy
# (forward_auth), with the configs in examples/gateways/. Each case goes
# through the gateway and checks that an allowed request reaches the app and
# a denied one gets the denial; the attack cases (client-sent original-request
# headers, fact headers, duplicate identities and parameters, dot segments,
# method overrides) must never reach the app, and no deny may tell the end
# user why (reasons, uids, policies: an enumeration oracle). Prints one line per gateway and case, then
# `N passed, N failed`; exits non-zero on any failure.
#
# Needs: nginx, envoy, traefik, caddy, curl, python3 on PATH (.ci/run installs
# them) and a built `mandate` (target/debug, or $MANDATE).
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
start app python3 tests/gateways/app.py 18090
# One Mandate per way a gateway describes the original request (docs/gateways.md).
start mandate "$MANDATE" serve --config examples/gateways/mandate.toml
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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
