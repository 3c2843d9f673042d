"""`run_consumer cache` as a real process against the real broker and Redis."""

import json
import uuid

import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from django.conf import settings

from cqrs_site.core.codec import post_key, post_likes_key, user_key
from cqrs_site.core.logs import request_id_clear, request_id_set
from cqrs_site.core.redis_client import redis_client
from deploy.processes import free_port
from reads.cache import cache_get
from tests.conftest import eventually
from writes import services
from writes.events import POST, POST_UPDATED, USER, USER_CREATED, Event


def cached_version(key: str) -> int | None:
    entry = cache_get(key)
    return None if entry is None else entry.version


def produce(*messages: tuple[bytes, bytes], topic: str | None = None) -> None:
    producer = Producer(settings.KAFKA_PRODUCER_CONFIG)
    for key, value in messages:
        producer.produce(topic or settings.KAFKA_EVENTS_TOPIC, key=key, value=value)
    assert producer.flush(10) == 0


def marker_after(key: bytes) -> str:
    """Send, on `key`'s partition, a user event; once it is cached, all before it was consumed."""
    user_id = uuid.uuid4().hex[:24]
    state = {"id": user_id, "username": "marker", "created_at": "2026-01-01T00:00:00.000Z", "version": 1}
    event = Event(uuid.uuid4().hex, USER_CREATED, USER, user_id, 1, state["created_at"], state)
    produce((key, event.encode()))
    return user_key(user_id)


def dead_letter_of(value: bytes):
    """The dead-letter topic's message carrying `value` (read by a group of its own), once it is there."""
    reader = Consumer(
        {
            **settings.KAFKA_CONSUMER_CONFIG,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
            "enable.auto.offset.store": True,
        }
    )
    reader.subscribe([settings.KAFKA_DEAD_LETTER_TOPIC])
    found = []

    def dead_lettered():
        found.extend(m for m in reader.consume(10, 0.5) if m.error() is None)
        return [m for m in found if m.value() == value]

    try:
        [message] = eventually(dead_lettered, timeout=20)
    finally:
        reader.close()
    return message


def test_every_kind_of_write_reaches_the_cache(consumer):
    user = services.user_create(username="writer")
    post = services.post_create(user_id=user["id"], title="T", content="C")
    eventually(lambda: cached_version(user_key(user["id"])) == 1 and cached_version(post_key(post["id"])) == 1)
    services.post_react(post_id=post["id"], reaction="like")
    services.post_react(post_id=post["id"], reaction="dislike")
    eventually(lambda: cached_version(post_likes_key(post["id"])) == 3)
    assert json.loads(cache_get(post_likes_key(post["id"])).body)["dislike_count"] == 1
    services.post_update(post_id=post["id"], content="C2")
    eventually(lambda: cached_version(post_key(post["id"])) == 4)
    assert json.loads(cache_get(post_key(post["id"])).body)["content"] == "C2"
    services.post_delete(post_id=post["id"])
    eventually(lambda: cached_version(post_key(post["id"])) == 5)
    assert cache_get(post_key(post["id"])).body is None  # a tombstone
    assert cache_get(post_likes_key(post["id"])).body is None


def post_event(post: dict, version: int, title: str) -> bytes:
    state = {**post, "title": title, "version": version}
    return Event(uuid.uuid4().hex, POST_UPDATED, POST, post["id"], version, post["updated_at"], state).encode()


def test_replaying_an_event_or_an_older_one_changes_nothing(consumer):
    user = services.user_create(username="replay")
    post = services.post_create(user_id=user["id"], title="v1", content="C")
    key = post["id"].encode()
    v2 = post_event(post, 2, "v2")
    produce((key, v2))
    eventually(lambda: cached_version(post_key(post["id"])) == 2)
    stored = redis_client().get(post_key(post["id"]))

    produce((key, v2), (key, post_event(post, 1, "stale")), (key, v2))
    marker = marker_after(key)
    eventually(lambda: cache_get(marker))
    assert redis_client().get(post_key(post["id"])) == stored


def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_partition_moves_on(consumer):
    key = b"poison-key"
    produce((key, b"{this is not an event"))
    marker = marker_after(key)
    eventually(lambda: cache_get(marker), timeout=15)

    message = dead_letter_of(b"{this is not an event")
    headers = dict(message.headers())
    assert headers["dlq.error"].startswith(b"EventInvalid: not JSON")
    assert headers["dlq.topic"] == settings.KAFKA_EVENTS_TOPIC.encode()
    assert message.key() == key


