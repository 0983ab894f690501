#!/usr/bin/env bash
# Upgrading a warm venv to a new version on 5 test hosts (15-19): `es deploy`
# against essay's deploy sequence re-created on Fabric 3 (bench/essay_fabric.py),
# same hosts, same index, alternating runs, medians. See bench/deploy.py.
# Usage: bash bench/deploy.sh [RUNS] [--profile]   (as root; brings the test bed up)
. "$(dirname "$0")/common.sh"
runs=5
extra=()
for arg in "$@"; do
    case "$arg" in
        --*) extra+=("$arg") ;;
        *) runs=$arg ;;
    esac
done
exec "$PY" "$BENCH_DIR/deploy.py" --es "$ES_BIN" --runs "$runs" "${extra[@]}"
