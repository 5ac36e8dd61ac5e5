#!/usr/bin/env bash
# Real gateways in front of a small app, asking Mandate: nginx (auth_request),
# Envoy (HTTP ext_authz and gRPC ext_authz), Traefik (ForwardAuth) and Caddy
# (forward_auth), with the configs in examples/gateways/. Each case goes
# through the gateway and checks that an allowed request reaches the app and
# a denied one gets the denial. Prints one line per gateway and case, then
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
start mandate "$MANDATE" serve --config examples/gateways/mandate.toml
mkdir -p "$WORK/nginx/tmp"
start nginx nginx -p "$WORK/nginx" -c "$PWD/examples/gateways/nginx.conf"
start envoy-http envoy -c examples/gateways/envoy-http.yaml --disable-hot-restart --log-level error
start envoy-grpc envoy -c examples/gateways/envoy-grpc.yaml --disable-hot-restart --log-level error
start traefik traefik --configFile=examples/gateways/traefik.yml
start caddy caddy run --config examples/gateways/Caddyfile --adapter caddyfile

declare -A PORT=([nginx]=18081 [envoy-http]=18082 [envoy-grpc]=18083 [traefik]=18084 [caddy]=18085)
wait_port 18090 app && wait_port 18180 mandate && wait_port 18181 mandate || exit 1
for gateway in nginx envoy-http envoy-grpc traefik caddy; do
    wait_port "${PORT[$gateway]}" "$gateway" || exit 1
done

# name | method | path | user | extra header | expected status
CASES=$(cat <<'TABLE'
a trader places an order|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|carol||200
a viewer may not place an order|POST|/accounts/alice-personal/orders?side=buy&instrument=AAPL|bob||403
no authenticated principal is a 401|GET|/accounts/alice-personal|||401
a POA user views the account|GET|/accounts/alice-personal|grace||200
a stranger may not view the account|GET|/accounts/alice-personal|mallory||403
a withdrawer withdraws to the owner's bank|POST|/accounts/alice-personal/withdrawals?destination=alice-bank&amount=250.00|erin||200
a withdrawal to another holder's wallet is denied|POST|/accounts/alice-personal/withdrawals?destination=mallory-wallet&amount=250.00|erin||403
a second user may not withdraw|POST|/accounts/alice-personal/withdrawals?destination=alice-bank|alice-api||403
a company withdrawal with the owner's approval|POST|/accounts/acme-corp/withdrawals?destination=acme-bank|quinn|x-owner-approved: true|200
a company withdrawal without approval is denied|POST|/accounts/acme-corp/withdrawals?destination=acme-bank|quinn||403
an administrator adds a viewer|POST|/accounts/alice-personal/sub-users?role=viewer|frank||200
a trader may not add sub-users|POST|/accounts/alice-personal/sub-users?role=viewer|carol||403
the owner adds a second user for a POA user|POST|/accounts/alice-personal/second-users?for=grace|alice|x-mfa: true|200
the owner deletes their second user|DELETE|/accounts/alice-personal/second-users/alice-api|alice||200
an administrator may not delete a second user|DELETE|/accounts/alice-personal/second-users/alice-api|frank||403
the owner grants funding rights to a POA user|PUT|/accounts/alice-personal/poa-users/heidi/funding|alice||200
the owner places a leveraged order|POST|/accounts/alice-personal/leveraged-orders?side=sell&instrument=BTC|alice||200
a leveraged order with margin off is denied|POST|/accounts/bare-personal/leveraged-orders?side=sell&instrument=BTC|paula||403
a login views its own market data|GET|/market-data/nasdaq-l1|alice||200
a second user may not view its owner's market data|GET|/market-data/nasdaq-l1|alice-api||403
TABLE
)

passed=0
failed=0
for gateway in nginx envoy-http envoy-grpc traefik caddy; do
    while IFS='|' read -r name method path user extra expected; do
        args=(-s -o "$WORK/body" -w '%{http_code}' -X "$method" "http://127.0.0.1:${PORT[$gateway]}$path")
        [ -n "$user" ] && args+=(-H "x-user-id: $user")
        [ -n "$extra" ] && args+=(-H "$extra")
        status=$(curl "${args[@]}" --max-time 5)
        reached=no
        grep -q '^app: ' "$WORK/body" 2>/dev/null && reached=yes
        want_reached=no
        [ "$expected" = 200 ] && want_reached=yes
        if [ "$status" = "$expected" ] && [ "$reached" = "$want_reached" ]; then
            passed=$((passed + 1))
            printf 'PASS  %-10s  %-55s  %s\n' "$gateway" "$name" "$status"
        else
            failed=$((failed + 1))
            printf 'FAIL  %-10s  %-55s  got %s (reached app: %s), expected %s\n' "$gateway" "$name" "$status" "$reached" "$expected"
            head -c 300 "$WORK/body"; echo
        fi
    done <<<"$CASES"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
