#!/usr/bin/env bash
# shellcheck shell=bash
# The second test engine: `scripts/docker-engine.sh ensure2|stop2|env2` (see
# the usage there). Sourced by docker-engine.sh, which provides STATE_DIR,
# START_TIMEOUT, STOP_TIMEOUT, await_daemon and the process helpers (proc_alive, proc_is,
# read_pid, terminate, install_missing).
#
# It never touches the first engine: its own socket, data root, exec root
# (with its own managed containerd), pid files, lock and log.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/engine2.sh is part of scripts/docker-engine.sh (ensure2/stop2/env2); don't run it" >&2
    exit 2
fi

# e2_select N: point every E2_* variable at test engine N (2 or 3): state in
# $STATE_DIR/engineN, TLS port $BUS_ENGINE<N>_TLS_PORT (default 2376N).
e2_select() {
    E2_N="$1"
    local port_var="BUS_ENGINE${E2_N}_TLS_PORT"
    E2_DIR="$STATE_DIR/engine$E2_N"
    E2_SOCK="$E2_DIR/docker.sock"
    E2_HOST="unix://$E2_SOCK"
    E2_PORT="${!port_var:-2376$E2_N}"
    E2_TLS_HOST="tcp://127.0.0.1:$E2_PORT"
    E2_TLS="$E2_DIR/tls"
    E2_PID_FILE="$E2_DIR/dockerd.pid"       # written by this script
    E2_DOCKERD_PID_FILE="$E2_DIR/docker.pid" # written by dockerd (--pidfile)
    E2_LOG="$E2_DIR/dockerd.log"
    E2_LOCK="$E2_DIR/engine$E2_N.lock"
    E2_EXEC_ROOT="$E2_DIR/exec"
    E2_CONTAINERD_PID_FILE="$E2_EXEC_ROOT/containerd/containerd.pid"
}
e2_select 2
read -r -a E2_IMAGES <<<"${BUS_TEST_IMAGES:-bus-test-busybox:local bus-test-codex:local}"

# e2_docker ARGS...: the docker CLI on test engine $E2_N's socket (plain, even
# when the caller's environment asks the CLI for TLS).
e2_docker() {
    env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$E2_HOST" "$@"
}

# e2_tls_docker ARGS...: the docker CLI over TCP with the client certificate.
e2_tls_docker() {
    env -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker -H "$E2_TLS_HOST" --tlsverify \
        --tlscacert "$E2_TLS/ca.pem" --tlscert "$E2_TLS/cert.pem" --tlskey "$E2_TLS/key.pem" "$@"
}

# e2_ok: test engine $E2_N answers on its socket and over TLS within 10 s each.
e2_ok() {
    command -v docker >/dev/null 2>&1 || return 1
    # `timeout` runs programs, not shell functions: run them in a new bash.
    timeout 10 bash -c "$(declare -f e2_docker); E2_HOST=$(printf %q "$E2_HOST"); e2_docker info" \
        >/dev/null 2>&1 || return 1
    timeout 10 bash -c "$(declare -f e2_tls_docker); E2_TLS_HOST=$(printf %q "$E2_TLS_HOST"); E2_TLS=$(printf %q "$E2_TLS"); e2_tls_docker version" \
        >/dev/null 2>&1
}

# --- certificates ----------------------------------------------------------------

# e2_certs_valid: every file there, each certificate signed by our CA and valid
# for at least another day, each key matching its certificate.
e2_certs_valid() {
    local f
    for f in ca.pem ca-key.pem server-cert.pem server-key.pem cert.pem key.pem; do
        [[ -s "$E2_TLS/$f" ]] || return 1
    done
    openssl verify -CAfile "$E2_TLS/ca.pem" "$E2_TLS/server-cert.pem" "$E2_TLS/cert.pem" >/dev/null 2>&1 || return 1
    for f in ca.pem server-cert.pem cert.pem; do
        openssl x509 -checkend 86400 -noout -in "$E2_TLS/$f" >/dev/null 2>&1 || return 1
    done
    e2_key_matches server-cert.pem server-key.pem && e2_key_matches cert.pem key.pem
}

e2_key_matches() {
    local a b
    a="$(openssl x509 -noout -pubkey -in "$E2_TLS/$1" 2>/dev/null)" || return 1
    b="$(openssl pkey -pubout -in "$E2_TLS/$2" 2>/dev/null)" || return 1
    [[ -n "$a" && "$a" == "$b" ]]
}

# e2_sign NAME CN EXTENSIONS: a key NAME-key.pem and certificate NAME-cert.pem
# signed by the CA (in the current directory).
e2_sign() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1-key.pem" &&
        openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr" &&
        printf '%s\n' "$3" >"$1.ext" &&
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 825 -sha256 -extfile "$1.ext" -out "$1-cert.pem" &&
        rm -f "$1.csr" "$1.ext"
}

