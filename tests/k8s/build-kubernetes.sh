#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 server binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy) from Debian
# bookworm's `kubernetes` source package into $K8S_WORK/bin, the way
# ../shared/k8s/RECIPE.md checked it: GOPATH mode (the vendor tree is
# GOPATH-era), the openapi definitions generated first (they are not in the
# tarball), and two oom_score_adj constants set to 0 (this sandbox refuses a
# negative oom_score_adj, which Kubernetes sets on every pod sandbox and on
# Guaranteed pods). No registry or Go proxy is needed: Debian's golang-go and
# the package's vendor/ are enough. About 2.5 minutes from nothing on 2 cores;
# nothing at all when $K8S_WORK/bin already holds this build.
set -euo pipefail
W=${K8S_WORK:?K8S_WORK: where the build is kept}
VERSION=1.20.2
ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
ORIG_MD5=20b98978e86e1e783dd226ce966a85e8
# What the binaries were built from; a change to it rebuilds.
STAMP="kubernetes $VERSION from $ORIG, oom_score_adj 0 (sandbox and guaranteed), version in component-base and client-go"
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

if [ -f "$W/bin/.stamp" ] && [ "$(cat "$W/bin/.stamp")" = "$STAMP" ]; then
    echo "kubernetes $VERSION: already built in $W/bin" >&2
    exit 0
fi

# The Debian mirror apt already uses (deb822 or one-line sources).
mirror=$(sed -n -E 's#^URIs: *(https?://[^ ]*/debian)/?$#\1#p; s#^deb +(\[[^]]*\] +)?(https?://[^ ]*/debian)/? +bookworm .*#\2#p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)
[ -n "$mirror" ] || { echo "no Debian mirror in the apt sources" >&2; exit 1; }

mkdir -p "$W/dl" "$W/bin"
if ! echo "$ORIG_MD5  $W/dl/$ORIG" | md5sum -c --quiet >/dev/null 2>&1; then
    echo "kubernetes $VERSION: downloading Debian's source package" >&2
    curl -fsS -o "$W/dl/$ORIG" "$mirror/pool/main/k/kubernetes/$ORIG"
    echo "$ORIG_MD5  $W/dl/$ORIG" | md5sum -c --quiet
fi

rm -rf "$W/src" "$W/gopath"
mkdir -p "$W/src" "$W/gopath/src/k8s.io"
tar -C "$W/src" -xzf "$W/dl/$ORIG"
ln -sfn "$W/src/kubernetes-$VERSION" "$W/gopath/src/k8s.io/kubernetes"
cd "$W/gopath/src/k8s.io/kubernetes"
export GOPATH=$W/gopath GOCACHE=$W/gocache GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=

sed -i -E 's/^(\s*defaultSandboxOOMAdj\s+int\s*=\s*)-998/\10/' pkg/kubelet/dockershim/docker_sandbox.go
sed -i -E 's/^(\s*guaranteedOOMScoreAdj\s+int\s*=\s*)-997/\10/' pkg/kubelet/qos/policy.go
grep -qE 'defaultSandboxOOMAdj\s+int\s*=\s*0' pkg/kubelet/dockershim/docker_sandbox.go
grep -qE 'guaranteedOOMScoreAdj\s+int\s*=\s*0' pkg/kubelet/qos/policy.go

echo "kubernetes $VERSION: generating the openapi definitions" >&2
dirs=$(grep -Rl --include='*.go' '^// *+k8s:openapi-gen=' pkg cmd plugin vendor/k8s.io/ |
    grep -vE '^vendor/k8s.io/(code-generator|sample-apiserver)/' | xargs -n1 dirname | sort -u |
    sed 's#^#k8s.io/kubernetes/#' | paste -sd,)
nice -n 19 go build -o "$W/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
nice -n 19 "$W/openapi-gen" --logtostderr -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$W/openapi-violations.report" -o "$W/gopath/src" 2>"$W/openapi-gen.log"

echo "kubernetes $VERSION: building ${BINS[*]}" >&2
# The version the binaries and the apiserver's /version report (helm checks a
# chart's kubeVersion against it): both packages that hold one, as upstream's
# hack/lib/version.sh sets them; left alone they say v0.0.0-master.
ld="-s -w"
for v in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ld="$ld -X $v.gitVersion=v$VERSION -X $v.gitMajor=1 -X $v.gitMinor=20 -X $v.gitTreeState=clean"
done
pkgs=()
for b in "${BINS[@]}"; do pkgs+=("./cmd/$b"); done
nice -n 19 go build -ldflags "$ld" -o "$W/bin/" "${pkgs[@]}"
"$W/bin/kubelet" --version >&2
echo "$STAMP" >"$W/bin/.stamp"
# The binaries are the cache; the tree and Go's build cache (1.8 GB) are not kept.
cd /
rm -rf "$W/src" "$W/gopath" "$W/gocache" "$W/openapi-gen"
