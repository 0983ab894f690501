#!/usr/bin/env bash
# es run -- true on 20 test hosts, against Fabric 3's ThreadingGroup doing the
# same on the same hosts: alternating runs, medians of wall time and CPU time.
# Usage: bash bench/fanout.sh [RUNS]   (as root; brings the test bed up)
. "$(dirname "$0")/common.sh"
exec "$PY" "$BENCH_DIR/fanout.py" --es "$ES_BIN" --runs "${1:-7}" --count 20