# e2_generate DIR: a CA, a server certificate (127.0.0.1, localhost) and a
# client certificate (clientAuth) in DIR. Every step is checked: errexit does
# not apply inside a command whose status is tested.
e2_generate() {
    cd "$1" || return 1
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem || return 1
    openssl req -x509 -new -key ca-key.pem -sha256 -days 3650 \
        -subj "/CN=bus-integration-docker test engine$E2_N CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem || return 1
    e2_sign server localhost "$(printf '%s\n' \
        'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' \
        'subjectAltName=IP:127.0.0.1,DNS:localhost')" || return 1
    e2_sign client bus-test-client "$(printf '%s\n' \
        'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature' \
        'extendedKeyUsage=clientAuth')" || return 1
    mv client-cert.pem cert.pem && mv client-key.pem key.pem && rm -f ca.srl &&
        chmod 0644 ca.pem server-cert.pem cert.pem
}

e2_make_certs() {
    need_cmd openssl "apt-get install openssl"
    log "generating test engine $E2_N's CA, server and client certificates in $E2_TLS"
    local tmp
    tmp="$(mktemp -d "$E2_DIR/tls.new.XXXXXX")" || die "cannot create a directory in $E2_DIR"
    if ! (e2_generate "$tmp") >"$E2_DIR/openssl.log" 2>&1; then
        rm -rf "$tmp"
        sed 's/^/    /' "$E2_DIR/openssl.log" >&2
        die "openssl could not generate the certificates (output above)"
    fi
    rm -rf "$E2_TLS"
    mv "$tmp" "$E2_TLS"
    e2_certs_valid || die "the certificates generated in $E2_TLS do not verify"
}

# --- start / stop ------------------------------------------------------------------

# e2_clean_stale: stop an unanswering dockerd we recorded, remove pid files and
# the socket that no live process owns.
e2_clean_stale() {
    local pid
    pid="$(read_pid "$E2_PID_FILE")"
    if [[ -n "$pid" ]] && proc_is "$pid" dockerd; then
        warn "test engine $E2_N dockerd pid $pid (from an earlier run) is alive but does not answer; stopping it"
        terminate "$pid" dockerd "$STOP_TIMEOUT"
    fi
    rm -f "$E2_PID_FILE"
    pid="$(read_pid "$E2_DOCKERD_PID_FILE")"
    if [[ -n "$pid" ]] && proc_is "$pid" dockerd; then
        die "a dockerd (pid $pid, $E2_DOCKERD_PID_FILE) not recorded by this script runs on test engine $E2_N's state; stop it first"
    fi
    rm -f "$E2_DOCKERD_PID_FILE"
    pid="$(read_pid "$E2_CONTAINERD_PID_FILE")"
    if [[ -n "$pid" ]] && ! proc_is "$pid" containerd; then
        log "removing stale $E2_CONTAINERD_PID_FILE (pid $pid is not a running containerd)"
        rm -f "$E2_CONTAINERD_PID_FILE"
    fi
    if [[ -e "$E2_SOCK" ]]; then
        log "removing stale socket $E2_SOCK (no daemon answers on it)"
        rm -f "$E2_SOCK"
    fi
    if (echo >"/dev/tcp/127.0.0.1/$E2_PORT") 2>/dev/null; then
        die "127.0.0.1:$E2_PORT is taken by another process; set BUS_ENGINE2_TLS_PORT to a free port"
    fi
}

E2_STARTING_PID=""
e2_abort_start() {
    if [[ -n "$E2_STARTING_PID" ]] && proc_alive "$E2_STARTING_PID"; then
        log "aborting: stopping the dockerd of test engine $E2_N we were starting (pid $E2_STARTING_PID)"
        terminate "$E2_STARTING_PID" dockerd 10 || true
    fi
    [[ -z "$E2_STARTING_PID" ]] || rm -f "$E2_PID_FILE"
    E2_STARTING_PID=""
}