def committed_offsets() -> dict[int, int]:
    probe = Consumer({**settings.KAFKA_CONSUMER_CONFIG, "group.id": settings.CACHE_CONSUMER_GROUP})
    metadata = probe.list_topics(settings.KAFKA_EVENTS_TOPIC, timeout=10)
    partitions = [
        TopicPartition(settings.KAFKA_EVENTS_TOPIC, p) for p in metadata.topics[settings.KAFKA_EVENTS_TOPIC].partitions
    ]
    committed = {tp.partition: tp.offset for tp in probe.committed(partitions, timeout=10)}
    ends = {tp.partition: probe.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions}
    probe.close()
    return committed, ends


def test_sigterm_commits_and_a_restarted_consumer_resumes_where_it_stopped(start_consumer):
    first = start_consumer()
    user = services.user_create(username="resume")
    eventually(lambda: cached_version(user_key(user["id"])) == 1, timeout=15)
    assert first.terminate() == 0
    assert "stopped" in first.output()
    committed, ends = committed_offsets()
    assert all(committed[p] == ends[p] for p in ends if ends[p] > 0), (committed, ends)

    post = services.post_create(user_id=user["id"], title="while down", content="C")
    redis_client().delete(user_key(user["id"]))
    start_consumer()
    eventually(lambda: cached_version(post_key(post["id"])) == 1, timeout=15)
    # Resumed from the committed offsets: the already-applied UserCreated was not consumed again.
    assert cache_get(user_key(user["id"])) is None


def logged(consumer) -> list[dict]:
    """The consumer's log lines (JSON objects; librdkafka's own lines are not ours)."""
    return [json.loads(line) for line in consumer.output().splitlines() if line.startswith("{")]


def test_the_consumer_logs_each_event_with_its_request_id_and_serves_its_metrics(start_consumer):
    port = free_port()
    consumer = start_consumer("--metrics-port", str(port))
    request_id_set("trace-consumer-1")
    try:
        user = services.user_create(username="followed")
    finally:
        request_id_clear()
    eventually(lambda: cached_version(user_key(user["id"])) == 1, timeout=15)

    [applied] = eventually(lambda: [line for line in logged(consumer) if line.get("key") == user["id"]])
    assert applied["message"] == "event applied" and applied["request_id"] == "trace-consumer-1"
    assert applied["event_type"] == "UserCreated" and applied["logger"] == "consumers.runner"

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    metrics = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")
    }
    assert metrics['cqrs_consumer_events_applied_total{consumer="cache",type="UserCreated"}'] >= 1
    assert metrics["cqrs_write_to_apply_seconds_count"] >= 1
    # The delay is measured from the write's commit: well under the 15 s the test allowed.
    assert 0 < metrics["cqrs_write_to_apply_seconds_sum"] < 15 * metrics["cqrs_write_to_apply_seconds_count"]


def test_an_event_that_decodes_but_makes_no_cache_write_is_dead_lettered_and_its_batch_applied(consumer):
    """A well-formed event whose state lacks a field a read model needs cannot be prepared: it is
    poison like an undecodable message, and the rest of its batch is still applied."""
    from writes.events import POST_REACTED

    user = services.user_create(username="unpreparable")
    good = services.post_create(user_id=user["id"], title="good", content="C")
    eventually(lambda: cached_version(post_key(good["id"])) == 1)
    bad_id = uuid.uuid4().hex[:24]
    bad_state = {**good, "id": bad_id, "version": 1}
    del bad_state["like_count"]  # the likes view is built from it
    bad = Event(uuid.uuid4().hex, POST_REACTED, POST, bad_id, 1, good["created_at"], bad_state).encode()
    key = b"unpreparable"
    produce((key, bad), (key, post_event(good, 2, "still applied")))
    marker = marker_after(key)
    eventually(lambda: cache_get(marker), timeout=15)
    assert json.loads(cache_get(post_key(good["id"])).body)["title"] == "still applied"
    assert cache_get(post_key(bad_id)) is None

    message = dead_letter_of(bad)
    assert dict(message.headers())["dlq.error"].startswith(b"KeyError: 'like_count'")
