#!/usr/bin/env bash
# Test bed for es: N "hosts" (network + mount + uts namespaces, each with its own
# sshd) on a bridge, plus a private PyPI index (pypiserver) on the bridge address.
# Run as root on Debian 12. See testbed/README.md.
set -euo pipefail

DIR=${ES_TESTBED_DIR:-/var/tmp/es-testbed}
CACHE=${ES_TESTBED_CACHE:-/var/tmp/es-testbed-cache}
PY=/usr/bin/python3
SSHD=/usr/sbin/sshd
USER_NAME=deploy
BRIDGE=esbr0
NET=10.213.0
BRIDGE_ADDR=$NET.1
NS_PREFIX=es-h
INDEX_PORT=8080
JUMP_NET=10.214.0   # `jump`: a /30 between two hosts, unreachable from here
VENV=$DIR/pypiserver-venv
PKGS=$DIR/packages
KEY=$DIR/id_ed25519
AUTH_KEYS=$DIR/authorized_keys
KNOWN_HOSTS=$DIR/known_hosts
ENV_FILE=$DIR/testbed.env
BASELINE=$DIR/packages.baseline
INDEX_PID=$DIR/pypiserver.pid
INDEX_LOG=$DIR/pypiserver.log
HTPASSWD=$DIR/htpasswd
PASSWORD_FILE=$DIR/index-password
INDEX_USER=uploader
SUDOERS=/etc/sudoers.d/es-testbed
# What the hosts can install (they reach nothing but the bridge).
PRELOAD=(supervisor setuptools wheel uv django gunicorn build)
SERVER_PKGS=(pypiserver passlib 'bcrypt<4.1' waitress)

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

host_addr() { echo "$NET.$((10 + $1))"; }
host_dir() { echo "$DIR/hosts/h$1"; }
host_pidfile() { echo "$DIR/hosts/h$1/sshd.pid"; }

ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=3
          -o LogLevel=ERROR)

# Current host count from the env file (0 when there is none).
current_count() {
    if [ -f "$ENV_FILE" ]; then
        sed -n 's/^ES_TB_COUNT=//p' "$ENV_FILE" | head -n1
    else
        echo 0
    fi
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# pid of host I's sshd listener, if it is alive and inside the host's netns.
sshd_pid() {
    local pf pid
    pf=$(host_pidfile "$1")
    [ -f "$pf" ] || return 1
    pid=$(cat "$pf" 2>/dev/null) || return 1
    pid_alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] || return 1
    [ "$(ip netns identify "$pid" 2>/dev/null)" = "$NS_PREFIX$1" ] || return 1
    echo "$pid"
}

index_pid() {
    local pid
    [ -f "$INDEX_PID" ] || return 1
    pid=$(cat "$INDEX_PID" 2>/dev/null) || return 1
    pid_alive "$pid" || return 1
    # A stale pid file can name anyone's process once pids wrap.
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q pypi-server || return 1
    echo "$pid"
}

index_answers() { curl -sf -o /dev/null --max-time 5 "http://$BRIDGE_ADDR:$INDEX_PORT/simple/"; }

# sshd of host I answers with its banner (cheap: no key exchange).
banner_ok() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/22" && head -c 7 <&3' _ "$(host_addr "$1")" 2>/dev/null |
        grep '^SSH-2.0' >/dev/null
}

ssh_ok() {
    ssh -i "$KEY" -o UserKnownHostsFile="$KNOWN_HOSTS" "${ssh_opts[@]}" \
        "$USER_NAME@$(host_addr "$1")" true </dev/null >/dev/null 2>&1
}

# ---------------------------------------------------------------- steps of `up`

# shellcheck source=testbed/systemd-hosts.sh
. "$(dirname "${BASH_SOURCE[0]}")/systemd-hosts.sh"

step_packages() {
    local missing=() p
    for p in openssh-server openssh-client python3-venv python3-pip iproute2 curl nginx-light sudo systemd systemd-container; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
    done
    command -v nsenter >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [ -x "$PY" ] || die "$PY missing"
    [ -x "$SSHD" ] || die "$SSHD missing"
}

