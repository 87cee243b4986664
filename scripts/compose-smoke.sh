#!/usr/bin/env bash
# Smoke test of compose.yaml: bring the stack up, run one codex request
# through it, take it down again (always, also on failure or Ctrl-C).
#
# usage: scripts/compose-smoke.sh
#
#   1. a Docker Engine (scripts/docker-engine.sh ensure), the worker image
#      (scripts/build-image.sh) and bus-test-codex:local
#      (scripts/build-test-images.sh);
#   2. docker-compose (Debian's package, installed with apt when missing)
#      and, when the docker CLI has it, `docker compose`: the smoke runs once
#      with each (BUS_COMPOSE="docker-compose" or "docker compose" picks one);
#   3. for each: `up -d` under its own project name on a free port (8081, or
#      the next free one), then
#        cli client run --profile codex -- sh -lc 'printf OK'
#      must exit 0 with a succeeded run whose stdout is `OK`; then `down -v`.
#
# The stack is configured with the variable names of the Bus .env.example as
# they are (BUS_LOCAL_JWT_SECRET, BUS_LOCAL_ACCOUNT_ID,
# DOCKER_CONTAINER_CODEX_IMAGE, BUS_DOCKER_CODEX_*), with the codex host paths
# laid out as the Bus defaults lay them out, in a fresh stand-in for $HOME
# outside BUS_DOCKER_SHARED_DIR: $home/.codex, $home/.ssh and the workspace
# $home/src/project (the Bus default is the compose directory, ${PWD}).
# compose.yaml mounts each of them into the worker at its own path, so the
# smoke does not depend on the worker accepting host paths it cannot see.
#
# Environment: DOCKER_HOST, BUS_DOCKER_IMAGE (default
# bus-integration-docker:local), BUS_COMPOSE.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BUS_REPO_ROOT"

ensure_engine
export BUS_DOCKER_IMAGE="${BUS_DOCKER_IMAGE:-bus-integration-docker:local}"
scripts/build-image.sh >/dev/null
scripts/build-test-images.sh >/dev/null

# --- compose tools --------------------------------------------------------------
tools=()
if [[ -n "${BUS_COMPOSE:-}" ]]; then
    tools=("$BUS_COMPOSE")
else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
    tools=("docker-compose")
    if docker compose version >/dev/null 2>&1; then
        tools+=("docker compose")
    fi
fi

free_port() {
    local port
    for port in 8081 $(seq 18081 18181); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free port between 18081 and 18181"
}

# --- one run ----------------------------------------------------------------------
CURRENT_COMPOSE=()
SHARED_DIR=""
SMOKE_HOME=""
# The smoke worker's run containers: answered runs stay as `.answered`
# tombstones for run_retention, which a smoke test must not leave behind.
remove_runs() {
    local ids
    [[ -n "${BUS_DOCKER_RUNNER_NAME:-}" ]] || return 0
    ids="$(docker ps -aq --filter "label=bus.runner=$BUS_DOCKER_RUNNER_NAME" 2>/dev/null || true)"
    if [[ -n "$ids" ]]; then
        # shellcheck disable=SC2086  # one id per word
        docker rm -f -v $ids >/dev/null || warn "could not remove the smoke run containers"
    fi
}
cleanup() {
    local rc=$?
    if ((${#CURRENT_COMPOSE[@]} > 0)); then
        log "taking the stack down"
        "${CURRENT_COMPOSE[@]}" --profile cli down -v --remove-orphans >&2 ||
            warn "compose down failed"
        CURRENT_COMPOSE=()
    fi
    remove_runs
    if [[ -n "$SHARED_DIR" ]]; then
        rm -rf "$SHARED_DIR"
        SHARED_DIR=""
    fi
    if [[ -n "$SMOKE_HOME" ]]; then
        rm -rf "$SMOKE_HOME"
        SMOKE_HOME=""
    fi
    if [[ "${ENGINE:-}" == started ]]; then
        _stop_started_engine
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

smoke() {
    local tool="$1" project port out
    project="bus-smoke-$$-${tool// /-}"
    port="$(free_port)"
    SHARED_DIR="$(mktemp -d /tmp/bus-compose-smoke.XXXXXX)"
    SMOKE_HOME="$(mktemp -d /tmp/bus-compose-smoke-home.XXXXXX)"
    mkdir -p "$SMOKE_HOME/.codex" "$SMOKE_HOME/.ssh" "$SMOKE_HOME/src/project"
    chmod 700 "$SMOKE_HOME/.ssh"
    # shellcheck disable=SC2206  # "docker compose" splits into two words
    CURRENT_COMPOSE=($tool --project-name "$project" --file "$BUS_REPO_ROOT/compose.yaml")
    export BUS_EVENTS_PORT="$port"
    export BUS_DOCKER_SHARED_DIR="$SHARED_DIR"
    export BUS_DOCKER_RUNNER_NAME="docker@$project"
    # The Bus .env.example, as it is (names and values), with $HOME and
    # ${PWD} standing for the smoke's own directories.
    unset BUS_API_JWT_SECRET BUS_AUTH_HS256_SECRET
    export BUS_LOCAL_JWT_SECRET="smoke-$$-$RANDOM$RANDOM"
    export BUS_LOCAL_ACCOUNT_ID=00000000-0000-4000-8000-000000000001
    export DOCKER_CONTAINER_CODEX_IMAGE="${BUS_TEST_CODEX_IMAGE:-bus-test-codex:local}"
    export BUS_DOCKER_CODEX_HOME_HOST="$SMOKE_HOME/.codex"
    export BUS_DOCKER_CODEX_WORKSPACE_HOST="$SMOKE_HOME/src/project"
    export BUS_DOCKER_CODEX_HOME_WRITABLE=false
    export BUS_DOCKER_CODEX_SSH_HOST="$SMOKE_HOME/.ssh"
    export BUS_DOCKER_CODEX_SSH_AGENT_HOST="${SSH_AUTH_SOCK:-}"
    export BUS_DOCKER_CODEX_GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/tmp/bus-known-hosts"
    export BUS_DOCKER_CODEX_WORKSPACE_CONTAINER=/workspace

    log "[$tool] up: project $project, Events API on 127.0.0.1:$port"
    "${CURRENT_COMPOSE[@]}" up -d >&2
    log "[$tool] client run --profile codex -- sh -lc 'printf OK'"
    if ! out="$("${CURRENT_COMPOSE[@]}" run --rm -T cli client run --profile codex \
        --timeout 90s -- sh -lc 'printf OK')"; then
        "${CURRENT_COMPOSE[@]}" logs --no-color >&2 || true
        die "[$tool] the client run failed; output: $out"
    fi
    printf '%s\n' "$out" >&2
    if ! grep -q '"stdout": "OK"' <<<"$out" || ! grep -q '"exit_code": 0' <<<"$out" ||
        ! grep -q '"status": "succeeded"' <<<"$out"; then
        "${CURRENT_COMPOSE[@]}" logs --no-color >&2 || true
        die "[$tool] expected a succeeded run with stdout OK and exit code 0"
    fi
    log "[$tool] down"
    "${CURRENT_COMPOSE[@]}" --profile cli down -v --remove-orphans >&2
    CURRENT_COMPOSE=()
    remove_runs
    rm -rf "$SHARED_DIR" "$SMOKE_HOME"
    SHARED_DIR=""
    SMOKE_HOME=""
    log "[$tool] compose smoke OK"
}

for tool in "${tools[@]}"; do
    smoke "$tool"
done
printf 'compose smoke OK (%s)\n' "$(IFS=,; echo "${tools[*]}")"
