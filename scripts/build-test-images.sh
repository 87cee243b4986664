#!/usr/bin/env bash
# Build the container images the integration tests use, locally and offline.
#
# usage: scripts/build-test-images.sh [--force]
#
#   bus-test-busybox:local  FROM scratch + static busybox (applets symlinked
#                           into /bin), /tmp, minimal /etc/passwd, CMD ["/bin/sh"]
#   bus-test-codex:local    the same plus /workspace and /root (stand-in for the
#                           codex image), and /bin/codex: scripts/fake-codex.sh,
#                           a fake Codex CLI that uses its home as the real one
#                           does (login refresh, state lock, sessions), with
#                           /bin/flock (scripts/flock.c, static: busybox has none)
#   bus-test-registry:local FROM scratch + Debian's docker-registry (and the
#                           libraries ldd lists for it) with htpasswd basic auth
#                           (user bus-test, password bus-test-pass); the
#                           private-registry tests run it on the host network
#                           with REGISTRY_HTTP_ADDR=127.0.0.1:<free port>
#
# No registry, network, git or ssh access is needed: FROM scratch never pulls,
# the build context is a local temp dir, RUN steps get --network=none, and the
# legacy builder (DOCKER_BUILDKIT=0) is used, so no buildx/BuildKit either.
#
# An image is rebuilt only when it is missing, when the sha256 of the busybox
# binary differs from its label bus.test.busybox-sha256, or when this script's
# recipe for it changed (label bus.test.recipe-sha256); --force rebuilds anyway.
# Each image is smoke-tested (`sh -c 'echo ok'`) every time.
#
# stdout: the tags that were (re)built, one per line. Logs go to stderr.
#
# Environment: DOCKER_HOST (default unix:///var/run/docker.sock),
#              BUS_BUSYBOX (default /bin/busybox; must be statically linked).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUSYBOX="${BUS_BUSYBOX:-/bin/busybox}"
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

need_cmd docker "run scripts/docker-engine.sh ensure, which installs docker.io"
docker_ok || die "docker engine not reachable at $DOCKER_HOST; run scripts/docker-engine.sh ensure first"

if [[ ! -e "$BUSYBOX" && "$BUSYBOX" == /bin/busybox ]]; then
    apt_install busybox-static
fi
[[ -f "$BUSYBOX" && -x "$BUSYBOX" ]] || die "busybox binary $BUSYBOX not found or not executable (apt-get install busybox-static)"
# A dynamically linked busybox cannot run inside FROM scratch.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the images need a static one (apt-get install busybox-static)"
fi
BUSYBOX_SHA="$(sha256sum "$BUSYBOX" | cut -d' ' -f1)"

# Dockerfile of each variant. Shell-form RUN would need /bin/sh, which only
# exists after the install, so the first RUN uses the exec form.
recipe() {
    cat <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-ec", "/bin/busybox --install -s /bin; mkdir -p /tmp /etc; chmod 1777 /tmp; echo 'root:x:0:0:root:/root:/bin/sh' >/etc/passwd; echo 'root:x:0:' >/etc/group"]
EOF
    case "$1" in
        busybox) ;;
        codex)
            echo 'RUN ["/bin/sh", "-ec", "mkdir -p /workspace /root; chmod 0700 /root"]'
            # sockcat: a static unix-socket client (scripts/sockcat.c) so
            # tests can reach the SSH agent socket; its hash keys rebuilds.
            echo "# sockcat.c sha256 $SOCKCAT_SHA"
            echo 'COPY sockcat /bin/sockcat'
            echo "# fake-codex.sh sha256 $FAKE_CODEX_SHA flock.c sha256 $FLOCK_SHA"
            echo 'COPY codex /bin/codex'
            # flock(1)'s fd form (scripts/flock.c): busybox has none.
            echo 'COPY flock /bin/flock'
            ;;
        *) die "unknown image variant $1" ;;
    esac
    echo 'CMD ["/bin/sh"]'
}

STATE_DIR="$(bus_state_dir)"
mkdir -p "$STATE_DIR"
exec 8>"$STATE_DIR/images.lock"
flock -w 300 8 || die "another build-test-images.sh holds $STATE_DIR/images.lock for >300s"

CTX="$(mktemp -d "${TMPDIR:-/tmp}/bus-test-images.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
cp "$BUSYBOX" "$CTX/busybox"
chmod 0755 "$CTX/busybox"

FAKE_CODEX_SRC="$BUS_REPO_ROOT/scripts/fake-codex.sh"
FAKE_CODEX_SHA="$(sha256sum "$FAKE_CODEX_SRC" | cut -d' ' -f1)"
cp "$FAKE_CODEX_SRC" "$CTX/codex"
chmod 0755 "$CTX/codex"

SOCKCAT_SRC="$BUS_REPO_ROOT/scripts/sockcat.c"
SOCKCAT_SHA="$(sha256sum "$SOCKCAT_SRC" | cut -d' ' -f1)"
if ! command -v gcc >/dev/null 2>&1; then
    apt_install gcc libc6-dev
fi
gcc -static -O2 -o "$CTX/sockcat" "$SOCKCAT_SRC" || die "building the static sockcat helper failed (needs gcc and libc6-dev)"
FLOCK_SRC="$BUS_REPO_ROOT/scripts/flock.c"
FLOCK_SHA="$(sha256sum "$FLOCK_SRC" | cut -d' ' -f1)"
gcc -static -O2 -o "$CTX/flock" "$FLOCK_SRC" || die "building the static flock helper failed (needs gcc and libc6-dev)"

