"""A whole stack with servers of its own, for tests that stop, freeze and kill its processes.

Every test leaves the stack healed (each process running and ready) for the next one, and
writes its figures (writes during the fault, events lost, time to converge) to
test-artifacts/faults.json.
"""

import contextlib
import json

import pytest

from tests.stackctl import ROOT, stack_start, stack_stop

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory):
    stack = stack_start(
        tmp_path_factory.mktemp("faults"),
        own_servers=True,
        group_suffix="-faults",
        KAFKA_PUBLISH_TIMEOUT_SECONDS="1",
        RELAY_GRACE_SECONDS="2",
        CQRS_FAULT_FILL_DELAY_SECONDS="0.05",
        # Feeds keep their newest 40 posts: deeper pages are read from MongoDB.
        FEED_MAX_MEMBERS="40",
    )
    yield stack
    try:
        stack.heal()
    finally:  # whatever heal found, nothing of the stack may be left running
        stack_stop(stack)


@contextlib.contextmanager
def topology_stack(tmp_path_factory, topology: str):
    """A fault stack whose cache is REDIS_TOPOLOGY=`topology` (deploy/redis_topology.py), healed
    and stopped after the `with` block."""
    stack = stack_start(
        tmp_path_factory.mktemp(topology),
        own_servers=True,
        group_suffix=f"-{topology}",
        REDIS_TOPOLOGY=topology,
        KAFKA_PUBLISH_TIMEOUT_SECONDS="1",
        RELAY_GRACE_SECONDS="2",
    )
    try:
        yield stack
    finally:
        try:
            stack.heal()
        finally:
            stack_stop(stack)


def healed_and_consistent(stack) -> None:
    """After a fault test: every process of the stack running and ready, no stale cache entry."""
    stack.heal()
    report = stack.consistency()
    assert report["stale"] == 0, report


@pytest.fixture
def stack(fault_stack):
    """The fault stack, healed after the test, which must leave no stale cache entry behind."""
    yield fault_stack
    healed_and_consistent(fault_stack)


@pytest.fixture
def record():
    """Record a test's figures in test-artifacts/faults.json."""

    def save(name: str, **figures) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "faults.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data[name] = figures
        path.write_text(json.dumps(data, indent=2, sort_keys=True))

    return save
