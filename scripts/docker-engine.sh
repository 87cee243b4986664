#!/usr/bin/env bash
# Make sure a Docker Engine answers at DOCKER_HOST, starting one if needed.
#
# usage: scripts/docker-engine.sh ensure|stop|status
#
#   ensure  If `docker info` already works: print "reused" and do nothing else.
#           Otherwise install docker.io/busybox-static when missing (apt-get),
#           clean up a stale pid file/socket, start
#             dockerd --bridge=none --iptables=false --ip6tables=false
#           detached (own session, output to $BUS_STATE_DIR/dockerd.log, pid in
#           $BUS_STATE_DIR/dockerd.pid), wait until it answers, print "started".
#           The caller that sees "started" owns the daemon and should run `stop`.
#   stop    Stop the dockerd recorded in $BUS_STATE_DIR/dockerd.pid (TERM, up to
#           BUS_DOCKERD_STOP_TIMEOUT=20 s, then KILL); never touches other daemons.
#   status  Print what is running; exit 0 if the engine answers, 1 if not.
#
#   ensure2 The second test engine (for engine-pool tests), beside the first and
#           never touching it: a dockerd of its own with socket
#           $BUS_STATE_DIR/engine2/docker.sock, --data-root/--exec-root/--pidfile
#           under $BUS_STATE_DIR/engine2, the same --bridge=none --iptables=false
#           --ip6tables=false, log $BUS_STATE_DIR/engine2/dockerd.log, and ALSO
#           listening on tcp://127.0.0.1:$BUS_ENGINE2_TLS_PORT with --tlsverify.
#           Its CA, server and client certificates are made with openssl into
#           $BUS_STATE_DIR/engine2/tls once (remade when missing, expiring or not
#           matching); the client's ca.pem, cert.pem and key.pem are there. The
#           test images are loaded into it from the first engine when missing.
#           Prints "started" or "reused" like ensure; stale pid files and sockets
#           of an earlier run are cleaned up.
#   stop2   Stop the second engine recorded in $BUS_STATE_DIR/engine2/dockerd.pid.
#   env2    Print the second engine's test variables as shell assignments:
#           BUS_TEST_DOCKER_HOST_2, BUS_TEST_DOCKER_TLS_HOST, BUS_TEST_DOCKER_TLS_DIR.
#   ensure3 / stop3 / env3
#           The same for a third test engine ($BUS_STATE_DIR/engine3, TLS port
#           $BUS_ENGINE3_TLS_PORT, default 23763); env3 prints BUS_TEST_DOCKER_HOST_3.
#           The engine-pool tests run on engines 2 and 3, which no other test
#           uses, so placement counts are theirs alone.
#
# Environment:
#   DOCKER_HOST                default unix:///var/run/docker.sock (must be unix:// to start one)
#   BUS_STATE_DIR              default .ci/state (relative paths: from the repo root)
#   BUS_DOCKERD_START_TIMEOUT  seconds a new daemon may be silent before it
#                              answers (default 60): a dockerd cleaning up
#                              after a killed one logs each stale entry, and
#                              is waited for while its log grows
#   BUS_DOCKERD_START_MAX      seconds to wait for a new daemon in all
#                              (default 900)
#   BUS_DOCKERD_STOP_TIMEOUT   seconds to wait after TERM (default 20)
#   BUS_DOCKERD_ARGS           extra dockerd arguments (whitespace separated),
#                              e.g. "--storage-driver=vfs" where overlay2 is unavailable
#                              (the second engine gets them too)
#   BUS_ENGINE2_TLS_PORT       loopback TCP port of the second engine (default 23762)
#   BUS_TEST_IMAGES            images copied into the second engine
#                              (default "bus-test-busybox:local bus-test-codex:local")
#
# stdout carries only the machine-readable result ("started"/"reused", status
# report); all diagnostics go to stderr.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE_DIR="$(bus_state_dir)"
PID_FILE="$STATE_DIR/dockerd.pid"
LOG_FILE="$STATE_DIR/dockerd.log"
LOCK_FILE="$STATE_DIR/engine.lock"
SYSTEM_PID_FILE=/var/run/docker.pid
# dockerd's managed containerd. dockerd 20.10 reuses the pid in this file if
# kill(pid, 0) succeeds, which is also true for an unreaped zombie: after a
# SIGKILLed dockerd it then waits for a dead containerd and fails to start.
CONTAINERD_PID_FILE=/var/run/docker/containerd/containerd.pid
DEFAULT_HOST=unix:///var/run/docker.sock
START_TIMEOUT="${BUS_DOCKERD_START_TIMEOUT:-60}"
START_MAX="${BUS_DOCKERD_START_MAX:-900}"
STOP_TIMEOUT="${BUS_DOCKERD_STOP_TIMEOUT:-20}"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# --- process helpers -------------------------------------------------------

