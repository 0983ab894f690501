# Sourced by testbed.sh: hosts whose PID 1 is a real systemd (for
# `process_manager = "systemd"`), booted with systemd-nspawn.
#
# Each one has its own root: an overlay whose lower layer is the machine's root
# file system (read only through the overlay) and whose upper layer is a tmpfs
# of its own, plus tmpfs on /tmp, /var/tmp and /run. So systemd-tmpfiles,
# which empties /tmp at boot, cleans only the host's own copy: nothing of the
# machine's shared directories is touched (tests/systemd_bed.rs proves it).
# A host's writes live in memory and vanish with `down`.
#
# Host K (1..SD_COUNT) has address $NET.(240+K), network namespace es-sdK on
# the bridge, its own ed25519 host key, the same user, key and known_hosts as
# the other hosts, lingering enabled for that user (so `systemctl --user`
# works without a login), and sshd as a unit of its systemd.

SD_COUNT=3
SD_PREFIX=es-sd
SD_UNITS_OFF=(nginx.service postgresql.service postgresql@.service apt-daily.timer
    apt-daily-upgrade.timer man-db.timer e2scrub_all.timer dpkg-db-backup.timer
    systemd-tmpfiles-clean.timer console-getty.service getty@.service)

sd_addr() { echo "$NET.$((240 + $1))"; }
sd_dir() { echo "$DIR/systemd-hosts/sd$1"; }

