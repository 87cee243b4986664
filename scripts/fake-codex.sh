#!/bin/sh
# A stand-in for the Codex CLI in the test image bus-test-codex:local
# (/bin/codex, busybox sh): it does with its home what the real CLI does,
# so the tests can show how each Codex home mode breaks or holds
# (contract §6, tests/it/codex_home.rs).
#
# usage: codex exec PROMPT
#        codex exec resume SESSION_ID PROMPT
#
# What it does, in order:
#  1. loads the login: the refresh token of $CODEX_HOME/auth.json
#     ({"tokens":{"refresh_token":"rt-N"}});
#  2. opens its state database: an exclusive, non-blocking flock on
#     $CODEX_HOME/state_5.sqlite held until it exits; another process
#     holding it is "database is locked" (SQLite's SQLITE_BUSY);
#  3. waits at the barrier, when FAKE_CODEX_BARRIER=DIR:N names one: appends
#     a line to DIR/barrier and waits (FAKE_CODEX_BARRIER_TIMEOUT seconds,
#     default 60) until N runs have arrived, so tests overlap runs for sure;
#  4. refreshes the login, as a login whose access token expired must: under
#     the OAuth server's lock it re-reads auth.json (the CLI adopts a newer
#     token another process wrote), and the server refuses a refresh token
#     older than the newest one it issued: "refresh_token_reused". Else the
#     server issues rt-(N+1) and the CLI writes it back in place (same
#     inode, as Codex does). A home where it cannot write strands the
#     lineage: the server rotated, the file did not. The OAuth server is
#     emulated by FAKE_CODEX_OAUTH=DIR (default /workspace/.oauth): DIR/issued
#     holds the newest token issued, DIR/lock serialises it;
#  5. records the turn: appends PROMPT to $CODEX_HOME/sessions/ID.jsonl
#     (a new ID from FAKE_CODEX_SESSION_ID or the kernel's uuid; `resume ID`
#     needs that file and prints the earlier turns first).
#
# Exit 0 when every step worked; else 1 after printing each failure as
# "error: ..." on stderr (a failed step does not stop the later ones, so
# a run reports every failure it met).
set -u
home="${CODEX_HOME:-/root/.codex}"
oauth="${FAKE_CODEX_OAUTH:-/workspace/.oauth}"
failed=0
fail() {
    echo "error: $*" >&2
    failed=1
}
token_of() { # the N of "rt-N" in auth.json, or nothing
    sed -n 's/.*"refresh_token" *: *"rt-\([0-9][0-9]*\)".*/\1/p' "$1" 2>/dev/null | head -n 1
}

[ "${1:-}" = exec ] || {
    echo "usage: codex exec [resume SESSION_ID] PROMPT" >&2
    exit 2
}
shift
resume=""
if [ "${1:-}" = resume ]; then
    resume="${2:?usage: codex exec resume SESSION_ID PROMPT}"
    shift 2
fi
prompt="${1:-}"

# 1. the login
loaded="$(token_of "$home/auth.json")"
[ -n "$loaded" ] || fail "not logged in: no refresh token in $home/auth.json"

# 2. the state database, held for the whole run (a failed `exec`
# redirection would end the shell: try it in a subshell first)
if (exec 7>>"$home/state_5.sqlite") 2>/dev/null; then
    exec 7>>"$home/state_5.sqlite"
    flock -n 7 || fail "database is locked ($home/state_5.sqlite)"
else
    fail "cannot open the state database $home/state_5.sqlite (read-only home)"
fi

# 3. the barrier
if [ -n "${FAKE_CODEX_BARRIER:-}" ]; then
    dir="${FAKE_CODEX_BARRIER%:*}"
    want="${FAKE_CODEX_BARRIER##*:}"
    mkdir -p "$dir" && echo "$$" >>"$dir/barrier" || fail "barrier: cannot join $dir/barrier"
    waited=0
    limit=$((${FAKE_CODEX_BARRIER_TIMEOUT:-60} * 10))
    while [ "$(wc -l <"$dir/barrier" 2>/dev/null || echo 0)" -lt "$want" ]; do
        waited=$((waited + 1))
        if [ "$waited" -gt "$limit" ]; then
            fail "barrier: only $(wc -l <"$dir/barrier") of $want runs arrived"
            break
        fi
        sleep 0.1
    done
fi

# 4. the refresh
if [ -n "$loaded" ]; then
    mkdir -p "$oauth"
    exec 6>>"$oauth/lock"
    flock 6
    current="$(token_of "$home/auth.json")"
    issued="$(cat "$oauth/issued" 2>/dev/null || echo 0)"
    if [ -z "$current" ]; then
        fail "auth.json lost its refresh token"
    elif [ "$current" -lt "$issued" ]; then
        fail "refresh_token_reused: rt-$current was already used (the server issued rt-$issued)"
    else
        next=$((current + 1))
        echo "$next" >"$oauth/issued"
        # In place, as Codex writes it: the same file, not a new one.
        if ! printf '{"tokens":{"refresh_token":"rt-%s"}}\n' "$next" 2>/dev/null >"$home/auth.json"; then
            fail "could not save the refreshed login to $home/auth.json: rt-$current is spent, so the next run gets refresh_token_reused"
        fi
    fi
    flock -u 6
fi

# 5. the session
mkdir -p "$home/sessions" 2>/dev/null
if [ -n "$resume" ]; then
    id="$resume"
    if [ -f "$home/sessions/$id.jsonl" ]; then
        echo "resumed $id:"
        cat "$home/sessions/$id.jsonl"
    else
        fail "session $id not found in $home/sessions"
    fi
else
    id="${FAKE_CODEX_SESSION_ID:-$(cat /proc/sys/kernel/random/uuid)}"
fi
if [ "$failed" = 0 ]; then
    printf '{"turn":"%s"}\n' "$prompt" >>"$home/sessions/$id.jsonl" ||
        fail "cannot write the session $home/sessions/$id.jsonl"
fi
echo "session $id"
exit "$failed"
