"""es against its peers, side by side in one run, alternating, medians:

  first   the first deploy to DEPLOY hosts made fresh before every run (no venv,
          no uv/pip/es caches): es against essay's sequence on Fabric 3
  upgrade a warm upgrade of the same hosts to the next version (after `first`)
  run     `true` on 20/100/200 hosts (as many as the bed has): es, Fabric 3's
          ThreadingGroup, pyinfra and Ansible (when their venv has them)

Per tool and part: wall time, client CPU (user+sys of the tool and everything
it waited for) and peak RSS, from wait4(); for deploys also the time until
every process serves the new version. Writes results.md (a table) and
results.png (wall time against host count, one line per tool) into --out.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from deploy import GIT_IDENTITY, run, wait_serving
from testbed_env import env_file

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
PREFIX = "escompare"
ES_VENV, ES_PORT = "esb", "872"
FAB_VENV, FAB_PORT = "fab", "873"

FABRIC_RUN = r"""
import os, sys
from fabric import ThreadingGroup
group = ThreadingGroup(*sys.argv[1].split(","), user=os.environ["TB_USER"],
                       connect_kwargs={"key_filename": os.environ["TB_KEY"]}, connect_timeout=30)
sys.exit(0 if all(r.ok for r in group.run("true", hide=True).values()) else 1)
"""


def measured(cmd, env, cwd=None):
    """(wall s, cpu s, peak RSS MB) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{cmd[0]} failed ({status}): {stderr.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def testbed(*args):
    subprocess.run(["bash", os.path.join(REPO, "testbed", "testbed.sh"), *args], check=True,
                   stdout=subprocess.DEVNULL)


def make_fresh(numbers, user):
    """No venvs of this benchmark (supervisords stopped), no installer caches."""
    script = (f'for f in /home/{user}/{PREFIX}/*/tmp/supervisord.pid; do [ -f "$f" ] && kill $(cat "$f"); done; '
              f'sleep 0.3; rm -rf /home/{user}/{PREFIX} /home/{user}/.cache')
    procs = [subprocess.Popen(["bash", os.path.join(REPO, "testbed", "testbed.sh"), "exec", n,
                               "sh", "-c", script], stdout=subprocess.DEVNULL) for n in numbers]
    for p in procs:
        p.wait()


def peers(venv_bin):
    """The run-true peers installed beside this Python."""
    found = ["fabric"]
    for tool in ("pyinfra", "ansible"):
        if os.path.exists(os.path.join(venv_bin, tool)):
            found.append(tool)
    return found


def run_true_cmd(tool, es, cfg, hosts, tb, venv_bin):
    joined = ",".join(hosts)
    if tool == "es":
        return [es, "-q", "-c", cfg, "--parallel", str(len(hosts)), "run", "-H", joined, "--", "true"]
    if tool == "fabric":
        return [sys.executable, "-c", FABRIC_RUN, joined]
    if tool == "pyinfra":
        # An inventory file: a long comma-separated list is taken for a file name.
        inventory = os.path.join(os.path.dirname(cfg), f"inventory_{len(hosts)}.py")
        with open(inventory, "w") as f:
            f.write(f"hosts = {hosts!r}\n")
        return [os.path.join(venv_bin, "pyinfra"), "-y", "--parallel", str(len(hosts)),
                "--ssh-user", tb["ES_TB_USER"], "--ssh-key", tb["ES_TB_KEY"], inventory, "exec", "--", "true"]
    return [os.path.join(venv_bin, "ansible"), "all", "-i", joined + ",", "-u", tb["ES_TB_USER"],
            "--private-key", tb["ES_TB_KEY"], "-f", str(len(hosts)), "-m", "raw", "-a", "true"]


def median_row(runs):
    return [statistics.median(r[i] for r in runs) for i in range(len(runs[0]))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--es", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deploy-hosts", default="15,16,17,18,19", help="test host numbers")
    parser.add_argument("--run-hosts", default="1-200", help="test host numbers for run true (FIRST-LAST)")
    parser.add_argument("--counts", default="20,100,200", help="host counts for run true")
    parser.add_argument("--no-deploy", action="store_true", help="only the run true part")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "results"))
    args = parser.parse_args()

    tb = env_file()
    all_hosts = tb["ES_TB_HOSTS"].split()
    user = tb["ES_TB_USER"]
    numbers = args.deploy_hosts.split(",")
    hosts = [all_hosts[int(n) - 1] for n in numbers]
    first, last = (int(x) for x in args.run_hosts.split("-"))
    run_hosts = all_hosts[first - 1:last]
    counts = sorted({min(int(x), len(run_hosts)) for x in args.counts.split(",")})
    venv_bin = os.path.dirname(sys.executable)
    work = tempfile.mkdtemp(prefix="es-bench-compare-")
    home = os.path.join(work, "home")
    os.makedirs(os.path.join(home, ".ssh"))
    shutil.copy(tb["ES_TB_KNOWN_HOSTS"], os.path.join(home, ".ssh", "known_hosts"))
    path = venv_bin + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"), PATH=path,
               TB_USER=user, TB_KEY=tb["ES_TB_KEY"], ESSAY_SUPERVISOR_PASSWORD=os.urandom(12).hex(),
               ANSIBLE_SSH_ARGS=f"-o ControlMaster=no -o UserKnownHostsFile={tb['ES_TB_KNOWN_HOSTS']}", ANSIBLE_HOST_KEY_CHECKING="True", **GIT_IDENTITY)
    for var in ("SSH_AUTH_SOCK", "TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL"):
        env.pop(var, None)
    ssh = (f'[ssh]\nuser = "{user}"\nidentity_file = "{tb["ES_TB_KEY"]}"\n'
           f'known_hosts = "{tb["ES_TB_KNOWN_HOSTS"]}"\nconnect_timeout = 30\n')
    cfg = os.path.join(work, "run.toml")
    with open(cfg, "w") as f:
        f.write(ssh)

    # A project from es create, versions 1.0.0 .. built and uploaded once.
    project = f"escmp_{int(time.time()) % 100_000_000}"
    run([args.es, "create", project, "--no-push"], env, cwd=work, what="es create")
    proj = os.path.join(work, project)
    roles = ", ".join(f'"{user}@{h}"' for h in hosts)
    with open(os.path.join(proj, "deploy.toml"), "w") as f:
        f.write(f'[project]\nname = "{project}"\n\n'
                f'[index]\nurl = "{tb["ES_TB_INDEX_URL"]}"\nupload_url = "{tb["ES_TB_UPLOAD_URL"]}"\n\n'
                f'[roles]\nbench = [{roles}]\n\n{ssh}\n'
                f'[deploy]\nvirtualenv_prefix = "~/{PREFIX}"\nprocess_count = 2\n'
                f'supervisor_template = "conf/supervisord.conf"\n'
                f'venv_ports = {{ {ES_VENV} = "{ES_PORT}", {FAB_VENV} = "{FAB_PORT}" }}\n'
                f'default_role = "bench"\n')
    run(["git", "commit", "-qam", "bench"], env, cwd=proj, what="git commit")
    build_env = dict(env, TWINE_USERNAME=tb["ES_TB_INDEX_USER"], TWINE_PASSWORD=tb["ES_TB_INDEX_PASSWORD"])
    versions = [f"1.0.{k}" for k in range(2)]
    for v in versions:
        run([args.es, "-q", "build", "--version", v], build_env, cwd=proj, what=f"es build {v}")

    def deploy(tool, version):
        if tool == "es":
            cmd = [args.es, "-q", "deploy", "-R", "bench", version, ES_VENV, "bench"]
            ports = [ES_PORT + "0", ES_PORT + "1"]
        else:
            cmd = [sys.executable, os.path.join(BENCH_DIR, "essay_fabric.py"), "--hosts", ",".join(hosts),
                   "--user", user, "--key", tb["ES_TB_KEY"], "--index", tb["ES_TB_INDEX_URL"],
                   "--project", project, "--version", version, "--prefix", f"/home/{user}/{PREFIX}",
                   "--venv", FAB_VENV, "--port", FAB_PORT, "--profile", "bench",
                   "--template", os.path.join(proj, "conf", "supervisord.conf")]
            ports = [FAB_PORT + "0", FAB_PORT + "1"]
        start = time.perf_counter()
        wall, cpu, rss = measured(cmd, env, proj)
        serving = wait_serving(hosts, ports, project, version, start, limit=120)
        return wall, serving, cpu, rss

    results = {}  # (part, tool) -> list of rows
    for k in range(0 if args.no_deploy else args.runs):
        for tool in ("es", "essay-fabric"):
            make_fresh(numbers, user)
            first = deploy(tool, versions[0])
            upgrade = deploy(tool, versions[1])
            results.setdefault(("first deploy, 5 fresh hosts", tool), []).append(first)
            results.setdefault(("warm upgrade, 5 hosts", tool), []).append(upgrade)
            print(f"run {k + 1} {tool}: first {first[0]:.2f}s, upgrade {upgrade[0]:.2f}s "
                  f"(serving {upgrade[1]:.2f}s)", file=sys.stderr)
    make_fresh(numbers, user)

    tools = ["es"] + peers(venv_bin)
    fanout = {}  # (tool, count) -> rows
    for count in counts:
        targets = run_hosts[:count]
        for tool in tools:  # warm-up, not counted
            measured(run_true_cmd(tool, args.es, cfg, targets, tb, venv_bin), env)
        for k in range(args.runs):
            for tool in tools:
                row = measured(run_true_cmd(tool, args.es, cfg, targets, tb, venv_bin), env)
                fanout.setdefault((tool, count), []).append(row)
        print(f"run true on {count} hosts: " + ", ".join(
            f"{t} {median_row(fanout[(t, count)])[0]:.2f}s" for t in tools), file=sys.stderr)
    wide = max(counts)
    es500 = [measured([args.es, "-q", "-c", cfg, "--parallel", "500", "run", "-H", ",".join(run_hosts[:wide]),
                       "--", "true"], env) for _ in range(args.runs)]

    os.makedirs(args.out, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {os.uname().machine}, {os.uname().release}"
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine}; "
             f"load average before the run parts: {os.getloadavg()[0]:.1f}. "
             f"Medians of {args.runs} alternating runs.", "",
             "| part | tool | wall | serving | client CPU | peak RSS | ratio (tool / es, wall) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for part in () if args.no_deploy else ("first deploy, 5 fresh hosts", "warm upgrade, 5 hosts"):
        base = median_row(results[(part, "es")])[0]
        for tool in ("es", "essay-fabric"):
            wall, serving, cpu, rss = median_row(results[(part, tool)])
            lines.append(f"| {part} | {tool} | {wall:.2f} s | {serving:.2f} s | {cpu:.2f} s | "
                         f"{rss:.0f} MB | {wall / base:.2f}x |")
    for count in counts:
        base = median_row(fanout[("es", count)])[0]
        for tool in tools:
            wall, cpu, rss = median_row(fanout[(tool, count)])
            lines.append(f"| run true, {count} hosts | {tool} | {wall:.2f} s | | {cpu:.2f} s | "
                         f"{rss:.0f} MB | {wall / base:.2f}x |")
    wall, cpu, rss = median_row(es500)
    lines.append(f"| run true, {wide} hosts, --parallel 500 | es | {wall:.2f} s | | {cpu:.2f} s | {rss:.0f} MB | |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    plot(fanout, tools, counts, machine, os.path.join(args.out, "results.png"))
    shutil.rmtree(work, ignore_errors=True)


def plot(fanout, tools, counts, machine, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tool in tools:
        ax.plot(counts, [median_row(fanout[(tool, c)])[0] for c in counts], marker="o", label=tool)
    ax.set_xlabel("hosts")
    ax.set_ylabel("wall time of `true` on every host (s, median)")
    ax.set_title(f"es and its peers, {time.strftime('%Y-%m-%d', time.gmtime())}, {machine}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
