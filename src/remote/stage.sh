# Stages a release of a venv beside the running one, touching nothing the
# running processes use.
#
#   sh -c "$(cat stage.sh)" es ROOT ID REQUIREMENT INSTALLER VENV_COMMAND [LINK...]
#
# ROOT          the venv's absolute directory (PREFIX/VENV), locked by the caller
# ID            the release's directory name under ROOT/releases
# REQUIREMENT   PROJECT==VERSION
# INSTALLER     uv | pip | auto
# VENV_COMMAND  command creating a venv (the path is appended), or empty for the default
# LINK          shared:PATH  PATH inside the release links to ROOT/shared/PATH (deploy.shared_dirs)
#               shared:NAME=PATH  PATH links to ROOT/shared/NAME; a `*` in PATH's
#                            directories matches one directory of the release
#               dir:NAME     NAME inside the release links to ROOT/NAME (virtualenv_sub_dirs)
#               pkg:REQ      also install REQ into the release (deploy.requirements)
#               (logs and tmp always link to ROOT/logs and ROOT/tmp; etc/ is the release's own)
#
# The caller has uploaded ROOT/.es/staging/ID/ with supervisord.conf (or systemd.service), es.env,
# release.json, extra/ (deploy.extra_templates, 0600), index.env (ES_INDEX_URL,
# ES_TRUSTED_HOST, ES_INDEX_TIMEOUT; 0600, so that no password is on a command line) and, when
# the tools venv is missing, tools.py. A release is complete only once its
set -eu
root=$1 id=$2 requirement=$3 installer=$4 venv_command=$5
shift 5
cd "$root"
staging=.es/staging/$id
rel=releases/$id
tools=.es/tools

# Installers often hide the cause of a failure behind their own words: when
# the disk is (nearly) full, say so.
hinted=
disk_hint() {
    [ -z "$hinted" ] || return 0
    hinted=1
    avail=$(df -Pk "$root" 2>/dev/null | awk 'NR == 2 { print $4 }')
    if [ -n "$avail" ] && [ "$avail" -lt 20480 ]; then
        echo "No space left on device: $avail KiB free on $(df -P "$root" | awk 'NR == 2 { print $6 }')" >&2
    fi
}

fail() {
    echo "$*" >&2
    disk_hint
    exit 1
}

# The index URL (with its credentials, if any) is read from a file, never
# passed on a command line.
set -a
. "$staging/index.env"
set +a
export PIP_INDEX_URL="$ES_INDEX_URL" UV_INDEX_URL="$ES_INDEX_URL" UV_DEFAULT_INDEX="$ES_INDEX_URL"
[ -n "${ES_TRUSTED_HOST:-}" ] && export PIP_TRUSTED_HOST="$ES_TRUSTED_HOST"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 UV_NO_PROGRESS=1
# An index that does not answer costs index.timeout once, not again for each
# of the installer's own retries (uv: 3, pip: 5).
index_timeout=${ES_INDEX_TIMEOUT:-30}
export UV_HTTP_TIMEOUT="$index_timeout" UV_HTTP_RETRIES=0 PIP_TIMEOUT="$index_timeout" PIP_RETRIES=0

mkdir -p logs tmp etc shared releases .es/staging
# The lock's age tells a live deploy from a dead one: every step refreshes it.
touch .es/lock 2>/dev/null || true

