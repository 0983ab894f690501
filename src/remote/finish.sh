# Ends a deploy or rollback on one venv: prunes old releases, appends the
# outcome to the ledger, releases the deploy lock.
#
#   sh -c "$(cat finish.sh)" es ROOT KEEP DEPLOY_ID LEDGER_JSON [PROTECTED_ID...]
#
# KEEP          how many releases to keep (the newest by when they were last
#               current or staged); `current` and PROTECTED_ID are always kept
# DEPLOY_ID     the lock is released only when it is still this deploy's
# LEDGER_JSON   one JSON object (without its time), or empty for none
#
# Every step is tried even when one fails (a full disk must not leave the lock).
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
    n=$((n + 1))
    [ "$n" -le "$keep" ] && continue
    [ "$id" = "$current" ] && continue
    for p in "$@"; do [ "$id" = "$p" ] && continue 2; done
    rm -rf "releases/$id" && echo "pruned=$id"
done

if [ -n "$ledger" ]; then
    if [ -L .es/releases.jsonl ]; then
        echo "ledger: $root/.es/releases.jsonl is a symbolic link; not written" >&2
        status=1
    elif ! printf '{"time":"%s",%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${ledger#\{}" >> .es/releases.jsonl; then
        echo "ledger: cannot append to $root/.es/releases.jsonl" >&2
        status=1
    fi
fi

if [ -d .es/lock ] && grep -F "\"deploy_id\":\"$deploy_id\"" .es/lock/owner >/dev/null 2>&1; then
    rm -rf .es/lock || status=1
fi
exit $status
