# The worker's image, built the standard way where a registry is reachable:
#
#   docker build -t bus-integration-docker:local .
#
# It produces the same layout as scripts/build-image.sh (which needs no
# registry): a FROM scratch image with statically linked
# /usr/local/bin/bus-integration-docker (the entrypoint) and
# /usr/local/bin/bus-events-local, a CA bundle and /tmp.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add x86_64-unknown-linux-gnu \
 && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=/build \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p bus-integration-docker -p bus-events-local --features bus-integration-docker/static-dns \
      --bin bus-integration-docker --bin bus-events-local \
 && mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && cp /build/x86_64-unknown-linux-gnu/release/bus-integration-docker \
       /build/x86_64-unknown-linux-gnu/release/bus-events-local /rootfs/usr/local/bin/ \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="bus-integration-docker" \
      org.opencontainers.image.description="Bus Events worker that runs container requests on a Docker Engine"
ENTRYPOINT ["/usr/local/bin/bus-integration-docker"]
