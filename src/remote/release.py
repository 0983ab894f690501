"""What both process managers' scripts share (prepended to supervisord.py
and systemd.py): the `current` link, atomic writes, one health request, and
the per-process report line.
"""
import http.client
import os
import time


def activate(root, release):
    """Points `current` at the release, atomically, and notes when."""
    link = os.path.join(root, "current")
    tmp = link + ".new"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(os.path.join("releases", release), tmp)
    os.replace(tmp, link)
    with open(os.path.join(root, "releases", release, "activated"), "w") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def current_release(root):
    """The id of the release `current` points to, when it does."""
    try:
        return os.path.basename(os.readlink(os.path.join(root, "current")))
    except OSError:
        return None


def write_atomically(path, text):
    tmp = path + ".es-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def probe(port, health):
    """One health request: the status, or the reason there is none."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        headers = {"User-Agent": "es-health-check"}
        headers.update(health.get("headers") or {})
        conn.request("GET", health["path"], headers=headers)
        return conn.getresponse().status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc) or exc.__class__.__name__
    finally:
        conn.close()


def report(name, outcome):
    print("%-32s %s" % (name, outcome), flush=True)


