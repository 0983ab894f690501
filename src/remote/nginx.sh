# nginx on a host, for `es nginx`, its A/B switch, drains and maintenance:
#   sh -c "$(this file)" es ACTION ARGS...   (through `sudo -n` when nginx.sudo)
# ACTION:
#   run BIN CONF [OPTION...]    BIN -c CONF OPTION... (-t, -T, -s quit)
#   start BIN CONF              starts nginx, its output through a file, not a
#                               pipe: the daemon must not keep stderr open
#   reload BIN CONF MASTER TENTHS
#                               -s reload, then waits until MASTER has a worker
#                               it did not have before (a master that cannot load
#                               the config keeps its old ones: exit 1), and
#                               briefly for the old workers to go
#   wait_exit PID TENTHS        waits for PID to exit; exit 1 if it did not
#   resolve FILE                the file FILE names, symlinks followed (fails when missing)
#   read FILE                   FILE's bytes, base64 (the transport keeps text only)
#   cat FILE                    FILE's text
#   install REAL DIR SHA256     REAL replaced by DIR/new.conf (mode and owner
#                               kept, REAL.es-bak beside it) while REAL's checksum
#                               is still SHA256; DIR removed either way
#   restore REAL                REAL.es-bak put back in place of REAL
#   discard DIR                 DIR removed
#   running PIDFILE             the pid PIDFILE names, when it is a live nginx
#   version BIN                 BIN -V
#   expand PATH                 PATH as this shell got it (a leading ~/ expanded)
set -u
action=$1
shift
case "$action" in
    run)
        bin=$1 conf=$2
        shift 2
        exec "$bin" -c "$conf" "$@" ;;
    start)
        out=$(mktemp) || exit 1
        "$1" -c "$2" </dev/null >"$out" 2>&1
        rc=$?
        cat "$out" >&2
        rm -f "$out"
        exit $rc ;;
    reload)
        bin=$1 conf=$2 master=$3 limit=$4
        workers() {
            for s in /proc/[0-9]*/stat; do
                set -- $(sed 's/^.*) //' "$s" 2>/dev/null)
                if [ "${2:-}" = "$master" ]; then d=${s%/stat}; echo "${d#/proc/}"; fi
            done
        }
        before=" $(workers | tr '\n' ' ')"
        "$bin" -c "$conf" -s reload || exit $?
        i=0
        while :; do
            new=
            for w in $(workers); do case "$before" in *" $w "*) ;; *) new=$w ;; esac; done
            [ -n "$new" ] && break
            i=$((i+1))
            if [ "$i" -gt "$limit" ]; then
                echo "nginx started no worker on the new config within $((limit / 10))s: it keeps serving the old one (see its error log)" >&2
                exit 1
            fi
            sleep 0.1
        done
        i=0
        for w in $before; do
            while [ -d "/proc/$w" ] && [ "$i" -lt 30 ]; do i=$((i+1)); sleep 0.1; done
        done
        exit 0 ;;
    wait_exit)
        i=0
        while [ -d "/proc/$1" ]; do
            i=$((i+1))
            [ "$i" -gt "$2" ] && exit 1
            sleep 0.1
        done ;;
    resolve)
        readlink -e -- "$1" ;;
    read)
        base64 < "$1" ;;
    cat)
        cat -- "$1" ;;
    install)
        set -e
        real=$1 dir=$2
        trap 'rm -rf -- "$dir" "$real.es-new"' EXIT
        if [ "$(sha256sum < "$real" | cut -d' ' -f1)" != "$3" ]; then
            echo "$real changed while es was changing it: nothing changed" >&2
            exit 1
        fi
        cp -p -- "$real" "$real.es-bak"
        cp -- "$dir/new.conf" "$real.es-new"
        chmod --reference="$real" -- "$real.es-new"
        chown --reference="$real" -- "$real.es-new" 2>/dev/null || true
        mv -f -- "$real.es-new" "$real" ;;
    restore)
        set -e
        cp -p -- "$1.es-bak" "$1.es-new"
        mv -f -- "$1.es-new" "$1" ;;
    discard)
        rm -rf -- "$1" ;;
    running)
        pid=$(cat -- "$1" 2>/dev/null | tr -dc 0-9)
        [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || exit 0
        case "$(tr '\0' ' ' < "/proc/$pid/cmdline")" in *nginx*) echo "$pid" ;; esac ;;
    version)
        "$1" -V 2>&1 ;;
    expand)
        printf '%s' "$1" ;;
    *)
        echo "nginx.sh: unknown action $action" >&2
        exit 2 ;;
esac
