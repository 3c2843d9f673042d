"""DJANGO_ENV=production refuses laptop settings: Django does not start."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

GOOD = {"DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "api.example.com", "DJANGO_DEBUG": "0"}


def start(role: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    environment.update({"DJANGO_ENV": "production", "DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{role}", **env})
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("role", ["read", "write", "consumer"])
def test_production_settings_start_when_safe(role):
    started = start(role, **GOOD)
    assert started.returncode == 0 and started.stdout.strip() == "False", started.stderr


@pytest.mark.parametrize(
    "change,complaint",
    [
        ({"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG is on"),
        ({"DJANGO_SECRET_KEY": "dev-insecure-change-me"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS is empty"),
    ],
)
def test_production_settings_refuse_to_start_when_unsafe(change, complaint):
    refused = start("write", **{**GOOD, **change})
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and complaint in refused.stderr


def test_without_a_secret_key_production_refuses():
    refused = start("read", DJANGO_ALLOWED_HOSTS="api.example.com")
    assert refused.returncode != 0 and "DJANGO_SECRET_KEY is missing" in refused.stderr
