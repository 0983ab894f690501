"""Who holds a listening port, read from the host's socket tables.

A health check's answer says only that something listens on a port; these
functions tell whether that something is a process of this venv. A TCP
socket in LISTEN state (/proc/net/tcp and tcp6, state 0A) has an inode; the
processes holding it have `socket:[INODE]` among their open files
(/proc/PID/fd). Processes of other users cannot be looked into: such a port
is said to be held by a process es cannot see.

Prepended to supervisord.py, and run alone (`python3 -c "$(this file)" ROOT
PORT...`, by `es deploy` before anything switches and by `es validate`) with
`owners_main` called at its end.
"""
import os
import sys

LISTEN = "0A"


def listening_inodes(port):
    """The inodes of the sockets listening on TCP `port` (IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def parents():
    """Every visible process's parent: {pid: ppid}."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    table[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return table


def descendants(ancestor, table):
    """`ancestor` and every process below it."""
    children = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [ancestor]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def holds(pid, inodes):
    """Whether process `pid` has one of the sockets `inodes` open."""
    wanted = {"socket:[%s]" % inode for inode in inodes}
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in wanted:
                return True
        except OSError:
            pass
    return False


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return []
    return [a.decode(errors="replace") for a in args if a]


def venv_of(pid, table):
    """The venv directory whose supervisord runs `pid` (or whose release or
    `current` its command comes from), when one does."""
    current, seen = pid, 0
    while current > 1 and seen < 64:
        args = cmdline(current)
        for i, arg in enumerate(args[:-1]):
            if arg == "-c" and args[i + 1].endswith("/etc/supervisord.conf") and "supervisord" in " ".join(args[:i]):
                return os.path.dirname(os.path.dirname(args[i + 1]))
        current, seen = table.get(current, 0), seen + 1
    for arg in cmdline(pid):
        for mark in ("/releases/", "/current/"):
            if mark in arg:
                return arg.split(mark, 1)[0]
    return None


def foreign_holder(port, own=None, root=None):
    """None when nothing listens on `port`, or when its listener is held by
    process `own` or one below it, or by a process of venv `root`; else one
    line naming who holds it."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    table = parents()
    if own and any(holds(pid, inodes) for pid in descendants(own, table)):
        return None
    pids = sorted(pid for pid in table if holds(pid, inodes))
    if not pids:
        return "port %d is held by a process es cannot see (another user's)" % port
    # The eldest holder: a master, not one of its workers.
    pid = next((p for p in pids if table.get(p) not in pids), pids[0])
    venv = venv_of(pid, table)
    if root and venv and os.path.realpath(venv) == root:
        return None
    command = " ".join(" ".join(cmdline(pid)).split())  # one line
    if len(command) > 100:
        command = command[:97] + "..."
    return "port %d is held by pid %d: %s%s" % (port, pid, command or "?", " of " + venv if venv else "")


def owners_main(argv):
    """Prints `PORT ok` or `PORT HOLDER-LINE` for each port: ok when nothing
    listens, or when the listener is a process of venv ROOT (its supervisord's
    or its releases')."""
    root = os.path.realpath(os.path.expanduser(argv[0]))
    own = None
    try:
        with open(os.path.join(root, "tmp", "supervisord.pid")) as f:
            pid = int(f.read().strip())
        if os.path.join(root, "etc", "supervisord.conf") in cmdline(pid):
            own = pid
    except (OSError, ValueError):
        pass
    for port in argv[1:]:
        line = foreign_holder(int(port), own, root)
        print("%s %s" % (port, line or "ok"), flush=True)
