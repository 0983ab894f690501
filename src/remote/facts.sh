# Reads what es needs to know about one venv on a host, in one round trip,
# and optionally takes the venv's deploy lock.
#
#   sh -c "$(cat facts.sh)" es ROOT MODE [OWNER] [HELD_BY]
#
# ROOT     the venv's directory (PREFIX/VENV; a leading ~/ already expanded)
# MODE     read: only read | lock: also take the deploy lock, recording OWNER
#          (one JSON line) | break: take it even when held (--force) |
#          refresh: only mark HELD_BY's lock fresh (its age starts again) and
#          say lock=taken, or lock=busy when it is not HELD_BY's
# HELD_BY  with break: break the lock only while it is still this deploy id's
#          (two deploys breaking one dead lock cannot both take it)
#
# Prints `key=value` lines:
#   user=NAME           the deploy user (system units run the processes as it)
#   root=ABS            the venv's absolute path (missing=yes when absent)
#   current=ID          the release `current` points to
#   release=ID TAB ACTIVATED TAB RELEASE_JSON TAB BUILD_JSON TAB MANAGER
#                       one line per complete release: when it last became
#                       current (or -), its release.json, es build's record (or {}),
#                       the process manager it was staged for (systemd when it
#                       holds a unit, else supervisord)
#   lock=taken|busy|error, lock_owner=JSON, lock_age=SECONDS, lock_error=TEXT
#   failed=ID           a release whose switch failed on this host (never gone back to)
#   tools=yes           the supervisor/uv tools venv is complete
#   legacy=yes          a venv of the old layout (bin/python in ROOT itself)
#   secret=HEX          the supervisor HTTP password of this venv
#   conf_sha=HEX        sha256 of the running supervisord.conf
#   supervisord=PID     supervisord of this venv runs (pid checked against its config)
#   maintenance=JSON    the venv's site is in maintenance (es maintenance on): who, when, why
#   ledger=JSON         the last ledger lines (newest last)
set -u
root=$1
mode=$2
owner=${3:-}
held_by=${4:-}

if [ ! -d "$root" ]; then
    echo missing=yes
    [ "$mode" = read ] || [ "$mode" = refresh ] && exit 0
    mkdir -p "$root" || exit 1
fi
cd "$root" || exit 1
echo "root=$(pwd -P)"

# Nothing es writes may be redirected elsewhere by a planted symlink.
for p in .es .es/guard etc tmp logs releases shared current.new; do
    if [ -L "$p" ] && [ "$p" != current ]; then
        echo "lock=error"
        echo "lock_error=$root/$p is a symbolic link; es refuses to write through it"
        exit 0
    fi
done

if [ "$mode" = refresh ]; then
    if [ -n "$held_by" ] && grep -F "\"deploy_id\":\"$held_by\"" .es/lock/owner >/dev/null 2>&1 &&
        touch .es/lock; then
        echo lock=taken
    else
        echo lock=busy
        echo "lock_owner=$(head -c 2000 .es/lock/owner 2>/dev/null | tr -d '\n')"
    fi
    exit 0
fi
echo "user=$(id -un)"
if [ "$mode" != read ]; then
    if ! err=$(mkdir -p .es 2>&1); then
        echo lock=error
        echo "lock_error=cannot create $root/.es: $err"
    elif err=$(mkdir .es/lock 2>&1); then
        # cat, not the shell's printf: it names the cause (No space left on device).
        if err=$(printf '%s\n' "$owner" | cat 2>&1 > .es/lock/owner); then
            echo lock=taken
        else
            rm -rf .es/lock
            echo lock=error
            echo "lock_error=cannot write the deploy lock: $err"
        fi
    elif [ ! -d .es/lock ]; then
        echo lock=error
        echo "lock_error=cannot create the deploy lock: $err"
    elif [ "$mode" = break ] && [ -n "$held_by" ] &&
        ! grep -F "\"deploy_id\":\"$held_by\"" .es/lock/owner >/dev/null 2>&1; then
        echo lock=busy
    elif [ "$mode" = break ]; then
        echo "lock_broken=$(head -c 2000 .es/lock/owner 2>/dev/null | tr -d '\n')"
        # Renamed first: of two breakers, only one moves the dead lock away.
        gone=.es/lock.broken.$$
        if mv -T .es/lock "$gone" 2>/dev/null; then
            rm -rf "$gone"
        fi
        if mkdir .es/lock 2>/dev/null && printf '%s\n' "$owner" | cat > .es/lock/owner 2>/dev/null; then
            echo lock=taken
        else
            rm -rf .es/lock
            echo lock=error
            echo "lock_error=cannot take the deploy lock after breaking it"
        fi
    else
        echo lock=busy
    fi
fi
if [ -d .es/lock ] && [ ! -L .es/lock ]; then
    echo "lock_owner=$(head -c 2000 .es/lock/owner 2>/dev/null | tr -d '\n')"
    now=$(date +%s)
    then=$(stat -c %Y .es/lock 2>/dev/null || echo "$now")
    echo "lock_age=$((now - then))"
fi

if [ -L current ]; then
    target=$(readlink current)
    echo "current=${target#releases/}"
fi
for d in releases/*/; do
    [ -f "${d}release.json" ] || continue
    id=${d#releases/}
    id=${id%/}
    activated=$(cat "${d}activated" 2>/dev/null || echo -)
    build=$(tr -d '\n\t' < "${d}es-build.json" 2>/dev/null)
    [ -n "$build" ] || build='{}'
    manager=supervisord
    [ -f "${d}systemd.service" ] && manager=systemd
    printf 'release=%s\t%s\t%s\t%s\t%s\n' "$id" "$activated" "$(tr -d '\n\t' < "${d}release.json")" "$build" "$manager"
    [ -f "${d}failed" ] && echo "failed=$id"
done
[ -f .es/tools/complete ] && echo tools=yes
[ -x bin/python ] && [ ! -d releases ] && echo legacy=yes
if [ -s .es/supervisor-secret ] && [ ! -L .es/supervisor-secret ]; then
    echo "secret=$(cat .es/supervisor-secret)"
fi
if [ -f etc/supervisord.conf ]; then
    echo "conf_sha=$(sha256sum < etc/supervisord.conf | cut -d' ' -f1)"
fi
# The pidfile may be stale and name another process: only a supervisord whose
# command line names this venv's configuration counts.
if [ -f tmp/supervisord.pid ]; then
    pid=$(head -c 20 tmp/supervisord.pid | tr -dc 0-9)
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' < "/proc/$pid/cmdline" | grep -F "$(pwd -P)/etc/supervisord.conf" >/dev/null; then
        echo "supervisord=$pid"
    fi
fi
if [ -f maintenance/on.json ] && [ ! -L maintenance ]; then
    echo "maintenance=$(head -c 2000 maintenance/on.json | tr -d '\n')"
fi
if [ -f .es/releases.jsonl ]; then
    tail -n 20 .es/releases.jsonl | sed 's/^/ledger=/'
fi
exit 0
