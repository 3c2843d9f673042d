"""The transactional outbox: publishing the events that writes commit inside their documents.

A write stores its event in the document's `outbox` array in the same atomic update as the
change itself. `outbox_publish` then sends it with the idempotent producer (acks=all,
writes/producer.py) and waits, up to KAFKA_PUBLISH_TIMEOUT_SECONDS, for the broker's
acknowledgement. Only an acknowledged event leaves the outbox, in batches off the request path
(`_SentMarker`); whatever is left there (broker down, process killed) is sent later by the
relay, so a write the client saw succeed never loses its event.
"""

import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from cqrs_site.core.metrics import OUTBOX_PUBLISHES, RELAY_PENDING, RELAY_PUBLISH_ERRORS
from cqrs_site.core.process import PerProcess

from .aggregates import AGGREGATES, event_from_outbox
from .documents import object_id
from .events import Event, outbox_entry, utc_now
from .producer import Deliveries, publisher

logger = logging.getLogger(__name__)

# How long the marker gathers acknowledged events before it removes them from their outboxes.
MARK_DELAY_SECONDS = 0.02


def event_send(deliveries: Deliveries, event: Event, *, wait_for_room: bool = False) -> None:
    """Queue one event on the events topic, keyed by its aggregate (one partition per document).
    Its headers name it for consumers' logs and dead letters without decoding the body."""
    headers = [("event_id", event.event_id.encode()), ("type", event.type.encode())]
    if event.request_id is not None:
        headers.append(("request_id", event.request_id.encode()))
    deliveries.produce(
        settings.KAFKA_EVENTS_TOPIC,
        tag=event.event_id,
        key=event.aggregate_id.encode(),
        value=event.encode(),
        headers=headers,
        wait_for_room=wait_for_room,
    )


def outbox_publish(*, aggregate: str, aggregate_id, entries: list[dict], sender: str = "write") -> bool:
    """Send outbox entries in order; True when the broker acknowledged them all within
    KAFKA_PUBLISH_TIMEOUT_SECONDS. `sender` (write, relay) labels cqrs_outbox_publish_total.

    Never raises: the events are already committed in the document, so a broker fault only
    delays them. While the broker is suspect (a recent publish timed out), it does not wait."""
    current = publisher()
    deliveries = Deliveries(on_ack=functools.partial(_marker().add, aggregate, aggregate_id))
    for entry in entries:
        event_send(deliveries, event_from_outbox(entry))
    waits = not current.suspect()
    delivered = deliveries.wait(settings.KAFKA_PUBLISH_TIMEOUT_SECONDS if waits else 0.0)
    acked = len(entries) if delivered else len(deliveries.acked)
    if acked:
        OUTBOX_PUBLISHES.labels(sender, "acked").inc(acked)
    if not delivered:
        OUTBOX_PUBLISHES.labels(sender, "deferred").inc(len(entries) - acked)
        logger.warning("publishing %s %s deferred to the relay: %s", aggregate, aggregate_id, deliveries.failed)
        if waits:
            current.suspect_for(settings.KAFKA_SUSPECT_SECONDS)
    return delivered


