"""Guards one switch on the host, like a network device's "commit confirmed".

Started by es, detached from the SSH session (setsid), before a switch:
    python guard.py GUARD_DIR TOKEN DEADLINE DEPLOY_ID SPEC_JSON

GUARD_DIR (ROOT/.es/guard) holds `armed-TOKEN` (written by es before the
start, naming the release being switched to), this file and manager.py (the process manager's script:
supervisord.py or systemd.py).
Unless es removes `armed-TOKEN` (the new release is healthy, or es went back
itself) within DEADLINE seconds, the guard renames it to `fired-TOKEN` and puts the previous release back by itself: it ends the switch
still under way, runs `manager.py switch` to SPEC_JSON.release (or stops
supervisord when there is none: a first deploy), writes why to `reason` and
to the ledger, and releases the deploy lock when it is still DEPLOY_ID's.
Removing and renaming the one file decides: es and the guard cannot both win.
"""
import json
import os
import signal
import subprocess
import sys
import time


def switch_processes(root):
    """Processes of this user running the manager script's switch for this venv."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
            if os.stat("/proc/" + entry).st_uid != os.getuid():
                continue
        except OSError:
            continue
        # python -c SOURCE switch SPEC: argv ends with NUL, so the last field is empty.
        if len(args) < 3 or args[-3] != b"switch":
            continue
        try:
            if json.loads(args[-2]).get("root") == root:
                found.append(int(entry))
        except ValueError:
            continue
    return found


def end_switch(root):
    """Ends a switch left running by a session that is gone (it would fight the way back)."""
    for pid in switch_processes(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def go_back(guard, spec):
    python = sys.executable
    script = os.path.join(guard, "manager.py")
    action = "switch" if spec.get("release") else "stop"
    result = subprocess.run([python, script, action, json.dumps(spec)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return result.returncode == 0, result.stdout.decode(errors="replace").strip()


def release_lock(root, deploy_id):
    lock = os.path.join(root, ".es", "lock")
    try:
        with open(os.path.join(lock, "owner")) as f:
            owner = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return False
    if owner.get("deploy_id") != deploy_id:
        return False
    for name in os.listdir(lock):
        os.unlink(os.path.join(lock, name))
    os.rmdir(lock)
    return True


def main(guard, token, deadline, deploy_id, spec):
    root = spec["root"]
    armed = os.path.join(guard, "armed-" + token)
    fired = os.path.join(guard, "fired-" + token)
    until = time.time() + deadline
    while time.time() < until:
        if not os.path.exists(armed):
            return  # confirmed or disarmed
        time.sleep(0.2)
    try:
        os.rename(armed, fired)
    except OSError:
        return  # es confirmed at the last moment
    with open(fired) as f:
        release = f.read().strip()
    end_switch(root)
    ok, output = go_back(guard, spec)
    previous = spec.get("release")
    if previous:
        back = "went back to %s" % previous if ok else "could not go back to %s: %s" % (previous, output[-2000:])
    else:
        back = "stopped supervisord (no previous release)" if ok else "could not stop supervisord: %s" % output[-2000:]
    reason = ("es did not confirm release %s within %gs (es was killed, crashed, lost the link "
              "or was aborted): the host %s" % (release, deadline, back))
    unlocked = release_lock(root, deploy_id)
    if unlocked:
        reason += "; the deploy lock was released"
    with open(os.path.join(guard, "reason"), "w") as f:
        f.write(reason + "\n")
    try:  # es rollback never picks it; it does not count toward keep_releases
        with open(os.path.join(root, "releases", release, "failed"), "w") as f:
            f.write(reason + "\n")
    except OSError:
        pass
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": "guard",
        "deploy_id": deploy_id,
        "release": release,
        "serving": previous if ok else None,
        "outcome": "reverted by the host" if ok else "failed",
        "error": reason,
    }
    line = json.dumps(entry) + "\n"
    ledger = os.path.join(root, ".es", "releases.jsonl")
    if not os.path.islink(ledger):
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]))
