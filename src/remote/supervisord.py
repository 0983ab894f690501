"""Drive the supervisord of a venv and judge the outcome by health checks.

Run by es on the host with the tools venv's python (it has `supervisor`):
    python -c "$(this file)" ACTION JSON

ACTION is one of
  switch  make release JSON.release current and put its programs in service:
          process by process when supervisord's configuration is unchanged (a
          host behind a balancer keeps answering), by process group when only
          program sections changed, by restarting supervisord otherwise.
          Every process must reach RUNNING and answer its health check.
  check   report every process's state and health, changing nothing.
  start   start supervisord (if it is not running) and wait for health.
  stop    stop supervisord and wait until its pid is gone.
  program JSON.do (start, stop or restart) the processes JSON.name names
          (`group:*`, `group:name` or `all`); started ones must answer their
          health check.

A refusal of supervisord (an XML-RPC fault: BAD_NAME, NO_FILE, SHUTDOWN_STATE,
...) is said in one line naming the process, supervisord's reason and the
fault's name, not as a traceback.

JSON holds: root (the venv's absolute directory), release (switch), program
(the group whose process N listens on ports[N]), ports, health {path, status
[low, high], timeout, settle}, wait (seconds for supervisord to stop or start).

supervisord acts once a second (its poll timeout) unless something arrives on
its socket; the XML-RPC calls made while waiting wake it, so states change
within a tick of 50 ms instead of a second.
"""
import configparser
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

from supervisor.options import ClientOptions
from supervisor.xmlrpc import Faults

TICK = 0.05
# Sections that configure supervisord itself: a change needs a new supervisord.
DAEMON_SECTIONS = re.compile(r"^(supervisord|unix_http_server|inet_http_server|supervisorctl|rpcinterface:.*|include)$")
FAILED_STATES = ("FATAL", "BACKOFF", "EXITED", "STOPPED", "UNKNOWN")


class Failure(Exception):
    """What went wrong, said in one line, with log lines to show."""


# supervisor's fault names, by code (SHUTDOWN_STATE, BAD_NAME, NO_FILE, ...).
FAULTS = {code: name for name, code in vars(Faults).items() if name.isupper() and isinstance(code, int)}
# spawnerr texts of supervisor's get_execv_args: retrying cannot help.
PERMANENT_SPAWNERR = ("can't find command", "command at ", "no permission to run command")


def fault_name(fault):
    return FAULTS.get(fault.faultCode, "fault %s" % fault.faultCode)


def fault_line(fault, name=None):
    """One line for supervisord's refusal `fault` (about process `name`)."""
    code = fault_name(fault)
    text = fault.faultString or ""
    detail = text.split(":", 1)[1].strip() if text.startswith(code + ":") else text
    what = name or detail or "the program"
    lines = {
        "SHUTDOWN_STATE": "supervisord is shutting down and takes no commands: run `es supervisor start VENV` once it has stopped",
        "BAD_NAME": "supervisord has no process or group %s" % (name or detail),
        "NO_FILE": "%s cannot start: %s" % (what, detail or "its command does not exist"),
        "NOT_EXECUTABLE": "%s cannot start: %s" % (what, detail or "its command is not executable"),
        "SPAWN_ERROR": "%s could not be spawned (its log and supervisord's say why)" % what,
        "ABNORMAL_TERMINATION": "%s exited as soon as it was started" % what,
        "ALREADY_STARTED": "%s is already running" % what,
        "NOT_RUNNING": "%s is not running" % what,
        "STILL_RUNNING": "%s is still running: stop it first" % what,
        "ALREADY_ADDED": "%s is already in supervisord's configuration" % what,
        "CANT_REREAD": "supervisord cannot read its configuration: %s" % detail,
        "FAILED": "supervisord failed%s: %s" % (" on " + name if name else "", detail),
        "BAD_SIGNAL": "supervisord does not know the signal %s" % detail,
    }
    line = lines.get(code, "supervisord refused%s: %s" % (" " + name if name else "", text))
    return "%s (supervisord: %s)" % (line, code)


def client(conf):
    options = ClientOptions()
    options.realize(["-c", conf], doc="")
    return options.getServerProxy()


