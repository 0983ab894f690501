"""Times `es run -- true` and Fabric 3's ThreadingGroup.run("true") on the same
test hosts, alternating, and prints medians and ratios (wall clock and CPU)."""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from testbed_env import env_file

FABRIC_SCRIPT = r"""
import os, sys
from fabric import ThreadingGroup
hosts = sys.argv[1].split(",")
group = ThreadingGroup(*hosts, user=os.environ["TB_USER"],
                       connect_kwargs={"key_filename": os.environ["TB_KEY"]},
                       connect_timeout=10)
results = group.run("true", hide=True)
sys.exit(0 if all(r.ok for r in results.values()) else 1)
"""



def timed(cmd, env):
    """Wall seconds and CPU seconds (user+sys of the child and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--es", required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--count", type=int, default=20, help="hosts to use (from host 1)")
    args = parser.parse_args()

    tb = env_file()
    hosts = tb["ES_TB_HOSTS"].split()[: args.count]
    home = tempfile.mkdtemp(prefix="es-bench-home-")
    os.makedirs(os.path.join(home, ".ssh"))
    shutil.copy(tb["ES_TB_KNOWN_HOSTS"], os.path.join(home, ".ssh", "known_hosts"))
    env = dict(os.environ, HOME=home, TB_USER=tb["ES_TB_USER"], TB_KEY=tb["ES_TB_KEY"])
    env.pop("SSH_AUTH_SOCK", None)
    with open(os.path.join(home, "deploy.toml"), "w") as f:
        f.write(f'[ssh]\nuser = "{tb["ES_TB_USER"]}"\nidentity_file = "{tb["ES_TB_KEY"]}"\n')

    es_cmd = [args.es, "-q", "-c", os.path.join(home, "deploy.toml"), "--parallel", "30",
              "run", "-H", ",".join(hosts), "--", "true"]
    fab_cmd = [sys.executable, "-c", FABRIC_SCRIPT, ",".join(hosts)]

    # One warm-up each (page cache, sshd), not counted.
    timed(es_cmd, env)
    timed(fab_cmd, env)
    es_runs, fab_runs = [], []
    for _ in range(args.runs):
        es_runs.append(timed(es_cmd, env))
        fab_runs.append(timed(fab_cmd, env))

    def med(runs, i):
        return statistics.median(r[i] for r in runs)

    es_wall, es_cpu = med(es_runs, 0), med(es_runs, 1)
    fab_wall, fab_cpu = med(fab_runs, 0), med(fab_runs, 1)
    print(f"fan-out `true` on {len(hosts)} hosts, {args.runs} alternating runs each, medians")
    print(f"  es      wall {es_wall:.3f}s  cpu {es_cpu:.3f}s   runs: " +
          " ".join(f"{w:.3f}" for w, _ in es_runs))
    print(f"  fabric  wall {fab_wall:.3f}s  cpu {fab_cpu:.3f}s   runs: " +
          " ".join(f"{w:.3f}" for w, _ in fab_runs))
    print(f"  ratio fabric/es: wall {fab_wall / es_wall:.1f}x, cpu {fab_cpu / es_cpu:.1f}x")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