e2_start() {
    local -a args=(--bridge=none --iptables=false --ip6tables=false
        "--host=$E2_HOST" "--host=$E2_TLS_HOST"
        --tlsverify "--tlscacert=$E2_TLS/ca.pem"
        "--tlscert=$E2_TLS/server-cert.pem" "--tlskey=$E2_TLS/server-key.pem"
        "--data-root=$E2_DIR/data" "--exec-root=$E2_EXEC_ROOT"
        "--pidfile=$E2_DOCKERD_PID_FILE")
    local -a extra=()
    if [[ -n "${BUS_DOCKERD_ARGS:-}" ]]; then
        read -r -a extra <<<"$BUS_DOCKERD_ARGS"
        args+=("${extra[@]}")
    fi
    if [[ -e "$E2_LOG" ]]; then
        mv -f "$E2_LOG" "$E2_LOG.prev"
    fi
    printf '### %s: dockerd %s\n' "$(date -u +%FT%TZ)" "${args[*]}" >"$E2_LOG"
    log "starting the dockerd of test engine $E2_N ${args[*]} (log: $E2_LOG)"
    trap e2_abort_start EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    (
        for fd in /proc/"$BASHPID"/fd/*; do
            fd="${fd##*/}"
            if ((fd > 2)); then
                eval "exec $fd>&-"
            fi
        done
        exec setsid dockerd "${args[@]}" </dev/null >>"$E2_LOG" 2>&1
    ) &
    E2_STARTING_PID=$!
    printf '%s\n' "$E2_STARTING_PID" >"$E2_PID_FILE"
    await_daemon "$E2_STARTING_PID" "$E2_LOG" e2_ok "the dockerd of test engine $E2_N"
    log "dockerd of test engine $E2_N (pid $E2_STARTING_PID) is up at $E2_HOST and $E2_TLS_HOST (TLS)"
    E2_STARTING_PID=""
    trap - EXIT INT TERM
}

# e2_load_images: copy the test images from the first engine when missing.
e2_load_images() {
    local image
    local -a missing=()
    for image in "${E2_IMAGES[@]}"; do
        e2_docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
    done
    ((${#missing[@]} > 0)) || return 0
    log "loading ${missing[*]} into test engine $E2_N"
    docker save "${missing[@]}" | e2_docker load >/dev/null ||
        die "could not copy ${missing[*]} from $DOCKER_HOST into $E2_HOST (build them first: scripts/build-test-images.sh)"
}

cmd_ensure2() {
    mkdir -p "$E2_DIR" || die "cannot create $E2_DIR"
    exec 8>"$E2_LOCK" || die "cannot open lock file $E2_LOCK"
    need_cmd flock "util-linux"
    flock -w 180 8 || die "another docker-engine.sh holds $E2_LOCK for >180s"
    local result=reused
    if ! e2_certs_valid; then
        if e2_ok; then
            log "test engine $E2_N's certificates are invalid or expiring; restarting it with new ones"
            cmd_stop2_locked
        fi
        e2_make_certs
    fi
    if ! e2_ok; then
        [[ "$(id -u)" == 0 ]] || die "starting the dockerd of test engine $E2_N needs root"
        install_missing
        need_cmd setsid "util-linux"
        e2_clean_stale
        e2_start
        result=started
    else
        log "test engine $E2_N answers at $E2_HOST and $E2_TLS_HOST; reusing it"
    fi
    e2_load_images
    echo "$result"
}

cmd_stop2_locked() {
    local pid
    pid="$(read_pid "$E2_PID_FILE")"
    if [[ -z "$pid" ]] || ! proc_is "$pid" dockerd; then
        log "no second dockerd recorded in $E2_PID_FILE is running; nothing to stop"
        rm -f "$E2_PID_FILE"
        return 0
    fi
    log "stopping the dockerd of test engine $E2_N (pid $pid)"
    terminate "$pid" dockerd "$STOP_TIMEOUT"
    rm -f "$E2_PID_FILE" "$E2_DOCKERD_PID_FILE"
    # dockerd bind-mounts its data root onto itself and can leave it mounted:
    # a clone holding that mount cannot be deleted.
    if mountpoint -q "$E2_DIR/data" 2>/dev/null; then
        umount "$E2_DIR/data" 2>/dev/null || umount -l "$E2_DIR/data" ||
            warn "could not unmount $E2_DIR/data"
    fi
    if [[ -S "$E2_SOCK" ]]; then
        rm -f "$E2_SOCK"
    fi
    log "stopped the dockerd of test engine $E2_N (pid $pid)"
}

cmd_stop2() {
    mkdir -p "$E2_DIR" || die "cannot create $E2_DIR"
    exec 8>"$E2_LOCK" || die "cannot open lock file $E2_LOCK"
    flock -w 180 8 || die "another docker-engine.sh holds $E2_LOCK for >180s"
    cmd_stop2_locked
}

# cmd_env3: test engine 3's variable (the engine-pool tests use its socket).
cmd_env3() {
    printf 'BUS_TEST_DOCKER_HOST_3=%q\n' "$E2_HOST"
}

cmd_env2() {
    printf 'BUS_TEST_DOCKER_HOST_2=%q\n' "$E2_HOST"
    printf 'BUS_TEST_DOCKER_TLS_HOST=%q\n' "$E2_TLS_HOST"
    printf 'BUS_TEST_DOCKER_TLS_DIR=%q\n' "$E2_TLS"
}