# proc_alive PID: PID is a live process (zombies count as gone).
proc_alive() {
    local stat rest
    [[ "$1" =~ ^[1-9][0-9]*$ ]] || return 1
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }"
    [[ "${rest%% *}" != [ZX] ]]
}

# proc_is PID NAME: PID is a live process whose comm is NAME. Guards against
# recycled pids in stale pid files.
proc_is() {
    local comm
    proc_alive "$1" || return 1
    comm="$(cat "/proc/$1/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$2" ]]
}

# read_pid FILE: print the pid stored in FILE (nothing if missing/garbage).
read_pid() {
    local pid=""
    if [[ -f "$1" ]]; then
        read -r pid <"$1" 2>/dev/null || true
    fi
    if [[ "$pid" =~ ^[1-9][0-9]*$ ]]; then
        printf '%s\n' "$pid"
    fi
}

# wait_gone PID SECONDS: wait until PID is no longer a live process.
wait_gone() {
    local pid="$1" deadline=$((SECONDS + $2))
    while proc_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# terminate PID NAME SECONDS: TERM, wait, then KILL. Returns 0 once gone.
terminate() {
    local pid="$1" name="$2" secs="$3"
    proc_is "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$secs"; then
        warn "$name (pid $pid) still running ${secs}s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "$name (pid $pid) survived SIGKILL"
    fi
}

socket_path() {
    case "$DOCKER_HOST" in
        unix://*) printf '%s\n' "${DOCKER_HOST#unix://}" ;;
        *) printf '\n' ;;
    esac
}

take_lock() {
    need_cmd flock "util-linux"
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
    exec 9>"$LOCK_FILE" || die "cannot open lock file $LOCK_FILE"
    flock -w 180 9 || die "another docker-engine.sh holds $LOCK_FILE for >180s"
}

