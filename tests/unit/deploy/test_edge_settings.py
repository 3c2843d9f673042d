"""The edge's settings (deploy/edge.lua) are checked when HAProxy loads it: a value that is not a
number in its range stops HAProxy with the variable's name, as the app's settings do."""

import os
import shutil
import subprocess

import pytest

from deploy import localstack, processes
from deploy.processes import ROOT


def haproxy_check(tmp_path, **settings) -> subprocess.CompletedProcess:
    config = tmp_path / "haproxy.cfg"
    config.write_text(localstack.haproxy_render(["server r 127.0.0.1:1"], ["server w 127.0.0.1:2"]))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
        "HAPROXY_BIND": f"127.0.0.1:{processes.free_port()}",
        "HAPROXY_STATS_BIND": f"127.0.0.1:{processes.free_port()}",
        **settings,
    }
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return subprocess.run([haproxy, "-c", "-f", str(config)], cwd=ROOT, env=env, capture_output=True, text=True)


def test_the_defaults_and_values_in_range_load(tmp_path):
    assert haproxy_check(tmp_path).returncode == 0
    assert haproxy_check(tmp_path, EDGE_HIT_LOG_PERCENT="0", EDGE_REDIS_TIMEOUT_MS="5").returncode == 0
    assert haproxy_check(tmp_path, EDGE_HIT_LOG_PERCENT="100", EDGE_MAX_BODY_BYTES="").returncode == 0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EDGE_HIT_LOG_PERCENT", "abc", "from 0 to 100"),
        ("EDGE_HIT_LOG_PERCENT", "101", "from 0 to 100"),
        ("EDGE_REDIS_TIMEOUT_MS", "0", "from 1 to 10000"),
        ("EDGE_MAX_BODY_BYTES", "20000", "from 0 to 16384"),
    ],
)
def test_a_bad_value_stops_haproxy_with_the_variables_name(tmp_path, name, value, expected):
    checked = haproxy_check(tmp_path, **{name: value})
    assert checked.returncode != 0
    assert f'{name}="{value}": expected a number {expected}' in checked.stdout + checked.stderr
