"""The transactional outbox: publishing the events that writes commit inside their documents.

A write stores its event in the document's `outbox` array in the same atomic update as the
change itself. `outbox_publish` then sends it with an idempotent producer (acks=all) and waits,
up to KAFKA_PUBLISH_TIMEOUT_SECONDS, for the broker's acknowledgement; only an acknowledged
event is removed from the outbox. Whatever is left there (broker down, process killed) is sent
later by the relay, so a write the client saw succeed never loses its event.
"""

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from confluent_kafka import KafkaException, Producer
from django.conf import settings
from pymongo.errors import PyMongoError

from cqrs_site.metrics import OUTBOX_PUBLISHES, RELAY_PENDING, RELAY_PUBLISH_ERRORS

from .documents import Post, User, object_id
from .events import POST, POST_FIELDS, REPLAYED, USER, USER_FIELDS, Event, outbox_entry, utc_now

logger = logging.getLogger(__name__)

DOCUMENTS = {USER: User, POST: Post}
STATE_FIELDS = {USER: USER_FIELDS, POST: POST_FIELDS}


class _Publisher:
    """One producer per process, made on first use (after gunicorn forks), with a thread that
    serves its delivery callbacks so request threads only wait on their own event."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.producer = Producer(settings.KAFKA_PRODUCER_CONFIG)
        self.closed = threading.Event()
        self.poller = threading.Thread(target=self._poll_forever, name="kafka-poller", daemon=True)
        self.poller.start()

    def _poll_forever(self) -> None:
        while not self.closed.is_set():
            self.producer.poll(0.1)

    def close(self, timeout: float) -> int:
        self.closed.set()
        self.poller.join()
        return self.producer.flush(timeout)


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()
# After a publish times out, writes stop waiting for acknowledgements until this moment (a
# monotonic time): while the broker is down they answer at MongoDB speed, their events queued in
# the producer and kept in the outbox. Any acknowledgement ends it early.
_broker_suspect_until = 0.0


def _get_publisher() -> _Publisher:
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = _Publisher()
        return _publisher


def publisher_warm(timeout: float = 5.0) -> None:
    """Create this process's producer and fetch the topic's metadata ahead of the first write."""
    broker_reachable(timeout=timeout)


def publisher_close(timeout: float = 5.0) -> int:
    """Flush and stop this process's producer; returns how many messages were left unsent."""
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher.pid != os.getpid():
            return 0
        left, _publisher = _publisher.close(timeout), None
        return left


def broker_trusted() -> bool:
    """False while writes have stopped waiting for the broker (after an unacknowledged publish)."""
    return time.monotonic() >= _broker_suspect_until


def broker_reachable(*, timeout: float) -> bool:
    """Whether the broker answers a metadata request for the event topic within `timeout`."""
    try:
        metadata = _get_publisher().producer.list_topics(settings.KAFKA_EVENTS_TOPIC, timeout=timeout)
        return metadata.topics[settings.KAFKA_EVENTS_TOPIC].error is None
    except (KafkaException, KeyError):
        return False


def _produce(producer: Producer, event: Event, on_delivery) -> None:
    """Queue one event on the events topic, keyed by its aggregate (one partition per document).
    Its headers name it for consumers' logs and dead letters without decoding the body."""
    headers = [("event_id", event.event_id.encode()), ("type", event.type.encode())]
    if event.request_id is not None:
        headers.append(("request_id", event.request_id.encode()))
    producer.produce(
        settings.KAFKA_EVENTS_TOPIC,
        key=event.aggregate_id.encode(),
        value=event.encode(),
        headers=headers,
        on_delivery=on_delivery,
    )


def outbox_mark_sent(*, aggregate: str, aggregate_id, event_ids: list[str]) -> None:
    """Remove acknowledged events from the document's outbox."""
    DOCUMENTS[aggregate]._get_collection().update_one(
        {"_id": aggregate_id}, {"$pull": {"outbox": {"event_id": {"$in": event_ids}}}}
    )


