"""A small HTTP service: `hello_es PORT` serves its version on every path."""
import json
import logging
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hello_es import settings

log = logging.getLogger("hello_es")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok\n"
            content_type = "text/plain"
        else:
            body = json.dumps(
                {
                    "project": "hello_es",
                    "version": settings.VERSION,
                    "git_version": settings.GIT_VERSION,
                    "profile": settings.PROFILE,
                    "host": socket.gethostname(),
                    "port": self.server.server_address[1],
                }
            ).encode() + b"\n"
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].isdigit():
        print("usage: hello_es PORT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = ThreadingHTTPServer(("0.0.0.0", int(argv[0])), Handler)
    log.info("hello_es %s serving on port %s", settings.VERSION, argv[0])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
