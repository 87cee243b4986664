#!/usr/bin/env bash
# Build the worker's container image offline: bus-integration-docker:local.
#
# usage: scripts/build-image.sh [--force]
#
#   1. a statically linked release build of bus-integration-docker and
#      bus-events-local (glibc, RUSTFLAGS='-C target-feature=+crt-static',
#      target x86_64-unknown-linux-gnu, feature static-dns so host names
#      resolve without NSS), in its own CARGO_TARGET_DIR (target/static) so
#      the development build in target/ stays valid;
#   2. a FROM scratch image holding both binaries in /usr/local/bin, the
#      build host's CA bundle and an empty /tmp; the entrypoint is the worker;
#   3. checks: the image is at most 40 MiB (its size is printed) and
#      `--version` of both binaries runs inside it.
#
# No registry is needed: FROM scratch never pulls and the legacy builder
# (DOCKER_BUILDKIT=0) is used. Idempotent: cargo and the layer cache make a
# second run cheap; --force rebuilds the image without the layer cache.
# A user with a registry can build the same layout with the multi-stage
# Dockerfile instead: docker build -t bus-integration-docker:local .
#
# stdout: the image tag. Logs go to stderr.
# Environment: BUS_IMAGE (default bus-integration-docker:local), DOCKER_HOST,
#              CARGO (default cargo), BUS_CA_BUNDLE (default
#              /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BUS_REPO_ROOT"

IMAGE="${BUS_IMAGE:-bus-integration-docker:local}"
CARGO="${CARGO:-cargo}"
CA_BUNDLE="${BUS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
TARGET=x86_64-unknown-linux-gnu
MAX_BYTES=$((40 * 1024 * 1024))
FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
        exit 0
        ;;
    *) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

if ! command -v "$CARGO" >/dev/null 2>&1 && [[ -f "${HOME:-/root}/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "${HOME:-/root}/.cargo/env"
fi
need_cmd "$CARGO" "install Rust with rustup, or 'source ~/.cargo/env'"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# --- static binaries -----------------------------------------------------------
locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi
export CARGO_TARGET_DIR="$BUS_REPO_ROOT/target/static"
log "building static release binaries in $CARGO_TARGET_DIR"
RUSTFLAGS='-C target-feature=+crt-static' "$CARGO" build --release "${locked[@]}" \
    --target "$TARGET" -p bus-integration-docker -p bus-events-local --features bus-integration-docker/static-dns \
    --bin bus-integration-docker --bin bus-events-local
out="$CARGO_TARGET_DIR/$TARGET/release"
for bin in bus-integration-docker bus-events-local; do
    # A static(-pie) binary has no "lib => path" lines in ldd's output.
    if ldd "$out/$bin" 2>/dev/null | grep -q '=>'; then
        die "$out/$bin is dynamically linked; it cannot run in a FROM scratch image"
    fi
done

# --- image ---------------------------------------------------------------------
ensure_engine
need_cmd docker "run scripts/docker-engine.sh ensure, which installs docker.io"
[[ -f "$CA_BUNDLE" ]] || apt_install ca-certificates
[[ -f "$CA_BUNDLE" ]] || die "no CA bundle at $CA_BUNDLE (set BUS_CA_BUNDLE)"

context="$CARGO_TARGET_DIR/image-context"
rm -rf "$context"
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp"
chmod 1777 "$context/rootfs/tmp"
cp "$out/bus-integration-docker" "$out/bus-events-local" "$context/rootfs/usr/local/bin/"
cp "$CA_BUNDLE" "$context/rootfs/etc/ssl/certs/ca-certificates.crt"
version="$("$out/bus-integration-docker" --version | awk '{print $2}')"
cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.title="bus-integration-docker" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.description="Bus Events worker that runs container requests on a Docker Engine"
ENTRYPOINT ["/usr/local/bin/bus-integration-docker"]
DOCKERFILE

build_args=(build --tag "$IMAGE")
if ((FORCE)); then
    build_args+=(--no-cache)
fi
log "building $IMAGE (docker build, legacy builder, FROM scratch)"
DOCKER_BUILDKIT=0 docker "${build_args[@]}" "$context" >&2

# --- checks --------------------------------------------------------------------
size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
log "$IMAGE: $size bytes ($((size / 1024 / 1024)) MiB; limit 40 MiB)"
((size <= MAX_BYTES)) || die "$IMAGE is $size bytes, over the 40 MiB limit"
worker_version="$(docker run --rm --network none "$IMAGE" --version)"
events_version="$(docker run --rm --network none --entrypoint bus-events-local "$IMAGE" --version)"
[[ "$worker_version" == "bus-integration-docker $version" ]] || die "unexpected --version output: $worker_version"
[[ "$events_version" == "bus-events-local "* ]] || die "unexpected bus-events-local --version output: $events_version"
log "$worker_version; $events_version"
printf '%s\n' "$IMAGE"
