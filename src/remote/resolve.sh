# Resolves requirements from the index for this host's python3 without
# installing anything: in a temporary venv, removed after. A first deploy's
# dry run uses it (the venv has no tools venv, so no uv, yet).
#
#   sh -c "$(cat resolve.sh)" es ENV_FILE REQUIREMENT...
#
# ENV_FILE      ES_INDEX_URL, ES_TRUSTED_HOST and ES_INDEX_TIMEOUT (0600,
#               removed here: no password on a command line)
# Prints `es-python: VERSION`, then one NAME==VERSION line per package pip
# would install; when nothing resolves, pip's own words (which package needs
# what) and exit 1.
set -eu
env_file=$1
shift
set -a
. "$env_file"
set +a
rm -f "$env_file"
echo "es-python: $(python3 -c 'import platform; print(platform.python_version())')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m venv "$tmp/venv" >"$tmp/venv.log" 2>&1; then
    echo "es-no-venv: $(tail -n 1 "$tmp/venv.log")"
    exit 0
fi
export PIP_INDEX_URL="$ES_INDEX_URL" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# An index that does not answer costs index.timeout once, not five retries.
export PIP_TIMEOUT="${ES_INDEX_TIMEOUT:-30}" PIP_RETRIES=0
if [ -n "${ES_TRUSTED_HOST:-}" ]; then
    export PIP_TRUSTED_HOST="$ES_TRUSTED_HOST"
fi
"$tmp/venv/bin/python" -m pip install --dry-run --ignore-installed --quiet \
    --report "$tmp/report.json" "$@" 2>&1
"$tmp/venv/bin/python" -c '
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print("%s==%s" % (item["metadata"]["name"], item["metadata"]["version"]))
' "$tmp/report.json"
