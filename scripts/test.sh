#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root): build prerequisites,
# the test bed (SSH hosts in network namespaces, pypiserver), lints, then every
# unit and integration test (the es serve page in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
# The page of `es serve` is tested in a real headless browser.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "[setup] installing chromium and chromium-driver" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash testbed/testbed.sh up
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --no-fail-fast
