"""The test bed's env file (testbed/testbed.sh up writes it), for the benchmarks."""
import os


def env_file():
    path = os.path.join(os.environ.get("ES_TESTBED_DIR", "/var/tmp/es-testbed"), "testbed.env")
    values = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                values[k] = v.strip('"')
    return values
