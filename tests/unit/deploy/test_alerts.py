"""deploy/alerts.yml: valid (promtool check rules), each alert tested to fire and to stay quiet
(promtool test rules deploy/alerts.test.yml), and only on series the code exports."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.unit.deploy.test_monitoring import exported_series

ROOT = Path(__file__).resolve().parents[3]
RULES = yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())
TESTS = yaml.safe_load((ROOT / "deploy/alerts.test.yml").read_text())
ALERTS = {rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"]}


def promtool(*args: str) -> subprocess.CompletedProcess:
    # Debian's prometheus package (make test installs it): a missing promtool fails, never skips.
    assert shutil.which("promtool"), "promtool missing: make install-test installs Debian's prometheus"
    return subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True)


def test_the_rules_are_valid():
    checked = promtool("check", "rules", "deploy/alerts.yml")
    assert checked.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )


def test_the_rules_pass_their_unit_tests():
    tested = promtool("test", "rules", "deploy/alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_both_firing_and_quiet():
    outcomes = {name: set() for name in ALERTS}
    for case in TESTS["tests"]:
        for check in case["alert_rule_test"]:
            outcomes[check["alertname"]].add("fires" if check["exp_alerts"] else "quiet")
    assert {name: seen for name, seen in outcomes.items() if seen != {"fires", "quiet"}} == {}


def test_the_operator_watches_what_the_issue_lists():
    assert set(ALERTS) == {
        "CacheConsumerLagGrowing",
        "NoCacheConsumer",
        "DeadLettersArriving",
        "CacheLostAppliedEvents",
        "RelayEventsPendingTooLong",
        "StalenessOverBound",
        "InspectorConsistencyBelowGoal",
        "ApiServerErrors",
        "PoolInstanceDown",
        "ProducerResets",
    }
    for rule in ALERTS.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_cqrs_series_an_alert_reads_is_one_the_code_exports():
    used = {name for rule in ALERTS.values() for name in re.findall(r"\bcqrs_[a-z_]+", rule["expr"])}
    assert used and used <= exported_series(), used - exported_series()