# The pid of the host's systemd-nspawn, when it runs.
sd_nspawn_pid() {
    local pid
    pid=$(cat "$(sd_dir "$1")/nspawn.pid" 2>/dev/null) || return 1
    pid_alive "$pid" && grep -q systemd-nspawn "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# The pid (seen from the machine) of the host's PID 1.
sd_init_pid() {
    local outer pid
    outer=$(sd_nspawn_pid "$1") || return 1
    for pid in $(pgrep -P "$outer"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && { echo "$pid"; return 0; }
    done
    return 1
}

sd_netns() {
    local k=$1 ns=$SD_PREFIX$1 v=veth-sd$1 p=veth-sd$1p
    if ip netns list | awk '{print $1}' | grep -qx "$ns" &&
        ip -n "$ns" addr show dev eth0 2>/dev/null | grep -q "inet $(sd_addr "$k")/"; then
        return 0
    fi
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$v" 2>/dev/null || true
    wait_link_gone "$v" || die "stale link $v does not go away"
    ip netns add "$ns"
    ip link add "$v" type veth peer name "$p"
    ip link set "$v" master "$BRIDGE"
    ip link set "$v" up
    ip link set "$p" netns "$ns"
    ip -n "$ns" link set "$p" name eth0
    ip -n "$ns" addr add "$(sd_addr "$k")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$BRIDGE_ADDR"
    ip neigh flush to "$(sd_addr "$k")" dev "$BRIDGE" 2>/dev/null || true
}

# Mounts the host's root (tmpfs upper over the machine's root) and writes
# what makes it this host: name, sshd, key, lingering, units turned off.
sd_root() {
    local k=$1 d root uid unit
    d=$(sd_dir "$k")
    root=$d/root
    mkdir -p "$d/rw" "$root"
    mountpoint -q "$d/rw" || mount -t tmpfs -o size=2g,mode=755 "es-sd$k" "$d/rw"
    mkdir -p "$d/rw/upper" "$d/rw/work"
    mountpoint -q "$root" ||
        mount -t overlay "es-sd$k" -o "lowerdir=/,upperdir=$d/rw/upper,workdir=$d/rw/work" "$root"
    # Everything below writes through the overlay, never into the machine's root.
    mountpoint -q "$root" || die "the root of systemd host $k is not mounted"
    echo "essd$k" >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n::1 localhost\n%s essd%s\n%s testbed-gw\n' \
        "$(sd_addr "$k")" "$k" "$BRIDGE_ADDR" >"$root/etc/hosts"
    printf '# es test bed host: no DNS\noptions timeout:1 attempts:1\n' >"$root/etc/resolv.conf"
    # The machine's own host keys are in the lower layer: this host gets its own.
    [ -f "$d/ssh_host_ed25519_key" ] ||
        ssh-keygen -q -t ed25519 -N '' -C "essd$k" -f "$d/ssh_host_ed25519_key"
    rm -f "$root"/etc/ssh/ssh_host_*
    cp "$d/ssh_host_ed25519_key" "$d/ssh_host_ed25519_key.pub" "$root/etc/ssh/"
    chmod 600 "$root/etc/ssh/ssh_host_ed25519_key"
    cp "$AUTH_KEYS" "$root/etc/ssh/es_authorized_keys"
    chmod 644 "$root/etc/ssh/es_authorized_keys"
    cat >"$root/etc/ssh/sshd_config" <<EOF
# es test bed systemd host $k
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/es_authorized_keys
UsePAM yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 200:30:400
MaxSessions 100
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
PrintMotd no
EOF
    rm -f "$root/etc/ssh/sshd_config.d/"*
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -sf /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"
    for unit in "${SD_UNITS_OFF[@]}"; do ln -sf /dev/null "$root/etc/systemd/system/$unit"; done
    # The deploy user's home is its own (the lower layer's is another host's view).
    rm -rf "${root:?}/home/$USER_NAME"
    mkdir -p "$root/home/$USER_NAME"
    uid=$(id -u "$USER_NAME")
    chown "$uid:$(id -g "$USER_NAME")" "$root/home/$USER_NAME"
    mkdir -p "$root/var/lib/systemd/linger"
    touch "$root/var/lib/systemd/linger/$USER_NAME"
}

sd_boot() {
    local k=$1 d
    d=$(sd_dir "$k")
    sd_nspawn_pid "$k" >/dev/null && return 0
    sd_netns "$k"
    sd_root "$k"
    setsid nohup systemd-nspawn --quiet -D "$d/root" --boot --register=no --keep-unit \
        --machine="essd$k" --network-namespace-path="/run/netns/$SD_PREFIX$k" \
        --tmpfs=/var/tmp --resolv-conf=off --timezone=off --link-journal=no \
        --console=passive >"$d/nspawn.log" 2>&1 </dev/null &
    echo $! >"$d/nspawn.pid"
}

sd_ssh_ok() {
    ssh -i "$KEY" -o BatchMode=yes -o ConnectTimeout=3 -o UserKnownHostsFile="$KNOWN_HOSTS" \
        -o StrictHostKeyChecking=yes "$USER_NAME@$(sd_addr "$1")" \
        'test "$(ps -o comm= -p 1)" = systemd && systemctl --user is-system-running --wait >/dev/null 2>&1; s=$?; [ $s -eq 0 ] || systemctl --user is-system-running | grep -q degraded' \
        >/dev/null 2>&1 </dev/null
}

sd_wait() {
    local k=$1 t
    for t in $(seq 120); do
        sd_ssh_ok "$k" && return 0
        sd_nspawn_pid "$k" >/dev/null || die "systemd host $k stopped booting; see $(sd_dir "$k")/nspawn.log"
        sleep 0.5
    done
    die "systemd host $k does not accept ssh; see $(sd_dir "$k")/nspawn.log"
}

# Powers the host off (nspawn passes SIGTERM on as systemd's halt signal),
# then unmounts its root and removes its network namespace.
sd_stop() {
    local k=$1 d pid t
    d=$(sd_dir "$k")
    if pid=$(sd_nspawn_pid "$k"); then
        kill "$pid" 2>/dev/null || true
        for t in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
        pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
        for t in $(seq 50); do pid_alive "$pid" || break; sleep 0.1; done
    fi
    rm -f "$d/nspawn.pid"
    mountpoint -q "$d/root" 2>/dev/null && umount -l "$d/root"
    mountpoint -q "$d/rw" 2>/dev/null && umount -l "$d/rw"
    ip netns del "$SD_PREFIX$k" 2>/dev/null || true
    ip link del "veth-sd$k" 2>/dev/null || true
}

sd_known_hosts_lines() {
    local k
    for k in $(seq "$SD_COUNT"); do
        echo "$(sd_addr "$k") $(cut -d' ' -f1,2 "$(sd_dir "$k")/ssh_host_ed25519_key.pub")"
    done
}

sd_addrs() {
    local k out=()
    for k in $(seq "$SD_COUNT"); do out+=("$(sd_addr "$k")"); done
    echo "${out[*]}"
}

sd_up_all() {
    local k
    for k in $(seq "$SD_COUNT"); do sd_boot "$k"; done
}

sd_wait_all() {
    local k
    for k in $(seq "$SD_COUNT"); do sd_wait "$k"; done
}

sd_down_all() {
    local k
    for k in $(seq "$SD_COUNT"); do sd_stop "$k"; done
    rm -rf "$DIR/systemd-hosts"
}

sd_healthy() {
    local k
    for k in $(seq "$SD_COUNT"); do
        [ -f "$(sd_dir "$k")/ssh_host_ed25519_key.pub" ] && sd_nspawn_pid "$k" >/dev/null ||
            { why="systemd host $k"; return 1; }
        grep -q "^$(sd_addr "$k") " "$KNOWN_HOSTS" || { why="systemd host $k not in known_hosts"; return 1; }
    done
}

sd_status_lines() {
    local k line ok=0
    for k in $(seq "$SD_COUNT"); do
        line="systemd host $k $(sd_addr "$k"):"
        if ! sd_nspawn_pid "$k" >/dev/null; then
            echo "$line DOWN; the end of its nspawn.log:"; ok=1
            tail -n 15 "$(sd_dir "$k")/nspawn.log" 2>/dev/null | sed 's/^/    /'
        elif sd_ssh_ok "$k"; then echo "$line up (systemd pid $(sd_init_pid "$k" || echo '?'))"
        else echo "$line ssh login or systemd FAILS"; ok=1
        fi
    done
    return $ok
}

# `systemd-restart K`: powers host K off and boots it again (its writes are lost).
cmd_sd_restart() {
    [[ ${1:-} =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$SD_COUNT" ] || die "need a systemd host number 1..$SD_COUNT"
    sd_stop "$1"
    sd_boot "$1"
    sd_wait "$1"
    log "systemd host $1 booted again"
}

# `systemd-exec K CMD...`: runs CMD as root inside systemd host K.
cmd_sd_exec() {
    [[ ${1:-} =~ ^[0-9]+$ ]] || die "usage: systemd-exec K CMD..."
    local pid
    pid=$(sd_init_pid "$1") || die "systemd host $1 is not running"
    shift
    [ $# -gt 0 ] || die "usage: systemd-exec K CMD..."
    exec nsenter -t "$pid" -m -u -i -n -p -- \
        env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
