"""The scrape configs and the Grafana dashboard in deploy/ agree with what the code exports."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from cqrs_site.core import metrics
from deploy import localstack

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/cqrs.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())


def exported_series() -> set[str]:
    """Every series name cqrs_site/core/metrics.py defines, with the suffixes Prometheus sees."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names |= {value._name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def dashboard_series(prefix: str) -> set[str]:
    expressions = [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]
    return {name for expr in expressions for name in re.findall(rf"\b{prefix}[a-z_]+", expr)}


def test_every_cqrs_series_on_the_dashboard_is_one_the_code_exports():
    used = dashboard_series("cqrs_")
    assert used and used <= exported_series(), used - exported_series()


def test_the_dashboard_shows_what_the_issue_asks_for():
    used = dashboard_series("cqrs_")
    for wanted in (
        "cqrs_http_requests_total",
        "cqrs_http_request_duration_seconds_bucket",
        "cqrs_cache_lookups_total",
        "cqrs_cache_writes_total",
        "cqrs_consumer_lag_messages",
        "cqrs_consumer_events_applied_total",
        "cqrs_write_to_apply_seconds_bucket",
        "cqrs_relay_pending_events",
        "cqrs_relay_publish_errors_total",
        "cqrs_consumer_dead_lettered_total",
        "cqrs_inspector_consistency_ratio",
        "cqrs_producer_resets_total",
    ):
        assert wanted in used, wanted
    # Hits answered at the edge, beside the pool's hits and misses, on one panel.
    [reads] = [panel for panel in DASHBOARD["panels"] if panel["title"].startswith("Reads answered")]
    expressions = " ".join(target["expr"] for target in reads["targets"])
    assert 'proxy="edge_hits"' in expressions and 'result="hit"' in expressions and 'result="miss"' in expressions
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_compose_prometheus_scrapes_every_process_where_it_listens():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    services = COMPOSE["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, service in (("read-pool", "read"), ("write-pool", "write")):
        [target] = jobs[job]["dns_sd_configs"]
        assert target["names"] == [service]
        assert services[service]["environment"]["GUNICORN_BIND"].endswith(f":{target['port']}")
    for job in ("consumer", "relay", "inspector"):
        [target] = jobs[job]["dns_sd_configs"]
        assert target["names"] == [job] and services[job]["environment"]["METRICS_PORT"] == str(target["port"])
        assert services[job]["environment"]["METRICS_HOST"] == "0.0.0.0"
    assert jobs["haproxy"]["static_configs"][0]["targets"] == [
        "haproxy:" + services["haproxy"]["environment"]["HAPROXY_STATS_BIND"].rsplit(":", 1)[1]
    ]
    mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    assert mounts == {
        "./prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./alerts.yml": "/etc/prometheus/alerts.yml",
    }
    assert config["rule_files"] == ["alerts.yml"]  # beside the config, where it is mounted
    for volume in services["grafana"]["volumes"]:
        assert (ROOT / "deploy" / volume.split(":")[0]).exists(), volume


def test_the_local_prometheus_reads_the_targets_and_rules_of_its_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("CQRS_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_INTERVAL", "2s")
    stack = localstack.Stack.from_env()
    config = stack.prometheus_config()
    assert config["rule_files"] == [str(ROOT / "deploy/alerts.yml")]
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [str(tmp_path.resolve() / "prometheus-targets.json")]}]
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    # The job labels of the targets file are the ones deploy/prometheus.yml names (alerts use them).
    compose_jobs = {
        job["job_name"] for job in yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"]
    }
    assert {group["labels"]["job"] for group in stack.metrics_targets()} == compose_jobs


@pytest.mark.parametrize("service", ["read", "write", "consumer", "relay", "inspector"])
def test_every_app_service_has_a_healthcheck_that_what_depends_on_it_waits_for(service):
    services = COMPOSE["services"]
    assert services[service]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert services[service]["depends_on"]["init"] == {"condition": "service_completed_successfully"}
    # The cache is reached through its sentinels, each of which waits for the primary.
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert services[service]["depends_on"][sentinel] == {"condition": "service_healthy"}
        assert services[sentinel]["depends_on"]["redis"] == {"condition": "service_healthy"}
    if service in ("read", "write"):
        assert services["haproxy"]["depends_on"][service] == {"condition": "service_healthy"}
        assert "/readyz" in " ".join(services[service]["healthcheck"]["test"])
    if service == "consumer":
        [ready] = [arg for arg in services[service]["command"] if arg.endswith(".ready")]
        assert ready in services[service]["healthcheck"]["test"]
