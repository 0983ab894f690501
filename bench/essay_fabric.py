"""essay's deploy sequence (`fab -R ROLE deploy:VERSION,VENV,PROFILE`, Fabric 1),
re-created on Fabric 3 for bench/deploy.py.

Per host, in parallel (one thread and one Connection per host, as essay ran Fabric 1
with `parallel=True`), each step its own remote command as Fabric 1's run()/put():

 1. `test -d VENV` (essay's exists()), else create the venv;
    `mkdir -p VENV/logs VENV/etc VENV/tmp`
 2. `pip freeze | grep supervisor` in the activated venv (essay's is_installed()),
    else `pip install -i INDEX supervisor`
 3. render the supervisord template locally with Jinja2 and upload it (put)
 4. `pip install -i INDEX --trusted-host HOST PROJECT==VERSION`
 5. `supervisorctl shutdown`, then `supervisord` at once; essay retried the start up
    to 3 times (here with a 1 s pause, so that the old supervisord has time to go:
    essay never waited for it, which is one of its defects)
 6. pre/post hooks: none in this benchmark.

Usage: python essay_fabric.py --hosts A,B --user U --key K --index URL --project P
       --version V --prefix /home/U/esbench --venv fab --port 871 --profile bench
       --template conf/supervisord.conf [--process-count 2]
The supervisor password comes from $ESSAY_SUPERVISOR_PASSWORD (kept the same across
deploys, or the shutdown could not authenticate against the running supervisord).
Exit 0 when every host succeeded.
"""
import argparse
import io
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import jinja2
from fabric import Connection


def deploy_host(host, args, conf_text):
    venv = f"{args.prefix}/{args.venv}"
    activate = f". {venv}/bin/activate && "
    index_host = urlsplit(args.index).hostname
    pip_index = f"-i {args.index} --trusted-host {index_host}"
    conf = f"{venv}/etc/supervisord.conf"
    with Connection(host, user=args.user, connect_timeout=10,
                    connect_kwargs={"key_filename": args.key}) as c:
        # virtualenv.ensure
        if not c.run(f"test -d {venv}", warn=True, hide=True).ok:
            c.run(f"python3 -m venv {venv}", hide=True)
        c.run(f"mkdir -p {venv}/logs {venv}/etc {venv}/tmp", hide=True)
        # supervisor.ensure: pip freeze to see whether supervisor is installed
        if not c.run(activate + "pip freeze | grep -i supervisor", warn=True, hide=True).ok:
            c.run(activate + f"pip install {pip_index} supervisor", hide=True)
        # upload_template
        c.put(io.BytesIO(conf_text.encode()), conf)
        # package.install
        c.run(activate + f"pip install {pip_index} {args.project}=={args.version}", hide=True)
        # supervisor.shutdown / supervisor.start (retry up to 3 times)
        c.run(activate + f"supervisorctl -c {conf} shutdown", warn=True, hide=True)
        for attempt in range(3):
            if c.run(activate + f"supervisord -c {conf}", warn=True, hide=True).ok:
                return attempt + 1
            time.sleep(1)
        raise RuntimeError(f"{host}: supervisord did not start after 3 attempts")


def main():
    p = argparse.ArgumentParser()
    for name in ("hosts", "user", "key", "index", "project", "version", "prefix",
                 "venv", "port", "profile", "template"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--process-count", type=int, default=2)
    args = p.parse_args()
    hosts = args.hosts.split(",")
    with open(args.template) as f:
        # es's template starts programs through bin/es-env (the release's
        # environment file, which es writes); essay's venvs have none.
        text = f.read().replace("{{ venv_dir }}/bin/es-env ", "")
        template = jinja2.Template(text, keep_trailing_newline=True,
                                   undefined=jinja2.StrictUndefined)
    venv_dir = f"{args.prefix}/{args.venv}"
    password = os.environ["ESSAY_SUPERVISOR_PASSWORD"]

    def job(host):
        conf = template.render(run_root=venv_dir, venv_dir=venv_dir, project=args.project,
                               port=args.port, process_count=args.process_count,
                               profile=args.profile, virtualenv_name=args.venv,
                               username="essay", password=password,
                               version=args.version, host=host)
        return deploy_host(host, args, conf)

    failed = 0
    with ThreadPoolExecutor(max_workers=min(30, len(hosts))) as pool:
        futures = {h: pool.submit(job, h) for h in hosts}
        for host, fut in futures.items():
            try:
                attempts = fut.result()
                if attempts > 1:
                    print(f"{host}: supervisord started on attempt {attempts}", file=sys.stderr)
            except Exception:
                failed += 1
                print(f"{host}: FAILED", file=sys.stderr)
                traceback.print_exc()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
