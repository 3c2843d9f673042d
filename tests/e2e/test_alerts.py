"""`make up MONITORING=1`: a real Prometheus (Debian's) scrapes the stack with deploy/alerts.yml.
Stopping every consumer makes NoCacheConsumer fire; starting them again resolves it, with no
command typed but the ones that broke and restarted them."""

import time
from datetime import datetime

import pytest
import requests

from tests.stackctl import stack_start, stack_stop

pytestmark = pytest.mark.e2e

INTERVAL = 1  # seconds between scrapes and rule evaluations (PROMETHEUS_INTERVAL)
FOR = 30  # the rule's `for:` in deploy/alerts.yml


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    running = stack_start(
        tmp_path_factory.mktemp("stack"),
        own_servers=False,
        group_suffix="-alerts",
        MONITORING="1",
        PROMETHEUS_INTERVAL=f"{INTERVAL}s",
    )
    yield running
    try:
        running.heal()
    finally:  # whatever heal found, nothing of the stack may be left running
        stack_stop(running)


def prometheus(stack, path: str, **params) -> dict:
    answer = requests.get(f"http://127.0.0.1:{stack.env['PROMETHEUS_PORT']}{path}", params=params, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]


def alert_state(stack, name: str) -> str:
    """`firing`, `pending`, or `inactive` when Prometheus holds no such alert."""
    states = [
        alert["state"]
        for alert in prometheus(stack, "/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == name
    ]
    return states[0] if states else "inactive"


def wait_for(check, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.5)
    return time.monotonic() - start


def test_prometheus_loads_every_rule_and_scrapes_every_process(monitored):
    groups = prometheus(monitored, "/api/v1/rules")["groups"]
    rules = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"NoCacheConsumer", "CacheConsumerLagGrowing", "PoolInstanceDown", "ProducerResets"} <= rules
    assert len(rules) == 10

    def all_up() -> bool:
        targets = prometheus(monitored, "/api/v1/targets")["activeTargets"]
        jobs = {target["labels"]["job"] for target in targets if target["health"] == "up"}
        return len(targets) == 8 and all(t["health"] == "up" for t in targets) and len(jobs) == 6

    wait_for(all_up, 15, "every target scraped")
    # A healthy stack fires nothing (the inspector's first sweep may still be running: no ratio yet).
    # NoCacheConsumer is pending until the consumers have joined and reported their lag.
    wait_for(lambda: alert_state(monitored, "NoCacheConsumer") == "inactive", 30, "the consumers reported")
    alerts = prometheus(monitored, "/api/v1/alerts")["alerts"]
    assert alerts == []


def test_stopping_every_consumer_fires_the_alert_and_starting_them_resolves_it(monitored):
    wait_for(lambda: alert_state(monitored, "NoCacheConsumer") == "inactive", 30, "the consumers reported")

    # Through supervisor, which then leaves them stopped; one at a time, the group settled in between
    # (on Tansu a member leaving mid-rebalance wedges the group: docs/stand-ins.md).
    monitored.process("consumer-1").stop()
    survivor = f"http://127.0.0.1:{monitored.process('consumer-2').env['METRICS_PORT']}/metrics"

    def holds_all_six() -> bool:
        return requests.get(survivor, timeout=2).text.count("cqrs_consumer_lag_messages{") == 6

    wait_for(holds_all_six, 30, "consumer-2 took every partition")
    # The rebalance left no lag series for a moment (the alert pending): wait until Prometheus has
    # seen consumer-2's, so that the alert's pending time below is the stop's, not the rebalance's.
    wait_for(lambda: alert_state(monitored, "NoCacheConsumer") == "inactive", 15, "Prometheus saw consumer-2")
    stopping = time.time()
    monitored.process("consumer-2").stop()
    # Pending from the first evaluation without a lag series: that is as soon as the stopping
    # consumer gives its partitions back, before its process has exited. Firing `for` later.
    wait_for(lambda: alert_state(monitored, "NoCacheConsumer") == "firing", FOR + 15, "the alert fired")
    seen_firing = time.time()
    [alert] = [
        a for a in prometheus(monitored, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == "NoCacheConsumer"
    ]
    pending_since = datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00")).timestamp()
    assert pending_since >= stopping - INTERVAL  # not while consumer-2 still held the partitions
    assert seen_firing - pending_since >= FOR  # and not before its `for`
    assert alert["labels"]["severity"] == "critical" and "make restart" in alert["annotations"]["description"]

    monitored.heal()  # starts the stopped consumers; they join the group and report their lag
    wait_for(lambda: alert_state(monitored, "NoCacheConsumer") == "inactive", 30, "the alert resolved")
    post = monitored.create_posts(1)
    monitored.wait_converged("post", post, 10)  # and the cache follows writes again
