#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root): build prerequisites,
# the test bed (SSH hosts in network namespaces, pypiserver), lints, then every
# unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
bash testbed/testbed.sh up
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --no-fail-fast
