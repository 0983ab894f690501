"""Tests of {{ project }}: `python -m pytest`, or `python -m unittest`."""

import os
import unittest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{{ project }}.settings")

import django  # noqa: E402

django.setup()

from django.test import Client, SimpleTestCase  # noqa: E402

from {{ project }}.main import gunicorn_command, parse_args  # noqa: E402


class ViewsTest(SimpleTestCase):
    def test_index_names_project(self):
        response = Client().get("/")
        self.assertEqual(response.status_code, 200)
        self.assertIn("{{ project }}", response.content.decode())

    def test_health(self):
        response = Client().get("/health")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "ok")


class MainTest(unittest.TestCase):
    def test_gunicorn_binds_the_port(self):
        args = parse_args(["8801"])
        command = gunicorn_command(args.port, args.workers)
        self.assertIn("0.0.0.0:8801", command)
        self.assertIn("{{ project }}.wsgi:application", command)


if __name__ == "__main__":
    unittest.main()
