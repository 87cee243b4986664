#!/usr/bin/env bash
# The project's test command: scripts/test.sh [extra cargo test args...]
#
#   1. scripts/docker-engine.sh ensure   (reuses a running engine, or installs
#      and starts one; a daemon started here is stopped again on exit/INT/TERM)
#   2. scripts/build-test-images.sh      (bus-test-busybox:local, bus-test-codex:local,
#      bus-test-registry:local)
#      and scripts/build-image.sh when bus-integration-docker:local is absent
#      (tests start the Events API from it with testcontainers)
#   3. cargo test --workspace --all-targets [--locked] "$@"
#      with BUS_TEST_DOCKER=1, BUS_TEST_IMAGE, BUS_TEST_CODEX_IMAGE, DOCKER_HOST
#      and BUS_TEST_RUN_ID exported
#   4. leak check: containers labelled bus.managed-by=bus-integration-docker
#      created during this run are listed and removed
#
# Exit status: the tests' status if they failed; otherwise 3 if containers
# leaked; otherwise 0.
#
# Environment: CARGO (default cargo; e.g. CARGO=echo to dry-run the plumbing),
# BUS_TEST_IMAGE / BUS_TEST_CODEX_IMAGE (default the local images above),
# DOCKER_HOST, BUS_STATE_DIR (see docker-engine.sh).
#
# Caveat: the leak check is engine-wide. Two runs sharing one engine at the
# same time can see each other's live containers as leaks.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BUS_REPO_ROOT"

CARGO="${CARGO:-cargo}"
need_cmd "$CARGO" "install Rust with rustup, or 'source ~/.cargo/env'"

# --- engine ------------------------------------------------------------------
# Sets ENGINE to started|reused; a dockerd started here is stopped on exit.
ensure_engine

# --- images ------------------------------------------------------------------
scripts/build-test-images.sh >/dev/null
if ! docker image inspect "${BUS_DOCKER_IMAGE:-bus-integration-docker:local}" >/dev/null 2>&1; then
    BUS_IMAGE="${BUS_DOCKER_IMAGE:-bus-integration-docker:local}" scripts/build-image.sh >/dev/null
fi
export BUS_DOCKER_IMAGE="${BUS_DOCKER_IMAGE:-bus-integration-docker:local}"

export BUS_TEST_DOCKER=1
export BUS_TEST_IMAGE="${BUS_TEST_IMAGE:-bus-test-busybox:local}"
export BUS_TEST_CODEX_IMAGE="${BUS_TEST_CODEX_IMAGE:-bus-test-codex:local}"
BUS_TEST_RUN_ID="${BUS_TEST_RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)-$$}"
export BUS_TEST_RUN_ID DOCKER_HOST

# --- containers that existed before the tests ----------------------------------
list_managed() {
    docker ps -aq --no-trunc --filter "label=$BUS_MANAGED_LABEL"
}
describe() {
    docker inspect --format \
        '    {{printf "%.12s" .Id}} {{.Name}} image={{.Config.Image}} state={{.State.Status}} created={{.Created}}' \
        "$@" >&2 || true
}

before="$(list_managed)" || die "cannot list containers on $DOCKER_HOST"
if [[ -n "$before" ]]; then
    mapfile -t before_ids <<<"$before"
    if [[ "$ENGINE" == started ]]; then
        # Nobody else can be using a daemon we have just started: these are
        # leftovers of an earlier, interrupted run.
        log "removing ${#before_ids[@]} leftover $BUS_MANAGED_LABEL container(s) from an earlier run:"
        describe "${before_ids[@]}"
        docker rm -f -v "${before_ids[@]}" >/dev/null || warn "could not remove some leftover containers"
        before=""
    else
        warn "${#before_ids[@]} $BUS_MANAGED_LABEL container(s) exist before the tests (another run, or leftovers); they are not counted as leaks of this run:"
        describe "${before_ids[@]}"
        warn "to remove them: docker rm -f \$(docker ps -aq --filter label=$BUS_MANAGED_LABEL)"
    fi
fi

# --- tests -----------------------------------------------------------------------
args=(test --workspace --all-targets)
if [[ -f Cargo.lock ]]; then
    args+=(--locked)
fi
args+=("$@")

log "BUS_TEST_IMAGE=$BUS_TEST_IMAGE BUS_TEST_CODEX_IMAGE=$BUS_TEST_CODEX_IMAGE DOCKER_HOST=$DOCKER_HOST BUS_TEST_RUN_ID=$BUS_TEST_RUN_ID"
log "running: $CARGO ${args[*]}"
started_at=$SECONDS
set +e
"$CARGO" "${args[@]}"
test_rc=$?
set -e
log "tests finished with exit status $test_rc after $((SECONDS - started_at))s"

# --- leak check --------------------------------------------------------------------
leak_rc=0
if after="$(list_managed)"; then
    leaked=()
    if [[ -n "$after" ]]; then
        while IFS= read -r id; do
            if [[ "$before" != *"$id"* ]]; then
                leaked+=("$id")
            fi
        done <<<"$after"
    fi
    if ((${#leaked[@]} > 0)); then
        log "error: the tests left ${#leaked[@]} container(s) labelled $BUS_MANAGED_LABEL behind:"
        describe "${leaked[@]}"
        log "removing them so the next run starts clean"
        docker rm -f -v "${leaked[@]}" >/dev/null || warn "could not remove some of them"
        leak_rc=3
    else
        log "leak check: no $BUS_MANAGED_LABEL containers left behind"
    fi
else
    warn "cannot list containers after the tests (engine at $DOCKER_HOST gone?); leak check failed"
    leak_rc=3
fi

if ((test_rc != 0)); then
    exit "$test_rc"
fi
exit "$leak_rc"
