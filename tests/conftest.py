"""Shared fixtures. The servers themselves are started by tests/servers.py (a -p plugin), so
their addresses are in the environment before Django's settings load."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def stores():
    """Indexes and topics exist before any test runs (as `make up` ensures for the stack)."""
    from writes.documents import ensure_indexes
    from writes.topics import topics_ensure

    ensure_indexes()
    topics_ensure()
    yield
    from writes.producer import publisher_close

    publisher_close()


@pytest.fixture(autouse=True)
def clean_stores():
    """Each test starts from empty collections and an empty cache, but for the consumers' notes
    of what they applied: a running stack's consumers (tests/e2e) would read a note gone as a
    Redis that lost everything, and apply the last minute of the log again (consumers/runner.py)."""
    from cqrs_site.core.redis_client import redis_client
    from writes.documents import IdempotencyRecord, Post, User

    for documents in (User, Post, IdempotencyRecord):
        documents._get_collection().delete_many({})
    client = redis_client()
    keys = [key for key in client.scan_iter(count=1000) if b":consumer:" not in key]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture
def api_client(db):
    """A client of the whole API (the test settings route reads and writes) with a valid token."""
    from django.contrib.auth import get_user_model

    from writes.tokens import api_token_create

    user = get_user_model().objects.create(username="api-client")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
    return client


def eventually(check, *, timeout: float = 10.0, interval: float = 0.05):
    """Return check()'s first truthy value, or fail after `timeout` seconds with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def process_env(**extra) -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "cqrs_site.settings.consumer", "PYTHONUNBUFFERED": "1", **extra}


class ConsumerProcess:
    """`manage.py run_consumer` as a real process in the test's consumer group."""

    def __init__(self, log_path: Path, *args: str, group: str):
        self.log_path = log_path
        self.ready_file = log_path.with_suffix(".ready")
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "run_consumer",
                "cache",
                "--ready-file",
                str(self.ready_file),
                *args,
            ],
            cwd=ROOT,
            env=process_env(CACHE_CONSUMER_GROUP=group),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the consumer has joined its group and holds partitions."""
        eventually(lambda: self.ready_file.exists() or self.proc.poll() is not None, timeout=timeout)
        assert self.proc.poll() is None, f"consumer exited {self.proc.returncode}:\n{self.output()}"

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def group_starting_at_the_end(group: str) -> None:
    """Commit, for a new group, the events topic's current ends: its consumers start there."""
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.KAFKA_EVENTS_TOPIC
    probe = Consumer({**settings.KAFKA_CONSUMER_CONFIG, "group.id": group})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in partitions
        ]
        probe.commit(offsets=ends, asynchronous=False)
    finally:
        probe.close()


@pytest.fixture
def start_consumer(tmp_path, settings):
    """Start consumers on demand; every one still running at the end is stopped with SIGTERM
    and must exit cleanly. A test's consumers form a group of their own (settings follow),
    starting where the topic ended when the test began: on Tansu a member that leaves while its
    group rebalances can wedge that group for good (docs/stand-ins.md), and one wedged
    suite-wide group failed every later consumer test."""
    group = f"{settings.CACHE_CONSUMER_GROUP}-{uuid.uuid4().hex[:8]}"
    settings.CACHE_CONSUMER_GROUP = group
    group_starting_at_the_end(group)
    running: list[ConsumerProcess] = []

    def start(*args: str) -> ConsumerProcess:
        consumer = ConsumerProcess(tmp_path / f"consumer-{len(running)}.log", *args, group=group)
        running.append(consumer)
        return consumer

    yield start
    for consumer in running:
        if consumer.proc.poll() is None:
            code = consumer.terminate()
            assert code == 0, f"consumer exited {code}:\n{consumer.output()}"


@pytest.fixture
def consumer(start_consumer):
    return start_consumer()


@pytest.fixture
def event_topic() -> str:
    return settings.KAFKA_EVENTS_TOPIC


@pytest.fixture
def paused_broker_ctl():
    """A context manager that freezes the suite's Kafka process (SIGSTOP) while it is open:
    connections stay up and nothing answers, as with a hung broker. Needs the embedded broker."""
    from tests import servers

    kafka = [p for p in servers.started() if p.name == "kafka"]
    if not kafka:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at an external broker; it cannot be paused from here")

    @contextlib.contextmanager
    def paused():
        pid = kafka[0].pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    return paused
