"""pytest plugin (loaded with `-p tests.servers`): real servers for the whole suite.

Starts Redis, SecantusDB and Tansu on free loopback ports before pytest-django loads the
settings, and exports their addresses. A server whose address is already in the environment
(REDIS_URL, MONGODB_URI, KAFKA_BOOTSTRAP_SERVERS) is used instead. Stopped by PID at the end.
"""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from deploy import processes

_state: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    run_dir = Path(tempfile.mkdtemp(prefix="cqrs-test-"))
    env, started = processes.servers_start(run_dir, mongo_storage=":memory:", free_ports=True)
    run_id = uuid.uuid4().hex[:8]
    env.update(
        {
            "CQRS_RUN_DIR": str(run_dir),
            # Unique names, so a run against shared real servers does not meet an earlier run's data.
            "KAFKA_EVENTS_TOPIC": f"cqrs.test-{run_id}.events",
            "KAFKA_DEAD_LETTER_TOPIC": f"cqrs.test-{run_id}.events.dlq",
            "CACHE_CONSUMER_GROUP": f"cqrs-test-{run_id}",
            "CQRS_CACHE_PREFIX": f"cqrs-test-{run_id}",
        }
    )
    os.environ.update(env)
    _state.update(run_dir=run_dir, started=started)


def started() -> list:
    """The server processes this run started (none for servers given by the environment)."""
    return list(_state.get("started", []))


def pytest_unconfigure(config):
    for process in reversed(_state.get("started", [])):
        process.stop()
    if "run_dir" in _state:
        shutil.rmtree(_state["run_dir"], ignore_errors=True)
