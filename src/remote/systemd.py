"""Drive a venv's processes as systemd units and judge them by health checks.

The systemd side of the process-manager boundary: the same actions, JSON and
output as supervisord.py, so the deploy engine does not care which one runs.
Run by es on the host with the tools venv's python:
    python -c "$(this file)" ACTION JSON

The processes are instances of one template unit, UNIT@.service in the deploy
user's manager (~/.config/systemd/user), or with scope "system" in the
system's (/etc/systemd/system, driven through `sudo -n`, the processes run as
the deploy user by the unit's User=), UNIT being PROJECT-VENV; instance N
listens on the venv's port prefix followed by N. The unit points at the venv's
`current` link, so a switch is `current` + a restart of each instance, one at a
time, each health-checked before the next.

ACTION is one of
  switch  make release JSON.release current and put its instances in service;
          a changed unit file is installed and systemd reloaded first. A
          venv that supervisord runs is handed over process by process
          (supervisord's process N stops, instance N starts), and
          supervisord is stopped once every instance is healthy.
  check   report every instance's state and health, changing nothing.
  start   start every instance (they are enabled: they come back at boot).
  stop    stop every instance.
  program JSON.do (start, stop or restart) the instances JSON.name names
          (`all`, `UNIT@N`, or `N`).

JSON holds: root (the venv's absolute directory), release (switch), unit,
scope (user, the default, or system), count (instances), ports,
health {path, status [low, high], timeout, headers}, wait (seconds for a stop).
"""
import json
import os
import pwd
import re
import subprocess
import sys
import time

TICK = 0.1
UNIT_DIRS = {"user": os.path.expanduser("~/.config/systemd/user"), "system": "/etc/systemd/system"}
# The spec's scope, set by main: whose systemd runs the units.
SCOPE = "user"
STATES = {"active": "RUNNING", "activating": "STARTING", "deactivating": "STOPPING",
          "failed": "FATAL", "inactive": "STOPPED", "reloading": "RUNNING"}


class Failure(Exception):
    """What went wrong, said in one line, with journal lines to show."""


def user():
    return pwd.getpwuid(os.getuid()).pw_name


def command(tool, *args):
    """TOOL (systemctl or journalctl) ARGS as the scope wants it: `TOOL --user`
    in the deploy user's manager, `sudo -n TOOL` in the system's."""
    if SCOPE == "system":
        return ["sudo", "-n", tool] + list(args)
    return [tool, "--user"] + list(args)


