#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root): build prerequisites,
# the test bed (SSH hosts in network namespaces, pypiserver), lints, then every
# unit and integration test (the es serve page in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
# The page of `es serve` is tested in a real headless browser, `es exec -i`
# in a terminal (tmux).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v tmux >/dev/null; then
    echo "[setup] installing chromium, chromium-driver and tmux" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver tmux >/dev/null
fi
# The bed's systemd hosts must leave the machine's /tmp alone (systemd-tmpfiles
# empties a /tmp it shares at boot): an old file here must outlive `up`.
probe=$(mktemp /tmp/es-tmp-probe.XXXXXX)
touch -d '60 days ago' "$probe"
bash testbed/testbed.sh up
[ -e "$probe" ] || { echo "the machine's /tmp lost $probe while the test bed came up" >&2; exit 1; }
rm -f "$probe"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
ES_TB_REQUIRED=1 cargo test --no-fail-fast
