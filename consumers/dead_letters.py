"""The dead-letter topic, read back: what a consumer set aside, and sending it round again.

A consumer sends a message it cannot decode to its dead-letter topic with `dlq.*` headers (where
it came from, the error, when). Reading them needs no consumer group: the partitions are assigned
directly and read from their start to their end at the moment of reading, and nothing is
committed, so reading never moves anything. A dead letter is named `<partition>:<offset>` in the
dead-letter topic, stable for as long as the broker keeps it.

Replaying publishes a dead letter's key and value again to the topic it came from, where the
consumers apply it like any event: through the version fence, so a replay never moves a cache
entry back, and replaying twice changes nothing more. A dead letter the current code still cannot
decode is not sent (it would only come back); `force` sends it anyway.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, TopicPartition
from django.conf import settings

from writes.producer import Deliveries

from .registry import ConsumerSpec


class Unreadable(Exception):
    """The dead-letter topic could not be read (missing, or the broker did not answer)."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]  # the dlq.* ones, and the event's own (request id, …)

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def error(self) -> str:
        return self.headers.get("dlq.error", "")

    @property
    def source(self) -> str:
        """topic[partition]@offset where the consumer found it."""
        headers = self.headers
        return f"{headers.get('dlq.topic', '?')}[{headers.get('dlq.partition', '?')}]@{headers.get('dlq.offset', '?')}"

    @property
    def at(self) -> datetime | None:
        try:
            return datetime.fromtimestamp(float(self.headers["dlq.at"]), tz=UTC)
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Filters:
    """Which dead letters: all by default; each given filter narrows."""

    ids: frozenset[str] = frozenset()
    error: str | None = None  # a part of the error, case-insensitive
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None

    def match(self, letter: DeadLetter) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.error and self.error.lower() not in letter.error.lower():
            return False
        if (self.since or self.until) and letter.at is None:
            return False
        if self.since and letter.at < self.since:
            return False
        if self.until and letter.at >= self.until:
            return False
        return not (self.key and (letter.key or b"").decode(errors="replace") != self.key)


def dead_letters(spec: ConsumerSpec, filters: Filters = Filters(), timeout: float = 10.0) -> Iterator[DeadLetter]:
    """Every dead letter of `spec` that matches, oldest first per partition."""
    reader = Consumer(
        {
            **settings.KAFKA_CONSUMER_CONFIG,
            "group.id": f"dead-letters-reader-{uuid.uuid4().hex}",  # never joined, never committed
            "enable.partition.eof": True,
        }
    )
    try:
        topic = reader.list_topics(spec.dead_letter_topic, timeout=timeout).topics[spec.dead_letter_topic]
        if topic.error is not None:
            raise Unreadable(f"{spec.dead_letter_topic}: {topic.error.str()} (manage.py create_topics makes it)")
        ends = {}
        for partition in topic.partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(spec.dead_letter_topic, partition), timeout=timeout)
            if high > low:
                ends[partition] = (low, high)
        if not ends:
            return
        reader.assign([TopicPartition(spec.dead_letter_topic, p, low) for p, (low, _) in ends.items()])
        remaining = {partition: high for partition, (_, high) in ends.items()}
        while remaining:
            message = reader.poll(timeout)
            if message is None:
                raise Unreadable(f"no answer from the broker within {timeout}s reading {spec.dead_letter_topic}")
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:  # at its end: read it all
                    remaining.pop(message.partition(), None)
                    continue
                raise Unreadable(f"{spec.dead_letter_topic}: {message.error().str()}")
            partition = message.partition()
            if partition not in remaining or message.offset() >= remaining[partition]:
                continue
            if message.offset() + 1 >= remaining[partition]:
                remaining.pop(partition)
            letter = DeadLetter(
                partition=partition,
                offset=message.offset(),
                key=message.key(),
                value=message.value(),
                headers={name: (value or b"").decode(errors="replace") for name, value in message.headers() or []},
            )
            if filters.match(letter):
                yield letter
    finally:
        reader.close()


def decode_error(spec: ConsumerSpec, letter: DeadLetter) -> str | None:
    """Why the current code cannot decode it, or prepare a write from it, or None when it can."""
    try:
        spec.handler.prepare([spec.handler.decode(letter.value)])
    except Exception as exc:  # decode and prepare are pure: any failure means a poison message
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class Replayed:
    sent: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # id -> why the current code refuses it
    failed: dict[str, str] = field(default_factory=dict)  # id -> the broker's error


def replay(
    spec: ConsumerSpec,
    letters: list[DeadLetter],
    *,
    force: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    timeout: float = 30.0,
) -> Replayed:
    """Publish each letter's key and value to the topic it came from; wait for the acknowledgements."""
    done = Replayed()
    deliveries = Deliveries()
    for letter in letters:
        refused = None if force else decode_error(spec, letter)
        if refused is not None:
            done.skipped[letter.id] = refused
            progress(1)
            continue
        headers = [(name, value.encode()) for name, value in letter.headers.items() if not name.startswith("dlq.")]
        headers.append(("dlq.replayed-from", f"{spec.dead_letter_topic}/{letter.id}".encode()))
        deliveries.produce(
            letter.headers.get("dlq.topic") or spec.topic,
            tag=letter.id,
            key=letter.key,
            value=letter.value,
            headers=headers,
            wait_for_room=True,
        )
        progress(1)
    deliveries.wait(timeout)
    done.sent = list(deliveries.acked)
    done.failed = dict(deliveries.failed)
    for tag in {letter.id for letter in letters} - set(done.sent) - set(done.failed) - set(done.skipped):
        done.failed[tag] = f"not acknowledged within {timeout}s"
    return done
