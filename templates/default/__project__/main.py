"""The {{ project }} HTTP service, standard library only.

Run it as `{{ project }} PORT [--profile PROFILE]` (the console script), or
`python -m {{ project }}.main PORT` from a checkout. supervisord starts one
process per port: see conf/supervisord.conf.
"""

import argparse
import json
import logging
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from {{ project }} import settings

log = logging.getLogger("{{ project }}")


class Handler(BaseHTTPRequestHandler):
    """Answers `GET /` with a short text and `GET /health` with JSON."""

    server_version = "{{ project }}/" + settings.VERSION

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = "{{ project }} %s (profile %s, port %d)\n" % (
                settings.VERSION,
                settings.PROFILE,
                self.server.server_address[1],
            )
            self.reply(200, "text/plain; charset=utf-8", body)
        elif path == "/health":
            body = json.dumps({"status": "ok", "version": settings.VERSION}) + "\n"
            self.reply(200, "application/json", body)
        else:
            self.reply(404, "text/plain; charset=utf-8", "not found\n")

    def reply(self, status, content_type, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)


def make_server(port, host="0.0.0.0"):
    """The server, bound but not yet serving (port 0: any free port)."""
    return ThreadingHTTPServer((host, port), Handler)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="{{ project }}", description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="TCP port to listen on")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all)")
    parser.add_argument(
        "--profile",
        help="run profile, e.g. dev, test, prod (default: $ES_PROFILE, else dev)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile:
        os.environ["ES_PROFILE"] = args.profile
        settings.PROFILE = args.profile
        settings.DEBUG = args.profile in ("dev", "debug", "test")
    logging.basicConfig(
        level=settings.LOG_LEVEL,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server = make_server(args.port, args.host)
    log.info(
        "{{ project }} %s (%s) profile %s listening on %s:%d",
        settings.VERSION,
        settings.GIT_VERSION,
        settings.PROFILE,
        args.host,
        args.port,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
