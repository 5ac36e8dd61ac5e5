#!/usr/bin/env bash
# The Helm chart in every configuration issue #9 names, with each helm given
# (HELM_BINS, default: `helm` on PATH): `helm lint --strict`, a rendering
# with the default values, with each optional part on alone, with all on,
# with the upstream store and mutual TLS, for Kubernetes 1.20 (beta API
# versions) and current versions, and the sidecar example; every rendering
# checked by validate.py. Values the schema must refuse are refused. The
# binary is started with the service-link variables a kubelet would inject
# for every Service the chart renders (service_links.py). Prints
# `N passed, N failed`; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
MANDATE=${MANDATE:-target/debug/mandate}
[ -x "$MANDATE" ] || cargo build --quiet
read -r -a HELMS <<<"${HELM_BINS:-helm}"
CHART=helm/mandate
EXAMPLE=helm/examples/trading-api
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
passed=0 failed=0
result() { # name status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok    $1"; else failed=$((failed + 1)); echo "FAIL  $1"; fi
}
# helm notes each symlink into the repository (files/ shares the pack, the
# demo entities and the dashboard with the project); the notes are not errors.
quiet() { grep -v -e 'symbolic link in path' -e '^walk.go' || true; }

# A route table as an operator writes it, in a values file (`{account}`
# would be a list to --set).
cat >"$WORK/values-routes.yaml" <<'YAML'
gateway:
  unmatchedStatus: 403
  original: x-original
  trustedHeaders: [x-mfa]
  grpc:
    enabled: true
  routes:
    - method: GET
      path: /accounts/{account}
      action: view_account
      resource_type: Account
      resource_id: "{account}"
    - method: POST
      path: /accounts/{account}/orders
      action: place_order
      resource_type: Account
      resource_id: "{account}"
      context: {side: "query:side", instrument: "query:instrument"}
YAML
ROUTES=(-f "$WORK/values-routes.yaml")
# The documented production values file (README.md or docs/), as printed there.
python3 - >"$WORK/values-readme.yaml" <<'PY'
import glob
text = next(t for t in (open(f).read() for f in ["README.md", *sorted(glob.glob("docs/*.md"))])
            if "A values file for production" in t)
start = text.index("A values file for production")
print(text[start:].split("```yaml\n", 1)[1].split("```", 1)[0])
PY
HTTP=(--set store.kind=http --set store.http.url=https://store.example:8443 --set store.http.caSecret=store-ca
    --set store.http.tokenSecret.name=store-token)
BUS=(--set bus.url=tls://nats.messaging:4222 --set bus.subject=prod.mandate.entities.changed
    --set bus.credentialsSecret.name=nats-creds --set bus.caSecret=nats-ca --set bus.ttlWithoutBus=2s)
ADMIN=(--set admin.tokenSecret.name=mandate-admin --set admin.tokenSecret.key=admin-token)
TOKEN_KEY=(--set search.tokenKeySecret.name=search-key --set search.tokenKeySecret.key=page-tokens)
ALL=(--set tls.enabled=true --set podDisruptionBudget.enabled=true --set autoscaling.enabled=true
    --set serviceMonitor.enabled=true --set dashboard.enabled=true)

# Kubernetes 1.20's schemas: kubernetes-validate dropped them after 1.24.1.
KV_OLD=${XDG_CACHE_HOME:-$HOME/.cache}/mandate-ci/kubernetes-validate-1.24.1
[ -d "$KV_OLD/kubernetes_validate" ] || python3 -m pip install -q --disable-pip-version-check --no-deps \
    --target "$KV_OLD" kubernetes-validate==1.24.1 >&2

render() { # helm case args...
    local helm=$1 case=$2
    local out="$WORK/$case.yaml"
    shift 2
    if "$helm" template mandate-test "$CHART" --namespace trading "$@" >"$out" 2>"$WORK/err"; then
        local options=() pythonpath=${PYTHONPATH:-}
        case $case in default | routes) options=(--serve "$MANDATE") ;; esac
        case $case in *kube1.20*) options+=(--kube 1.20.0) pythonpath=$KV_OLD ;; esac
        PYTHONPATH=$pythonpath python3 tests/helm/validate.py "$case" "$out" "${options[@]}" >"$WORK/check" 2>&1
        local status=$?
        [ $status -eq 0 ] || cat "$WORK/check"
        result "$($helm version --short) render $case: $(tail -1 "$WORK/check")" $status
    else
        quiet <"$WORK/err"
        result "$($helm version --short) render $case" 1
    fi
}

refused() { # helm what args...
    local helm=$1 what=$2
    shift 2
    "$helm" template mandate-test "$CHART" "$@" >/dev/null 2>"$WORK/err"
    local status=$?
    grep -q "values don't meet the specifications of the schema" "$WORK/err"
    local named=$?
    [ $status -ne 0 ] && [ $named -eq 0 ]
    result "$($helm version --short) values.schema.json refuses $what" $?
}

