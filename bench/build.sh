#!/usr/bin/env bash
# Benchmark: `es build --no-upload` against `python3 -m build` on the same project.
#
# Uses examples/hello_es when the repository has it, else a tiny pyproject.toml
# project made in a temporary directory. 5 alternating runs of each; prints both
# medians and their ratio (es / python -m build).
#
# Usage: bash bench/build.sh            (builds es in release mode first)
#        ES=path/to/es bash bench/build.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -z "${ES:-}" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    ES="${CARGO_TARGET_DIR:-$repo/target}/release/es"
fi

# The project: a git repository es can export.
proj="$work/project"
if [[ -f "$repo/examples/hello_es/pyproject.toml" ]]; then
    cp -r "$repo/examples/hello_es" "$proj"
    rm -rf "$proj/.git"
else
    mkdir -p "$proj/bench_app"
    cat > "$proj/pyproject.toml" <<'TOML'
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "bench_app"
version = "0.0.0"
description = "es build benchmark project"

[tool.setuptools]
packages = ["bench_app"]
TOML
    echo 'GREETING = "hello"' > "$proj/bench_app/__init__.py"
    printf '[project]\nname = "bench_app"\n' > "$proj/deploy.toml"
fi
git -C "$proj" init -q -b main
git -C "$proj" add -A
git -C "$proj" -c user.name=bench -c user.email=bench@localhost commit -q -m bench

# The python -m build to compare with: python3's own when it has `build`, else the
# venv es keeps in its cache (made by the warm-up run below), else a venv made here.
export XDG_CACHE_HOME="$work/cache"
(cd "$proj" && "$ES" build --no-upload --version 0.0.1 >/dev/null 2>&1) || {
    echo "warm-up es build failed:" >&2
    (cd "$proj" && "$ES" -v build --no-upload --version 0.0.1) >&2 || true
    exit 1
}
if python3 -c 'import build' 2>/dev/null; then
    py=python3
elif [[ -x "$XDG_CACHE_HOME/es/build-venv/bin/python" ]]; then
    py="$XDG_CACHE_HOME/es/build-venv/bin/python"
else
    # es used uv, so it made no venv: make one with `build` for the baseline.
    python3 -m venv "$work/pybuild"
    "$work/pybuild/bin/python" -m pip install --quiet build
    py="$work/pybuild/bin/python"
fi
if command -v uv >/dev/null; then
    echo "note: uv is on PATH, so es builds with uv build" >&2
fi

now() { date +%s.%N; }
es_times=()
py_times=()
for i in $(seq 1 "$runs"); do
    t0=$(now)
    (cd "$proj" && "$ES" build --no-upload --version "0.0.$i" >/dev/null 2>&1)
    t1=$(now)
    rm -rf "$work/dist"
    (cd "$proj" && "$py" -m build --outdir "$work/dist" . >/dev/null 2>&1)
    t2=$(now)
    es_times+=("$(awk "BEGIN {print $t1 - $t0}")")
    py_times+=("$(awk "BEGIN {print $t2 - $t1}")")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
es_med=$(median "${es_times[@]}")
py_med=$(median "${py_times[@]}")
echo "es build --no-upload: runs ${es_times[*]}"
echo "python3 -m build:     runs ${py_times[*]}"
printf 'median es build --no-upload: %.2f s\n' "$es_med"
printf 'median python3 -m build:     %.2f s\n' "$py_med"
awk "BEGIN {printf \"ratio es / python -m build:  %.2f\\n\", $es_med / $py_med}"
