#!/usr/bin/env bash
# es against essay-on-Fabric, pyinfra and Ansible in one run: first deploy and
# warm upgrade of 5 hosts, `true` on 20/100/200 hosts; writes
# bench/results/results.md and results.png. See bench/compare.py.
# Usage: bash bench/compare.sh [RUNS] [compare.py options]   (as root)
. "$(dirname "$0")/common.sh" 200
runs=${1:-3}
shift || true
exec "$PY" "$BENCH_DIR/compare.py" --es "$ES_BIN" --runs "$runs" "$@"
