#!/usr/bin/env bash
# shellcheck shell=bash
# Shared helpers for the scripts in scripts/ and .ci/. Source it, don't run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides:
#   BUS_REPO_ROOT       absolute path of the repository root
#   BUS_LOG_PREFIX      prefix of log lines (default: "[<script name>]")
#   log MSG...          one line to stderr, prefixed
#   warn MSG...         same, marked "warning:"
#   die MSG...          "error: MSG" to stderr, then exit 1
#   need_cmd CMD [HINT] die unless CMD is on PATH
#   docker_ok           true if `docker info` answers (DOCKER_HOST) within 10 s
#   bus_state_dir       print the absolute state dir (BUS_STATE_DIR, default .ci/state)
#   on_exit FN          run FN when the script exits (also on INT/TERM)
#   ensure_engine       the first engine (reused or started; see below)
#   ensure_engine2      the second test engine, and its BUS_TEST_DOCKER_* variables
#   ensure_engine3      the third test engine, and BUS_TEST_DOCKER_HOST_3

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/lib.sh holds helpers for the other scripts; source it, don't run it" >&2
    exit 2
fi
if [[ -n "${_BUS_LIB_SH:-}" ]]; then
    return 0
fi
_BUS_LIB_SH=1

BUS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BUS_LOG_PREFIX="${BUS_LOG_PREFIX:-[$(basename "$0")]}"

# The label every container created by the worker carries (see the Rust code).
# shellcheck disable=SC2034  # used by the scripts that source this file
BUS_MANAGED_LABEL="bus.managed-by=bus-integration-docker"
# Where the docker CLI and the Rust tests talk to; pinned so that a docker
# "context" in ~/.docker/config.json cannot silently redirect us.
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"

log() {
    printf '%s %s\n' "$BUS_LOG_PREFIX" "$*" >&2
}

warn() {
    log "warning: $*"
}

die() {
    log "error: $*"
    exit 1
}

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH${2:+ ($2)}"
}

docker_ok() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 10 docker info >/dev/null 2>&1
}

