"""Settings from the environment: a bad value stops the process with the variable's name and the
form it expects, instead of a bare ValueError or a silent default."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PRINT = "import django; django.setup(); from django.conf import settings; print({})"


def start(role: str, expression: str = "settings.DEBUG", **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "KAFKA_", "LOG_"))}
    environment.update({"DJANGO_SETTINGS_MODULE": f"cqrs_site.settings.{role}", **env})
    return subprocess.run(
        [sys.executable, "-c", PRINT.format(expression)], cwd=ROOT, env=environment, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "variable,value,complaint",
    [
        ("KAFKA_TOPIC_PARTITIONS", "", "Not a valid integer"),
        ("KAFKA_TOPIC_PARTITIONS", "six", "Not a valid integer"),
        ("KAFKA_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("DJANGO_DEBUG", "ture", "use true/false, yes/no, on/off or 1/0"),
        ("CONSUMER_LOG_EVENTS", "maybe", "use true/false, yes/no, on/off or 1/0"),
        ("VISIBILITY_BOUND_SECONDS", "1s", "Not a valid number"),
        ("DJANGO_ENV", "prodution", "Must be one of: development, production"),
        ("LOG_FORMAT", "xml", "Must be one of: json, plain"),
        ("ADMIN_LOGIN_FAILURES_LIMIT", "-1", "greater than or equal to 1"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable_and_its_form(variable, value, complaint):
    role = "write" if variable.startswith("ADMIN_") else "consumer"
    started = start(role, **{variable: value})
    assert started.returncode != 0
    last_line = started.stderr.strip().splitlines()[-1]
    assert f'Environment variable "{variable}" invalid' in last_line and complaint in last_line, last_line


@pytest.mark.parametrize(
    "variable,value,expression,expected",
    [
        ("DJANGO_DEBUG", "yes", "settings.DEBUG", "True"),
        ("DJANGO_DEBUG", "0", "settings.DEBUG", "False"),
        ("KAFKA_TOPIC_PARTITIONS", "12", "settings.KAFKA_TOPIC_PARTITIONS", "12"),
        ("DJANGO_ALLOWED_HOSTS", "a.example, b.example", "settings.ALLOWED_HOSTS", "['a.example', 'b.example']"),
        ("CQRS_ACCESS_LOG", "on", "settings.CQRS_ACCESS_LOG", "True"),
    ],
)
def test_good_values_are_read_in_every_accepted_form(variable, value, expression, expected):
    started = start("read", expression, **{variable: value})
    assert started.returncode == 0 and started.stdout.strip() == expected, started.stderr


def test_unset_variables_give_the_local_stacks_defaults():
    started = start("read", "(settings.DEBUG, settings.KAFKA_TOPIC_PARTITIONS, settings.CQRS_ACCESS_LOG)")
    assert started.stdout.strip() == "(False, 6, False)", started.stderr


def test_gunicorn_refuses_a_bad_worker_count_by_name(tmp_path):
    environment = {**os.environ, "GUNICORN_WORKERS": "two", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('deploy/gunicorn_write.py')"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert started.returncode != 0
    assert 'Environment variable "GUNICORN_WORKERS" invalid: Not a valid integer' in started.stderr


@pytest.mark.parametrize(
    "uri_options,concern,expected",
    [
        ("", None, "{'j': True, 'w': 'majority'}"),
        # A URI cannot lower the journal; the write concern is the setting's.
        ("&journal=false&w=0", "2", "{'j': True, 'w': 2}"),
    ],
)
def test_every_write_waits_for_the_journal(uri_options, concern, expected):
    env = {"MONGODB_URI": "mongodb://127.0.0.1:1/cqrs?retryWrites=false" + uri_options}
    if concern is not None:
        env["MONGODB_WRITE_CONCERN"] = concern
    expression = "__import__('writes.aggregates').aggregates.POST_AGGREGATE.collection().write_concern.document"
    result = start("write", expression, **env)
    assert result.stdout.strip() == expected, result.stderr


def test_a_write_concern_that_is_not_majority_or_a_count_is_refused():
    result = start("write", MONGODB_WRITE_CONCERN="all")
    assert result.returncode != 0 and "MONGODB_WRITE_CONCERN" in result.stderr


def test_the_sentinel_topology_reaches_the_primary_through_the_sentinels_it_is_given():
    started = start(
        "read",
        "settings.CACHES['default']",
        REDIS_TOPOLOGY="sentinel",
        REDIS_SENTINELS="10.0.0.1:26379,sentinel-b:26380",
        REDIS_URL="redis://cache/0",
    )
    assert started.returncode == 0, started.stderr
    assert "'CLIENT_CLASS': 'django_redis.client.SentinelClient'" in started.stdout
    assert "'SENTINELS': [('10.0.0.1', 26379), ('sentinel-b', 26380)]" in started.stdout
    refused = start("read", REDIS_TOPOLOGY="sentinel")
    assert refused.returncode != 0 and "REDIS_TOPOLOGY=sentinel needs REDIS_SENTINELS" in refused.stderr
    unknown = start("read", REDIS_TOPOLOGY="clustr")
    assert unknown.returncode != 0 and "Must be one of: single, sentinel" in unknown.stderr
