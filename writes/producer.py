"""The process's Kafka producer, which replaces itself when it can no longer send, and a tracker
of what it was asked to deliver.

One producer per process, made on first use (after gunicorn forks); a thread polls it (delivery
reports, errors). librdkafka's idempotent producer cannot recover from some states:
- a *fatal* error (an idempotence sequence error, fencing): the documented remedy is to
  destroy the instance and make a new one;
- a broker that lost its state: Tansu, restarted, answers UNKNOWN_PRODUCER_ID to every
  produce, and librdkafka bumps its epoch locally for ever, with no fatal error (measured:
  epoch 353 after 15 s, every message timed out). The poller calls that a *stall*: messages
  outstanding for KAFKA_PRODUCER_STALL_SECONDS with no acknowledgement while the broker
  answers a metadata request for the topic.
- a broker that came back after its connections dropped (idle producers included: they hold
  nothing outstanding, so nothing would show the stall until their next write waited it out):
  it may have lost its state, and a new instance costs nothing, so the poller makes one as soon
  as the broker answers again.
In each case the poller purges the old instance (the waiting deliveries fail at once; their
events are still in the outboxes, so the relay or a retry sends them) and makes a new one, at
most once per backoff period (doubling up to 30 s while resets repeat). `producer_state()`
tells readiness and metrics whether writes can publish directly.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer
from django.conf import settings

from cqrs_site.core.metrics import PRODUCER_DIRECT, PRODUCER_RESETS
from cqrs_site.core.process import PerProcess

logger = logging.getLogger(__name__)

MAX_RESET_BACKOFF_SECONDS = 30.0
RESET_REASONS = ("fatal", "stalled", "reconnected")  # cqrs_producer_resets_total's `reason`


class _Publisher:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards `producer` against a swap during produce()
        self.producer = self._new()
        self.resets = 0
        self.reset_reason: str | None = None  # set by a callback; acted on by the poller
        self.reset_backoff = 1.0
        self.next_reset_at = 0.0
        self.last_ack = time.monotonic()
        self.outstanding_since: float | None = None
        self.stalled = False  # the broker answers, this instance does not deliver
        self.disconnected = False  # every broker connection dropped since the last check
        self.next_check_at = 0.0  # the broker is asked about the topic at most once a second
        self.topic_missing_logged_at = 0.0
        # After a publish timed out, writes stop waiting for acknowledgements until this moment
        # (monotonic): while the broker is down they answer at MongoDB speed, their events kept
        # in the outboxes. Any acknowledgement ends it early.
        self.suspect_until = 0.0
        self.closed = threading.Event()
        self.poller = threading.Thread(target=self._poll_forever, name="kafka-poller", daemon=True)
        for reason in RESET_REASONS:  # at 0 from the start, so that the first reset is an increase
            PRODUCER_RESETS.labels(reason)
        self.poller.start()

    def _new(self) -> Producer:
        return Producer({**settings.KAFKA_PRODUCER_CONFIG, "error_cb": self._on_error})

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            logger.error("Kafka producer fatal error, replacing the producer: %s", error)
            self.reset_reason = "fatal"
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            logger.warning("Kafka producer lost the broker: %s", error)
            self.disconnected = True
        elif error.code() != KafkaError._TRANSPORT:  # one connection dropped: librdkafka retries it
            logger.warning("Kafka producer error: %s", error)

    def produce(self, **message) -> None:
        with self.lock:
            self.producer.produce(**message)

    def suspect(self) -> bool:
        return time.monotonic() < self.suspect_until

    def suspect_for(self, seconds: float) -> None:
        logger.warning("the broker did not acknowledge in time; writes stop waiting for it for %.1fs", seconds)
        self.suspect_until = time.monotonic() + seconds

    def acknowledged(self) -> None:
        self.last_ack = time.monotonic()
        self.suspect_until = 0.0
        if self.stalled or self.reset_backoff > 1.0:
            self.stalled, self.reset_backoff = False, 1.0

    def _poll_forever(self) -> None:
        while not self.closed.is_set():
            try:
                self.producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.fatal():
                    self.reset_reason = "fatal"
                logger.error("Kafka producer poll failed: %s", exc)
            except Exception:  # a bug in a callback must not stop every later delivery
                logger.exception("Kafka delivery callback failed")
            try:
                self._watch()
            except Exception:
                logger.exception("Kafka producer watch failed")

    def _watch(self) -> None:
        now = time.monotonic()
        if len(self.producer) == 0:
            self.outstanding_since = None
        elif self.outstanding_since is None:
            self.outstanding_since = now
        waiting = self.outstanding_since is not None and now - max(self.outstanding_since, self.last_ack)
        stalled = bool(waiting and waiting > settings.KAFKA_PRODUCER_STALL_SECONDS)
        self.stalled = self.stalled or stalled
        if (
            self.reset_reason is None
            and (stalled or self.disconnected)
            and now >= max(self.next_reset_at, self.next_check_at)
        ):
            self.next_check_at = now + 1.0
            if self._topic_answers():
                self.reset_reason = "stalled" if stalled else "reconnected"
        if self.reset_reason is not None and now >= self.next_reset_at:
            self._reset(self.reset_reason)
        PRODUCER_DIRECT.set(1 if self.state() == "direct" else 0)

    def _topic_answers(self) -> bool:
        """Whether the broker answers for the event topic: then a stall is this instance's fault."""
        try:
            metadata = self.producer.list_topics(settings.KAFKA_EVENTS_TOPIC, timeout=1.0)
        except KafkaException:
            return False
        topic = metadata.topics.get(settings.KAFKA_EVENTS_TOPIC)
        if topic is None or topic.error is not None:
            if time.monotonic() - self.topic_missing_logged_at > 10:
                self.topic_missing_logged_at = time.monotonic()
                logger.error(
                    "the topic %s is missing: run `manage.py create_topics` (the relay does it by itself)",
                    settings.KAFKA_EVENTS_TOPIC,
                )
            return False
        return True

    def _reset(self, reason: str) -> None:
        with self.lock:
            old, self.producer = self.producer, self._new()
        self.reset_reason, self.outstanding_since, self.last_ack = None, None, time.monotonic()
        self.disconnected = False
        self.next_reset_at = time.monotonic() + self.reset_backoff
        self.reset_backoff = min(self.reset_backoff * 2, MAX_RESET_BACKOFF_SECONDS)
        self.resets += 1
        PRODUCER_RESETS.labels(reason).inc()
        logger.warning("Kafka producer replaced (%s); reset %d of this process", reason, self.resets)
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.flush(0)  # serves the purged messages' delivery reports: their waiters fail now
        old.close()

    def state(self) -> str:
        """`direct` while writes publish directly; otherwise why not: `resetting` (the producer
        is being replaced), `disconnected` (no broker answers), `stalled` (it does not deliver),
        `suspect` (a publish timed out)."""
        if self.reset_reason is not None:
            return "resetting"
        if self.disconnected:
            return "disconnected"
        if self.stalled:
            return "stalled"
        return "suspect" if self.suspect() else "direct"

    def close(self, timeout: float) -> int:
        self.closed.set()
        self.poller.join()
        left = self.producer.flush(timeout)
        if left:
            self.producer.purge(in_queue=True, in_flight=True, blocking=False)
            self.producer.flush(0)
        return left


