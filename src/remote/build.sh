# Builds an sdist and a wheel on the build host (`[roles] build`, or
# `es build --on ROLE`). es exports and stamps the commit on its own machine,
# uploads the tree here, and takes the files back to check and upload them:
# the upload credentials never come to this host.
#
#   sh -c "$(cat build.sh)" es prepare
#   sh -c "$(cat build.sh)" es build DIR SUBDIR VERSION
#   sh -c "$(cat build.sh)" es clean DIR
#
# prepare  makes a fresh work directory ~/.es-build/work/XXXXXXXX (0700) and
#          prints dir=ITS ABSOLUTE PATH and hostname=THIS HOST'S NAME. Work
#          directories older than a day (left behind by a lost connection)
#          are removed first.
# build    DIR holds src.tar.gz (the stamped tree) and index.env (ES_INDEX_URL,
#          ES_TRUSTED_HOST; 0600, removed as soon as it is read, so that no
#          password is on a command line). Makes the build venv ~/.es-build/venv
#          once (python3 -m venv, then pip install build from the index), unpacks
#          the tree into DIR/src, builds DIR/src/SUBDIR with `python -m build`
#          into DIR/dist and prints artifact=NAME for each file made. Everything
#          it and the backend say goes to stderr. When it fails, DIR is removed.
# clean    removes DIR, which must be a work directory made by prepare.
set -eu
base=$HOME/.es-build
work=$base/work
venv=$base/venv
mode=$1
shift

fail() {
    echo "$*" >&2
    exit 1
}

# Only a directory prepare made may be built in or removed.
check_dir() {
    case "$1" in
        "$work"/*/* | "$work"/. | "$work"/..) fail "not a build work directory: $1" ;;
        "$work"/?*) ;;
        *) fail "not a build work directory: $1" ;;
    esac
}

case "$mode" in
prepare)
    mkdir -p "$work"
    chmod 700 "$base" "$work"
    find "$work" -mindepth 1 -maxdepth 1 -type d -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
    dir=$(mktemp -d "$work/XXXXXXXX")
    printf 'dir=%s\n' "$dir"
    printf 'hostname=%s\n' "$(hostname 2>/dev/null || uname -n)"
    ;;
clean)
    check_dir "$1"
    rm -rf "$1"
    ;;
build)
    dir=$1 subdir=$2 version=$3
    check_dir "$dir"
    [ -d "$dir" ] || fail "the build work directory $dir is gone"
    trap 'status=$?; [ $status -eq 0 ] || rm -rf "$dir"; exit $status' EXIT
    trap 'exit 130' INT TERM HUP
    # The index URL (with its credentials, if any) is read from a file.
    set -a
    . "$dir/index.env"
    set +a
    rm -f "$dir/index.env"
    if [ -n "${ES_INDEX_URL:-}" ]; then
        export PIP_INDEX_URL="$ES_INDEX_URL"
    fi
    if [ -n "${ES_TRUSTED_HOST:-}" ]; then
        export PIP_TRUSTED_HOST="$ES_TRUSTED_HOST"
    fi
    unset ES_INDEX_URL ES_TRUSTED_HOST
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

    # The build venv, made once. It is made aside and renamed into place, so a
    # venv cut short is never used, and two builds at once do not collide.
    if ! "$venv/bin/python" -c 'import build' 2>/dev/null; then
        echo "es: making the build venv $venv (once)" >&2
        tmp=$venv.tmp-$$
        rm -rf "$tmp"
        python3 -m venv "$tmp" >&2 || { rm -rf "$tmp"; fail "cannot make the build venv with python3 -m venv (is python3-venv installed?)"; }
        "$tmp/bin/python" -m pip install -q build >&2 || { rm -rf "$tmp"; fail "cannot pip install build into the build venv (is it on the index?)"; }
        if ! "$venv/bin/python" -c 'import build' 2>/dev/null; then
            rm -rf "$venv"
            python3 -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])' "$tmp" "$venv" 2>/dev/null || true
        fi
        rm -rf "$tmp"
        "$venv/bin/python" -c 'import build' 2>/dev/null || fail "the build venv $venv has no build module"
    fi

    mkdir "$dir/src" "$dir/dist"
    tar -xzf "$dir/src.tar.gz" -C "$dir/src" >&2 || fail "cannot unpack the tree"
    rm -f "$dir/src.tar.gz"
    project=$dir/src
    [ -z "$subdir" ] || project=$dir/src/$subdir
    cd "$project"
    # For setuptools-scm projects: the tree has no .git to read a version from.
    SETUPTOOLS_SCM_PRETEND_VERSION=$version "$venv/bin/python" -m build --outdir "$dir/dist" "$project" >&2 \
        || fail "the build backend failed (python -m build, in $project)"
    for f in "$dir/dist"/*; do
        if [ -f "$f" ]; then
            printf 'artifact=%s\n' "${f##*/}"
        fi
    done
    ;;
*)
    fail "unknown mode: $mode"
    ;;
esac
