"""The transactional outbox: publishing the events that writes commit inside their documents.

A write stores its event in the document's `outbox` array in the same atomic update as the
change itself. `outbox_publish` then sends it with the idempotent producer (acks=all,
writes/producer.py) and waits, up to KAFKA_PUBLISH_TIMEOUT_SECONDS, for the broker's
acknowledgement. Only an acknowledged event leaves the outbox, in batches off the request path
(`_SentMarker`); whatever is left there (broker down, process killed) is sent later by the
relay, so a write the client saw succeed never loses its event.

The relay finds that work two ways. A write that gives up on the broker notes its event
(document and event id) in a Redis set (`relay_due_key`), which the relay takes every
RELAY_INTERVAL_SECONDS and reads by `_id`: it sends the noted events, and any other of those
outboxes' events past the grace. A writer killed before it could note anything (or Redis down)
is covered by the full pass, a query of every outbox past its grace, every RELAY_SCAN_SECONDS,
through the index on `outbox.occurred_at`.

So an event younger than the grace leaves its outbox only once its own writer sent it or gave
it up: a write whose outcome MongoDB left unknown looks for its event there (writes/outcome.py),
and finding it gone must mean it never landed.
"""

import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from cqrs_site.core.codec import relay_due_key
from cqrs_site.core.metrics import OUTBOX_PUBLISHES, RELAY_PENDING, RELAY_PUBLISH_ERRORS
from cqrs_site.core.process import PerProcess
from cqrs_site.core.redis_client import redis_client

from .aggregates import AGGREGATES, Aggregate, event_from_outbox
from .documents import object_id
from .events import Event, outbox_entry, utc_now
from .idempotency import record_complete_from_entry
from .producer import Deliveries, publisher

logger = logging.getLogger(__name__)

# How long the marker gathers acknowledged events before it removes them from their outboxes.
MARK_DELAY_SECONDS = 0.02
# Before every event's time: the lower bound of the relay's range over `outbox.occurred_at`.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        _before_removal(entry)
        event_send(deliveries, event_from_outbox(entry))
    waits = not current.suspect()
    delivered = deliveries.wait(settings.KAFKA_PUBLISH_TIMEOUT_SECONDS if waits else 0.0)
    acked = len(entries) if delivered else len(deliveries.acked)
    if acked:
        OUTBOX_PUBLISHES.labels(sender, "acked").inc(acked)
    if not delivered:
        OUTBOX_PUBLISHES.labels(sender, "deferred").inc(len(entries) - acked)
        logger.warning("publishing %s %s deferred to the relay: %s", aggregate, aggregate_id, deliveries.failed)
        relay_due(aggregate, [(aggregate_id, entry["event_id"]) for entry in entries])
        if waits:
            current.suspect_for(settings.KAFKA_SUSPECT_SECONDS)
    return delivered


def relay_due(aggregate: str, events: list[tuple]) -> None:
    """Note events (document id, event id) that wait in their outboxes, for the relay's next pass."""
    try:
        redis_client().sadd(relay_due_key(aggregate), *[f"{doc_id}:{event_id}" for doc_id, event_id in events])
    except RedisError as exc:  # the relay's full pass finds them
        logger.warning("could not note %d %s events for the relay: %s", len(events), aggregate, exc)


def _before_removal(entry: dict) -> None:
    """An entry is sent, then removed once acknowledged. One that names an Idempotency-Key's
    record first stores its write's answer there (writes/idempotency.py: after a crash, a retry
    that finds neither the entry nor the answer knows the write was never made)."""
    if "idempotency" in entry:
        try:
            record_complete_from_entry(entry)
        except PyMongoError as exc:  # the request stores it too, unless it crashed as well
            logger.warning("the answer of %s was not stored in its Idempotency-Key record: %s", entry["event_id"], exc)