step_keys_user() {
    mkdir -p "$DIR" "$CACHE"
    chmod 755 "$DIR"
    if [ ! -f "$KEY" ] || [ ! -f "$KEY.pub" ]; then
        rm -f "$KEY" "$KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C es-testbed-client -f "$KEY"
    fi
    cp "$KEY.pub" "$AUTH_KEYS.tmp" && mv "$AUTH_KEYS.tmp" "$AUTH_KEYS"
    chmod 644 "$AUTH_KEYS"
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        useradd -M -d "/home/$USER_NAME" -s /bin/bash "$USER_NAME"
    fi
    usermod -p '*' "$USER_NAME"
    # Passwordless sudo for the test user, for `es run --sudo` and `[nginx] sudo`.
    if [ ! -f "$SUDOERS" ]; then
        echo "$USER_NAME ALL=(ALL) NOPASSWD: ALL" > "$SUDOERS.tmp"
        chmod 440 "$SUDOERS.tmp"
        mv "$SUDOERS.tmp" "$SUDOERS"
    fi
    mkdir -p "/home/$USER_NAME"
    chown "$USER_NAME:" "/home/$USER_NAME"
    mkdir -p /run/sshd && chmod 755 /run/sshd
}

step_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr show dev "$BRIDGE" | grep "inet $BRIDGE_ADDR/24" >/dev/null ||
        ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# Wait until a link is gone (a deleted netns drops its veth asynchronously).
wait_link_gone() {
    local t
    for t in $(seq 50); do
        ip link show "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    return 1
}

kill_netns() {
    local ns=$1 pids t
    ip netns list | awk '{print $1}' | grep -x "$ns" >/dev/null || return 0
    for t in $(seq 50); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
}

netns_ok() {
    local i=$1 ns=$NS_PREFIX$1
    ip netns list | awk '{print $1}' | grep -x "$ns" >/dev/null || return 1
    ip link show "veth-es$i" 2>/dev/null | grep "master $BRIDGE" >/dev/null || return 1
    ip -n "$ns" -4 addr show dev eth0 2>/dev/null | grep "inet $(host_addr "$i")/24" >/dev/null || return 1
    ip -n "$ns" route show default 2>/dev/null | grep "via $BRIDGE_ADDR" >/dev/null || return 1
}

step_netns() {
    local i=$1 ns=$NS_PREFIX$1 v=veth-es$1 p=veth-es$1p
    netns_ok "$i" && return 0
    log "creating netns $ns"
    kill_netns "$ns"
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$v" 2>/dev/null || true
    ip link del "$p" 2>/dev/null || true
    wait_link_gone "$v" || die "stale link $v does not go away"
    wait_link_gone "$p" || die "stale link $p does not go away"
    ip netns add "$ns"
    ip link add "$v" type veth peer name "$p"
    ip link set "$v" master "$BRIDGE"
    ip link set "$v" up
    ip link set "$p" netns "$ns"
    ip -n "$ns" link set "$p" name eth0
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$BRIDGE_ADDR"
    # A recreated host has a new MAC: drop stale ARP entries for its address.
    local other
    ip neigh flush to "$(host_addr "$i")" dev "$BRIDGE" 2>/dev/null || true
    for other in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX[0-9]*$" || true); do
        ip -n "$other" neigh flush to "$(host_addr "$i")" 2>/dev/null || true
    done
    rm -f "$(host_pidfile "$i")"   # any old sshd died with the namespace
}

write_sshd_config() {
    local i=$1 hd
    hd=$(host_dir "$i")
    cat >"$hd/etc/sshd_config.tmp" <<EOF
# es test bed host $i
Port 22
ListenAddress 0.0.0.0
HostKey $hd/etc/ssh_host_ed25519_key
PidFile $hd/sshd.pid
AuthorizedKeysFile $AUTH_KEYS
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 200:30:400
MaxSessions 100
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
PrintMotd no
EOF
    mv "$hd/etc/sshd_config.tmp" "$hd/etc/sshd_config"
}

prepare_host() {
    local i=$1 hd
    hd=$(host_dir "$i")
    mkdir -p "$hd/home" "$hd/tmp" "$hd/etc"
    chown "$USER_NAME:" "$hd/home"
    chmod 755 "$hd/home"
    chmod 1777 "$hd/tmp"
    if [ ! -f "$hd/etc/ssh_host_ed25519_key" ] || [ ! -f "$hd/etc/ssh_host_ed25519_key.pub" ]; then
        rm -f "$hd/etc/ssh_host_ed25519_key" "$hd/etc/ssh_host_ed25519_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "esh$i" -f "$hd/etc/ssh_host_ed25519_key"
    fi
    write_sshd_config "$i"
    # Own name service files (bind-mounted over /etc/hosts and /etc/resolv.conf):
    # the machine's DNS server is unreachable from a host, and lookups of it
    # (e.g. getfqdn in python's http.server) would hang until they time out.
    # Written in place, as a running host has them bind-mounted.
    printf '127.0.0.1 localhost\n::1 localhost\n%s esh%s\n%s testbed-gw\n' \
        "$(host_addr "$i")" "$i" "$BRIDGE_ADDR" >"$hd/etc/hosts"
    printf '# es test bed host: no DNS\noptions timeout:1 attempts:1\n' >"$hd/etc/resolv.conf"
    chmod 644 "$hd/etc/hosts" "$hd/etc/resolv.conf"
}

