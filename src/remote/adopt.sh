# Keeps a venv deployed by essay (or an older es) as the release `legacy`
# before the first staged deploy: the venv at ROOT itself (bin/python in ROOT,
# no releases/), with the supervisord config it runs under.
#
#   sh -c "$(cat adopt.sh)" es ROOT PROJECT
#
# releases/legacy links to the venv's own parts (nothing moves: its scripts
# name ROOT/bin/python), keeps a copy of etc/supervisord.conf, and becomes
# `current`; its release.json carries the version of PROJECT installed there.
# Prints `adopted=VERSION`, or nothing when ROOT is not such a venv.
set -eu
root=$1 project=$2
cd "$root"
[ -x bin/python ] && [ ! -d releases ] && [ ! -e current ] || exit 0
version=$(bin/python -c 'import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except Exception:
    print("unknown")' "$project" 2>/dev/null || echo unknown)
staged_at=$(date -u -d "@$(stat -c %Y bin/python)" +%Y-%m-%dT%H:%M:%SZ)
tmp=releases/.legacy.new
rm -rf "$tmp"
mkdir -p "$tmp"
for part in bin lib lib64 include share pyvenv.cfg logs tmp; do
    if [ -e "$part" ]; then ln -s "../../$part" "$tmp/$part"; fi
done
if [ -f etc/supervisord.conf ]; then cp -p etc/supervisord.conf "$tmp/supervisord.conf"; fi
date -u +%Y-%m-%dT%H:%M:%SZ > "$tmp/activated"
printf '{"id":"legacy","project":"%s","version":"%s","profile":"legacy","staged_at":"%s","staged_by":{"user":"essay","machine":"%s"},"adopted":true}\n' \
    "$project" "$version" "$staged_at" "$(hostname)" > "$tmp/release.json"
mv -T "$tmp" releases/legacy
ln -s releases/legacy current.new
mv -T current.new current
echo "adopted=$version"