class _SentMarker:
    """Removes acknowledged events from their outboxes, gathered for MARK_DELAY_SECONDS and sent
    as one update per collection (`$pull` of their ids from the documents that hold them: 0.6 ms
    a document on SecantusDB, against 1.7 ms for one `$pull` each), on a thread of its own.

    A crash before the removal leaves an acknowledged event in its outbox: the relay sends it
    again, and consumers ignore the duplicate (versions)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flushing = threading.Lock()  # one flush at a time: outbox_flush() returns once all is written
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
        with self.flushing:
            self._flush()

    def _flush(self) -> None:
        with self.lock:
            batch, self.queue = self.queue, defaultdict(list)
        by_aggregate: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for (aggregate, aggregate_id), event_ids in batch.items():
            documents, events = by_aggregate[aggregate]
            documents.append(aggregate_id)
            events += event_ids
        for aggregate, (documents, events) in by_aggregate.items():
            try:
                AGGREGATES[aggregate].collection().update_many(
                    {"_id": {"$in": documents}}, {"$pull": {"outbox": {"event_id": {"$in": events}}}}
                )
            except PyMongoError as exc:
                logger.warning(
                    "%d %s outboxes not cleared (the relay resends them): %s", len(documents), aggregate, exc
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


def outbox_relay_pass(
    *, grace_seconds: float, limit: int = 1000, stop: threading.Event | None = None, due_only: bool = False
) -> RelayPass:
    """Publish events left pending in outboxes, in order per document, then wait for their
    acknowledgements (until `stop` is set) and remove exactly the acknowledged ones.

    `due_only`: the documents writes noted for the relay (see the module), at once. Otherwise
    every outbox with an event older than `grace_seconds` (the write path had its chance).
    A duplicate of an event the write path did send is harmless: consumers fence on versions."""
    done = RelayPass()
    owners: dict[str, tuple[str, object]] = {}
    deliveries = Deliveries(on_ack=lambda event_id: _marker().add(*owners[event_id], event_id))
    for aggregate in AGGREGATES.values():
        for document in _pending(aggregate, grace_seconds, limit, due_only):
            if stop is not None and stop.is_set():
                break
            done.documents += 1
            for entry in document["outbox"]:
                _before_removal(entry)
                owners[entry["event_id"]] = (aggregate.name, document["_id"])
                event_send(deliveries, event_from_outbox(entry))
                done.events += 1
    deliveries.wait(settings.KAFKA_PUBLISH_TIMEOUT_SECONDS * 5, stop=stop)
    done.failed = done.events - len(deliveries.acked)
    outbox_flush()
    acked = set(deliveries.acked)
    for name in AGGREGATES:  # tried again at the next pass
        again = [(doc_id, tag) for tag, (owner, doc_id) in owners.items() if owner == name and tag not in acked]
        if again:
            relay_due(name, again)
    if not due_only:
        RELAY_PENDING.set(done.events)
    OUTBOX_PUBLISHES.labels("relay", "acked").inc(done.events - done.failed)
    if done.failed:
        OUTBOX_PUBLISHES.labels("relay", "deferred").inc(done.failed)
        RELAY_PUBLISH_ERRORS.inc(done.failed)
    return done


def _pending(aggregate: Aggregate, grace_seconds: float, limit: int, due_only: bool):
    """The documents with events for the relay, each with those of its outbox to send: the noted
    events (and those past the grace) of the noted documents, or every outbox past the grace."""
    cutoff = utc_now() - timedelta(seconds=grace_seconds)
    if due_only:
        try:
            noted = redis_client().spop(relay_due_key(aggregate.name), limit) or []
        except RedisError:
            return []  # the full pass covers them
        events: dict = defaultdict(set)
        for raw in noted:
            doc_id, _, event_id = raw.decode().partition(":")
            oid = object_id(doc_id)
            if oid is not None:
                events[oid].add(event_id)
        documents = aggregate.collection().find(
            {"_id": {"$in": list(events)}, "outbox.0": {"$exists": True}}, {"outbox": 1}
        )
        return [
            {**document, "outbox": due}
            for document in documents
            if (due := _due(document["outbox"], events[document["_id"]], cutoff))
        ]
    # Both bounds, though MongoDB bounds a `$lt` on a date to dates anyway: the embedded SecantusDB
    # walks a range with no lower bound from the start of the index, where an empty outbox has its
    # entry too, and fetches every document it passes, holding up every other operation (300 ms at
    # 18,000 posts, measured; 0.5 ms with both bounds). That walk every RELAY_SCAN_SECONDS was the
    # write p99 of the mixed load.
    pending = {"outbox.occurred_at": {"$gte": EPOCH, "$lt": cutoff}}
    return aggregate.collection().find(pending, {"outbox": 1}).limit(limit)


def _due(outbox: list[dict], noted: set[str], cutoff) -> list[dict]:
    """The entries a writer gave up on, or past the grace; a note of a document alone (made
    before notes named events) stands for every entry."""
    if "" in noted:
        return outbox
    return [entry for entry in outbox if entry["event_id"] in noted or entry["occurred_at"] < cutoff]


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
