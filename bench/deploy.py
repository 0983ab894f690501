"""Upgrading a warm venv to a new version on 5 test hosts: `es deploy` against
essay's deploy sequence re-created on Fabric 3 (bench/essay_fabric.py).

Set-up: a project from `es create`, pointed at the test index and hosts; versions
1.0.0 .. 1.0.(RUNS+1) built and uploaded with `es build`; a first deploy of 1.0.0
with each tool into its own venv (es: `esb`, ports 8700-8701; Fabric: `fab`, ports
8710-8711), then one uncounted upgrade each (1.0.1). Measured: RUNS alternating
upgrades (es then Fabric, same version each round), each checked afterwards by
fetching every port of every host until it answers with the new version.

Printed per tool: the deploy command's wall time (the ratio the goal is about), the
time until every process serves the new version ("serving"; essay returns before its
programs are up, es waits until they are RUNNING), and the local CPU time.
With --profile: one extra `es -v deploy` whose remote commands are timed per host.
"""
import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import resource
import urllib.request

from testbed_env import env_file

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "es bench", "GIT_AUTHOR_EMAIL": "bench@es.invalid",
                "GIT_COMMITTER_NAME": "es bench", "GIT_COMMITTER_EMAIL": "bench@es.invalid"}
PREFIX = "esbench"  # in the deploy user's home on every host
ES_VENV, ES_PORT = "esb", "870"
FAB_VENV, FAB_PORT = "fab", "871"



def run(cmd, env, cwd=None, what=None):
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(f"{what or cmd[0]} failed ({done.returncode}):\n"
                 f"{done.stdout.decode()[-2000:]}\n{done.stderr.decode()[-3000:]}")
    return done


def fetch(addr, port):
    try:
        with urllib.request.urlopen(f"http://{addr}:{port}/", timeout=2) as r:
            return r.read().decode()
    except Exception:
        return ""


def wait_serving(hosts, ports, project, version, start, limit=30.0):
    """Seconds from `start` until every port of every host answers with `version`."""
    pending = {(h, p) for h in hosts for p in ports}
    want = f"{project} {version} "
    while pending:
        pending = {(h, p) for h, p in pending if not fetch(h, p).startswith(want)}
        if not pending:
            break
        if time.perf_counter() - start > limit:
            sys.exit(f"not serving {version} after {limit:.0f}s: {sorted(pending)}")
        time.sleep(0.05)
    return time.perf_counter() - start


NGINX_DIR = "/tmp/es-bench-nginx"  # inside each host (its own /tmp)
LB_PORTS = {ES_VENV: 8190, FAB_VENV: 8191}


def start_balancers(host_numbers, repo):
    """nginx on every host (as root, inside the host), balancing over each tool's
    two process ports, as a site would run it: one port per tool. max_fails=0, so a
    process being restarted is retried, never shunned."""
    upstreams = "".join(
        f" upstream {venv} {{ server 127.0.0.1:{port}0 max_fails=0; server 127.0.0.1:{port}1 max_fails=0; }}\n"
        f" server {{ listen {LB_PORTS[venv]}; location / {{ proxy_pass http://{venv}; }} }}\n"
        for venv, port in ((ES_VENV, ES_PORT), (FAB_VENV, FAB_PORT)))
    d = NGINX_DIR
    conf = (f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
            f"events {{ worker_connections 512; }}\nhttp {{\n access_log off;\n"
            f" client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n"
            f" uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{upstreams}}}\n")
    script = (f"kill $(cat {d}/nginx.pid 2>/dev/null) 2>/dev/null; sleep 0.3; rm -rf {d}; mkdir -p {d}; "
              f"cat > {d}/nginx.conf <<'EOF'\n{conf}EOF\n/usr/sbin/nginx -c {d}/nginx.conf")
    for n in host_numbers:
        subprocess.run(["bash", os.path.join(repo, "testbed", "testbed.sh"), "exec", n, "sh", "-c", script],
                       check=True, stdout=subprocess.DEVNULL)


def stop_balancers(host_numbers, repo):
    for n in host_numbers:
        subprocess.run(["bash", os.path.join(repo, "testbed", "testbed.sh"), "exec", n, "sh", "-c",
                        f"kill $(cat {NGINX_DIR}/nginx.pid) 2>/dev/null; true"], stdout=subprocess.DEVNULL)


