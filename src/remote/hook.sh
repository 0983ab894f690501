# Runs one hook in DIR (its venv activated, es.env loaded) for at most SECS
# seconds: then its process group gets SIGTERM, and SIGKILL 5 s later.
# While it runs, this script's stdin is watched: es closes it when it is
# interrupted (Ctrl-C, SIGTERM), and sshd does when es is gone; the hook's
# process group is stopped the same way, so no hook outlives the deploy
# that ran it. The hook itself reads nothing (its stdin is /dev/null).
#
#   sh -c "$(cat hook.sh)" es DIR SECS HOOK
#
# The hook's exit status is returned (124 past SECS, 143 when stopped).
dir=$1 secs=$2 hook=$3
cd "$dir" || exit 1
if [ -f bin/activate ]; then
    VIRTUAL_ENV_DISABLE_PROMPT=1 . bin/activate
fi
if [ -f es.env ]; then
    set -a
    . ./es.env
    set +a
fi
# `timeout` makes a process group of its own and ends all of it.
timeout -k 5 "$secs" "${SHELL:-/bin/sh}" -c "$hook" </dev/null &
hook_pid=$!
# An asynchronous list's stdin is /dev/null: the watcher reads es's as fd 3.
exec 3<&0
(
    while read -r _ <&3; do :; done
    kill -TERM "$hook_pid"
) >/dev/null 2>&1 &
watcher=$!
wait "$hook_pid"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
