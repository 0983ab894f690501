# Shows a venv's program logs, newest lines last: the log files of
# supervisord's programs, or the journal of the systemd units.
#
#   sh -c "$(cat logs.sh)" es MANAGER ROOT UNIT WHICH LINES FOLLOW SCOPE
#
# MANAGER   supervisord | systemd
# ROOT      the venv (PREFIX/VENV)
# UNIT      the systemd template unit (PROJECT-VENV)
# WHICH     all, or a process number N
# LINES     how many lines of each log
# FOLLOW    1: keep following until es goes away (its SSH channel closes)
# SCOPE     user: the deploy user's units | system: the system's (sudo -n journalctl)
set -u
manager=$1 root=$2 unit=$3 which=$4 lines=$5 follow=$6 scope=${7:-user}
if [ "$manager" = systemd ]; then
    pattern="$unit@*"
    [ "$which" = all ] || pattern="$unit@$which.service"
    if [ "$scope" = system ]; then
        set -- sudo -n journalctl -u "$pattern" -n "$lines" --no-pager -o short-iso
    else
        export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"
        set -- journalctl --user -u "$pattern" -n "$lines" --no-pager -o short-iso
    fi
    [ "$follow" = 1 ] && set -- "$@" -f
else
    cd "$root/logs" 2>/dev/null || { echo "no logs: $root/logs does not exist" >&2; exit 1; }
    set --
    for f in *.log; do
        [ -f "$f" ] && [ "$f" != supervisord.log ] || continue
        # supervisord's template names process N's log PROGRAM_0N.log.
        if [ "$which" != all ]; then
            case "$f" in *_"$(printf %02d "$which")".log) ;; *) continue ;; esac
        fi
        set -- "$@" "$f"
    done
    [ $# -gt 0 ] || { echo "no program logs in $root/logs" >&2; exit 1; }
    if [ "$follow" = 1 ]; then set -- tail -v -n "$lines" -F "$@"; else set -- tail -v -n "$lines" "$@"; fi
fi
if [ "$follow" = 1 ]; then
    # A follower ends when es goes away: the SSH session that started this
    # shell (its parent) ends then, while a quiet log would never make the
    # follower write into the closed channel and die of SIGPIPE.
    session=$PPID
    "$@" &
    follower=$!
    while kill -0 "$session" 2>/dev/null && kill -0 "$follower" 2>/dev/null; do sleep 1; done
    kill "$follower" 2>/dev/null
    wait
else
    exec "$@"
fi