# Incomplete releases left by an earlier failure are garbage.
for d in releases/*/; do
    [ -d "$d" ] && [ ! -f "${d}release.json" ] && rm -rf "$d"
done

# The tools venv made in the background (below): waited for and marked
# complete; one that failed is removed and made again next time.
tools_job=
finish_tools() {
    [ -n "$tools_job" ] || return 0
    job=$tools_job
    tools_job=
    if wait "$job" && mv "$tools.uv" "$tools/bin/uv" &&
        date -u +%Y-%m-%dT%H:%M:%SZ > "$tools/complete"; then
        return 0
    fi
    rm -rf "$tools" "$tools.uv"
    return 1
}

cleanup() {
    status=$?
    if [ $status -ne 0 ]; then
        rm -rf "$rel"
        finish_tools || true
        disk_hint
    fi
    rm -rf "$staging"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The tools venv (supervisor, and uv unless pip is asked for), made once.
# uv comes straight out of its wheel on the index (tools.py, uploaded beside
# the release's files when the tools are missing), then makes the venv and
# installs supervisor from the index, with its cache on the host, while the
# release is staged: no `python3 -m venv` and no pip. Without uv on the index
# (installer auto) or with installer pip, python3 -m venv and pip do it. The
# `complete` marker is written last: a venv cut short (a full disk, an
# interrupt) is made again from nothing.
command -v python3 >/dev/null ||
    fail "this host has no python3 on PATH ($PATH): es needs it for supervisord and the release venvs"
python=$(command -v python3)
export UV_PYTHON_DOWNLOADS=never
uv=
if [ ! -f "$tools/complete" ]; then
    rm -rf "$tools" "$tools.uv"
    if [ "$installer" != pip ] && [ -f "$staging/tools.py" ] &&
        python3 "$staging/tools.py" "$tools.uv" >/dev/null; then
        uv=$tools.uv
        { "$uv" venv -q --python "$python" "$tools" && "$uv" pip install -q --python "$tools/bin/python" supervisor; } >&2 &
        tools_job=$!
    elif [ "$installer" = uv ]; then
        fail "cannot take uv from the index for the tools venv"
    else
        [ "$installer" = auto ] && echo "uv is not available from the index; making the tools venv with pip" >&2
        python3 -m venv "$tools" >&2 || { rm -rf "$tools"; fail "cannot create the tools venv in $root/$tools"; }
        if ! "$tools/bin/pip" install -q supervisor >&2; then
            rm -rf "$tools"
            fail "cannot install supervisor into the tools venv"
        fi
        date -u +%Y-%m-%dT%H:%M:%SZ > "$tools/complete" || { rm -rf "$tools"; fail "cannot finish the tools venv"; }
    fi
elif [ "$installer" != pip ] && [ -x "$tools/bin/uv" ]; then
    uv=$tools/bin/uv
fi
[ "$installer" = uv ] && [ -z "$uv" ] && fail "installer = \"uv\", but uv is not available in $root/$tools"

if [ -n "$venv_command" ]; then
    sh -c "$venv_command \"\$1\"" es "$root/$rel" >&2
elif [ -n "$uv" ]; then
    "$uv" venv -q --python "$python" "$root/$rel" >&2
else
    python3 -m venv "$root/$rel" >&2
fi
# The project, and what deploy.requirements adds beside it (an app server).
printf '%s\n' "$requirement" > "$staging/requirements.txt"
for arg in "$@"; do
    case "$arg" in pkg:*) printf '%s\n' "${arg#pkg:}" >> "$staging/requirements.txt" ;; esac
done
# A failure names this host's Python: the installer's words name what the
# project needs (requires-python) but not what the host has.
if [ -n "$uv" ]; then
    installed() { "$uv" pip install -q --python "$rel/bin/python" -r "$staging/requirements.txt" >&2; }
else
    installed() { "$rel/bin/python" -m pip install -q -r "$staging/requirements.txt" >&2; }
fi
if ! installed 2>"$staging/install.err"; then
    cat "$staging/install.err" >&2
    grep -Eqi 'timed out|timeout' "$staging/install.err" &&
        fail "cannot install $requirement: the index did not answer within ${index_timeout}s (index.timeout)"
    fail "cannot install $requirement with this host's $("$rel/bin/python" -V 2>&1) ($(readlink -f "$rel/bin/python"))"
fi

# The release's own files: its configuration, its environment (0600), the
# wrapper that loads it, and links to what lives beside the releases.
for conf in supervisord.conf systemd.service; do   # the process manager's
    [ -f "$staging/$conf" ] && cp "$staging/$conf" "$rel/$conf"
done
(umask 077 && cp "$staging/es.env" "$rel/es.env")
cat > "$rel/bin/es-env" <<'EOF'
#!/bin/sh
# Written by es: runs a command with its release's environment
# (deploy.env, deploy.secrets and ES_*), from es.env beside bin/.
set -a
. "$(dirname "$0")/../es.env"
set +a
exec "$@"
EOF
chmod 755 "$rel/bin/es-env"
for d in logs tmp; do
    rm -rf "${rel:?}/$d"
    ln -s "$root/$d" "$rel/$d"
done
for link in "$@"; do
    case "$link" in
        shared:*=*) spec=${link#shared:} d=${spec#*=} target=shared/${spec%%=*}
            case "$d" in
                *'*'*) parent=$(cd "$rel" && for p in $(dirname "$d"); do [ -d "$p" ] && printf '%s\n' "$p"; done)
                       [ "$(printf '%s' "$parent" | grep -c '')" = 1 ] ||
                           fail "deploy.shared_dirs: $d: its directory must match one directory of the release (found: ${parent:-none})"
                       d=$parent/$(basename "$d") ;;
            esac ;;
        shared:*) d=${link#shared:} target=shared/${link#shared:} ;;
        dir:*) d=${link#dir:} target=${link#dir:} ;;
        pkg:*) continue ;;
        *) fail "bad link argument: $link" ;;
    esac
    mkdir -p "$target"
    rm -rf "${rel:?}/$d"
    mkdir -p "$(dirname "$rel/$d")"
    ln -s "$root/$target" "$rel/$d"
done
# deploy.extra_templates, after the links: a path through a shared directory
# is shared on purpose.
if [ -d "$staging/extra" ]; then
    (umask 077 && cp -R "$staging/extra/." "$rel/")
fi
# What es build recorded about the version (commit, branch), when it built it.
project=$(printf '%s' "${requirement%%==*}" | tr 'A-Z.-' 'a-z__')
for f in "$rel"/lib/python*/site-packages/*.dist-info/es-build.json; do
    [ -f "$f" ] || continue
    dist=$(basename "$(dirname "$f")" | tr 'A-Z.-' 'a-z__')
    case "$dist" in "${project}"_[0-9]*) cp "$f" "$rel/es-build.json" ;; esac
done
# The tools venv, made beside the release, is finished before the release is.
finish_tools || fail "cannot make the tools venv (uv venv, supervisor from the index) in $root/$tools"
mv "$staging/release.json" "$rel/release.json"
echo "staged=$id"
if [ -f "$rel/es-build.json" ]; then
    printf 'build=%s\n' "$(tr -d '\n' < "$rel/es-build.json")"
fi