def alive(pid):
    """Whether pid runs. A zombie has exited (its ports and sockets are released)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running_pid(conf):
    """The pid of this venv's supervisord. A pidfile can be stale and name any
    process, another venv's supervisord included: only a process whose command
    line names this configuration file counts."""
    pidfile = os.path.join(os.path.dirname(os.path.dirname(conf)), "tmp", "supervisord.pid")
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if conf.encode() in args and alive(pid) else None


def stop(conf, wait):
    pid = running_pid(conf)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait
    proxy = client(conf)
    while alive(pid):
        if time.time() > deadline:
            raise Failure("supervisord (pid %d) did not exit within %gs" % (pid, wait))
        try:
            proxy.supervisor.getState()  # wakes its poll loop
        except Exception:
            pass
        time.sleep(TICK)


def start_daemon(root, conf, wait):
    supervisord = os.path.join(root, ".es", "tools", "bin", "supervisord")
    result = subprocess.run([supervisord, "-c", conf], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise Failure("supervisord did not start: %s" % result.stdout.decode(errors="replace").strip())
    proxy = client(conf)
    deadline = time.time() + wait
    while True:
        try:
            proxy.supervisor.getState()
            return proxy
        except Exception as exc:  # its socket is not up yet
            if time.time() > deadline:
                raise Failure("supervisord does not answer after %gs: %s" % (wait, exc))
            time.sleep(TICK)


def daemon_sections(text):
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.read_string(text)
    return {s: dict(parser.items(s)) for s in parser.sections() if DAEMON_SECTIONS.match(s)}


def process_port(info, spec):
    """The port process `info` listens on, when it is one of spec's program's."""
    if info["group"] != spec["program"]:
        return None
    match = re.search(r"(\d+)$", info["name"])
    ports = spec.get("ports") or []
    if match and int(match.group(1)) < len(ports):
        return int(ports[int(match.group(1))])
    return None


# Where each log file ended before es restarted anything: only what was written
# since is shown, not an earlier run's lines.
LOG_OFFSETS = {}


def remember_logs(root):
    logs = os.path.join(root, "logs")
    for name in os.listdir(logs) if os.path.isdir(logs) else []:
        path = os.path.join(logs, name)
        try:
            LOG_OFFSETS[os.path.realpath(path)] = os.path.getsize(path)
        except OSError:
            pass


def log_tail(path, lines=12):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            start = max(LOG_OFFSETS.get(os.path.realpath(path), 0), end - 16384)
            f.seek(start)
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def supervisord_reasons(root, name):
    """supervisord's own log lines about `name` (spawnerr, exited, gave up)."""
    short = name.split(":")[-1]
    lines = log_tail(os.path.join(root, "logs", "supervisord.log"), 200)
    # Only what the running supervisord wrote, not an earlier one's lines.
    starts = [i for i, line in enumerate(lines) if "supervisord started with pid" in line]
    lines = lines[starts[-1]:] if starts else lines
    return [line for line in lines
            if short in line and re.search(r"spawnerr|exited|gave up|could not|Errno", line)][-5:]


def wait_healthy(proxy, spec, name, started_pid=None):
    """Waits until process `name` answers its health check (a program without
    a port: until it is RUNNING). A process that exits (its pid changes, or
    supervisord gives up) fails at once instead of at the deadline."""
    health = spec["health"]
    low, high = health["status"]
    began = time.time()
    deadline = began + health["timeout"]
    last = "not started"
    pid = started_pid
    own = running_pid(os.path.join(spec["root"], "etc", "supervisord.conf"))
    while True:
        info = proxy.supervisor.getProcessInfo(name)
        state = info["statename"]
        # A process that answers its health check is healthy as soon as it
        # does: the verdict does not wait for startsecs (STARTING -> RUNNING).
        if state in ("STARTING", "RUNNING") and info["pid"]:
            if pid is None:
                pid = info["pid"]
            elif info["pid"] != pid:
                raise unhealthy(spec, info, "exited and was restarted by supervisord (%s)" % last)
            port = process_port(info, spec)
            if port is None and state == "RUNNING":
                return "RUNNING (no port: state only)"
            elif port is None:
                last = state
            else:
                status, error = probe(port, health)
                # An answer counts only from a listener of this supervisord.
                holder = foreign_holder(port, own) if status is not None else None
                if holder is None and status is not None and low <= status <= high:
                    return "%s, port %d answered %d in %.2fs" % (state, port, status, time.time() - began)
                last = (holder or ("port %d answered %d (accepted %d-%d)" % (port, status, low, high)
                        if status is not None else "port %d: %s" % (port, error)))
        elif state in FAILED_STATES and (pid is not None or state in ("FATAL", "EXITED", "STOPPED")):
            raise unhealthy(spec, info, "%s: %s" % (state, info.get("description", "")))
        elif state == "BACKOFF" and (info.get("spawnerr") or "").startswith(PERMANENT_SPAWNERR):
            # supervisord would retry startretries times; the command will not appear.
            raise unhealthy(spec, info, "%s: %s" % (state, info["spawnerr"]))
        else:
            last = state
        if time.time() > deadline:
            raise unhealthy(spec, info, "not healthy after %gs: %s" % (health["timeout"], last))
        time.sleep(TICK)


