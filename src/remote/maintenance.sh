# A venv's maintenance mode on a host running nginx: the snippet the venv's
# nginx site includes (`include ROOT/maintenance/*.conf;` in its server block)
# answers every request 503 with the page and Retry-After, while the venv's
# processes keep running. es tests and reloads nginx after each change.
#
#   sh -c "$(cat maintenance.sh)" es ROOT on PAGE RECORD RETRY_AFTER
#   sh -c "$(cat maintenance.sh)" es ROOT off
#   sh -c "$(cat maintenance.sh)" es ROOT status
#
# ROOT         the venv's directory (PREFIX/VENV; a leading ~/ already expanded)
# PAGE         an uploaded file: the rendered page, moved to ROOT/maintenance/503.html
# RECORD       one JSON line (who, when, why), kept as ROOT/maintenance/on.json
# RETRY_AFTER  seconds, for the Retry-After header
#
# Prints `key=value` lines:
#   snippet=PATH    the snippet's absolute path (on, off)
#   was=JSON        the record of the maintenance that was on (off, status)
set -u
root=$1
action=$2
dir=maintenance
case "$action" in
on | off | status) ;;
*)
    echo "es: unknown maintenance action $action" >&2
    exit 2
    ;;
esac
if [ ! -d "$root" ]; then
    [ "$action" = on ] || exit 0
    mkdir -p "$root" || exit 1
fi
cd "$root" || exit 1
abs=$(pwd -P)
case "$abs" in
*[\"\\\$\;{}]*)
    echo "es: $abs holds a character nginx would read as syntax (\" \\ \$ ; { }); maintenance needs a plainer path" >&2
    exit 1
    ;;
esac
if [ -L "$dir" ]; then
    echo "es: $root/$dir is a symbolic link; es refuses to write through it" >&2
    exit 1
fi
if [ "$action" != on ]; then
    [ -f "$dir/on.json" ] && echo "was=$(head -c 2000 "$dir/on.json" | tr -d '\n')"
    if [ "$action" = off ]; then
        rm -f "$dir/es-maintenance.conf" "$dir/on.json" || exit 1
        echo "snippet=$abs/$dir/es-maintenance.conf"
    fi
    exit 0
fi

page=$3
record=$4
retry_after=$5
case "$retry_after" in
'' | *[!0-9]*)
    echo "es: Retry-After must be a number of seconds, not $retry_after" >&2
    exit 2
    ;;
esac
mkdir -p "$dir" || exit 1
chmod 755 "$dir"
# Written beside, then renamed: nginx never reads half a file. cat, not the
# shell's printf: it names the cause (No space left on device).
chmod 644 "$page" && mv -f "$page" "$dir/503.html" || exit 1
printf '%s\n' "$record" | cat > "$dir/on.json.new" && mv -f "$dir/on.json.new" "$dir/on.json" || exit 1
cat > "$dir/es-maintenance.conf.new" <<EOF || exit 1
# es maintenance: every request of this server answers 503 with
# $abs/$dir/503.html until \`es maintenance off\` removes this file.
error_page 503 @es_maintenance;
location @es_maintenance {
    root "$abs/$dir";
    try_files /503.html =503;
    default_type text/html;
    add_header Retry-After $retry_after always;
    add_header Cache-Control "no-store" always;
}
return 503;
EOF
chmod 644 "$dir/es-maintenance.conf.new" &&
    mv -f "$dir/es-maintenance.conf.new" "$dir/es-maintenance.conf" || exit 1
echo "snippet=$abs/$dir/es-maintenance.conf"
