#!/usr/bin/env bash
# The project's test command: scripts/test.sh [extra cargo test args...]
#
#   1. scripts/docker-engine.sh ensure   (reuses a running engine, or installs
#      and starts one; a daemon started here is stopped again on exit/INT/TERM)
#   2. scripts/build-test-images.sh      (bus-test-busybox:local, bus-test-codex:local,
#      bus-test-registry:local)
#      and scripts/build-image.sh when bus-integration-docker:local is absent
#      (tests start the Events API from it with testcontainers)
#   3. scripts/docker-engine.sh ensure2  (a second engine beside the first, for
#      engine-pool tests: its own unix socket and tcp+TLS on 127.0.0.1; the test
#      images are copied into it; one started here is stopped on exit)
#   4. cargo test --workspace --all-targets [--locked] "$@"
#      with BUS_TEST_DOCKER=1, BUS_TEST_IMAGE, BUS_TEST_CODEX_IMAGE, DOCKER_HOST,
#      BUS_TEST_DOCKER_HOST_2, BUS_TEST_DOCKER_TLS_HOST, BUS_TEST_DOCKER_TLS_DIR
#      and BUS_TEST_RUN_ID exported
#   5. leak check on both engines: containers labelled
#      bus.managed-by=bus-integration-docker created during this run are listed
#      and removed
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

# --- second engine ---------------------------------------------------------------
# Sets ENGINE2 and exports BUS_TEST_DOCKER_HOST_2, BUS_TEST_DOCKER_TLS_HOST,
# BUS_TEST_DOCKER_TLS_DIR; a dockerd started here is stopped on exit.
BUS_TEST_IMAGES="$BUS_TEST_IMAGE $BUS_TEST_CODEX_IMAGE" ensure_engine2
# The third (engine-pool tests: engines 2 and 3); exports BUS_TEST_DOCKER_HOST_3.
BUS_TEST_IMAGES="$BUS_TEST_IMAGE" ensure_engine3

# --- containers that existed before the tests ----------------------------------
# list_managed HOST: the managed containers on the engine at HOST.
list_managed() {
    env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
        docker -H "$1" ps -aq --no-trunc --filter "label=$BUS_MANAGED_LABEL"
}
# describe HOST ID...
describe() {
    local host="$1"
    shift
    env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$host" inspect --format \
        '    {{printf "%.12s" .Id}} {{.Name}} image={{.Config.Image}} state={{.State.Status}} created={{.Created}}' \
        "$@" >&2 || true
}

# before_tests HOST STARTED: print the managed containers that stay out of the
# leak count; leftovers on an engine this run started are removed instead.
before_tests() {
    local host="$1" started="$2" before
    local -a ids
    before="$(list_managed "$host")" || die "cannot list containers on $host"
    [[ -n "$before" ]] || return 0
    mapfile -t ids <<<"$before"
    if [[ "$started" == started ]]; then
        # Nobody else can be using a daemon we have just started: these are
        # leftovers of an earlier, interrupted run.
        log "removing ${#ids[@]} leftover $BUS_MANAGED_LABEL container(s) from an earlier run on $host:"
        describe "$host" "${ids[@]}"
        env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$host" rm -f -v "${ids[@]}" >/dev/null ||
            warn "could not remove some leftover containers on $host"
        return 0
    fi
    warn "${#ids[@]} $BUS_MANAGED_LABEL container(s) exist on $host before the tests (another run, or leftovers); they are not counted as leaks of this run:"
    describe "$host" "${ids[@]}"
    warn "to remove them: docker -H $host rm -f \$(docker -H $host ps -aq --filter label=$BUS_MANAGED_LABEL)"
    printf '%s\n' "$before"
}

before_1="$(before_tests "$DOCKER_HOST" "$ENGINE")"
before_2="$(before_tests "$BUS_TEST_DOCKER_HOST_2" "$ENGINE2")"
before_3="$(before_tests "$BUS_TEST_DOCKER_HOST_3" "$ENGINE3")"

# --- tests -----------------------------------------------------------------------
args=(test --workspace --all-targets)
if [[ -f Cargo.lock ]]; then
    args+=(--locked)
fi
args+=("$@")

log "BUS_TEST_IMAGE=$BUS_TEST_IMAGE BUS_TEST_CODEX_IMAGE=$BUS_TEST_CODEX_IMAGE DOCKER_HOST=$DOCKER_HOST BUS_TEST_RUN_ID=$BUS_TEST_RUN_ID"
log "third engine: BUS_TEST_DOCKER_HOST_3=$BUS_TEST_DOCKER_HOST_3"
log "second engine: BUS_TEST_DOCKER_HOST_2=$BUS_TEST_DOCKER_HOST_2 BUS_TEST_DOCKER_TLS_HOST=$BUS_TEST_DOCKER_TLS_HOST BUS_TEST_DOCKER_TLS_DIR=$BUS_TEST_DOCKER_TLS_DIR"
log "running: $CARGO ${args[*]}"
started_at=$SECONDS
set +e
"$CARGO" "${args[@]}"
test_rc=$?
set -e
log "tests finished with exit status $test_rc after $((SECONDS - started_at))s"

# --- leak check --------------------------------------------------------------------
# leak_check HOST BEFORE: remove what this run left on HOST; 3 if anything.
leak_check() {
    local host="$1" before="$2" after id
    local -a leaked=()
    if ! after="$(list_managed "$host")"; then
        warn "cannot list containers after the tests (engine at $host gone?); leak check failed"
        return 3
    fi
    if [[ -n "$after" ]]; then
        while IFS= read -r id; do
            if [[ "$before" != *"$id"* ]]; then
                leaked+=("$id")
            fi
        done <<<"$after"
    fi
    if ((${#leaked[@]} == 0)); then
        log "leak check: no $BUS_MANAGED_LABEL containers left behind on $host"
        return 0
    fi
    log "error: the tests left ${#leaked[@]} container(s) labelled $BUS_MANAGED_LABEL behind on $host:"
    describe "$host" "${leaked[@]}"
    log "removing them so the next run starts clean"
    env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$host" rm -f -v "${leaked[@]}" >/dev/null ||
        warn "could not remove some of them"
    return 3
}

leak_rc=0
leak_check "$DOCKER_HOST" "$before_1" || leak_rc=3
leak_check "$BUS_TEST_DOCKER_HOST_2" "$before_2" || leak_rc=3
leak_check "$BUS_TEST_DOCKER_HOST_3" "$before_3" || leak_rc=3

if ((test_rc != 0)); then
    exit "$test_rc"
fi
exit "$leak_rc"
