"""Settings of hello_es.

`es build` replaces the ${...} placeholders below with the version it builds,
the git commit and the build time. The profile comes from the ES_PROFILE
environment variable, which the supervisord config sets from `es deploy`'s
PROFILE argument (or from `--profile` on the command line).
"""

import os

VERSION = "${version}"
GIT_VERSION = "${git_version}"
RELEASE_TIME = "${release_time}"

PROFILE = os.environ.get("ES_PROFILE", "dev")
DEBUG = PROFILE in ("dev", "debug", "test")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "DEBUG" if DEBUG else "INFO")
