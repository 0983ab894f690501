# Runs one hook in DIR (its venv activated, es.env loaded) for at most SECS
# seconds: then its process group gets SIGTERM, and SIGKILL 5 s later.
# With ON_EOF `stop` (hooks before the switch), this script's stdin is
# watched while the hook runs: es closes it when it is interrupted (Ctrl-C,
# SIGTERM), and sshd does when es is gone; the hook's process group is
# stopped the same way. With `finish` (post hooks: the host has switched)
# the hook runs to its end. The hook itself reads nothing (stdin /dev/null).
#
#   sh -c "$(cat hook.sh)" es DIR SECS ON_EOF HOOK
#
# The hook's exit status is returned (124 past SECS, 143 when stopped).
dir=$1 secs=$2 on_eof=$3 hook=$4
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
if [ "$on_eof" != stop ]; then
    wait "$hook_pid"
    exit
fi
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
