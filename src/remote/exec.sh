# Runs a command in a venv's current release: its venv activated, es.env
# (deploy.env and the secrets, 0600 on the host) loaded, cwd the release.
# A venv of the old layout (bin/python in ROOT itself) is used as it is.
#
#   sh -c "$(cat exec.sh)" es ROOT CMD [ARG...]
#
# The command's own exit status is returned.
root=$1
shift
if [ -d "$root/current" ]; then
    cd "$root/current" || exit 1
elif [ -x "$root/bin/python" ]; then
    cd "$root" || exit 1
else
    echo "es: $root has no current release (deploy it first)" >&2
    exit 127
fi
if [ -f bin/activate ]; then
    VIRTUAL_ENV_DISABLE_PROMPT=1 . bin/activate
fi
if [ -f es.env ]; then
    set -a
    . ./es.env
    set +a
fi
exec "$@"
