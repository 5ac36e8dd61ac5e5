# syntax=docker/dockerfile:1
# Mandate's container image: a static binary on distroless/static, running as
# a non-root user with nothing else in the image (no shell, no libc).
#   docker build -t mandate .
#   docker run --rm -p 8180:8180 mandate      # the shipped pack and demo data

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# crt-static links glibc in (2.34+ resolves DNS without loading NSS modules),
# so the binary needs no libraries at run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin mandate \
 && cp target/x86_64-unknown-linux-gnu/release/mandate /mandate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /mandate /usr/local/bin/mandate
# The embedded defaults' relative paths (policies, schema, demo entities)
# resolve here; the Helm chart mounts its own under /etc/mandate instead.
WORKDIR /usr/share/mandate
COPY policies/*.cedar policies/
COPY schema schema/
COPY examples/demo/entities.json examples/demo/
ENV MANDATE_SERVER_LISTEN=0.0.0.0:8180
USER 65532:65532
EXPOSE 8180 9180
ENTRYPOINT ["/usr/local/bin/mandate"]
CMD ["serve"]
