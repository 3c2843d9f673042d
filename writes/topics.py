"""The Kafka topics this project needs, owned by the stack: created, and grown, from settings.

Clients never create a topic by accident (`allow.auto.create.topics` is off for producers and
consumers: a broker would make it with its own default partition count). `topics_ensure`
creates what is missing and raises a topic's partition count to KAFKA_TOPIC_PARTITIONS; it never
shrinks one (Kafka cannot: that is an operator's decision, a new topic). `create_topics` runs it
once; the relay runs it whenever the broker comes back without them.

Adding partitions moves keys: a document's later events may go to another partition than its
earlier ones, so for a moment two consumers may hold its events. Nothing here depends on that
order: events carry whole states and every cache write is fenced by version, so the newest
version wins whichever partition delivers it last.

A broker that cannot add partitions (Tansu answers CreatePartitions with UNSUPPORTED_FEATURE)
gets the topic recreated when KAFKA_RECREATE_UNGROWABLE_TOPICS is on (the local stack only: it
deletes what the topic holds; the cache inspector repairs whatever the consumers miss).
"""

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from django.conf import settings

logger = logging.getLogger(__name__)


class TopicError(RuntimeError):
    """A topic the stack cannot make right by itself; the message says what to do."""


@dataclass(frozen=True)
class TopicState:
    topic: str
    outcome: str  # exists, created, grown, recreated
    partitions: int


def _admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})


def wanted_topics() -> list[str]:
    return [settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DEAD_LETTER_TOPIC]


def _error_code(exc: Exception):
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _wait(futures: dict, timeout: float, tolerated: tuple = ()) -> None:
    for future in futures.values():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if _error_code(exc) not in tolerated:
                raise


def topic_partitions(*, timeout: float = 5.0) -> dict[str, int]:
    """The partition count of each wanted topic the broker has (a missing one is absent). Asks
    for the whole cluster's metadata, which never creates a topic."""
    metadata = _admin().list_topics(timeout=timeout)
    return {topic: len(metadata.topics[topic].partitions) for topic in wanted_topics() if topic in metadata.topics}


def topics_ensure(*, timeout: float = 15.0) -> list[TopicState]:
    """Make every wanted topic exist with KAFKA_TOPIC_PARTITIONS partitions (see the module)."""
    admin, want = _admin(), settings.KAFKA_TOPIC_PARTITIONS
    have = topic_partitions(timeout=timeout)
    states = []
    for topic in wanted_topics():
        count = have.get(topic)
        if count is None:
            new = NewTopic(topic, num_partitions=want, replication_factor=settings.KAFKA_REPLICATION_FACTOR)
            _wait(admin.create_topics([new], request_timeout=timeout), timeout, (KafkaError.TOPIC_ALREADY_EXISTS,))
            states.append(TopicState(topic, "created", want))
        elif count < want:
            states.append(_grow(admin, topic, count, want, timeout))
        elif count > want:
            raise TopicError(
                f"{topic} has {count} partitions, more than KAFKA_TOPIC_PARTITIONS={want}: Kafka cannot remove "
                f"partitions. Set KAFKA_TOPIC_PARTITIONS={count}, or move to a new topic."
            )
        else:
            states.append(TopicState(topic, "exists", count))
    for state in states:
        if state.outcome != "exists":
            logger.warning("topic %s %s with %d partitions", state.topic, state.outcome, state.partitions)
    return states


def _grow(admin: AdminClient, topic: str, count: int, want: int, timeout: float) -> TopicState:
    try:
        _wait(admin.create_partitions([NewPartitions(topic, want)], request_timeout=timeout), timeout)
        return TopicState(topic, "grown", want)
    except KafkaException as exc:
        if _error_code(exc) != KafkaError._UNSUPPORTED_FEATURE:
            raise
        if not settings.KAFKA_RECREATE_UNGROWABLE_TOPICS:
            raise TopicError(
                f"{topic} has {count} partitions, not {want}, and this broker cannot add partitions: "
                "recreate the topic (or set KAFKA_RECREATE_UNGROWABLE_TOPICS=1 to let the stack do it)."
            ) from exc
    logger.warning("%s has %d partitions and this broker cannot add any: recreating it with %d", topic, count, want)
    _wait(admin.delete_topics([topic], request_timeout=timeout), timeout, (KafkaError.UNKNOWN_TOPIC_OR_PART,))
    new = NewTopic(topic, num_partitions=want, replication_factor=settings.KAFKA_REPLICATION_FACTOR)
    _wait(admin.create_topics([new], request_timeout=timeout), timeout)
    return TopicState(topic, "recreated", want)
