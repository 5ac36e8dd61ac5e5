#!/usr/bin/env bash
# Builds Mandate's release artifacts and prints their sha256 digests; needs
# nothing from .ci.
#   1. the binary: static (glibc linked in, crt-static), stripped, built with
#      the exact dependency versions of Cargo.lock (--locked), for this
#      machine's architecture; copied to $DIST/mandate-<version>-<target>
#      ($DIST: target/dist unless set).
#   2. the image, from ./Dockerfile (rust and distroless bases, BuildKit for
#      its cache mounts and TARGETARCH), tagged $IMAGE (default
#      mandate:<version>). With PLATFORMS=linux/amd64,linux/arm64 and PUSH=1
#      it is built for both with buildx and pushed (IMAGE then names your
#      registry). When docker, BuildKit or the bases cannot be had, this says
#      so and skips the image: the binary is still built.
# Prints `sha256 <digest>  <artifact>` lines; exits non-zero when the binary
# cannot be built, or when the image fails with REQUIRE_IMAGE=1.
#
#   tools/release.sh
#   IMAGE=registry.example.com/mandate:0.1.0 PLATFORMS=linux/amd64,linux/arm64 PUSH=1 tools/release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case $(uname -m) in
    x86_64) target=x86_64-unknown-linux-gnu ;;
    aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
    *) echo "release: no Rust target for $(uname -m)" >&2; exit 1 ;;
esac
IMAGE=${IMAGE:-mandate:$version}

echo "release: mandate $version, binary for $target" >&2
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" --bin mandate
DIST=${DIST:-target/dist}
mkdir -p "$DIST"
binary=$DIST/mandate-$version-$target
cp "target/$target/release/mandate" "$binary"
if command -v file >/dev/null && ! file "$binary" | grep -qE 'statically linked|static-pie linked'; then
    echo "release: $binary is not statically linked" >&2
    exit 1
fi
"$binary" --version >&2
echo "release: $binary, $(du -h "$binary" | cut -f1)" >&2

image_digest=""
skip() {
    echo "release: IMAGE SKIPPED: $*" >&2
    if [ "${REQUIRE_IMAGE:-0}" = 1 ]; then exit 1; fi
}
if ! command -v docker >/dev/null; then
    skip "no docker client on PATH"
elif ! docker info >/dev/null 2>&1; then
    skip "no docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-default})"
elif [ -n "${PLATFORMS:-}" ]; then
    if ! docker buildx version >/dev/null 2>&1; then
        skip "PLATFORMS needs docker buildx, which is not installed"
    else
        push=()
        [ "${PUSH:-0}" = 1 ] && push=(--push)
        if docker buildx build --platform "$PLATFORMS" -t "$IMAGE" "${push[@]}" \
            --metadata-file "$DIST/image-metadata.json" .; then
            image_digest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("containerimage.digest", ""))' "$DIST/image-metadata.json")
        else
            skip "docker buildx build failed (are the rust and distroless bases reachable?)"
        fi
    fi
elif ! DOCKER_BUILDKIT=1 docker build -t "$IMAGE" . ; then
    skip "docker build failed: the Dockerfile needs BuildKit (docker buildx) and pulls rust:1.95-bookworm and gcr.io/distroless/static-debian12 (are they reachable?)"
else
    image_digest=$(docker image inspect --format '{{.Id}}' "$IMAGE")
    [ "${PUSH:-0}" = 1 ] && docker push "$IMAGE" >&2 \
        && image_digest="$image_digest (pushed: $(docker image inspect --format '{{join .RepoDigests " "}}' "$IMAGE"))"
fi

echo "sha256 $(sha256sum "$binary" | cut -d' ' -f1)  $binary"
if [ -n "$image_digest" ]; then
    echo "image  $image_digest  $IMAGE"
else
    echo "image  (skipped, see above)  $IMAGE"
fi