def outbox_publish(
    *, aggregate: str, aggregate_id, entries: list[dict], timeout: float | None = None, sender: str = "write"
) -> bool:
    """Send outbox entries in order, keyed by aggregate id; True when the broker acknowledged all.
    `sender` (write, relay) labels the cqrs_outbox_publish_total metric.

    Never raises: the events are already committed in the document, so a broker fault only
    delays them (the relay sends what is left). Acknowledged entries leave the outbox.
    """
    global _broker_suspect_until
    if timeout is None:
        timeout = settings.KAFKA_PUBLISH_TIMEOUT_SECONDS
    if time.monotonic() < _broker_suspect_until:
        timeout = 0.0
    pending = {entry["event_id"] for entry in entries}
    acked: list[str] = []
    all_acked = threading.Event()
    lock = threading.Lock()
    waiting = True

    def mark_sent(event_ids: list[str]) -> None:
        try:
            outbox_mark_sent(aggregate=aggregate, aggregate_id=aggregate_id, event_ids=event_ids)
        except PyMongoError as exc:
            # Still in the outbox: the relay sends them again, and consumers ignore the duplicate.
            logger.warning("events %s sent but not marked: %s", event_ids, exc)

    def on_delivery(event_id: str, err, _msg) -> None:
        # Runs on the producer's one poller thread, which serves every request of this process:
        # it only hands the acknowledgement over. The request thread, still waiting, marks the
        # event sent itself; only an event acknowledged after its write answered is marked here.
        global _broker_suspect_until
        if err is not None:
            logger.warning("event %s not delivered: %s", event_id, err)
            return
        _broker_suspect_until = 0.0
        with lock:
            pending.discard(event_id)
            if waiting:
                acked.append(event_id)
                if not pending:
                    all_acked.set()
                return
        mark_sent([event_id])

    try:
        publisher = _get_publisher()
        for entry in entries:
            event = Event.from_outbox(entry)
            _produce(publisher.producer, event, functools.partial(on_delivery, event.event_id))
    except (KafkaException, BufferError) as exc:
        logger.warning("publishing %s %s deferred to the relay: %s", aggregate, aggregate_id, exc)
        timeout = -1.0  # those produced before the failure are still marked once acknowledged
    delivered = timeout >= 0 and all_acked.wait(timeout)
    with lock:
        waiting = False
        handed_over = list(acked)
        deferred = len(pending)
    if handed_over:
        mark_sent(handed_over)
    if deferred < len(entries):
        OUTBOX_PUBLISHES.labels(sender, "acked").inc(len(entries) - deferred)
    if deferred:
        OUTBOX_PUBLISHES.labels(sender, "deferred").inc(deferred)
    if delivered:
        return True
    if timeout > 0:
        logger.warning("broker did not acknowledge within %.1fs; writes stop waiting for it for a while", timeout)
        _broker_suspect_until = time.monotonic() + settings.KAFKA_SUSPECT_SECONDS
    return False


@dataclass
class Replay:
    published: int = 0
    failed: int = 0
    missing: list[str] | None = None  # requested ids with no document


def events_replay(
    *, aggregate: str, ids: list[str] | None = None, progress: Callable[[int], None] = lambda n: None
) -> Replay:
    """Publish the current state of the chosen documents (all of them without `ids`) as
    UserReplayed/PostReplayed events, waiting for the broker to acknowledge every one.

    For recovery after the broker lost events: consumers apply each through the version fence,
    so a replay never moves a cache backwards, and replaying twice changes nothing."""
    document_class, fields = DOCUMENTS[aggregate], STATE_FIELDS[aggregate]
    query: dict = {}
    done = Replay(missing=[])
    if ids is not None:
        query = {"_id": {"$in": [oid for oid in map(object_id, ids) if oid is not None]}}
    producer = _get_publisher().producer
    lock, outstanding, all_done = threading.Lock(), [0], threading.Event()

    def on_delivery(err, _msg) -> None:
        with lock:
            if err is None:
                done.published += 1
            else:
                done.failed += 1
                logger.warning("replayed event not delivered: %s", err)
            outstanding[0] -= 1
            if outstanding[0] == 0:
                all_done.set()

    found = set()
    for document in document_class._get_collection().find(query, dict.fromkeys(fields, 1)):
        found.add(str(document["_id"]))
        event = Event.from_outbox(outbox_entry(event_type=REPLAYED[aggregate], aggregate=aggregate, state=document))
        with lock:
            outstanding[0] += 1
            all_done.clear()
        while True:
            try:
                _produce(producer, event, on_delivery)
                break
            except BufferError:  # the producer's queue is full: let the broker catch up
                time.sleep(0.05)
        progress(1)
    if ids is not None:
        done.missing = [doc_id for doc_id in ids if str(object_id(doc_id)) not in found]
    with lock:
        nothing_pending = outstanding[0] == 0
    if not nothing_pending and not all_done.wait(settings.KAFKA_PRODUCER_CONFIG["message.timeout.ms"] / 1000 + 5):
        with lock:
            done.failed += outstanding[0]
    return done


@dataclass
class RelayPass:
    documents: int = 0
    events: int = 0
    failed: int = 0


def outbox_relay_pass(*, grace_seconds: float, limit: int = 1000) -> RelayPass:
    """Publish the events left pending for longer than `grace_seconds` (the write path had its
    chance), in order per document; each leaves its outbox once the broker acknowledged it.

    A duplicate of an event the write path did send is harmless: consumers fence on versions."""
    cutoff = utc_now() - timedelta(seconds=grace_seconds)
    done = RelayPass()
    for aggregate, document_class in DOCUMENTS.items():
        pending = document_class._get_collection().find({"outbox.occurred_at": {"$lt": cutoff}}, {"outbox": 1})
        for document in pending.limit(limit):
            entries = document["outbox"]
            done.documents += 1
            done.events += len(entries)
            if not outbox_publish(aggregate=aggregate, aggregate_id=document["_id"], entries=entries, sender="relay"):
                done.failed += len(entries)
    RELAY_PENDING.set(done.events)
    if done.failed:
        RELAY_PUBLISH_ERRORS.inc(done.failed)
    return done