def unhealthy(spec, info, reason, whole=False):
    """The failure: the log lines first, the reason last (a tail keeps it),
    after the process's name unless `whole` (the reason names it)."""
    name = "%s:%s" % (info["group"], info["name"])
    lines = ["supervisord.log: " + line for line in supervisord_reasons(spec["root"], name)]
    logfile = info.get("stdout_logfile")
    if logfile:
        # The app's last words, without app servers' routine INFO lines.
        tail = [line for line in log_tail(logfile, 60) if "[INFO]" not in line][-12:]
        lines += ["%s: %s" % (os.path.basename(logfile), line) for line in tail]
    return Failure("\n".join(lines + [reason if whole else "%s %s" % (name, reason)]))


def stays_healthy(proxy, spec, names):
    """The verdict after every process answered: each keeps its pid and keeps
    answering for health.settle seconds, and outlives supervisord's startsecs
    (RUNNING); the two waits overlap. A crash right after answering, or a
    process that never leaves STARTING within health.timeout, fails it."""
    health = spec["health"]
    window = health.get("settle", 0)
    low, high = health["status"]
    now = time.time()
    until, starting_until = now + window, now + health["timeout"]
    pids = {}
    while True:
        infos = {"%s:%s" % (i["group"], i["name"]): i for i in proxy.supervisor.getAllProcessInfo()}
        starting = []
        for name in names:
            info = infos.get(name)
            if info is None:
                continue
            pid = pids.setdefault(name, info["pid"])
            if info["statename"] not in ("STARTING", "RUNNING") or info["pid"] != pid:
                raise unhealthy(spec, info, "%s within the settle window (%gs after answering): %s"
                                % (info["statename"], window, info.get("description", "")))
            if info["statename"] == "STARTING":
                starting.append(info)
            port = process_port(info, spec)
            status, error = probe(port, health) if port is not None else (low, None)
            if status is None or not low <= status <= high:
                raise unhealthy(spec, info, "stopped answering within the settle window (%gs): %s"
                                % (window, error or "answered %d" % status))
        now = time.time()
        if now >= until and not starting:
            return
        if starting and now > starting_until:
            raise unhealthy(spec, starting[0], "still STARTING after %gs" % health["timeout"])
        time.sleep(0.25)


def restart(proxy, name, attempts=5):
    """Stops process `name` (unless it is not running) and starts it, not waiting.
    A process that had just exited is found NOT_RUNNING and may be started
    again by supervisord's autorestart before es starts it (ALREADY_STARTED):
    it may run what `current` pointed to before, so it is stopped and started
    again."""
    for attempt in range(attempts):
        try:
            proxy.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise
        try:
            proxy.supervisor.startProcess(name, False)
            return
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString or attempt == attempts - 1:
                raise


def all_names(proxy):
    infos = proxy.supervisor.getAllProcessInfo()
    return ["%s:%s" % (i["group"], i["name"]) for i in sorted(infos, key=order)]


def order(info):
    match = re.search(r"(\d+)$", info["name"])
    return (info["group"], int(match.group(1)) if match else -1, info["name"])


