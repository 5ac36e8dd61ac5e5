#!/usr/bin/env bash
# A single-node Kubernetes 1.20.2 on this machine, as ../shared/k8s/RECIPE.md
# checked it: Debian's docker.io started by hand (no systemd), etcd, the
# apiserver with token auth, controller-manager, scheduler, the kubelet on
# dockershim and kube-proxy in iptables mode. No CNI (pods get docker0
# addresses, 172.17.0.x), no cluster DNS, no registry (images are built
# locally, FROM scratch). Every address is the machine's own: loopback,
# docker0 (172.17.0.1), pods on docker0 and cluster IPs in 10.96.0.0/16.
#
#   cluster.sh up      start it all; prints the kubeconfig's path
#   cluster.sh down    stop it all and put the machine back as it was
#
# State lives in $K8S_WORK/run (wiped by `up`); the binaries come from
# build-kubernetes.sh in $K8S_WORK/bin.
set -euo pipefail
W=${K8S_WORK:?K8S_WORK: where the build and the cluster state are kept}
RUN=$W/run
BIN=$W/bin
NODE_IP=172.17.0.1
export DOCKER_HOST=unix://$RUN/docker.sock
export KUBECONFIG=$RUN/kubeconfig
# Sysctls the kubelet and kube-proxy set; `up` keeps the machine's values and `down` restores them.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom
    kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
    net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

log() { printf '  cluster: %s\n' "$*" >&2; }