class Load:
    """Requests through every host's balancer while a deploy runs (bounded: it
    stops when told or after 120 s): how many were made, and how many failed."""

    def __init__(self, hosts, port):
        self.hosts, self.port = hosts, port
        self.ok = self.failed = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        deadline = time.perf_counter() + 120
        i = 0
        while not self.done.is_set() and time.perf_counter() < deadline:
            host = self.hosts[i % len(self.hosts)]
            i += 1
            try:
                with urllib.request.urlopen(f"http://{host}:{self.port}/", timeout=5) as r:
                    r.read()
                    self.ok += 1
            except Exception:
                self.failed += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def timed(cmd, env, cwd, hosts, ports, project, version, what, lb_port=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = Load(hosts, lb_port) if lb_port else None
    if load:
        load.__enter__()
    start = time.perf_counter()
    run(cmd, env, cwd, what)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    serving = wait_serving(hosts, ports, project, version, start)
    failed = requests = 0
    if load:
        load.__exit__()
        failed, requests = load.failed, load.ok + load.failed
    return wall, serving, cpu, failed, requests


def profile_es(es_cmd, env, cwd, version):
    """Runs `es -v deploy` once and times the gaps between its remote commands per host."""
    cmd = es_cmd(version, verbose=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    events = {}  # host -> [(t, label)]
    for line in proc.stderr:
        t = time.perf_counter() - start
        m = re.match(r"^(\S+): (.*)$", line.rstrip("\n"))
        if not m:
            continue
        host, text = m.groups()
        if text.startswith("$ "):
            first = text[2:].strip().splitlines()[0] if text[2:].strip() else ""
            label = "$ " + first[:70]
        else:
            label = "step " + text[:60]
        events.setdefault(host, []).append((t, label))
    proc.wait()
    total = time.perf_counter() - start
    print(f"\nprofile: es -v deploy {version}: {total:.2f}s wall (exit {proc.returncode})")
    for host, evs in sorted(events.items()):
        print(f"  {host}")
        for i, (t, label) in enumerate(evs):
            nxt = evs[i + 1][0] if i + 1 < len(evs) else total
            print(f"    {t:6.2f}s  +{nxt - t:5.2f}s  {label}")
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--es", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hosts", default="15,16,17,18,19", help="test host numbers")
    parser.add_argument("--profile", action="store_true", help="also time es's steps once")
    parser.add_argument("--keep", action="store_true", help="leave the venvs running on the hosts")
    args = parser.parse_args()

    tb = env_file()
    all_hosts = tb["ES_TB_HOSTS"].split()
    hosts = [all_hosts[int(n) - 1] for n in args.hosts.split(",")]
    user = tb["ES_TB_USER"]
    work = tempfile.mkdtemp(prefix="es-bench-deploy-")
    home = os.path.join(work, "home")
    os.makedirs(os.path.join(home, ".ssh"))
    shutil.copy(tb["ES_TB_KNOWN_HOSTS"], os.path.join(home, ".ssh", "known_hosts"))
    # The peers venv first on PATH: its python3 has `build`, so es build needs no venv of its own.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"), PATH=path,
               ESSAY_SUPERVISOR_PASSWORD=secrets.token_hex(12), **GIT_IDENTITY)
    for var in ("SSH_AUTH_SOCK", "TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL"):
        env.pop(var, None)
    project = f"esbench_{int(time.time()) % 100_000_000}"
    ssh = (f'[ssh]\nuser = "{user}"\nidentity_file = "{tb["ES_TB_KEY"]}"\n'
           f'known_hosts = "{tb["ES_TB_KNOWN_HOSTS"]}"\nconnect_timeout = 10\n')
    host_list = ",".join(hosts)
    es = args.es

    def clean_hosts():
        # Stop this benchmark's supervisords (by their pid files) and remove the venvs.
        script = (f'for d in ~/{PREFIX}/*/; do p=$(cat "$d/tmp/supervisord.pid" 2>/dev/null) || continue; '
                  'kill "$p" 2>/dev/null || continue; i=0; '
                  'while kill -0 "$p" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done; '
                  f'done; rm -rf ~/{PREFIX}')
        cfg = os.path.join(work, "clean.toml")
        with open(cfg, "w") as f:
            f.write(ssh)
        run([es, "-q", "-c", cfg, "run", "-H", host_list, "--", script], env, what="cleaning the hosts")

    print(f"set-up: project {project}, hosts {' '.join(hosts)}", file=sys.stderr)
    clean_hosts()
    run([es, "create", project, "--no-push"], env, cwd=work, what="es create")
    proj = os.path.join(work, project)
    roles = ", ".join(f'"{user}@{h}"' for h in hosts)
    with open(os.path.join(proj, "deploy.toml"), "w") as f:
        f.write(f'[project]\nname = "{project}"\n\n'
                f'[index]\nurl = "{tb["ES_TB_INDEX_URL"]}"\nupload_url = "{tb["ES_TB_UPLOAD_URL"]}"\n\n'
                f'[roles]\nbuild = ["local"]\nbench = [{roles}]\n\n{ssh}\n'
                f'[deploy]\nvirtualenv_prefix = "~/{PREFIX}"\nprocess_count = 2\n'
                f'supervisor_template = "conf/supervisord.conf"\n'
                f'venv_ports = {{ {ES_VENV} = "{ES_PORT}", {FAB_VENV} = "{FAB_PORT}" }}\n'
                f'installer = "auto"\ndefault_role = "bench"\n')
    run(["git", "commit", "-qam", "bench: test index and hosts"], env, cwd=proj, what="git commit")
    versions = [f"1.0.{k}" for k in range(2 * args.runs + 2 + (1 if args.profile else 0))]
    build_env = dict(env, TWINE_USERNAME=tb["ES_TB_INDEX_USER"],
                     TWINE_PASSWORD=tb["ES_TB_INDEX_PASSWORD"])
    t0 = time.perf_counter()
    for v in versions:
        run([es, "-q", "build", "--version", v], build_env, cwd=proj, what=f"es build {v}")
    print(f"set-up: built and uploaded {len(versions)} versions in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)

    def es_cmd(version, verbose=False):
        return [es, "-v" if verbose else "-q", "deploy", "-R", "bench", version, ES_VENV, "bench"]

    def fab_cmd(version):
        return [sys.executable, os.path.join(BENCH_DIR, "essay_fabric.py"),
                "--hosts", host_list, "--user", user, "--key", tb["ES_TB_KEY"],
                "--index", tb["ES_TB_INDEX_URL"], "--project", project, "--version", version,
                "--prefix", f"/home/{user}/{PREFIX}", "--venv", FAB_VENV, "--port", FAB_PORT,
                "--profile", "bench", "--template", os.path.join(proj, "conf", "supervisord.conf")]

    es_ports = [ES_PORT + "0", ES_PORT + "1"]
    fab_ports = [FAB_PORT + "0", FAB_PORT + "1"]

    def es_deploy(v, lb=None):
        return timed(es_cmd(v), env, proj, hosts, es_ports, project, v, f"es deploy {v}", lb)

    def fab_deploy(v, lb=None):
        return timed(fab_cmd(v), env, proj, hosts, fab_ports, project, v, f"fabric deploy {v}", lb)

    def es_rolling(v):
        cmd = es_cmd(v) + ["--batch", "1"]
        return timed(cmd, env, proj, hosts, es_ports, project, v, f"es deploy --batch 1 {v}", LB_PORTS[ES_VENV])

    # First deploys (new venvs), then one uncounted upgrade each: both venvs warm.
    for v in versions[:2]:
        e, f = es_deploy(v), fab_deploy(v)
        print(f"set-up: deploy {v}: es {e[0]:.2f}s, fabric {f[0]:.2f}s", file=sys.stderr)

    es_runs, fab_runs = [], []
    for v in versions[2:2 + args.runs]:
        es_runs.append(es_deploy(v))
        fab_runs.append(fab_deploy(v))
        print(f"run {v}: es {es_runs[-1][0]:.2f}s, fabric {fab_runs[-1][0]:.2f}s", file=sys.stderr)

    # Failed requests during upgrades, through each host's nginx: es's rolling
    # switch (--batch 1) against essay's sequence; alternating, one version each.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    numbers = args.hosts.split(",")
    start_balancers(numbers, repo)
    es_load, fab_load = [], []
    try:
        for v in versions[2 + args.runs:2 + 2 * args.runs]:
            es_load.append(es_rolling(v))
            fab_load.append(fab_deploy(v, LB_PORTS[FAB_VENV]))
            print(f"load {v}: es {es_load[-1][3]}/{es_load[-1][4]} failed, "
                  f"fabric {fab_load[-1][3]}/{fab_load[-1][4]} failed", file=sys.stderr)
    finally:
        stop_balancers(numbers, repo)

    def med(rs, i):
        return statistics.median(r[i] for r in rs)

    print(f"upgrade of a warm venv on {len(hosts)} hosts, {args.runs} alternating runs each, medians")
    print("          wall     serving  cpu      runs (wall)")
    for name, rs in (("es", es_runs), ("fabric", fab_runs)):
        print(f"  {name:7} {med(rs, 0):6.2f}s  {med(rs, 1):6.2f}s  {med(rs, 2):6.2f}s  "
              + " ".join(f"{r[0]:.2f}" for r in rs))
    for name, rs in (("es", es_runs), ("fabric", fab_runs)):
        print(f"  {name} serving runs: " + " ".join(f"{r[1]:.2f}" for r in rs))
    print(f"  ratio fabric/es: wall {med(fab_runs, 0) / med(es_runs, 0):.2f}x, "
          f"serving {med(fab_runs, 1) / med(es_runs, 1):.2f}x, "
          f"cpu {med(fab_runs, 2) / med(es_runs, 2):.2f}x   (goal: wall >= 3)")

    print(f"failed requests through nginx during an upgrade on {len(hosts)} hosts "
          f"({args.runs} alternating runs each; es with --batch 1):")
    for name, rs in (("es", es_load), ("fabric", fab_load)):
        print(f"  {name:7} failed {sum(r[3] for r in rs)} of {sum(r[4] for r in rs)} requests; per run: "
              + " ".join(f"{r[3]}/{r[4]}" for r in rs) + "   (goal for es: 0)")

    if args.profile:
        profile_es(es_cmd, env, proj, versions[-1])
    if not args.keep:
        clean_hosts()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