label() {
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

smoke_test() {
    local tag="$1" variant="$2" check='echo ok' out
    if [[ "$variant" == codex ]]; then
        check='test -d /workspace && test -d /root && test -d /tmp && test -x /bin/codex && test -x /bin/flock && echo ok'
    fi
    out="$(docker run --rm --network none "$tag" sh -c "$check" 2>&1)" ||
        die "smoke test of $tag failed: $out"
    [[ "$out" == ok ]] || die "smoke test of $tag printed '$out' instead of 'ok'"
}

build_one() {
    local variant="$1" tag="bus-test-$1:local" recipe_sha old_id new_id
    recipe "$variant" >"$CTX/Dockerfile"
    recipe_sha="$(sha256sum "$CTX/Dockerfile" | cut -d' ' -f1)"
    old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"

    if ((!FORCE)) && [[ -n "$old_id" &&
        "$(label "$tag" bus.test.busybox-sha256)" == "$BUSYBOX_SHA" &&
        "$(label "$tag" bus.test.recipe-sha256)" == "$recipe_sha" ]]; then
        log "$tag is up to date (${old_id:7:12})"
        smoke_test "$tag" "$variant"
        return 0
    fi

    log "building $tag"
    DOCKER_BUILDKIT=0 docker build \
        --network=none --rm --force-rm \
        --label "bus.test.image=$variant" \
        --label "bus.test.busybox-sha256=$BUSYBOX_SHA" \
        --label "bus.test.recipe-sha256=$recipe_sha" \
        --tag "$tag" "$CTX" >&2 ||
        die "docker build of $tag failed (see output above)"
    new_id="$(docker image inspect --format '{{.Id}}' "$tag")"
    # Drop the replaced image if nothing else uses it (ignore failures).
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    smoke_test "$tag" "$variant"
    log "built $tag (${new_id:7:12})"
    printf '%s\n' "$tag"
}

build_one busybox
build_one codex

# --- the private registry -------------------------------------------------
REGISTRY_BIN=/usr/bin/docker-registry
REGISTRY_USER=bus-test
REGISTRY_PASS=bus-test-pass
if [[ ! -x "$REGISTRY_BIN" ]] || ! command -v htpasswd >/dev/null 2>&1; then
    apt_install docker-registry apache2-utils
fi
[[ -x "$REGISTRY_BIN" ]] || die "$REGISTRY_BIN missing (apt-get install docker-registry)"

registry_config() {
    cat <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
auth:
  htpasswd:
    realm: bus-test
    path: /etc/docker/registry/htpasswd
EOF
}

# The binary and every library ldd resolves for it (none when static), at
# their own paths: FROM scratch has no libc of its own.
registry_context() {
    local dir="$CTX/registry" lib
    mkdir -p "$dir/root/usr/bin" "$dir/root/etc/docker/registry" "$dir/root/tmp" "$dir/root/var/lib/registry"
    cp "$REGISTRY_BIN" "$dir/root/usr/bin/docker-registry"
    while read -r lib; do
        mkdir -p "$dir/root$(dirname "$lib")"
        cp -L "$lib" "$dir/root$lib"
    done < <(ldd "$REGISTRY_BIN" 2>/dev/null | grep -o '/[^ ]*' | sort -u)
    registry_config >"$dir/root/etc/docker/registry/config.yml"
    htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASS" >"$dir/root/etc/docker/registry/htpasswd"
    cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
ENTRYPOINT ["/usr/bin/docker-registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
EOF
}

build_registry() {
    local tag=bus-test-registry:local old_id new_id recipe_sha out
    registry_context
    # The htpasswd line is salted anew each time: the recipe is what it says.
    recipe_sha="$( (
        sha256sum "$REGISTRY_BIN" | cut -d' ' -f1
        ldd "$REGISTRY_BIN" 2>/dev/null | grep -o "/[^ ]*" | sort -u | xargs -r sha256sum || true
        registry_config
        cat "$CTX/registry/Dockerfile"
        echo "$REGISTRY_USER:$REGISTRY_PASS"
    ) | sha256sum | cut -d' ' -f1)"
    old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    if ((FORCE)) || [[ -z "$old_id" || "$(label "$tag" bus.test.recipe-sha256)" != "$recipe_sha" ]]; then
        log "building $tag"
        DOCKER_BUILDKIT=0 docker build --network=none --rm --force-rm \
            --label bus.test.image=registry --label "bus.test.recipe-sha256=$recipe_sha" \
            --tag "$tag" "$CTX/registry" >&2 || die "docker build of $tag failed (see output above)"
        new_id="$(docker image inspect --format '{{.Id}}' "$tag")"
        if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
            docker image rm "$old_id" >/dev/null 2>&1 || true
        fi
        printf '%s\n' "$tag"
    else
        log "$tag is up to date (${old_id:7:12})"
    fi
    out="$(docker run --rm --network none "$tag" --version 2>&1)" ||
        die "smoke test of $tag failed: $out"
    [[ "$out" == *distribution* ]] || die "smoke test of $tag printed '$out'"
}

build_registry