start_sshd() {
    local i=$1 hd
    hd=$(host_dir "$i")
    sshd_pid "$i" >/dev/null && return 0
    rm -f "$(host_pidfile "$i")"
    "$SSHD" -t -f "$hd/etc/sshd_config" || die "bad sshd_config for host $i"
    setsid nohup ip netns exec "$NS_PREFIX$i" unshare -m -u --propagation private sh -c \
        "hostname esh$i && mount --bind '$hd/home' /home/$USER_NAME && mount --bind '$hd/tmp' /tmp && mount --bind '$hd/etc/hosts' /etc/hosts && mount --bind '$hd/etc/resolv.conf' /etc/resolv.conf && exec $SSHD -D -f '$hd/etc/sshd_config' -E '$hd/sshd.log'" \
        >>"$hd/start.log" 2>&1 </dev/null &
}

stop_sshd() {
    local i=$1 pid t
    if pid=$(sshd_pid "$i"); then
        kill "$pid" 2>/dev/null || true
        for t in $(seq 50); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$(host_pidfile "$i")"
}

wait_sshd_pidfile() {
    local i=$1 t
    for t in $(seq 100); do
        sshd_pid "$i" >/dev/null && return 0
        sleep 0.1
    done
    return 1
}

step_known_hosts() {
    local i n=$1 tmp=$KNOWN_HOSTS.tmp
    : >"$tmp"
    for i in $(seq "$n"); do
        echo "$(host_addr "$i") $(cut -d' ' -f1,2 "$(host_dir "$i")/etc/ssh_host_ed25519_key.pub")" >>"$tmp"
    done
    sd_known_hosts_lines >>"$tmp"
    chmod 644 "$tmp"
    mv "$tmp" "$KNOWN_HOSTS"
}