publisher = PerProcess(_Publisher)  # this process's publisher (made after fork, on first use)


def publisher_warm(timeout: float = 5.0) -> None:
    """Make this process's producer and fetch the event topic's metadata ahead of the first write."""
    try:
        publisher().producer.list_topics(settings.KAFKA_EVENTS_TOPIC, timeout=timeout)
    except KafkaException as exc:
        logger.warning("the broker did not answer while warming up: %s", exc)


def publisher_close(timeout: float = 5.0) -> int:
    """Flush and stop this process's producer; returns how many messages were left unsent."""
    current = publisher.clear()
    return 0 if current is None else current.close(timeout)


def producer_state() -> str:
    """`direct`, `suspect`, `stalled` or `resetting` (_Publisher.state); `idle` before first use."""
    current = publisher.peek()
    return "idle" if current is None else current.state()


@dataclass
class Deliveries:
    """Produce these, wait for their acknowledgements, tell me which failed.

    Each message carries a tag (an event id, say). `on_ack(tag)` runs for every acknowledged
    message, also one acknowledged after `wait` gave up, on the producer's poller thread: keep
    it short. A message the producer refused (queue full, producer closed) fails at once.
    """

    on_ack: Callable[[str], None] | None = None
    acked: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    _pending: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _settled: threading.Event = field(default_factory=threading.Event)

    def produce(
        self,
        topic: str,
        *,
        tag: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable = (),
        wait_for_room=False,
    ) -> None:
        """Queue one message. With `wait_for_room` (bulk sends), wait while the queue is full."""
        with self._lock:
            self._pending.add(tag)
            self._settled.clear()
        current = publisher()
        report = functools.partial(self._report, current, tag)
        while True:
            try:
                return current.produce(topic=topic, key=key, value=value, headers=list(headers), on_delivery=report)
            except BufferError as exc:
                if not wait_for_room:
                    return self._settle(tag, f"not queued: {exc}")
                time.sleep(0.05)  # let the broker catch up
            except KafkaException as exc:
                return self._settle(tag, f"not queued: {exc}")

    def _report(self, current: _Publisher, tag: str, error, _message) -> None:
        if error is None:
            current.acknowledged()
            if self.on_ack is not None:
                self.on_ack(tag)
        self._settle(tag, None if error is None else str(error))

    def _settle(self, tag: str, error: str | None) -> None:
        with self._lock:
            if tag not in self._pending:
                return
            self._pending.discard(tag)
            if error is None:
                self.acked.append(tag)
            else:
                self.failed[tag] = error
            if not self._pending:
                self._settled.set()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Until every message is settled, `timeout` passed or `stop` is set; True if all were
        acknowledged."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while not self._settled.is_set() and self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                break
            self._settled.wait(min(left, 0.1) if stop is not None else left)
        return self.all_acked

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def all_acked(self) -> bool:
        with self._lock:
            return not self._pending and not self.failed