# Relative BUS_STATE_DIR values are taken relative to the repo root, so every
# script (whatever its cwd) agrees on where the pid file and logs live.
bus_state_dir() {
    local dir="${BUS_STATE_DIR:-.ci/state}"
    if [[ "$dir" != /* ]]; then
        dir="$BUS_REPO_ROOT/$dir"
    fi
    printf '%s\n' "$dir"
}

# apt_install PKG... — non-interactive `apt-get install`; runs `apt-get update`
# and retries only when the first attempt fails. apt output goes to stderr.
# While installing, a temporary policy-rc.d (exit 101) keeps maintainer scripts
# from starting services: on a machine without systemd the docker.io postinst
# would otherwise start a default dockerd through /etc/init.d/docker, which
# creates the docker0 bridge on a private range (forbidden here).
apt_install() {
    (($# > 0)) || return 0
    [[ "$(id -u)" == 0 ]] || die "need root to install: $* (run as root, or install them yourself)"
    need_cmd apt-get "only Debian/Ubuntu are supported; install $* by hand"
    local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, written by %s\nexit 101\n' "$0" >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi
    local -a install=(apt-get install -y -q --no-install-recommends
        -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@")
    log "installing: $*"
    if ! DEBIAN_FRONTEND=noninteractive "${install[@]}" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        if DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300 >&2; then
            DEBIAN_FRONTEND=noninteractive "${install[@]}" >&2 || rc=$?
        else
            rc=$?
        fi
    fi
    if ((created_policy)); then
        rm -f "$policy"
    fi
    ((rc == 0)) || die "apt-get install $* failed (exit $rc); see the apt output above"
    log "installed: $*"
}

# Cleanups run by one EXIT trap, last registered first (engine 2 stops before
# engine 1). INT/TERM exit with 130/143 so that EXIT runs too.
_BUS_ON_EXIT=()
on_exit() {
    _BUS_ON_EXIT+=("$1")
    trap _bus_run_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# shellcheck disable=SC2317  # only reached through the EXIT trap
_bus_run_on_exit() {
    local rc=$? i
    for ((i = ${#_BUS_ON_EXIT[@]} - 1; i >= 0; i--)); do
        "${_BUS_ON_EXIT[i]}" || true
    done
    exit "$rc"
}

# Reuse a reachable Docker Engine or start one (scripts/docker-engine.sh
# ensure). Sets ENGINE to "started" or "reused"; a daemon started here is
# stopped when the calling script exits (also on INT/TERM).
ensure_engine() {
    ENGINE="$("$BUS_REPO_ROOT/scripts/docker-engine.sh" ensure)" ||
        die "no docker engine available (see messages above)"
    case "$ENGINE" in
        started) on_exit _stop_started_engine ;;
        reused) ;;
        *) die "unexpected output from docker-engine.sh ensure: '$ENGINE'" ;;
    esac
}

# shellcheck disable=SC2317  # only reached through the EXIT trap
_stop_started_engine() {
    log "stopping the dockerd this run started"
    "$BUS_REPO_ROOT/scripts/docker-engine.sh" stop || warn "scripts/docker-engine.sh stop failed"
}

# The second test engine beside the first (scripts/docker-engine.sh ensure2;
# needs the test images on the first). Sets ENGINE2 to "started" or "reused"
# and exports BUS_TEST_DOCKER_HOST_2 (its unix socket), BUS_TEST_DOCKER_TLS_HOST
# (its tcp+TLS address) and BUS_TEST_DOCKER_TLS_DIR (ca.pem, cert.pem, key.pem).
# A daemon started here is stopped when the calling script exits.
ensure_engine2() {
    local vars
    ENGINE2="$("$BUS_REPO_ROOT/scripts/docker-engine.sh" ensure2)" ||
        die "the second test engine did not start (see messages above)"
    case "$ENGINE2" in
        started) on_exit _stop_started_engine2 ;;
        reused) ;;
        *) die "unexpected output from docker-engine.sh ensure2: '$ENGINE2'" ;;
    esac
    vars="$("$BUS_REPO_ROOT/scripts/docker-engine.sh" env2)" || die "docker-engine.sh env2 failed"
    eval "$vars"
    export BUS_TEST_DOCKER_HOST_2 BUS_TEST_DOCKER_TLS_HOST BUS_TEST_DOCKER_TLS_DIR
}

# shellcheck disable=SC2317  # only reached through the EXIT trap
_stop_started_engine2() {
    log "stopping the second dockerd this run started"
    "$BUS_REPO_ROOT/scripts/docker-engine.sh" stop2 || warn "scripts/docker-engine.sh stop2 failed"
}

# The third test engine (scripts/docker-engine.sh ensure3), like the second.
# Sets ENGINE3 and exports BUS_TEST_DOCKER_HOST_3 (its unix socket).
ensure_engine3() {
    local vars
    ENGINE3="$("$BUS_REPO_ROOT/scripts/docker-engine.sh" ensure3)" ||
        die "the third test engine did not start (see messages above)"
    case "$ENGINE3" in
        started) on_exit _stop_started_engine3 ;;
        reused) ;;
        *) die "unexpected output from docker-engine.sh ensure3: '$ENGINE3'" ;;
    esac
    vars="$("$BUS_REPO_ROOT/scripts/docker-engine.sh" env3)" || die "docker-engine.sh env3 failed"
    eval "$vars"
    export BUS_TEST_DOCKER_HOST_3
}

# shellcheck disable=SC2317  # only reached through the EXIT trap
_stop_started_engine3() {
    log "stopping the third dockerd this run started"
    "$BUS_REPO_ROOT/scripts/docker-engine.sh" stop3 || warn "scripts/docker-engine.sh stop3 failed"
}
