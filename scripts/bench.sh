#!/usr/bin/env bash
# The benchmark: scripts/bench.sh [bus-docker-bench args...]
#
#   1. scripts/docker-engine.sh ensure   (reuses a running engine, or installs
#      and starts one; a daemon started here is stopped again on exit/INT/TERM)
#   2. scripts/build-test-images.sh      (bus-test-busybox:local)
#   3. cargo build --release -p bus-integration-docker -p bus-docker-bench --bin bus-integration-docker --bin bus-docker-bench
#   4. target/release/bus-docker-bench "$@" (under CARGO_TARGET_DIR if set)
#      (raw engine vs `docker run --rm` vs the worker, status latency against
#      the number of managed containers, live output; table on stdout, JSON
#      in target/bench/results.json, worker logs in target/bench/logs/)
#
# Examples:
#   scripts/bench.sh                          # the run BENCHMARKS.md reports
#   scripts/bench.sh --runs 100 --throughput-runs 48
#   scripts/bench.sh --status-only            # status at 0, 64, 256 containers
#   scripts/bench.sh --live-only              # live output only
#   scripts/bench.sh --help
#
# The status scenario starts up to 256 idle containers (`sleep 3600`,
# network none, labelled like runs of other owners, runner
# bus-bench-<pid>-others); the bench removes them at the end, also after a
# failure or Ctrl-C. An interrupted bench's leftovers (label bus.bench or
# runner bus-bench-*) are removed by the next run at its start.
#
# Environment: CARGO (default cargo), BUS_TEST_IMAGE (default
# bus-test-busybox:local), DOCKER_HOST, BUS_STATE_DIR (see docker-engine.sh).
#
# The figures are only comparable within one run: raw engine, CLI and worker
# are measured side by side on the same machine and engine. Run it on a quiet
# machine; other load skews the ratios less than the absolute figures.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$BUS_REPO_ROOT"

CARGO="${CARGO:-cargo}"
need_cmd "$CARGO" "install Rust with rustup, or 'source ~/.cargo/env'"

# --- engine ------------------------------------------------------------------
# Sets ENGINE to started|reused; a dockerd started here is stopped on exit.
ensure_engine

# --- images and binaries -------------------------------------------------------
scripts/build-test-images.sh >/dev/null
export BUS_TEST_IMAGE="${BUS_TEST_IMAGE:-bus-test-busybox:local}"

args=(build --release -p bus-integration-docker -p bus-docker-bench --bin bus-integration-docker --bin bus-docker-bench)
if [[ -f Cargo.lock ]]; then
    args+=(--locked)
fi
log "running: $CARGO ${args[*]}"
"$CARGO" "${args[@]}"

# --- benchmark -----------------------------------------------------------------
BENCH="${CARGO_TARGET_DIR:-target}/release/bus-docker-bench"
log "running: $BENCH $* (BUS_TEST_IMAGE=$BUS_TEST_IMAGE DOCKER_HOST=$DOCKER_HOST)"
"$BENCH" "$@"