def stop_units(spec):
    """Units of this venv that systemd runs (a venv moving from systemd back
    to supervisord): stopped, disabled and removed before supervisord takes
    their ports. User units, or system ones through sudo."""
    unit = "%s@.service" % spec.get("unit", "")
    for directory, systemctl in ((os.path.expanduser("~/.config/systemd/user"), ["systemctl", "--user"]),
                                 ("/etc/systemd/system", ["sudo", "-n", "systemctl"])):
        path = os.path.join(directory, unit)
        if not spec.get("unit") or not os.path.exists(path):
            continue
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid())

        def run(*args):
            result = subprocess.run(systemctl + list(args), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise Failure("cannot hand %s over from systemd: %s %s: %s" % (
                    unit, " ".join(systemctl), " ".join(args), result.stdout.decode(errors="replace").strip()))
            return result.stdout.decode(errors="replace")

        listed = run("list-units", "--all", "--plain", "--no-legend", "%s@*.service" % spec["unit"])
        names = [line.split()[0] for line in listed.splitlines() if line.strip()]
        if names:
            run("disable", "--now", "--quiet", *names)
            report(", ".join(names), "stopped in systemd (supervisord takes over)")
        if systemctl[0] == "sudo":  # the unit file is root's
            removed = subprocess.run(["sudo", "-n", "rm", "-f", path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if removed.returncode != 0:
                raise Failure("cannot remove %s: %s" % (path, removed.stdout.decode(errors="replace").strip()))
        else:
            os.unlink(path)
        run("daemon-reload")


def switch(spec):
    root = spec["root"]
    conf = os.path.join(root, "etc", "supervisord.conf")
    with open(os.path.join(root, "releases", spec["release"], "supervisord.conf")) as f:
        new_text = f.read()
    try:
        with open(conf) as f:
            old_text = f.read()
    except FileNotFoundError:
        old_text = None
    pid = running_pid(conf)
    remember_logs(root)
    try:  # the lock's age tells a live deploy from a dead one: refresh it
        os.utime(os.path.join(root, ".es", "lock"))
    except OSError:
        pass
    activate(root, spec["release"])
    stop_units(spec)

    if pid is not None and old_text == new_text:
        # Process by process: the others keep serving meanwhile.
        proxy = client(conf)
        names = all_names(proxy)
        for name in names:
            restart(proxy, name)
            report(name, wait_healthy(proxy, spec, name))
        stays_healthy(proxy, spec, names)
        return
    if pid is not None and old_text is not None and daemon_sections(old_text) == daemon_sections(new_text):
        # Only programs changed: replace the changed groups, keep supervisord.
        write_atomically(conf, new_text)
        proxy = client(conf)
        [[added, changed, removed]] = proxy.supervisor.reloadConfig()
        for group in changed + removed:
            proxy.supervisor.stopProcessGroup(group, True)
            proxy.supervisor.removeProcessGroup(group)
        for group in changed + added:
            proxy.supervisor.addProcessGroup(group)
        if not (added or changed or removed):  # same programs, other text: restart them
            for name in all_names(proxy):
                restart(proxy, name)
    else:
        stop(conf, spec["wait"])
        write_atomically(conf, new_text)
        proxy = start_daemon(root, conf, spec["wait"])
    names = all_names(proxy)
    for name in names:
        report(name, wait_healthy(proxy, spec, name))
    stays_healthy(proxy, spec, names)


def wait_running(conf, wait):
    """Waits until supervisord is up and serving (not restarting after a
    reload); returns a fresh client (a connection cut by the restart is not
    reused)."""
    deadline = time.time() + wait
    while True:
        try:
            proxy = client(conf)
            if proxy.supervisor.getState()["statename"] == "RUNNING":
                return proxy
            last = "it is restarting"
        except Exception as exc:  # refused, reset, or a half-done request: not up yet
            last = str(exc) or exc.__class__.__name__
        if time.time() > deadline:
            raise Failure("supervisord is not back after %gs: %s" % (wait, last))
        time.sleep(TICK)


def start(spec):
    root = spec["root"]
    conf = os.path.join(root, "etc", "supervisord.conf")
    pid = running_pid(conf)
    if pid is None:
        remember_logs(root)  # earlier runs' lines are not this start's reasons
        start_daemon(root, conf, spec["wait"])
    else:
        print("supervisord already running (pid %d)" % pid, flush=True)
    proxy = wait_running(conf, spec["wait"])
    names = all_names(proxy)
    for name in names:
        report(name, wait_healthy(proxy, spec, name))
    stays_healthy(proxy, spec, names)


def select(proxy, pattern):
    """The processes `pattern` names: `group:*`, `group:name`, `name` or `all`."""
    infos = sorted(proxy.supervisor.getAllProcessInfo(), key=order)
    every = ["%s:%s" % (i["group"], i["name"]) for i in infos]
    if pattern == "all":
        return every
    if pattern.endswith(":*"):
        found = [n for n in every if n.split(":")[0] == pattern[:-2]]
    else:
        found = [n for n in every if pattern in (n, n.split(":")[-1])]
    if not found:
        raise Failure("supervisord has no process or group %s; it runs %s (supervisord: BAD_NAME)"
                      % (pattern, ", ".join(every) or "nothing"))
    return found


def program(spec):
    """es supervisor start|stop|restart PROGRAM: one line per process."""
    root = spec["root"]
    conf = os.path.join(root, "etc", "supervisord.conf")
    if running_pid(conf) is None:
        raise Failure("supervisord of this venv is not running: start it with `es supervisor start VENV`")
    proxy = client(conf)
    names = select(proxy, spec["name"])
    remember_logs(root)
    for name in names:
        action = spec["do"]
        try:
            if action in ("stop", "restart"):
                try:
                    proxy.supervisor.stopProcess(name, True)
                    if action == "stop":
                        report(name, "stopped")
                except xmlrpc.client.Fault as fault:
                    if fault_name(fault) != "NOT_RUNNING":
                        raise
                    if action == "stop":
                        report(name, "was not running")
            if action == "stop":
                continue
            try:
                proxy.supervisor.startProcess(name, False)
            except xmlrpc.client.Fault as fault:
                if fault_name(fault) != "ALREADY_STARTED":
                    raise
                report(name, "already running")
                continue
        except xmlrpc.client.Fault as fault:
            info = proxy.supervisor.getProcessInfo(name)
            raise unhealthy(spec, info, fault_line(fault, name), whole=True)
        report(name, wait_healthy(proxy, spec, name))


def check(spec):
    """One look at every process: state, and one health request per port."""
    root = spec["root"]
    conf = os.path.join(root, "etc", "supervisord.conf")
    result = {"supervisord": running_pid(conf), "release": current_release(root), "processes": []}
    if result["supervisord"] is not None:
        low, high = spec["health"]["status"]
        own = result["supervisord"]
        for info in sorted(client(conf).supervisor.getAllProcessInfo(), key=order):
            entry = {"name": "%s:%s" % (info["group"], info["name"]), "state": info["statename"],
                     "pid": info["pid"] or None,
                     "uptime": max(0, info["now"] - info["start"]) if info["pid"] else None}
            port = process_port(info, spec)
            if port is not None:  # an answer counts only from our own listener
                entry["holder"] = foreign_holder(port, own)
            if port is not None and info["statename"] == "RUNNING":
                status, error = probe(port, spec["health"])
                entry.update(port=port, status=status, error=error,
                             healthy=entry["holder"] is None and status is not None and low <= status <= high)
            else:
                entry["healthy"] = info["statename"] == "RUNNING"
            result["processes"].append(entry)
    print(json.dumps(result))


def main(argv):
    action, spec = argv[0], json.loads(argv[1])
    spec["root"] = os.path.realpath(spec["root"])
    try:
        if action == "switch":
            switch(spec)
        elif action == "start":
            start(spec)
        elif action == "stop":
            stop(os.path.join(spec["root"], "etc", "supervisord.conf"), spec["wait"])
        elif action == "check":
            check(spec)
        elif action == "program":
            program(spec)
        else:
            sys.exit("unknown action %r" % action)
    except Failure as failure:
        sys.exit(str(failure))
    except xmlrpc.client.Fault as fault:
        sys.exit(fault_line(fault))
    except (OSError, socket.error) as exc:
        sys.exit("supervisord: %s" % exc)


main(sys.argv[1:])
