# Asks every port of a venv from the host itself (es validate):
#   sh -c "$(this file)" es PATH TIMEOUT PORTS [HEADER...]
# PORTS is comma-separated; each HEADER is `Name: value`. Prints one line per
# port: `PORT STATUS REASON` (STATUS 0 when nothing answered). curl when the
# host has it, else python3 (redirects not followed, as curl's default).
path=$1 timeout=$2 ports=$3
shift 3
probe_python='import sys, urllib.request, urllib.error
url, timeout = sys.argv[1], float(sys.argv[2])
headers = dict(h.split(": ", 1) for h in sys.argv[3:])
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
opener = urllib.request.build_opener(NoRedirect)
try:
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        print(r.status, "ok")
except urllib.error.HTTPError as e:
    print(e.code, "ok")
except Exception as e:
    print(0, str(getattr(e, "reason", e)).replace("\n", " "))
'
probe() {
    port=$1
    shift
    url="http://127.0.0.1:$port$path"
    if command -v curl >/dev/null 2>&1; then
        for header do  # each header becomes -H HEADER
            shift
            set -- "$@" -H "$header"
        done
        code=$(curl -s -o /dev/null -m "$timeout" "$@" -w '%{http_code}' "$url" 2>/dev/null)
        rc=$?
        case $rc in
            0) echo "$port $code ok" ;;
            7) echo "$port 0 connection refused" ;;
            28) echo "$port 0 timed out after ${timeout}s" ;;
            52) echo "$port 0 empty reply" ;;
            *) echo "$port 0 curl exit $rc" ;;
        esac
    elif command -v python3 >/dev/null 2>&1; then
        echo "$port $(python3 -c "$probe_python" "$url" "$timeout" "$@" 2>&1 | tail -n 1)"
    else
        echo "$port 0 neither curl nor python3 on this host"
    fi
}
IFS=,
for port in $ports; do
    unset IFS
    probe "$port" "$@"
    IFS=,
done
