# Takes the uv binary out of uv's wheel on the index: a wheel is a zip, so
# neither a venv nor pip is needed. Standard library only.
#
#   python3 tools.py DEST
#
# DEST  where the uv binary is written (mode 755)
#
# The index comes from ES_INDEX_URL (a simple API; credentials may be in the
# URL), each request waiting ES_INDEX_TIMEOUT seconds at most. The wheel is the newest one for this machine (manylinux or musllinux,
# by architecture), checked against the sha256 the index gives, and kept in
# the user's cache (~/.cache/es/uv-VERSION): the next venv on this host (the
# other of A/B) links it instead of downloading it again. Prints
# `uv=VERSION`; exits 1 with one line on stderr when there is none.
import base64
import hashlib
import html.parser
import io
import os
import platform
import re
import shutil
import sys
import urllib.parse
import urllib.request
import zipfile

WHEEL = re.compile(r"^uv-(\d+(?:\.\d+)*)-py3-none-(.+)\.whl$")


class Links(html.parser.HTMLParser):
    """The href of every anchor of a simple-API page."""

    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def opener(index_url):
    """The index URL without credentials, and headers carrying them."""
    parts = urllib.parse.urlsplit(index_url)
    headers = {}
    if parts.username is not None:
        pair = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.hostname + (":%d" % parts.port if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts), headers


def get(url, headers):
    timeout = float(os.environ.get("ES_INDEX_TIMEOUT") or 30)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as reply:
        return reply.read()


def fits(platform_tags, machine, musl):
    """Whether a wheel's platform tags (a.b.c) run on this machine."""
    family = "musllinux" if musl else "manylinux"
    for tag in platform_tags.split("."):
        if tag.endswith("_" + machine) and (tag.startswith(family) or (not musl and tag.startswith("linux"))):
            return True
    return False


def newest_wheel(hrefs, machine, musl):
    """(version, file name, href) of the newest uv wheel for this machine, or None."""
    best = None
    for href in hrefs:
        name = urllib.parse.unquote(href.split("#")[0].rsplit("/", 1)[-1])
        match = WHEEL.match(name)
        if not match or not fits(match.group(2), machine, musl):
            continue
        version = tuple(int(p) for p in match.group(1).split("."))
        if best is None or version > best[0]:
            best = (version, name, href)
    return best


def extract_uv(data, dest):
    """Writes the `uv` script of the wheel (bytes) to dest (755) through a temporary file."""
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        members = [m for m in wheel.namelist() if re.match(r"^uv-[^/]+\.data/scripts/uv$", m)]
        if not members:
            raise ValueError("the wheel holds no uv binary")
        partial = "%s.part%d" % (dest, os.getpid())
        try:
            with wheel.open(members[0]) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(partial, 0o755)
            os.replace(partial, dest)
        finally:
            remove_partial(partial)


def main(dest):
    index_url, headers = opener(os.environ["ES_INDEX_URL"])
    page_url = index_url.rstrip("/") + "/uv/"
    parser = Links()
    try:
        parser.feed(get(page_url, headers).decode("utf-8", "replace"))
    except OSError as err:
        sys.exit("cannot read uv's page on the index: %s" % err)
    machine = platform.machine()
    musl = platform.libc_ver()[0] != "glibc"
    best = newest_wheel(parser.hrefs, machine, musl)
    if best is None:
        sys.exit("the index has no uv wheel for %s (%s)" % (machine, "musl" if musl else "glibc"))
    version, name, href = best
    dotted = ".".join(str(p) for p in version)
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "es")
    cached = os.path.join(cache, "uv-" + dotted)
    if not os.access(cached, os.X_OK):
        download(page_url, href, name, headers, cache, cached)
    try:
        link_or_copy(cached, dest)
    except OSError as err:
        sys.exit("cannot put uv in place: %s" % err)
    print("uv=" + dotted)


def link_or_copy(source, dest):
    """dest becomes source's content (a hard link when the file system allows one)."""
    partial = "%s.part%d" % (dest, os.getpid())
    if os.path.lexists(partial):
        os.remove(partial)
    try:
        try:
            os.link(source, partial)
        except OSError:
            shutil.copy2(source, partial)
        os.replace(partial, dest)
    finally:
        remove_partial(partial)


def remove_partial(partial):
    """A file cut short (a full disk) is not left behind."""
    if os.path.lexists(partial):
        os.remove(partial)


def download(page_url, href, name, headers, cache, cached):
    """Downloads the wheel, checks it and writes its uv binary to the cache."""
    url = urllib.parse.urljoin(page_url, href.split("#")[0])
    try:
        data = get(url, headers)
    except OSError as err:
        sys.exit("cannot download %s: %s" % (name, err))
    fragment = urllib.parse.urlsplit(href).fragment
    if fragment.startswith("sha256=") and hashlib.sha256(data).hexdigest() != fragment[7:]:
        sys.exit("%s does not match the sha256 the index gives" % name)
    try:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        extract_uv(data, cached)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        sys.exit("cannot take uv out of %s: %s" % (name, err))


main(sys.argv[1])
