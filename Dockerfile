# syntax=docker/dockerfile:1
# Mandate's container image: a static binary on distroless/static, running as
# a non-root user with nothing else in the image (no shell, no libc).
#   docker build -t mandate .
#   docker run --rm -p 8180:8180 mandate      # the shipped pack and demo data
# Multi-arch (BuildKit sets TARGETARCH; each platform builds natively, or
# under emulation):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/mandate:TAG --push .
# The listen address is a flag in CMD, not an ENV: an environment variable
# would override the config file (defaults < file < env < flags), and the
# Helm chart sets the address in its config (a sidecar listens on loopback).
# Arguments of your own replace CMD: add `--listen 0.0.0.0:8180` to them.
# Size: the runtime stage is the stripped static binary (about 25 MB) plus
# distroless/static (about 2 MB); tests/k8s builds the same layout FROM
# scratch (docs/kubernetes.md gives the measured size).

FROM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
# crt-static links glibc in (2.34+ resolves DNS without loading NSS modules),
# so the binary needs no libraries at run time. It needs an explicit
# --target, so that build scripts and proc macros stay dynamic.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=mandate-target-${TARGETARCH} \
    case "${TARGETARCH:-$(dpkg --print-architecture)}" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "no Rust target for TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" --bin mandate \
 && cp "target/$target/release/mandate" /mandate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /mandate /usr/local/bin/mandate
# The default relative paths (policies, schema, demo entities) resolve here;
# the Helm chart mounts its own under /etc/mandate instead.
WORKDIR /usr/share/mandate
COPY policies/*.cedar policies/
COPY schema schema/
COPY examples/demo/entities.json examples/demo/
USER 65532:65532
# The allocator (mimalloc) asks for no transparent huge pages (`no_thp`);
# on a host whose THP setting is `always` the kernel would still back its
# arenas with them (an idle server 36 MiB, not 25): this turns them off
# for the process.
ENV MIMALLOC_ALLOW_THP=0
EXPOSE 8180 9180
ENTRYPOINT ["/usr/local/bin/mandate"]
CMD ["serve", "--listen", "0.0.0.0:8180"]
