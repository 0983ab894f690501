# Shared set-up for the benchmarks: the test bed, a release build of es, and a
# Python venv with the peer tools (Fabric 3). Sourced by the bench scripts.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
PEERS_VENV=${ES_BENCH_VENV:-/var/tmp/es-bench-venv}

# The first argument, when given, is the host count the bed must have.
bash "$REPO/testbed/testbed.sh" up ${1:+"$1"} >&2
# shellcheck disable=SC1090
. "$(bash "$REPO/testbed/testbed.sh" env)"
(cd "$REPO" && cargo build --release --quiet)
ES_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/es"

# jinja2: the essay re-creation renders the supervisord template as essay did;
# pyinfra and Ansible: the other peers of compare.sh; matplotlib: its plot.
if [ ! -x "$PEERS_VENV/bin/ansible" ] || ! "$PEERS_VENV/bin/python" -c 'import jinja2, matplotlib' 2>/dev/null; then
    [ -x "$PEERS_VENV/bin/python" ] || /usr/bin/python3 -m venv "$PEERS_VENV"
    "$PEERS_VENV/bin/pip" install --quiet --disable-pip-version-check 'fabric>=3,<4' build jinja2 \
        pyinfra ansible-core matplotlib
fi
PY="$PEERS_VENV/bin/python"
