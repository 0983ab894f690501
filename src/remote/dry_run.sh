# What a dry run reads on a host, changing nothing:
#   sh -c "$(this file)" es config FILE
#       the process manager's configuration the venv runs now (empty when none)
#   sh -c "$(this file)" es compile ENV_FILE UV REQUIREMENT...
#       the pins uv resolves from the index for this host's python3; ENV_FILE
#       holds ES_INDEX_URL (0600, removed here: no password on a command
#       line); `es-no-uv` when the tools venv has no uv (installer = "pip")
action=$1
shift
case "$action" in
    config)
        cat -- "$1" 2>/dev/null
        exit 0 ;;
    compile)
        env_file=$1 uv=$2
        shift 2
        set -a
        . "$env_file"
        set +a
        rm -f "$env_file"
        [ -x "$uv" ] || { echo es-no-uv; exit 0; }
        printf '%s\n' "$@" | UV_INDEX_URL="$ES_INDEX_URL" "$uv" pip compile -q --no-header --python python3 - 2>&1 ;;
    *)
        echo "dry_run.sh: unknown action $action" >&2
        exit 2 ;;
esac
