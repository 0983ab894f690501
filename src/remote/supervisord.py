"""Stop, start or restart the supervisord of a venv, and wait for the result.

Run by es on the host with the venv's python:
    VENV/bin/python -c "$(this file)" stop CONF PIDFILE TIMEOUT
    VENV/bin/python -c "$(this file)" start CONF TIMEOUT
    VENV/bin/python -c "$(this file)" restart CONF NEW_CONF PIDFILE TIMEOUT

stop: SIGTERM (supervisord's shutdown), then wait until its pid is gone.
start: start supervisord, then wait until every program is RUNNING.
restart: stop with CONF, keep it as CONF.prev, move NEW_CONF over CONF, start.

supervisord acts once a second (its poll timeout) unless something arrives on
its socket, so while waiting this script talks to it every 50 ms: the old one
reaps its children and exits, the new one spawns its programs and marks them
RUNNING after startsecs, each within a tick of 50 ms instead of a second.
One process does it all, instead of a supervisorctl process per poll.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from supervisor.options import ClientOptions

TICK = 0.05


def client(conf):
    options = ClientOptions()
    options.realize(["-c", conf], doc="")
    return options


def poke(options):
    """Wake supervisord's poll loop by connecting to its socket."""
    url = options.serverurl or ""
    try:
        if url.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX)
            s.connect(url[len("unix://"):])
        else:
            host, _, port = url.split("://", 1)[-1].rstrip("/").rpartition(":")
            s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=1)
        s.close()
    except (OSError, ValueError):
        pass


def alive(pid):
    """Whether pid runs. A zombie has exited (its ports and sockets are released);
    only its parent has not collected it yet, which some inits do slowly."""
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


def running_pid(options, pidfile):
    """The pid of the running supervisord: asked over its socket, else from its pidfile."""
    try:
        return int(options.getServerProxy().supervisor.getPID())
    except Exception:
        pass
    try:
        pid = int(open(pidfile).read().strip())
        cmdline = open("/proc/%d/cmdline" % pid, "rb").read()
    except (OSError, ValueError):
        return None
    return pid if b"supervisord" in cmdline and alive(pid) else None


def stop(conf, pidfile, timeout):
    if not os.path.exists(conf):
        return
    options = client(conf)
    pid = running_pid(options, pidfile)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while alive(pid):
        if time.time() > deadline:
            sys.exit("supervisord (pid %d) did not exit within %gs" % (pid, timeout))
        poke(options)
        time.sleep(TICK)


def start(conf, timeout):
    supervisord = os.path.join(os.path.dirname(sys.executable), "supervisord")
    if subprocess.call([supervisord, "-c", conf]) != 0:
        sys.exit("supervisord did not start")
    options = client(conf)
    deadline = time.time() + timeout
    infos, error = [], "no answer from supervisord"
    while time.time() < deadline:
        try:
            infos = options.getServerProxy().supervisor.getAllProcessInfo()
        except Exception as exc:  # still starting: its socket is not up yet
            error = "supervisord does not answer: %s" % exc
            time.sleep(TICK)
            continue
        states = [info["statename"] for info in infos]
        if infos and all(state == "RUNNING" for state in states):
            break
        if any(state in ("FATAL", "BACKOFF", "EXITED", "STOPPED") for state in states):
            break
        error = "timed out after %gs" % timeout
        time.sleep(TICK)
    failed = not infos
    for info in infos:
        name = "%s:%s" % (info["group"], info["name"])
        print("%-30s %-8s pid %s, %s" % (name, info["statename"], info["pid"], info["description"]))
        failed = failed or info["statename"] != "RUNNING"
    if failed:
        sys.exit("not every program reached RUNNING" + ("" if infos else ": " + error))


def main(argv):
    action = argv[0]
    if action == "stop":
        stop(argv[1], argv[2], float(argv[3]))
    elif action == "start":
        start(argv[1], float(argv[2]))
    elif action == "restart":
        conf, new_conf, pidfile, timeout = argv[1], argv[2], argv[3], float(argv[4])
        stop(conf, pidfile, timeout)
        if os.path.exists(conf):
            shutil.copy2(conf, conf + ".prev")  # for es's roll back after a failed start
        os.replace(new_conf, conf)
        start(conf, timeout)
    else:
        sys.exit("unknown action %r" % action)


main(sys.argv[1:])
