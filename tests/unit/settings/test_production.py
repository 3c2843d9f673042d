"""DJANGO_ENV=production refuses laptop settings: Django does not start."""

import json
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


def test_with_production_servers_no_stand_in_tuning_is_loaded():
    """The local profile (deploy/processes.py) is the only source of the stand-ins' settings: with
    production URIs set and none of its variables, each is at the engines' own default."""
    from deploy import processes

    profile = {variable for server in processes.SERVERS for variable, _ in server.profile}
    environment = {k: v for k, v in os.environ.items() if k not in profile and not k.startswith("DJANGO_")}
    environment.update(
        DJANGO_SETTINGS_MODULE="cqrs_site.settings.consumer",
        MONGODB_URI="mongodb://db.example.com:27017/cqrs",
        KAFKA_BOOTSTRAP_SERVERS="kafka.example.com:9092",
        REDIS_URL="redis://cache.example.com:6379/0",
    )
    names = sorted(profile)
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "c = s.KAFKA_CONSUMER_CONFIG; "
        "print(json.dumps({'uri': s.MONGODB_URI, 'changes': s.MONGODB_POST_CHANGES, "
        "'session': c['session.timeout.ms'], 'heartbeat': c['heartbeat.interval.ms'], "
        "'strategy': c['partition.assignment.strategy'], 'fetch_wait': c['fetch.wait.max.ms'], "
        "'topic_check': s.RELAY_TOPIC_CHECK_SECONDS, 'recreate': s.KAFKA_RECREATE_UNGROWABLE_TOPICS}))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == {
        "uri": "mongodb://db.example.com:27017/cqrs",
        "changes": "find_and_modify",
        "session": 45000,
        "heartbeat": 3000,
        "strategy": "cooperative-sticky",
        "fetch_wait": 500,
        "topic_check": 30,
        "recreate": False,
    }
    # Every variable of the profile is one of those read above, or make up's (below): none is tuned
    # anywhere else.
    assert names == sorted(
        [
            "CONSUMER_STATIC_MEMBERSHIP",
            "KAFKA_ASSIGNMENT_STRATEGY",
            "KAFKA_FETCH_WAIT_MAX_MS",
            "KAFKA_HEARTBEAT_INTERVAL_MS",
            "KAFKA_RECREATE_UNGROWABLE_TOPICS",
            "KAFKA_SESSION_TIMEOUT_MS",
            "MONGODB_POST_CHANGES",
            "RELAY_TOPIC_CHECK_SECONDS",
        ]
    )


@pytest.mark.parametrize(("profile", "instance"), [({}, "consumer-1"), ({"CONSUMER_STATIC_MEMBERSHIP": "0"}, None)])
def test_make_up_names_each_consumer_unless_the_brokers_profile_says_no(monkeypatch, tmp_path, profile, instance):
    """Static membership for a real Kafka; none for the embedded Tansu (its profile), with which two
    named members never hold partitions at once (docs/stand-ins.md)."""
    from deploy import localstack, processes

    for server in processes.SERVERS:
        monkeypatch.setenv(server.variable, server.url.format(port=1))
        for variable, _ in server.profile:
            monkeypatch.delenv(variable, raising=False)
    for variable, value in profile.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("CQRS_RUN_DIR", str(tmp_path))
    consumer = next(p for p in localstack.Stack.from_env().workers() if p.name == "consumer-1")
    assert consumer.env.get("CONSUMER_INSTANCE_ID") == instance