step_index() {
    export PIP_CACHE_DIR=$CACHE/pip
    if [ ! -x "$VENV/bin/pypi-server" ]; then
        log "creating pypiserver venv"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install -q "${SERVER_PKGS[@]}"
    fi
    # Preload the index from a download cache that survives `down`.
    local stamp=$CACHE/download.stamp want
    want=$(printf '%s\n' "${PRELOAD[@]}")
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ -z "$(ls -A "$CACHE/dist" 2>/dev/null)" ]; then
        log "downloading packages for the index: ${PRELOAD[*]}"
        rm -rf "$CACHE/dist"
        mkdir -p "$CACHE/dist"
        "$VENV/bin/pip" download -q -d "$CACHE/dist" "${PRELOAD[@]}"
        echo "$want" >"$stamp"
    fi
    mkdir -p "$PKGS"
    if [ ! -f "$BASELINE" ]; then
        cp -n "$CACHE/dist"/* "$PKGS"/
        (cd "$PKGS" && ls -1) >"$BASELINE"
    else
        # restore any baseline file that went missing
        local f
        while IFS= read -r f; do
            [ -e "$PKGS/$f" ] || cp "$CACHE/dist/$f" "$PKGS/$f" 2>/dev/null || true
        done <"$BASELINE"
    fi
    if [ ! -s "$PASSWORD_FILE" ]; then
        (umask 077; "$PY" -c 'import secrets; print(secrets.token_hex(16))' >"$PASSWORD_FILE")
    fi
    chmod 600 "$PASSWORD_FILE"
    if [ ! -s "$HTPASSWD" ]; then
        ES_TB_PW=$(cat "$PASSWORD_FILE") "$VENV/bin/python" - "$HTPASSWD" "$INDEX_USER" <<'EOF'
import os, sys
from passlib.apache import HtpasswdFile
ht = HtpasswdFile(sys.argv[1], new=True, default_scheme="bcrypt")
ht.set_password(sys.argv[2], os.environ["ES_TB_PW"])
ht.save()
EOF
    fi
    if index_pid >/dev/null && index_answers; then
        return 0
    fi
    stop_index
    log "starting pypiserver"
    setsid nohup "$VENV/bin/pypi-server" run -p "$INDEX_PORT" -i 0.0.0.0 -a update --disable-fallback \
        -P "$HTPASSWD" "$PKGS" >>"$INDEX_LOG" 2>&1 </dev/null &
    echo $! >"$INDEX_PID"
    local t
    for t in $(seq 150); do
        index_answers && return 0
        index_pid >/dev/null || die "pypiserver exited; see $INDEX_LOG"
        sleep 0.2
    done
    die "pypiserver does not answer; see $INDEX_LOG"
}

stop_index() {
    local pid t
    if pid=$(index_pid); then
        kill "$pid" 2>/dev/null || true
        for t in $(seq 50); do
            pid_alive "$pid" || break
            sleep 0.1
        done
        pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$INDEX_PID"
}

# Bounded wait until every host accepts a real login (checked in parallel).
wait_ssh_all() {
    local n=$1 i t pending failed tmpd pids
    pending=$(seq "$n")
    tmpd=$(mktemp -d)
    for t in $(seq 30); do
        rm -f "$tmpd"/*
        pids=()
        for i in $pending; do ( ssh_ok "$i" || touch "$tmpd/$i" ) & pids+=($!); done
        wait "${pids[@]}"
        failed=$(ls "$tmpd" | sort -n)
        if [ -z "$failed" ]; then rm -rf "$tmpd"; return 0; fi
        pending=$failed
        sleep 1
    done
    rm -rf "$tmpd"
    die "sshd not reachable on hosts: $(echo $pending)"
}

write_env() {
    local n=$1 i hosts=()
    for i in $(seq "$n"); do hosts+=("$(host_addr "$i")"); done
    cat >"$ENV_FILE.tmp" <<EOF
ES_TB_DIR=$DIR
ES_TB_HOSTS="${hosts[*]}"
ES_TB_COUNT=$n
ES_TB_USER=$USER_NAME
ES_TB_KEY=$KEY
ES_TB_KNOWN_HOSTS=$KNOWN_HOSTS
ES_TB_INDEX_URL=http://$BRIDGE_ADDR:$INDEX_PORT/simple/
ES_TB_UPLOAD_URL=http://$BRIDGE_ADDR:$INDEX_PORT/
ES_TB_INDEX_USER=$INDEX_USER
ES_TB_INDEX_PASSWORD=$(cat "$PASSWORD_FILE")
ES_TB_NETNS_PREFIX=$NS_PREFIX
ES_TB_BRIDGE_ADDR=$BRIDGE_ADDR
ES_TB_PACKAGES=$PKGS
ES_TB_SYSTEMD_HOSTS="$(sd_addrs)"
EOF
    chmod 600 "$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- health

# Quiet health check of everything for N hosts; 0 when all is healthy.
healthy() {
    local n=$1 i
    why=
    [ -f "$ENV_FILE" ] && [ -f "$KEY" ] && [ -f "$KNOWN_HOSTS" ] && [ -f "$BASELINE" ] || { why="state files missing"; return 1; }
    [ -f "$SUDOERS" ] && command -v sudo >/dev/null || { why="no sudo for $USER_NAME"; return 1; }
    ip addr show dev "$BRIDGE" 2>/dev/null | grep "inet $BRIDGE_ADDR/24" >/dev/null || { why="bridge down"; return 1; }
    { index_pid >/dev/null && index_answers; } || { why="pypiserver down"; return 1; }
    [ "$(wc -l <"$KNOWN_HOSTS")" -ge "$n" ] || { why="known_hosts short"; return 1; }
    for i in $(seq "$n"); do
        netns_ok "$i" || { why="netns of host $i"; return 1; }
        sshd_pid "$i" >/dev/null || { why="sshd of host $i"; return 1; }
    done
    # every sshd answers; one real login proves key, user and known_hosts
    local pids=() rc=0
    for i in $(seq "$n"); do banner_ok "$i" & pids+=($!); done
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    [ $rc -eq 0 ] || { why="an sshd does not answer"; return 1; }
    ssh_ok 1 || { why="no ssh login on host 1"; return 1; }
    grep -q '^ES_TB_SYSTEMD_HOSTS=' "$ENV_FILE" || { why="env file without systemd hosts"; return 1; }
    sd_healthy
}

cmd_status() {
    local n i ok=0 line
    n=$(current_count)
    echo "state dir: $DIR"
    if [ "$n" -eq 0 ]; then echo "env file: missing"; ok=1; n=0; else echo "env file: $ENV_FILE ($n hosts)"; fi
    if ip addr show dev "$BRIDGE" 2>/dev/null | grep "inet $BRIDGE_ADDR/24" >/dev/null; then
        echo "bridge $BRIDGE: up"
    else
        echo "bridge $BRIDGE: DOWN"; ok=1
    fi
    if index_pid >/dev/null && index_answers; then
        echo "pypiserver: up (pid $(index_pid), $(ls "$PKGS" | wc -l) files)"
    else
        echo "pypiserver: DOWN"; ok=1
    fi
    local tmpd
    tmpd=$(mktemp -d)
    local pids=()
    for i in $(seq "$n"); do ( ssh_ok "$i" && touch "$tmpd/$i" ) & pids+=($!); done
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
    for i in $(seq "$n"); do
        line="host $i $(host_addr "$i"):"
        if ! netns_ok "$i"; then echo "$line netns DOWN"; ok=1; continue; fi
        if ! sshd_pid "$i" >/dev/null; then echo "$line sshd DOWN"; ok=1; continue; fi
        if [ -e "$tmpd/$i" ]; then
            echo "$line up (sshd pid $(sshd_pid "$i"))"
        else
            echo "$line ssh login FAILS"; ok=1
        fi
    done
    rm -rf "$tmpd"
    sd_status_lines || ok=1
    [ $ok -eq 0 ] && echo "status: healthy" || echo "status: NOT healthy"
    return $ok
}

# ---------------------------------------------------------------- commands

cmd_up() {
    local n=${1:-60} cur i t0=$SECONDS
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "bad host count: $n"
    cur=$(current_count)
    why=
    if [ "${cur:-0}" -ge "$n" ] && healthy "$cur"; then
        log "already up with $cur hosts"
        echo "$ENV_FILE"
        return 0
    fi
    [ "${cur:-0}" -gt 0 ] && log "not healthy (${why:-fewer than $n hosts}); repairing"
    # never shrink a bed others may be using
    [ "${cur:-0}" -gt "$n" ] && n=$cur
    step_packages
    step_keys_user
    step_bridge
    for i in $(seq "$n"); do
        step_netns "$i"
        prepare_host "$i"
        start_sshd "$i"
    done
    sd_up_all
    step_known_hosts "$n"
    step_index
    for i in $(seq "$n"); do
        wait_sshd_pidfile "$i" || die "sshd of host $i did not start; see $(host_dir "$i")/start.log and sshd.log"
    done
    wait_ssh_all "$n"
    sd_wait_all
    write_env "$n"
    log "up with $n hosts in $((SECONDS - t0))s"
    echo "$ENV_FILE"
}

cmd_down() {
    local ns l
    stop_index
    sd_down_all
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX[0-9]*$" || true); do
        kill_netns "$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
    for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^veth-es[0-9]*p\?$' || true); do
        ip link del "$l" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    ip route del unreachable "$JUMP_NET.0/30" 2>/dev/null || true
    rm -f "$SUDOERS"
    case "$DIR" in
        /|"") die "refusing to remove state dir '$DIR'" ;;
    esac
    rm -rf "$DIR"
    log "down (download cache kept in $CACHE)"
}

host_index_arg() {
    [[ ${1:-} =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] || die "need a host number"
    [ -d "$(host_dir "$1")" ] || die "no host $1"
}

cmd_stop_sshd() {
    host_index_arg "${1:-}"
    stop_sshd "$1"
    log "sshd of host $1 stopped"
}

cmd_start_sshd() {
    host_index_arg "${1:-}"
    netns_ok "$1" || step_netns "$1"
    prepare_host "$1"
    start_sshd "$1"
    wait_sshd_pidfile "$1" || die "sshd of host $1 did not start"
    local t
    for t in $(seq 40); do ssh_ok "$1" && break; sleep 0.25; done
    ssh_ok "$1" || die "host $1 does not accept ssh"
    log "sshd of host $1 running (pid $(sshd_pid "$1"))"
}

cmd_exec() {
    host_index_arg "${1:-}"
    local i=$1 pid
    shift
    [ $# -gt 0 ] || die "usage: exec I CMD..."
    pid=$(sshd_pid "$i") || die "sshd of host $i is not running (start-sshd $i)"
    # A host's PATH, not the caller's (which may start with a pyenv python).
    exec nsenter -t "$pid" -n -m -u -- \
        env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# `jump B T`: host T also answers SSH on an address only host B can reach,
# for ProxyJump tests: a veth between B and T (10.214.0.1 in B, 10.214.0.2 in
# T, a subnet nothing else routes to) and a second sshd of T listening there
# only, with T's host key. Idempotent; host T's usual sshd is untouched, so
# `status` stays healthy. Prints the address.
cmd_jump() {
    host_index_arg "${1:-}"
    host_index_arg "${2:-}"
    local b=$1 t=$2 hd pid cfg
    hd=$(host_dir "$t")
    cfg=$hd/etc/sshd_config.jump
    if ! ip -n "$NS_PREFIX$t" addr show dev vjump 2>/dev/null | grep "inet $JUMP_NET.2/" >/dev/null; then
        ip -n "$NS_PREFIX$b" link del vjump 2>/dev/null || true
        ip -n "$NS_PREFIX$t" link del vjump 2>/dev/null || true
        ip link del vjump-b 2>/dev/null || true
        ip link add vjump-b type veth peer name vjump-t
        ip link set vjump-b netns "$NS_PREFIX$b"
        ip link set vjump-t netns "$NS_PREFIX$t"
        ip -n "$NS_PREFIX$b" link set vjump-b name vjump
        ip -n "$NS_PREFIX$t" link set vjump-t name vjump
        ip -n "$NS_PREFIX$b" addr add "$JUMP_NET.1/30" dev vjump
        ip -n "$NS_PREFIX$t" addr add "$JUMP_NET.2/30" dev vjump
        ip -n "$NS_PREFIX$b" link set vjump up
        ip -n "$NS_PREFIX$t" link set vjump up
    fi
    # From here, the subnet is unreachable at once, locally: nothing leaves the machine.
    ip route replace unreachable "$JUMP_NET.0/30" 2>/dev/null || true
    sed -e "s/^ListenAddress .*/ListenAddress $JUMP_NET.2/" \
        -e "s|^PidFile .*|PidFile $hd/sshd-jump.pid|" "$hd/etc/sshd_config" > "$cfg"
    pid=$(cat "$hd/sshd-jump.pid" 2>/dev/null || true)
    if ! pid_alive "$pid"; then
        pid=$(sshd_pid "$t") || die "sshd of host $t is not running"
        nsenter -t "$pid" -n -m -u -- "$SSHD" -f "$cfg" -E "$hd/sshd-jump.log" ||
            die "the jump sshd of host $t did not start; see $hd/sshd-jump.log"
    fi
    echo "$JUMP_NET.2"
}

