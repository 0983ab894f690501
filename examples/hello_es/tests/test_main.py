"""Tests of hello_es: `python -m pytest`, or `python -m unittest`."""

import json
import threading
import unittest
import urllib.error
import urllib.request

from hello_es import settings
from hello_es.main import make_server, parse_args


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = make_server(0, "127.0.0.1")
        cls.port = cls.server.server_address[1]
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def get(self, path):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8")

    def test_root_names_project_and_version(self):
        status, body = self.get("/")
        self.assertEqual(status, 200)
        self.assertIn("hello_es", body)
        self.assertIn(settings.VERSION, body)

    def test_health(self):
        status, body = self.get("/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")

    def test_unknown_path_is_404(self):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.get("/nothing-here")
        self.assertEqual(caught.exception.code, 404)


class ArgsTest(unittest.TestCase):
    def test_port_and_profile(self):
        args = parse_args(["8801", "--profile", "prod"])
        self.assertEqual(args.port, 8801)
        self.assertEqual(args.profile, "prod")


if __name__ == "__main__":
    unittest.main()
