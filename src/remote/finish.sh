# Ends a deploy or rollback on one venv: prunes old releases, appends the
# outcome to the ledger, releases the deploy lock.
#
#   sh -c "$(cat finish.sh)" es ROOT KEEP DEPLOY_ID LEDGER_JSON [PROTECTED_ID...]
#
# KEEP          how many releases to keep (the newest by when they were last
#               current or staged; failed ones neither count nor stay);
#               `current` and PROTECTED_ID are always kept
# DEPLOY_ID     the lock is released only when it is still this deploy's
# LEDGER_JSON   one JSON object (without its time), or empty for none
#
# Every step is tried even when one fails (a full disk must not leave the lock).
# Prints pruned=ID lines, lock=released|remains|other|none (the lock's state at
# the end: `other` is another deploy's) and current=ID (what the host runs).
set -u
root=$1 keep=$2 deploy_id=$3 ledger=$4
shift 4
cd "$root" || exit 1
status=0

current=$(readlink current 2>/dev/null)
current=${current#releases/}
n=0
for id in $(for d in releases/*/; do
    [ -f "${d}release.json" ] || continue
    t=$(stat -c %Y "${d}activated" 2>/dev/null || stat -c %Y "${d}release.json")
    echo "$t ${d#releases/}"
done | sort -rn | cut -d' ' -f2); do
    id=${id%/}
    # A failed release does not count toward KEEP; it goes unless protected.
    [ -f "releases/$id/failed" ] || n=$((n + 1))
    [ "$n" -le "$keep" ] && [ ! -f "releases/$id/failed" ] && continue
    [ "$id" = "$current" ] && continue
    for p in "$@"; do [ "$id" = "$p" ] && continue 2; done
    rm -rf "releases/$id" && echo "pruned=$id"
done

# The ledger gets whole lines only: a line written in part (a full disk) is
# cut off again, and the failure is reported.
if [ -n "$ledger" ]; then
    file=.es/releases.jsonl
    line=$(printf '{"time":"%s",%s' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${ledger#\{}")
    if [ -L $file ]; then
        echo "ledger: $root/$file is a symbolic link; not written" >&2
        status=1
    else
        size=$(stat -c %s $file 2>/dev/null || echo 0)
        want=$((size + $(printf '%s\n' "$line" | wc -c)))
        if ! err=$(printf '%s\n' "$line" 2>&1 | cat 2>&1 >> $file) ||
            [ "$(stat -c %s $file 2>/dev/null || echo 0)" != "$want" ]; then
            truncate -s "$size" $file 2>/dev/null
            echo "ledger: cannot append to $root/$file: ${err:-short write}" >&2
            status=1
        fi
    fi
fi

lock=none
if [ -d .es/lock ]; then
    lock=other
    if grep -F "\"deploy_id\":\"$deploy_id\"" .es/lock/owner >/dev/null 2>&1; then
        if rm -rf .es/lock && [ ! -d .es/lock ]; then lock=released; else lock=remains; status=1; fi
    fi
fi
echo "lock=$lock"
# What the host runs at the end, read back.
current=$(readlink current 2>/dev/null)
echo "current=${current#releases/}"
exit $status