# The validator itself must fail a manifest with a field Kubernetes does not know.
unknown_field_fails() { # helm kind
    "$1" template mandate-test "$CHART" "${ALL[@]}" 2>/dev/null | python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for d in docs:
    if d["kind"] == sys.argv[1]:
        d["spec"]["replicaz"] = 3
yaml.safe_dump_all(docs, sys.stdout)' "$2" >"$WORK/bad.yaml"
    ! python3 tests/helm/validate.py all "$WORK/bad.yaml" >"$WORK/check" 2>&1 &&
        grep -q "FAIL  $2/.* valid: .*replicaz" "$WORK/check"
    result "$($1 version --short) an unknown field in a $2 fails validation" $?
}

# Every Service the chart renders — the default release named `mandate`
# exactly (MANDATE_SERVICE_HOST, MANDATE_PORT_8180_TCP, …) and one with
# every optional part on (MANDATE_EDGE_…, its gRPC port too) — in one
# namespace, their service links given to the binary with the pod's env.
service_links() { # helm
    local helm=$1
    "$helm" template mandate "$CHART" --namespace trading >"$WORK/links-mandate.yaml" 2>"$WORK/err" &&
        "$helm" template mandate-edge "$CHART" --namespace trading "${ALL[@]}" "${ROUTES[@]}" \
            >"$WORK/links-edge.yaml" 2>>"$WORK/err"
    local status=$?
    if [ $status -eq 0 ]; then
        python3 tests/helm/service_links.py "$MANDATE" "$WORK/links-mandate.yaml" "$WORK/links-edge.yaml" \
            >"$WORK/check" 2>&1
        status=$?
        [ $status -eq 0 ] || cat "$WORK/check"
    else
        quiet <"$WORK/err"
    fi
    result "$($helm version --short) the binary starts, is ready and decides with the kubelet's service links: $(tail -1 "$WORK/check" 2>/dev/null)" $status
}

for helm in "${HELMS[@]}"; do
    echo "== $($helm version --short)"
    "$helm" lint --strict "$CHART" 2>&1 | quiet
    result "$($helm version --short) lint --strict $CHART" "${PIPESTATUS[0]}"
    render "$helm" default
    render "$helm" tls --set tls.enabled=true
    render "$helm" pdb --set podDisruptionBudget.enabled=true
    render "$helm" hpa --set autoscaling.enabled=true
    render "$helm" servicemonitor --set serviceMonitor.enabled=true
    render "$helm" dashboard --set dashboard.enabled=true
    render "$helm" all "${ALL[@]}"
    render "$helm" routes "${ROUTES[@]}"
    render "$helm" all+readme -f "$WORK/values-readme.yaml"
    render "$helm" all+http+mtls+routes "${ALL[@]}" "${HTTP[@]}" --set tls.clientCA.enabled=true "${ROUTES[@]}"
    render "$helm" http+bus+admin "${HTTP[@]}" "${BUS[@]}" "${ADMIN[@]}"
    render "$helm" tokenkey "${TOKEN_KEY[@]}"
    render "$helm" kube1.20 --kube-version 1.20.2
    render "$helm" all+kube1.20 "${ALL[@]}" --kube-version 1.20.2
    render "$helm" all+http+bus+admin+kube1.20 "${ALL[@]}" "${HTTP[@]}" "${BUS[@]}" "${ADMIN[@]}" --kube-version 1.20.2
    render "$helm" all+current "${ALL[@]}" --kube-version 1.33.0
    service_links "$helm"
    unknown_field_fails "$helm" Deployment
    unknown_field_fails "$helm" ServiceMonitor
    refused "$helm" "a string for replicaCount" --set replicaCount=two
    refused "$helm" "a misspelt key (tls.enabeld)" --set tls.enabeld=true
    refused "$helm" "a store kind it does not know" --set store.kind=redis
    refused "$helm" "a bus URL that is not NATS" --set bus.url=http://nats:4222
    refused "$helm" "an empty search token key" --set search.tokenKeySecret.key=
    refused "$helm" "a route without an action" --set 'gateway.routes[0].method=GET' --set 'gateway.routes[0].path=/x' \
        --set 'gateway.routes[0].resource_type=Account' --set 'gateway.routes[0].resource_id=x'

    rm -rf "$EXAMPLE/charts"
    "$helm" dependency build "$EXAMPLE" 2>&1 | quiet
    result "$($helm version --short) dependency build $EXAMPLE" "${PIPESTATUS[0]}"
    "$helm" lint --strict "$EXAMPLE" 2>&1 | quiet
    result "$($helm version --short) lint --strict $EXAMPLE" "${PIPESTATUS[0]}"
    if "$helm" template t "$EXAMPLE" --namespace trading >"$WORK/sidecar.yaml" 2>"$WORK/err"; then
        python3 tests/helm/validate.py sidecar "$WORK/sidecar.yaml" >"$WORK/check" 2>&1
        status=$?
        [ $status -eq 0 ] || cat "$WORK/check"
        result "$($helm version --short) render the sidecar example: $(tail -1 "$WORK/check")" $status
    else
        quiet <"$WORK/err"
        result "$($helm version --short) render the sidecar example" 1
    fi
    rm -rf "$EXAMPLE/charts"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
