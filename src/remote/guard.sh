# The host's side of a guarded switch around the watchdog (guard.py):
#   sh -c "$(this file)" es prepare DIR
#       a clean guard directory: no reason or fired flag of an earlier switch
#   sh -c "$(this file)" es start PYTHON DIR TOKEN WITHIN DEPLOY_ID SPEC_JSON
#       guard.py (already uploaded to DIR) started detached from the SSH
#       session (setsid, no stdin), its output appended to DIR/log
#   sh -c "$(this file)" es settle FLAG REASON [FAILED_MARK]
#       removes FLAG (and FAILED_MARK) and prints "confirmed"; when the guard
#       fired first (FLAG is gone), prints the guard's REASON instead
#   sh -c "$(this file)" es mark FILE LINE
#       the failed mark of a release: LINE, said why
action=$1
shift
case "$action" in
    prepare)
        mkdir -p "$1" && rm -f "$1/reason" "$1"/fired-* ;;
    start)
        python=$1 dir=$2
        shift 2
        setsid "$python" "$dir/guard.py" "$dir" "$@" </dev/null >>"$dir/log" 2>&1 & ;;
    settle)
        if rm "$1" 2>/dev/null; then
            [ -z "${3:-}" ] || rm -f "$3"
            echo confirmed
        else
            cat "$2" 2>/dev/null
        fi ;;
    mark)
        printf '%s\n' "$2" > "$1" ;;
    *)
        echo "guard.sh: unknown action $action" >&2
        exit 2 ;;
esac