class _SentMarker:
    """Removes acknowledged events from their outboxes: one `$pull` per document, gathered for
    MARK_DELAY_SECONDS and sent as one bulk write per collection, on a thread of its own.

    A crash before the removal leaves an acknowledged event in its outbox: the relay sends it
    again, and consumers ignore the duplicate (versions)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: dict[tuple[str, object], list[str]] = defaultdict(list)
        self.wake = threading.Event()
        threading.Thread(target=self._run, name="outbox-marker", daemon=True).start()

    def add(self, aggregate: str, aggregate_id, event_id: str) -> None:
        with self.lock:
            self.queue[(aggregate, aggregate_id)].append(event_id)
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            threading.Event().wait(MARK_DELAY_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self.lock:
            batch, self.queue = self.queue, defaultdict(list)
        updates: dict[str, list[UpdateOne]] = defaultdict(list)
        for (aggregate, aggregate_id), event_ids in batch.items():
            updates[aggregate].append(
                UpdateOne({"_id": aggregate_id}, {"$pull": {"outbox": {"event_id": {"$in": event_ids}}}})
            )
        for aggregate, operations in updates.items():
            try:
                AGGREGATES[aggregate].collection().bulk_write(operations, ordered=False)
            except PyMongoError as exc:
                logger.warning(
                    "%d %s outboxes not cleared (the relay resends them): %s", len(operations), aggregate, exc
                )


_marker = PerProcess(_SentMarker)


def outbox_flush() -> None:
    """Remove every event acknowledged so far from its outbox, now."""
    _marker().flush()


@dataclass
class RelayPass:
    documents: int = 0
    events: int = 0
    failed: int = 0


def outbox_relay_pass(*, grace_seconds: float, limit: int = 1000, stop: threading.Event | None = None) -> RelayPass:
    """Publish the events left pending for longer than `grace_seconds` (the write path had its
    chance), in order per document, then wait for their acknowledgements (until `stop` is set)
    and remove exactly the acknowledged ones from their outboxes.

    A duplicate of an event the write path did send is harmless: consumers fence on versions."""
    cutoff = utc_now() - timedelta(seconds=grace_seconds)
    done = RelayPass()
    owners: dict[str, tuple[str, object]] = {}
    deliveries = Deliveries(on_ack=lambda event_id: _marker().add(*owners[event_id], event_id))
    for aggregate in AGGREGATES.values():
        pending = aggregate.collection().find({"outbox.occurred_at": {"$lt": cutoff}}, {"outbox": 1})
        for document in pending.limit(limit):
            if stop is not None and stop.is_set():
                break
            done.documents += 1
            for entry in document["outbox"]:
                owners[entry["event_id"]] = (aggregate.name, document["_id"])
                event_send(deliveries, event_from_outbox(entry))
                done.events += 1
    deliveries.wait(settings.KAFKA_PUBLISH_TIMEOUT_SECONDS * 5, stop=stop)
    done.failed = done.events - len(deliveries.acked)
    outbox_flush()
    RELAY_PENDING.set(done.events)
    OUTBOX_PUBLISHES.labels("relay", "acked").inc(done.events - done.failed)
    if done.failed:
        OUTBOX_PUBLISHES.labels("relay", "deferred").inc(done.failed)
        RELAY_PUBLISH_ERRORS.inc(done.failed)
    return done


@dataclass
class Replay:
    published: int = 0
    failed: int = 0
    missing: list[str] = field(default_factory=list)  # requested ids with no document


def events_replay(
    *, aggregate: str, ids: list[str] | None = None, progress: Callable[[int], None] = lambda n: None
) -> Replay:
    """Publish the current state of the chosen documents (all of them without `ids`) as their
    aggregate's replay event (UserReplayed, PostReplayed), waiting for every acknowledgement.

    For recovery after the broker lost events: consumers apply each through the version fence,
    so a replay never moves a cache backwards, and replaying twice changes nothing."""
    spec = AGGREGATES[aggregate]
    query = {} if ids is None else {"_id": {"$in": [oid for oid in map(object_id, ids) if oid is not None]}}
    deliveries, found = Deliveries(), set()
    for document in spec.collection().find(query, dict.fromkeys(spec.fields, 1)):
        found.add(str(document["_id"]))
        entry = outbox_entry(event_type=spec.replayed, aggregate=aggregate, state=document)
        event_send(deliveries, event_from_outbox(entry), wait_for_room=True)
        progress(1)
    deliveries.wait(settings.KAFKA_PRODUCER_CONFIG["message.timeout.ms"] / 1000 + 5)
    missing = [doc_id for doc_id in ids or () if str(object_id(doc_id)) not in found]
    return Replay(published=len(deliveries.acked), failed=len(found) - len(deliveries.acked), missing=missing)