wait_for() { # seconds what command...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            log "timed out after ${seconds}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

start() { # name command...
    local name=$1
    shift
    "$@" >"$RUN/logs/$name.log" 2>&1 &
    echo $! >"$RUN/pids/$name"
    echo "$name" >>"$RUN/pids/order"
}

pki() {
    local p=$RUN/pki
    mkdir -p "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mandate-test-ca \
        -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$p/apiserver.key" \
        -out "$p/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
        "$NODE_IP" >"$p/san.ext"
    openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 2 \
        -extfile "$p/san.ext" -out "$p/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
    local token
    token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$token,admin,admin,\"system:masters\"" >"$p/tokens.csv"
    cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
}

# The pod sandbox image: busybox-static FROM scratch, sleeping.
pause_image() {
    local dir=$RUN/img-pause
    mkdir -p "$dir/bin"
    cp /bin/busybox "$dir/bin/busybox"
    printf 'FROM scratch\nCOPY bin/busybox /bin/busybox\nENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]\n' >"$dir/Dockerfile"
    # The legacy builder: the docker CLI here has no buildx, and FROM scratch needs no BuildKit.
    DOCKER_BUILDKIT=0 docker build -q -t local/pause:1 "$dir" >"$RUN/logs/pause-image.log" 2>&1 ||
        { cat "$RUN/logs/pause-image.log" >&2; return 1; }
}

up() {
    [ -f "$BIN/.stamp" ] || { log "no Kubernetes binaries in $BIN: run build-kubernetes.sh"; exit 1; }
    if ip link show docker0 >/dev/null 2>&1 || pgrep -x dockerd >/dev/null; then
        log "a docker daemon or a docker0 bridge is already here; refusing to start a second one"
        exit 1
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN/logs" "$RUN/pids"
    # What `down` puts back.
    for key in "${SYSCTLS[@]}"; do
        value=$(sysctl -n "$key" 2>/dev/null) && echo "$key=$value"
    done >"$RUN/sysctl.before"
    iptables-save >"$RUN/iptables.before"
    ip6tables-save >"$RUN/ip6tables.before" 2>/dev/null || true

    log "dockerd"
    start dockerd dockerd --data-root "$RUN/docker-root" --exec-root "$RUN/docker-exec" -H "$DOCKER_HOST" \
        --pidfile "$RUN/dockerd.pid"
    wait_for 30 dockerd docker info
    pause_image
    pki

    log "etcd, kube-apiserver"
    start etcd etcd --data-dir "$RUN/etcd" --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
    local p=$RUN/pki
    start kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --token-auth-file="$p/tokens.csv" --secure-port=6443 --bind-address=$NODE_IP --advertise-address=$NODE_IP \
        --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --kubelet-preferred-address-types=InternalIP --authorization-mode=AlwaysAllow --allow-privileged=true
    wait_for 60 "the apiserver" kubectl get --raw /readyz

    log "controller-manager, scheduler, kubelet, kube-proxy"
    start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" --leader-elect=false \
        --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" --secure-port=0
    start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false --secure-port=0
    # Eviction on memory only. A partial --eviction-hard sets every signal it
    # omits to 0 (off): a CI machine has been seen with 287 MB free of 252 GB,
    # which is below any percentage and tainted node1 disk-pressure, so the
    # pods never scheduled. This throwaway node tests the chart, not the disk.
    start kubelet "$BIN/kubelet" --kubeconfig="$KUBECONFIG" --container-runtime=docker \
        --docker-endpoint="$DOCKER_HOST" --pod-infra-container-image=local/pause:1 --cgroup-driver=cgroupfs \
        --fail-swap-on=false --root-dir="$RUN/kubelet-root" --hostname-override=node1 --node-ip=$NODE_IP \
        --address=$NODE_IP --read-only-port=0 \
        '--eviction-hard=memory.available<100Mi' \
        --image-gc-high-threshold=100 --anonymous-auth=true --authorization-mode=AlwaysAllow
    start kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG" --proxy-mode=iptables \
        --cluster-cidr=172.17.0.0/16 --conntrack-max-per-core=0 --hostname-override=node1
    wait_for 90 "node1 Ready" sh -c \
        "kubectl get node node1 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
    wait_for 60 "the default ServiceAccount" kubectl get serviceaccount default
    log "node1 Ready"
    echo "$KUBECONFIG"
}

down() {
    [ -d "$RUN/pids" ] || return 0
    log "stopping the pods' containers, then the daemons"
    # The kubelet first, so it restarts nothing; then every container it left.
    stop_pid kubelet
    if [ -S "$RUN/docker.sock" ]; then
        docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
    fi
    # The control plane, kube-proxy and etcd together; dockerd last (it stops containerd).
    local names=()
    [ -f "$RUN/pids/order" ] && mapfile -t names < <(grep -vx -e dockerd -e kubelet "$RUN/pids/order")
    stop_pid "${names[@]}"
    stop_pid dockerd
    [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    # Leftover mounts under the state directory (kubelet volumes, docker's overlays, netns).
    grep -F " $RUN/" /proc/mounts | awk '{print $2}' | sort -r | while read -r mount; do
        umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
    done
    ip link delete docker0 2>/dev/null || true
    # The packet filter as it was before `up`: restoring a table replaces it
    # whole (docker's and kube-proxy's chains go); a table that did not exist
    # before is emptied.
    restore_filter iptables
    restore_filter ip6tables
    if [ -f "$RUN/sysctl.before" ]; then
        while IFS='=' read -r key value; do sysctl -q -w "$key=$value" >/dev/null 2>&1 || true; done <"$RUN/sysctl.before"
    fi
    # Empty cgroups the kubelet and docker made.
    for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice /sys/fs/cgroup/*/docker; do
        [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$RUN/pids"
    log "stopped; the machine's iptables, sysctls and links are as before"
}

stop_pid() { # name... : SIGTERM to each, 3 s for all of them to go (the apiserver
    # would drain its watches far longer; its state is thrown away), then SIGKILL
    local name pids=()
    for name in "$@"; do
        [ -f "$RUN/pids/$name" ] && pids+=("$(cat "$RUN/pids/$name")") && rm -f "$RUN/pids/$name"
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    local pid alive
    for _ in $(seq 1 30); do
        alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        [ ${#alive[@]} -gt 0 ] || return 0
        sleep 0.1
    done
    kill -9 "${alive[@]}" 2>/dev/null || true
}

restore_filter() { # iptables | ip6tables
    local tool=$1 before=$RUN/$1.before table family
    [ -f "$before" ] || return 0
    "$tool-restore" <"$before" 2>/dev/null || true
    for table in filter nat mangle raw; do
        if ! grep -qx "\*$table" "$before"; then
            # iptables-nft leaves an empty table behind; nft removes it.
            # (The iptables commands below would create a table that is not there.)
            if command -v nft >/dev/null && "$tool" --version | grep -q nf_tables; then
                family=$([ "$tool" = iptables ] && echo ip || echo ip6)
                if nft list table "$family" "$table" >/dev/null 2>&1; then
                    nft delete table "$family" "$table" 2>/dev/null || true
                fi
                continue
            fi
            "$tool" -t "$table" -F 2>/dev/null || true
            "$tool" -t "$table" -X 2>/dev/null || true
            "$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-P" { print $2 }' | while read -r chain; do
                "$tool" -t "$table" -P "$chain" ACCEPT 2>/dev/null || true
            done
        fi
    done
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