wait_for_engine() {
    local deadline=$((SECONDS + $1))
    until docker_ok; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# await_daemon PID LOG CHECK WHAT: wait until the command CHECK succeeds.
# A daemon that keeps writing its log is still starting (dockerd removes
# what a killed predecessor left, one log line per entry, which can take
# minutes), so the START_TIMEOUT limit counts from its last log line, up to
# START_MAX in all. Dies (naming LOG) when the daemon exits or falls silent.
await_daemon() {
    local pid="$1" log_file="$2" check="$3" what="$4"
    local start=$SECONDS idle_from=$SECONDS size last_size=-1 noted=""
    until "$check"; do
        if ! proc_alive "$pid"; then
            tail -n 40 "$log_file" | sed 's/^/    /' >&2
            die "$what (pid $pid) exited during startup; see $log_file"
        fi
        size=$(stat -c %s "$log_file" 2>/dev/null || echo 0)
        if ((size != last_size)); then
            last_size=$size
            idle_from=$SECONDS
        fi
        if ((SECONDS - idle_from >= START_TIMEOUT || SECONDS - start >= START_MAX)); then
            tail -n 40 "$log_file" | sed 's/^/    /' >&2
            die "$what (pid $pid) did not answer within $((SECONDS - start))s (its log silent for $((SECONDS - idle_from))s); see $log_file"
        fi
        if [[ -z "$noted" ]] && ((SECONDS - start >= 30)); then
            log "$what (pid $pid) is still starting and its log grows (cleaning up after an earlier daemon?); waiting while it does, up to ${START_MAX}s"
            noted=1
        fi
        sleep 0.5
    done
}

log_tail() {
    if [[ -s "$LOG_FILE" ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" | sed 's/^/    /' >&2
    fi
}

# --- ensure ------------------------------------------------------------------

install_missing() {
    local -a pkgs=()
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        pkgs+=(docker.io)
    fi
    if [[ ! -x /bin/busybox ]]; then
        pkgs+=(busybox-static)
    fi
    apt_install "${pkgs[@]}"
    hash -r
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
}

# Remove pid files/sockets left behind by daemons that are gone. Returns 1 if
# a live dockerd that we may not touch is in the way.
clean_stale() {
    local pid sock
    pid="$(read_pid "$PID_FILE")"
    if [[ -n "$pid" ]]; then
        if proc_is "$pid" dockerd; then
            warn "dockerd pid $pid (recorded in $PID_FILE by an earlier run) is alive but does not answer at $DOCKER_HOST; stopping it"
            terminate "$pid" dockerd "$STOP_TIMEOUT"
        else
            log "removing stale pid file $PID_FILE (pid $pid is not a running dockerd)"
        fi
        rm -f "$PID_FILE"
    elif [[ -e "$PID_FILE" ]]; then
        rm -f "$PID_FILE"
    fi

    pid="$(read_pid "$SYSTEM_PID_FILE")"
    if [[ -n "$pid" ]]; then
        if proc_is "$pid" dockerd; then
            log "a dockerd not started by this script (pid $pid, $SYSTEM_PID_FILE) is running; waiting up to ${START_TIMEOUT}s for it to answer at $DOCKER_HOST"
            if wait_for_engine "$START_TIMEOUT"; then
                return 0
            fi
            die "dockerd pid $pid (not started by this script) is running but does not answer at $DOCKER_HOST; stop it or point DOCKER_HOST at it"
        fi
        log "removing stale $SYSTEM_PID_FILE (pid $pid is not a running dockerd)"
        rm -f "$SYSTEM_PID_FILE"
    elif [[ -e "$SYSTEM_PID_FILE" ]]; then
        log "removing unreadable $SYSTEM_PID_FILE"
        rm -f "$SYSTEM_PID_FILE"
    fi

    pid="$(read_pid "$CONTAINERD_PID_FILE")"
    if [[ -n "$pid" ]] && ! proc_is "$pid" containerd; then
        log "removing stale $CONTAINERD_PID_FILE (pid $pid is not a running containerd)"
        rm -f "$CONTAINERD_PID_FILE"
    fi

    local others=""
    if command -v pgrep >/dev/null 2>&1; then
        for pid in $(pgrep -x dockerd || true); do
            if proc_alive "$pid"; then
                others+="$pid "
            fi
        done
    fi
    if [[ -n "$others" ]]; then
        warn "other dockerd process(es) running: ${others}(not started by this script; starting another may conflict)"
    fi

    sock="$(socket_path)"
    if [[ -n "$sock" && -e "$sock" ]]; then
        log "removing stale socket $sock (no daemon answers on it)"
        rm -f "$sock"
    fi
}

STARTING_PID=""
abort_start() {
    if [[ -n "$STARTING_PID" ]]; then
        if proc_alive "$STARTING_PID"; then
            log "aborting: stopping the dockerd we were starting (pid $STARTING_PID)"
            terminate "$STARTING_PID" dockerd 10 || true
        fi
        rm -f "$PID_FILE"
        STARTING_PID=""
    fi
}

start_dockerd() {
    local -a args=(--bridge=none --iptables=false --ip6tables=false)
    local -a extra=()
    if [[ "$DOCKER_HOST" != "$DEFAULT_HOST" ]]; then
        args+=("--host=$DOCKER_HOST")
    fi
    if [[ -n "${BUS_DOCKERD_ARGS:-}" ]]; then
        read -r -a extra <<<"$BUS_DOCKERD_ARGS"
        args+=("${extra[@]}")
    fi
    if [[ -e "$LOG_FILE" ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.prev"
    fi
    printf '### %s: dockerd %s\n' "$(date -u +%FT%TZ)" "${args[*]}" >"$LOG_FILE"
    log "starting dockerd ${args[*]} (log: $LOG_FILE)"

    trap abort_start EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    (
        # The daemon must not inherit our descriptors (the lock on fd 9, or a
        # caller's pipe, which would keep `$(...)` or a CI log reader waiting).
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then
                eval "exec $fd>&-"
            fi
        done
        # Own session: no SIGHUP/SIGINT from the caller's terminal or group.
        exec setsid dockerd "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1
    ) &
    STARTING_PID=$!
    printf '%s\n' "$STARTING_PID" >"$PID_FILE"

    await_daemon "$STARTING_PID" "$LOG_FILE" docker_ok "dockerd at $DOCKER_HOST"
    proc_is "$STARTING_PID" dockerd || warn "pid $STARTING_PID is not named dockerd (setsid forked?); $PID_FILE may be wrong"
    log "dockerd (pid $STARTING_PID) is up: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null || echo '?')"
    STARTING_PID=""
    trap - EXIT INT TERM
}

cmd_ensure() {
    if docker_ok; then
        log "docker engine already answers at $DOCKER_HOST; reusing it"
        echo reused
        return 0
    fi
    take_lock
    if docker_ok; then # someone else started it while we waited for the lock
        log "docker engine answers at $DOCKER_HOST; reusing it"
        echo reused
        return 0
    fi
    [[ -n "$(socket_path)" ]] || die "DOCKER_HOST=$DOCKER_HOST does not answer, and a daemon can only be started for a unix:// socket"
    [[ "$(id -u)" == 0 ]] || die "docker engine not reachable at $DOCKER_HOST and starting dockerd needs root"
    install_missing
    need_cmd setsid "util-linux"
    if docker_ok; then # a package install may have started one despite policy-rc.d
        log "docker engine answers at $DOCKER_HOST after installing packages; reusing it"
        echo reused
        return 0
    fi
    clean_stale
    if docker_ok; then
        echo reused
        return 0
    fi
    start_dockerd
    echo started
}

# --- stop / status -----------------------------------------------------------

cmd_stop() {
    take_lock
    local pid sock
    pid="$(read_pid "$PID_FILE")"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        log "no dockerd recorded in $PID_FILE; nothing to stop"
        return 0
    fi
    if ! proc_is "$pid" dockerd; then
        log "recorded dockerd pid $pid is not running; removing stale $PID_FILE"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping dockerd (pid $pid)"
    terminate "$pid" dockerd "$STOP_TIMEOUT"
    rm -f "$PID_FILE"
    # After a SIGKILL dockerd cannot clean up after itself.
    if [[ "$(read_pid "$SYSTEM_PID_FILE")" == "$pid" ]]; then
        rm -f "$SYSTEM_PID_FILE"
    fi
    sock="$(socket_path)"
    if [[ -n "$sock" && -S "$sock" ]] && ! docker_ok; then
        rm -f "$sock"
    fi
    log "stopped dockerd (pid $pid)"
}

cmd_status() {
    local pid rc=0
    echo "DOCKER_HOST=$DOCKER_HOST"
    if docker_ok; then
        echo "engine: reachable ($(docker info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}/{{.CgroupDriver}}' 2>/dev/null))"
    else
        echo "engine: NOT reachable"
        rc=1
    fi
    pid="$(read_pid "$PID_FILE")"
    if [[ -z "$pid" ]]; then
        echo "started by docker-engine.sh: no ($PID_FILE absent)"
    elif proc_is "$pid" dockerd; then
        echo "started by docker-engine.sh: yes, pid $pid (log: $LOG_FILE)"
    else
        echo "started by docker-engine.sh: stale pid file ($PID_FILE: pid $pid is not running)"
    fi
    return "$rc"
}

# shellcheck source-path=SCRIPTDIR source=engine2.sh
source "$(dirname "${BASH_SOURCE[0]}")/engine2.sh"

case "${1:-}" in
    ensure) cmd_ensure ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    ensure2) cmd_ensure2 ;;
    stop2) cmd_stop2 ;;
    env2) cmd_env2 ;;
    ensure3) e2_select 3 && cmd_ensure2 ;;
    stop3) e2_select 3 && cmd_stop2 ;;
    env3) e2_select 3 && cmd_env3 ;;
    -h | --help | help) usage ;;
    *)
        usage
        die "unknown or missing subcommand '${1:-}' (expected ensure, stop, status, ensure2, stop2, env2, ensure3, stop3 or env3)"
        ;;
esac
