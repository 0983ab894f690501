#!/usr/bin/env bash
# The whole mission in a couple of minutes, from a fresh machine (run as root):
# build es, bring up the test bed (SSH hosts + a private index), take the example
# service from examples/hello_es, build and upload it, deploy it to three hosts,
# show supervisord's status, and fetch a page from every process.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${ES_QUICKSTART_DIR:-/var/tmp/es-quickstart}
cd "$REPO"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building es"
bash scripts/setup-build.sh
cargo build --release --quiet
ES="$REPO/target/release/es"

step "bringing up the test bed"
bash testbed/testbed.sh up
# shellcheck disable=SC1090
. "$(bash testbed/testbed.sh env)"

step "the example project: examples/hello_es with the repository's deploy.toml"
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r examples/hello_es "$WORK/hello_es"
cp deploy.toml "$WORK/hello_es/deploy.toml"
cd "$WORK/hello_es"
git init -q
git symbolic-ref HEAD refs/heads/main
git add -A
git -c user.name="es quickstart" -c user.email=quickstart@es.invalid commit -qm "hello_es"
echo "$WORK/hello_es"

step "es build (stamp the next version, sdist + wheel, upload to the index)"
export TWINE_USERNAME="$ES_TB_INDEX_USER" TWINE_PASSWORD="$ES_TB_INDEX_PASSWORD"
version=$("$ES" build | tail -n 1)
echo "built $version; the index's latest is now $("$ES" version latest)"

step "es deploy -R web $version a demo"
"$ES" --accept-new-host-keys deploy -R web "$version" a demo

step "es supervisor status a"
"$ES" supervisor status a

step "a page from every process"
for host in $(sed -n 's/^web = \[\(.*\)\]/\1/p' deploy.toml | tr -d '",' ); do
    addr=${host#*@}
    for port in 8800 8801; do
        printf '%s:%s  ' "$addr" "$port"
        curl -s --max-time 5 "http://$addr:$port/"
    done
done
printf '\nDone. Try: cd %s && %s run -- uptime\n' "$WORK/hello_es" "$ES"
