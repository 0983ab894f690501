"""The {{ project }} console script: `{{ project }} PORT [--profile P] [--workers N]`.

Replaces itself with gunicorn serving {{ project }}.wsgi on 0.0.0.0:PORT, so
that supervisord manages gunicorn's master process directly.
"""

import argparse
import os
import sys


def gunicorn_has_option(flag):
    """Whether the installed gunicorn knows a command-line flag."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(flag in (setting.cli or []) for setting in KNOWN_SETTINGS)


def gunicorn_command(port, workers, host="0.0.0.0"):
    """The gunicorn command line serving the project on host:port."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "{{ project }}.wsgi:application",
        "--bind",
        "%s:%d" % (host, port),
        "--workers",
        str(workers),
        "--name",
        "{{ project }}-%d" % port,
        "--access-logfile",
        "-",
    ]
    # Newer gunicorns open a control socket at one fixed path in $HOME: every
    # process of every venv on the host would fight over it. supervisord is the
    # control interface here.
    if gunicorn_has_option("--no-control-socket"):
        command.append("--no-control-socket")
    return command


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="{{ project }}", description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="TCP port to listen on")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    parser.add_argument("--profile", help="run profile (default: $ES_PROFILE, else dev)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "2")),
        help="gunicorn worker processes (default: $WEB_CONCURRENCY, else 2)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile:
        os.environ["ES_PROFILE"] = args.profile
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ project }}.settings")
    command = gunicorn_command(args.port, args.workers, args.host)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