def tool_env():
    """The environment of systemctl and journalctl: a user manager is found
    through XDG_RUNTIME_DIR."""
    env = dict(os.environ)
    if SCOPE != "system":
        env.setdefault("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid())
    return env


# What sudo says when `sudo -n` would have to ask for a password (or may not run it).
SUDO_REFUSALS = ("a password is required", "a terminal is required", "is not allowed to execute",
                 "may not run sudo", "is not in the sudoers file")


def sudo_refused(text):
    """The one line to say when sudo refused, or None."""
    if SCOPE != "system" or not any(refusal in text for refusal in SUDO_REFUSALS):
        return None
    name = user()
    return ("sudo -n asks %s for a password on this host, and system units (deploy.systemd.scope = "
            "\"system\") are driven through sudo: add to /etc/sudoers.d/ the line "
            "`%s ALL=(root) NOPASSWD: /usr/bin/systemctl, /usr/bin/journalctl, /usr/bin/install` "
            "(sudo said: %s)" % (name, name, text.splitlines()[0] if text else ""))


def run_root(args):
    """ARGS through `sudo -n` (system scope); a Failure when sudo refuses or ARGS fail."""
    result = subprocess.run(["sudo", "-n"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        raise Failure(sudo_refused(text) or "sudo -n %s: %s" % (" ".join(args), text or "exit %d" % result.returncode))


def systemctl(*args):
    """`systemctl --user ARGS` (or `sudo -n systemctl ARGS`); its output, or a
    Failure with systemd's reason."""
    argv = command("systemctl", *args)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=tool_env())
    text = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        refused = sudo_refused(text)
        if refused:
            raise Failure(refused)
        if SCOPE != "system" and ("Failed to connect to bus" in text or "No medium found" in text):
            raise Failure(manager_missing())
        raise Failure("%s: %s" % (" ".join(argv), text or "exit %d" % result.returncode))
    return text


def manager_missing():
    """Why the user's manager does not answer, and what to do."""
    name = user()
    if not os.path.exists("/var/lib/systemd/linger/" + name):
        return ("systemd's user manager of %s is not running and lingering is off: run "
                "`sudo loginctl enable-linger %s` once on this host (the units then run without a login)"
                % (name, name))
    return "systemd's user manager of %s does not answer (XDG_RUNTIME_DIR %s)" % (
        name, os.environ.get("XDG_RUNTIME_DIR", "/run/user/%d" % os.getuid()))


def show(instance):
    """The unit's ActiveState, SubState, MainPID, NRestarts, Result, ExecMainStatus."""
    props = {}
    text = systemctl("show", instance, "-p", "ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus,LoadState")
    for line in text.splitlines():
        key, _, value = line.partition("=")
        props[key] = value
    return props


def instances(spec):
    return ["%s@%d.service" % (spec["unit"], n) for n in range(int(spec["count"]))]


def loaded_instances(spec):
    """Every instance of the unit systemd knows of, loaded or running."""
    text = systemctl("list-units", "--all", "--plain", "--no-legend", "%s@*.service" % spec["unit"])
    found = [line.split()[0] for line in text.splitlines() if line.strip()]
    return sorted(found, key=instance_number)


def instance_number(instance):
    try:
        return int(instance.rsplit("@", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return -1


def port_of(instance, spec):
    n = instance_number(instance)
    ports = spec.get("ports") or []
    return int(ports[n]) if 0 <= n < len(ports) else None


def journal(instance, since):
    """The journal's lines of `instance` since `since` (this start's, not earlier ones)."""
    result = subprocess.run(
        command("journalctl", "-u", instance, "--since", "@%d" % int(since), "-n", "12",
                "-o", "cat", "--no-pager"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tool_env())
    # systemd's own notes of what it ignored (", ignoring: ...") are not reasons.
    return [line for line in result.stdout.decode(errors="replace").splitlines()
            if line.strip() and ", ignoring: " not in line]


def unhealthy(instance, props, reason, since):
    """The failure: journal lines first, the reason last (a tail keeps it)."""
    lines = ["journal: " + line for line in journal(instance, since)]
    detail = "systemd: %s/%s, result %s" % (props.get("ActiveState"), props.get("SubState"),
                                            props.get("Result"))
    if props.get("ExecMainStatus") not in (None, "", "0"):
        detail += ", exit status %s" % props["ExecMainStatus"]
    return Failure("\n".join(lines + ["%s %s (%s)" % (instance, reason, detail)]))


def wait_healthy(instance, spec, since, started_pid=None):
    """Waits until `instance` answers its health check (without a port: until
    it is active). One that exits or is restarted by systemd fails at once."""
    health = spec["health"]
    low, high = health["status"]
    deadline = since + health["timeout"]
    port = port_of(instance, spec)
    pid, last = started_pid, "not started"
    restarts = None
    while True:
        props = show(instance)
        state, sub = props.get("ActiveState"), props.get("SubState")
        main_pid = props.get("MainPID", "0")
        if restarts is None:
            restarts = props.get("NRestarts")
        if state == "active" and main_pid != "0":
            if pid is None:
                pid = main_pid
            elif main_pid != pid or props.get("NRestarts") != restarts:
                raise unhealthy(instance, props, "exited and was restarted by systemd (%s)" % last, since)
            if port is None:
                return "RUNNING (no port: state only)", pid
            status, error = probe(port, health)
            if status is not None and low <= status <= high:
                return "RUNNING, port %d answered %d in %.2fs" % (port, status, time.time() - since), pid
            last = ("port %d answered %d (accepted %d-%d)" % (port, status, low, high)
                    if status is not None else "port %d: %s" % (port, error))
        elif state == "failed" or sub == "auto-restart" or (state == "inactive" and pid is not None):
            raise unhealthy(instance, props, "is not running", since)
        else:
            last = "%s/%s" % (state, sub)
        if time.time() > deadline:
            raise unhealthy(instance, props, "not healthy after %gs: %s" % (health["timeout"], last), since)
        time.sleep(TICK)


def install_unit(spec, text):
    """Installs the template unit (and a copy in ROOT/etc for dry runs) when it
    changed; True when systemd had to reload it. A system unit is written by
    root (`sudo -n install`) from the copy in ROOT/etc."""
    unit_dir = UNIT_DIRS[SCOPE]
    path = os.path.join(unit_dir, "%s@.service" % spec["unit"])
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.join(spec["root"], "etc"), exist_ok=True)
    copy = os.path.join(spec["root"], "etc", "systemd.service")
    write_atomically(copy, text)
    if SCOPE == "system":
        run_root(["install", "-m", "0644", copy, path])
    else:
        os.makedirs(unit_dir, exist_ok=True)
        write_atomically(path, text)
    systemctl("daemon-reload")
    return True


# systemd's exit status when it could not put a unit's process into its
# cgroup (EXIT_CGROUP). systemd 252's user manager gives it to a quick restart
# whose cgroup it was still removing ("Failed to attach to cgroup ...: No such
# file or directory"): its own race, not the app's, so the start is tried again.
EXIT_CGROUP = "219"


def start_unit(verb, instance, since, attempts=3):
    """`systemctl VERB INSTANCE` (start or restart), again after a
    failure at systemd's CGROUP step; a unit that cannot start fails with
    systemd's reason and this start's journal lines."""
    for attempt in range(attempts):
        try:
            systemctl(verb, instance)
            return
        except Failure as failure:
            props = show(instance)
            if props.get("ExecMainStatus") == EXIT_CGROUP and attempt + 1 < attempts:
                systemctl("reset-failed", instance)
                time.sleep(0.5)
                continue
            raise unhealthy(instance, props, "did not start: %s" % failure, since)


def restart_checked(instance, spec):
    since = time.time()
    systemctl("enable", "--quiet", instance)
    start_unit("restart", instance, since)
    outcome, pid = wait_healthy(instance, spec, since)
    report(instance, outcome)
    return pid


def stop_surplus(spec):
    """Instances beyond the count (a smaller process_count) are stopped and disabled."""
    wanted = set(instances(spec))
    for instance in loaded_instances(spec):
        if instance not in wanted:
            systemctl("disable", "--now", "--quiet", instance)
            report(instance, "stopped (beyond the process count)")


def confirm_running(pids, since, spec):
    """Every instance keeps running the process that answered, and keeps
    answering, through the settle window (`health.settle` seconds): one that
    crashes soon after answering is caught."""
    settle_until = time.time() + float(spec["health"].get("settle") or 0)
    while True:
        for instance, pid in pids.items():
            props = show(instance)
            if props.get("ActiveState") != "active" or props.get("MainPID") != pid:
                raise unhealthy(instance, props, "exited after answering", since)
            port = port_of(instance, spec)
            if port is not None:
                low, high = spec["health"]["status"]
                status, error = probe(port, spec["health"])
                if status is None or not low <= status <= high:
                    raise unhealthy(instance, props, "stopped answering after it had: %s"
                                    % (error or "status %d" % status), since)
        if time.time() >= settle_until:
            return
        time.sleep(0.25)


class Supervisord:
    """The supervisord of a venv moving from supervisord to systemd, driven
    by supervisorctl from the tools venv (supervisor is installed there)."""

    def __init__(self, root):
        self.conf = os.path.join(root, "etc", "supervisord.conf")
        self.ctl = os.path.join(os.path.dirname(sys.executable), "supervisorctl")

    def run(self, *args):
        result = subprocess.run([self.ctl, "-c", self.conf] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return result.returncode, result.stdout.decode(errors="replace").strip()

    def running(self):
        if not (os.path.exists(self.conf) and os.path.exists(self.ctl)):
            return False
        code, out = self.run("pid")
        return code == 0 and out.isdigit()

    def stop_number(self, number):
        """Stops its process N (the name ending in _N, as in es's template;
        every process when none is so named) before unit instance N takes its port."""
        _, out = self.run("status")
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        these = [n for n in names if re.search(r"_%d$" % number, n)] or names
        if not these:
            return
        code, out = self.run("stop", *these)
        if code != 0:
            raise Failure("cannot stop supervisord's %s for systemd: %s" % (", ".join(these), out))
        report(", ".join(these), "stopped in supervisord (systemd takes over)")

    def shutdown(self, wait):
        """Stops supervisord itself, once every unit is healthy."""
        code, out = self.run("shutdown")
        until = time.time() + wait
        while self.running():
            if time.time() > until:
                raise Failure("supervisord did not stop within %gs: %s" % (wait, out))
            time.sleep(TICK)
        report("supervisord", "stopped: systemd runs this venv now")


def switch(spec):
    root = spec["root"]
    with open(os.path.join(root, "releases", spec["release"], "systemd.service")) as f:
        text = f.read()
    if SCOPE == "system":  # sudo refuses before anything changed, not after
        systemctl("--version")
    try:  # the lock's age tells a live deploy from a dead one: refresh it
        os.utime(os.path.join(root, ".es", "lock"))
    except OSError:
        pass
    activate(root, spec["release"])
    install_unit(spec, text)
    since = time.time()
    moving = Supervisord(root)
    moving = moving if moving.running() else None
    pids = {}
    for instance in instances(spec):
        if moving:
            moving.stop_number(instance_number(instance))
        pids[instance] = restart_checked(instance, spec)
    stop_surplus(spec)
    confirm_running(pids, since, spec)
    if moving:
        moving.shutdown(spec["wait"])


def start(spec):
    began = time.time()
    pids = {}
    for instance in instances(spec):
        since = time.time()
        systemctl("enable", "--quiet", instance)
        props = show(instance)
        if props.get("ActiveState") == "active":
            outcome, pid = wait_healthy(instance, spec, since)
            report(instance, "already running; " + outcome)
        else:
            start_unit("start", instance, since)
            outcome, pid = wait_healthy(instance, spec, since)
            report(instance, outcome)
        pids[instance] = pid
    confirm_running(pids, began, spec)


def stop(spec):
    for instance in loaded_instances(spec):
        systemctl("stop", instance)
        report(instance, "stopped")


def select(spec, pattern):
    every = sorted(set(instances(spec)) | set(loaded_instances(spec)), key=instance_number)
    if pattern == "all":
        return every
    found = [i for i in every if pattern in (i, i[: -len(".service")], str(instance_number(i)))]
    if not found:
        raise Failure("systemd has no instance %s of %s@.service; there are %s"
                      % (pattern, spec["unit"], ", ".join(every) or "none"))
    return found


def program(spec):
    """es ps-style start|stop|restart of some instances: one line each."""
    for instance in select(spec, spec["name"]):
        action = spec["do"]
        since = time.time()
        if action == "stop":
            systemctl("stop", instance)
            report(instance, "stopped")
            continue
        start_unit(action, instance, since)
        report(instance, wait_healthy(instance, spec, since)[0])


def manager_pid():
    """The pid of the systemd manager running the units, when it runs."""
    if SCOPE == "system":
        return 1
    try:
        out = subprocess.run(["systemctl", "show", "user@%d.service" % os.getuid(), "-p", "MainPID", "--value"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        return int(out) or None
    except (OSError, ValueError):
        return None


def uptime(pid):
    """Seconds since process `pid` started (from /proc), or None."""
    if not pid:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return int(float(f.read().split()[0]) - started)
    except (OSError, IndexError, ValueError):
        return None


def check(spec):
    """One look at every instance: state, and one health request per port."""
    result = {"supervisord": None, "manager": "systemd", "release": current_release(spec["root"]),
              "processes": []}
    low, high = spec["health"]["status"]
    every = sorted(set(instances(spec)) | set(loaded_instances(spec)), key=instance_number)
    for instance in every:
        props = show(instance)
        if props.get("LoadState") == "not-found":
            continue
        state = STATES.get(props.get("ActiveState"), props.get("ActiveState", "UNKNOWN").upper())
        pid = int(props.get("MainPID") or 0) or None
        entry = {"name": instance, "state": state, "pid": pid, "uptime": uptime(pid)}
        if state == "RUNNING":
            result["supervisord"] = result["supervisord"] or manager_pid()
        port = port_of(instance, spec)
        if port is not None and state == "RUNNING":
            status, error = probe(port, spec["health"])
            entry.update(port=port, status=status, error=error,
                         healthy=status is not None and low <= status <= high)
        else:
            entry["healthy"] = state == "RUNNING"
        result["processes"].append(entry)
    print(json.dumps(result))


def main(argv):
    global SCOPE
    action, spec = argv[0], json.loads(argv[1])
    spec["root"] = os.path.realpath(spec["root"])
    SCOPE = spec.get("scope") or "user"
    if SCOPE not in UNIT_DIRS:
        sys.exit("unknown systemd scope %r" % SCOPE)
    actions = {"switch": switch, "start": start, "stop": stop, "check": check, "program": program}
    if action not in actions:
        sys.exit("unknown action %r" % action)
    try:
        actions[action](spec)
    except Failure as failure:
        sys.exit(str(failure))
    except OSError as exc:
        sys.exit("systemd: %s" % exc)


main(sys.argv[1:])
