"""Build information, stamped by `es build`; the profile comes from supervisord."""
import os

VERSION = "${version}"
GIT_VERSION = "${git_version}"
RELEASE_TIME = "${release_time}"
PROFILE = os.environ.get("ES_PROFILE", "dev")