cmd_reset_index() {
    [ -f "$BASELINE" ] || die "no baseline (is the test bed up?)"
    local f removed=0
    for f in "$PKGS"/*; do
        [ -e "$f" ] || continue
        if ! grep -qxF "$(basename "$f")" "$BASELINE"; then
            rm -f "$f"
            removed=$((removed + 1))
        fi
    done
    log "removed $removed file(s) from the index"
}

usage() {
    cat <<EOF
usage: $0 COMMAND
  up [N]          set up (or repair) the test bed with N hosts (default 60)
  down            tear everything down (keeps the download cache $CACHE)
  status          show the state of each part; exit 0 only when healthy
  stop-sshd I     stop host I's sshd
  start-sshd I    (re)start host I's sshd
  exec I CMD...   run CMD as root in host I's net/mount/uts namespaces
  jump B T        host T answers SSH on an address only host B reaches (ProxyJump tests)
  systemd-restart K   power systemd host K off and boot it again
  systemd-exec K CMD... run CMD as root inside systemd host K
  reset-index     remove every index file not in the preloaded baseline
  env             print the path of the env file
EOF
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        up) need_root; cmd_up "$@" ;;
        down) need_root; cmd_down ;;
        status) cmd_status ;;
        stop-sshd) need_root; cmd_stop_sshd "$@" ;;
        start-sshd) need_root; cmd_start_sshd "$@" ;;
        exec) need_root; cmd_exec "$@" ;;
        systemd-restart) need_root; cmd_sd_restart "$@" ;;
        systemd-exec) need_root; cmd_sd_exec "$@" ;;
        reset-index) cmd_reset_index ;;
        jump) need_root; cmd_jump "$@" ;;
        env) echo "$ENV_FILE" ;;
        -h|--help|help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
