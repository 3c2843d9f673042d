"""One generic consumer loop, at-least-once.

- Batches: `consume(n)`, then the handler applies the whole batch at once, in two steps: it
  prepares the writes (decoding, compacting: Python) on the consuming thread, and writes them
  (script calls: Redis's time) on a thread of its own, while the consuming thread fetches
  and prepares the next batch. One batch is written at a time, in order; the next is handed
  over only once the one before is applied and committed. The one before's metrics and event
  lines are done after the handover, while Redis writes the next.
- Offsets are stored and committed only after the batch is applied; a crash replays it, which
  is harmless because handlers are idempotent (version-fenced).
- A message the handler cannot decode, or whose event it cannot prepare a write from, is
  poison: it goes to the dead-letter topic with the error in its headers, and its partition
  moves on.
- A failure to apply (a server down) is retried with backoff; nothing is committed meanwhile.
- Partitions being revoked get their applied offsets committed first (a batch being written is
  waited for).
- `stop()` (SIGTERM, SIGINT) lets the current batch finish, commits, and leaves the group.
- `ready_file`, when given, exists from the first partition assignment (the group has taken this
  member in) until the consumer stops, holding its PID: what a launcher or a readiness probe
  waits for. It is removed at start too, so a killed consumer's file never speaks for its
  successor.
- How far each partition was applied is recorded in Redis beside the results (the cache). On
  assignment the consumer holds that against the broker: committed offsets gone, or a log that
  ends before what was applied, mean the broker lost data (a memory-only broker restarted, a
  topic recreated, offsets deleted). Events in between may be lost for good, so it logs and
  counts it, and asks the cache inspector for a sweep now (cqrs_site/core/sweeps.py).
- The cache may lose what was applied: a failover promotes a replica that had not received the
  last writes (their fences went with them), or a Redis restarts empty. The note of how far each
  partition was applied is written after that partition's writes, on the same primary, so a
  replica that kept the note kept every write before it. Between batches (every
  CONSUMER_CACHE_CHECK_SECONDS) and before each note, the consumer holds the cache's notes
  against its own; a note that went back is a loss, and its partitions are applied again from
  the note (the fences make that safe), or, when the cache kept no note at all, from
  CONSUMER_REPLAY_SECONDS back. A fill that landed meanwhile with an older version is replaced
  by the replay, and the inspector is asked for a sweep.
- Each applied event gets a log line with its id, type and the request id of the write that
  made it (from the message's headers); metrics count them, the dead letters, and the lag per
  partition (from librdkafka's statistics).
"""

import logging
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from django.conf import settings

from cqrs_site.core.codec import consumer_offsets_key
from cqrs_site.core.logs import log_many
from cqrs_site.core.metrics import (
    CONSUMER_APPLY_FAILURES,
    CONSUMER_CACHE_ROLLBACKS,
    CONSUMER_DEAD_LETTERED,
    CONSUMER_EVENTS_APPLIED,
    CONSUMER_LAG,
    CONSUMER_OFFSETS_LOST,
    CONSUMER_REJOINS,
    serve_metrics,
)
from cqrs_site.core.redis_client import node_keys, redis_client
from cqrs_site.core.sweeps import sweep_request
from writes.producer import Deliveries, publisher_close

from .registry import ConsumerSpec

logger = logging.getLogger(__name__)

# What a handler's decode raises for a message that can never be applied.
POISON = (ValueError, KeyError, TypeError)
# A failed apply (Redis down, or failing over: 3-5 s measured under Sentinel) is retried at least
# this often, so the cache is written again within half a second of Redis answering.
MAX_BACKOFF_SECONDS = 0.5


def partition_lag(stats: dict) -> int | None:
    """A held partition's lag from its librdkafka statistics, None while unknown. librdkafka
    reports -1 until this group has an offset there; then every message from the low
    watermark on is unread."""
    lag, high, low = stats.get("consumer_lag", -1), stats.get("hi_offset", -1), stats.get("lo_offset", -1)
    if lag >= 0:
        return lag
    return high - low if high >= 0 and low >= 0 else None


@dataclass(frozen=True, slots=True)
class _Batch:
    offsets: dict  # (topic, partition) -> the offset after the batch's last message there
    decoded: list  # the messages applied (the rest were dead-lettered)
    events: list  # what the handler decoded of them
    writes: object  # what the handler prepared of those


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        batch_size: int | None = None,
        from_beginning: bool = False,
        ready_file: Path | None = None,
        metrics_port: int = 0,
    ):
        self.spec = spec
        self.metrics_port = metrics_port
        self._lag_series: set[tuple[str, str]] = set()
        self.ready_file = ready_file
        self.batch_size = batch_size or settings.CONSUMER_BATCH_SIZE
        self.from_beginning = from_beginning
        self.stopping = threading.Event()
        self.applied = 0
        self.dead_lettered = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{spec.name}-writer")
        self._writing: tuple[Future, _Batch] | None = None
        # (topic, partition) -> the offset this member last noted in the cache as applied.
        self._noted: dict[tuple[str, int], int] = {}
        self._next_cache_check = 0.0
        self._rewound = False  # set when partitions were sought back: the batch in hand is dropped
        CONSUMER_DEAD_LETTERED.labels(spec.name)  # at 0 from the start: the first dead letter is an increase
        self.consumer = Consumer(
            {
                **settings.KAFKA_CONSUMER_CONFIG,
                "group.id": spec.group,
                "client.id": f"{spec.name}-{socket.gethostname()}-{os.getpid()}",
                # Its statistics carry each partition's lag (cqrs_consumer_lag_messages).
                "statistics.interval.ms": settings.CONSUMER_STATS_INTERVAL_MS,
                "stats_cb": self._on_stats,
                **({"group.instance.id": settings.CONSUMER_INSTANCE_ID} if settings.CONSUMER_INSTANCE_ID else {}),
            }
        )
        self.cooperative = "cooperative" in settings.KAFKA_CONSUMER_CONFIG["partition.assignment.strategy"]
        self._topic_missing_at_join, self._next_topic_check = False, 0.0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        if self.ready_file is not None:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.unlink(missing_ok=True)
        serve_metrics(self.metrics_port, settings.METRICS_HOST)
        self._subscribe()
        logger.info("consumer %s joined group %s on %s", self.spec.name, self.spec.group, self.spec.topic)
        try:
            while not self.stopping.is_set():
                self._rejoin_once_the_topic_exists()
                self._check_cache()
                messages = self._next_batch()
                if messages and not self._process(messages):
                    break
        finally:
            self._settle()  # the batch being written finishes (or gives up, stopped) and is committed
            self._writer.shutdown()
            if self.ready_file is not None:
                self.ready_file.unlink(missing_ok=True)
            self.consumer.close()  # commits nothing new (auto-commit is off) and leaves the group
            publisher_close(timeout=5)  # the dead-letter sends, if any
            logger.info(
                "consumer %s stopped: %d applied, %d dead-lettered", self.spec.name, self.applied, self.dead_lettered
            )

    def _subscribe(self) -> None:
        self._topic_missing_at_join = False
        self.consumer.subscribe([self.spec.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _topic_exists(self) -> bool:
        metadata = self.consumer.list_topics(self.spec.topic, timeout=2).topics.get(self.spec.topic)
        return metadata is not None and metadata.error is None and bool(metadata.partitions)

    def _rejoin_once_the_topic_exists(self) -> None:
        """A group that rebalanced while its topic did not exist (a broker that came back empty,
        before the relay made the topics again) hands every member nothing, and the embedded Tansu
        never rebalances when the topic appears (measured: 86 s with no owner, until stopped).
        Such a member joins again once the topic is there."""
        if not self._topic_missing_at_join or time.monotonic() < self._next_topic_check:
            return
        self._next_topic_check = time.monotonic() + 1
        try:
            if not self._topic_exists():
                return
        except KafkaException:
            return
        logger.warning("topic %s exists again: joining the group again for its partitions", self.spec.topic)
        CONSUMER_REJOINS.labels(self.spec.name).inc()
        self.consumer.unsubscribe()
        self._subscribe()

    def _next_batch(self) -> list:
        """Whatever has arrived, up to the batch size, as soon as there is anything.

        consume(n, timeout) waits for n messages or the whole timeout: at a low event rate every
        event would wait out the timeout before it reached the cache. So: take what is there;
        if nothing, finish the batch being written (commit it), wait for one message, then take
        what came with it."""
        messages = self.consumer.consume(self.batch_size, 0)
        if messages:
            return messages
        if not self._settle():
            return []
        first = self.consumer.poll(settings.CONSUMER_POLL_TIMEOUT_SECONDS)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.batch_size - 1, 0)]

    def _process(self, messages) -> bool:
        """Prepare one batch and hand it to the writer once the batch before is applied and
        committed; False when stopped before a batch could be applied."""
        items, done, decoded = [], [], []
        decode = self.spec.handler.decode
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consume error: %s", error)
                continue
            done.append(message)
            try:
                items.append(decode(message.value()))
                decoded.append(message)
            except POISON as exc:
                if not self._dead_letter(message, exc):
                    return False
        try:
            writes = self.spec.handler.prepare(items)
        except POISON:
            kept = self._preparable(items, decoded)
            if kept is None:
                return False
            items, decoded = kept
            writes = self.spec.handler.prepare(items)
        batch = _Batch(self._next_offsets(done), decoded, items, writes)
        self._rewound = False
        written = self._commit_written()
        if written is False:
            return False
        if self._rewound:  # its partitions were sought back: these messages come again
            self._rewound = False
            if written is not None:
                self._account(*written)
            return True
        self._writing = (self._writer.submit(self._write, batch), batch)
        if written is not None:
            self._account(*written)  # the batch before's metrics and lines, while Redis works
        return True

    def _preparable(self, events, messages) -> tuple[list, list] | None:
        """A batch the handler could not prepare: the events it can, each tried alone; those it
        cannot are poison too (they decode, but their content makes no cache write: a state
        without a field its read models need) and go to the dead-letter topic. None if even
        that failed."""
        kept_events, kept_messages = [], []
        for event, message in zip(events, messages, strict=True):
            try:
                self.spec.handler.prepare([event])
            except POISON as exc:
                if not self._dead_letter(message, exc):
                    return None
                continue
            kept_events.append(event)
            kept_messages.append(message)
        return kept_events, kept_messages

    def _settle(self) -> bool:
        """Wait for the batch being written, then commit it, count it and log it; False when it
        could not be applied (the consumer was stopped while retrying it)."""
        done = self._commit_written()
        if done is False:
            return False
        if done is not None:
            self._account(*done)
        return True

    def _commit_written(self):
        """Wait for the batch being written, then note and commit its offsets: (the batch, the
        handler's outcome); None if no batch was being written; False when it could not be
        applied (the consumer was stopped while retrying it). Both talk to a server, so they
        come before the next batch is handed over: a call to Redis would queue behind its script."""
        if self._writing is None:
            return None
        future, batch = self._writing
        self._writing = None
        outcome = future.result()
        if outcome is None:
            return False
        lost = self._record(batch.offsets)
        self._commit(batch.offsets)
        if lost:
            self._rewind(lost)
        return batch, outcome

    def _account(self, batch: _Batch, outcome) -> None:
        """A committed batch's metrics and its event lines (Python only: done while the next
        batch is being written, when there is one)."""
        self.spec.handler.written(batch.writes, outcome)
        self.applied += len(batch.decoded)
        self._applied(batch.decoded, batch.events)

    def _applied(self, messages, events) -> None:
        """Count and log (a line per event: its id, type, the request id of the write that made
        it) the events just applied and committed, and the messages that carried them."""
        for kind, count in Counter(event.type for event in events).items():
            CONSUMER_EVENTS_APPLIED.labels(self.spec.name, kind).inc(count)
        if not settings.CONSUMER_LOG_EVENTS:
            return
        rows = []
        for message, event in zip(messages, events, strict=True):
            request_id = dict(message.headers() or ()).get("request_id")
            rows.append(
                {
                    "event_id": event.event_id,
                    "event_type": event.type,
                    "request_id": request_id.decode(errors="replace") if request_id else None,
                    "key": (message.key() or b"").decode(errors="replace"),
                    "partition": message.partition(),
                    "offset": message.offset(),
                }
            )
        log_many(logger, "event applied", rows)

    def _on_stats(self, raw: str) -> None:
        """librdkafka's statistics (every CONSUMER_STATS_INTERVAL_MS, on the consuming thread):
        the lag of each partition this member holds; series of partitions it lost are removed.
        While a batch is being retried (a server down) no statistics arrive: the lag holds its
        last value and cqrs_consumer_apply_failures_total climbs."""
        held = set()
        for topic, data in orjson.loads(raw).get("topics", {}).items():
            for partition, stats in data.get("partitions", {}).items():
                if partition == "-1" or stats.get("fetch_state") in (None, "none", "stopping", "stopped"):
                    continue
                lag = partition_lag(stats)
                if lag is None:
                    continue
                held.add((topic, partition))
                CONSUMER_LAG.labels(self.spec.name, topic, partition).set(lag)
        for topic, partition in self._lag_series - held:
            CONSUMER_LAG.remove(self.spec.name, topic, partition)
        self._lag_series = held

    def _write(self, batch: _Batch):
        """On the writer's thread: write a prepared batch, retrying with backoff until it is
        applied (the handler's outcome) or the consumer stops (None)."""
        backoff = 0.1
        while True:
            try:
                return self.spec.handler.write(batch.writes)
            except Exception as exc:  # a server is down: keep the offsets, retry the batch
                CONSUMER_APPLY_FAILURES.labels(self.spec.name).inc()
                logger.error("applying %d events failed, retrying in %.1fs: %s", len(batch.decoded), backoff, exc)
                if self.stopping.wait(backoff):
                    return None
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    @staticmethod
    def _next_offsets(messages) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset after the batch's last message there (librdkafka
        hands a partition's messages over in offset order: the last one seen is the highest)."""
        return {(message.topic(), message.partition()): message.offset() + 1 for message in messages}

    def _record(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int | None]:
        """Note in Redis how far each partition was applied (held against the broker on
        assignment, and against this member's own notes: see the module's docstring). Returns
        the partitions whose note the cache had lost meanwhile, with what it held instead (None:
        nothing); their events are applied again from there."""
        by_topic: dict[str, dict[int, int]] = {}
        for (topic, partition), offset in offsets.items():
            by_topic.setdefault(topic, {})[partition] = offset
        lost = {}
        try:
            pipe = redis_client().pipeline(transaction=False)
            notes = []
            for topic, noted in by_topic.items():
                for key in node_keys(consumer_offsets_key(self.spec.group, topic)):
                    pipe.hmget(key, list(noted))
                    pipe.hset(key, mapping=noted)
                    notes.append((topic, noted))
            replies = pipe.execute()
        except Exception as exc:  # a note, not the offsets themselves: losing one is harmless
            logger.warning("could not note the applied offsets: %s", exc)
            return {}
        for (topic, noted), held in zip(notes, replies[::2], strict=True):
            for partition, theirs in self._went_back(topic, list(noted), held).items():
                lost[partition] = _lowest(lost.get(partition, -1), theirs)
        for topic, noted in by_topic.items():
            for partition, offset in noted.items():
                self._noted[(topic, partition)] = offset
        return lost

    def _went_back(self, topic: str, partitions: list[int], held: list) -> dict[tuple[str, int], int | None]:
        """The partitions whose note in the cache is behind this member's last one."""
        lost = {}
        for partition, raw in zip(partitions, held, strict=True):
            mine = self._noted.get((topic, partition))
            if mine is None:
                continue
            theirs = None if raw is None else int(raw)
            if theirs is None or theirs < mine:
                lost[(topic, partition)] = theirs
        return lost

    def _check_cache(self) -> None:
        """Between batches, every CONSUMER_CACHE_CHECK_SECONDS: does the cache still hold this
        member's notes? (A failover with no new event to write would otherwise go unseen.)"""
        if time.monotonic() < self._next_cache_check:
            return
        self._next_cache_check = time.monotonic() + settings.CONSUMER_CACHE_CHECK_SECONDS
        by_topic: dict[str, list[int]] = {}
        for topic, partition in self._noted:
            by_topic.setdefault(topic, []).append(partition)
        lost = {}
        try:
            # Under Sentinel: asks the sentinels for the primary, and a new one moves this
            # process's idle connections to it. A primary demoted while alive (a failover on a
            # missed ping) keeps taking writes until the sentinels make it a replica, 8-10 s
            # later (measured), and those writes are then lost.
            pool = getattr(redis_client(), "connection_pool", None)  # (a cluster's client has none)
            follow_primary = getattr(pool, "get_master_address", None)
            if follow_primary is not None:
                follow_primary()
            for topic, partitions in by_topic.items():
                for key in node_keys(consumer_offsets_key(self.spec.group, topic)):
                    held = redis_client().hmget(key, partitions)
                    for partition, theirs in self._went_back(topic, partitions, held).items():
                        lost[partition] = _lowest(lost.get(partition, -1), theirs)
        except Exception as exc:  # Redis down: the batch's apply retries, and this check comes again
            logger.debug("could not read the applied offsets: %s", exc)
            return
        if not lost:
            return
        self._rewound = False
        # The batch being written is applied and noted first (its note may find the loss itself).
        if self._settle() and not self._rewound:
            self._rewind(lost)

    def _rewind(self, lost: dict[tuple[str, int], int | None]) -> None:
        """Apply again, from where the cache still holds them, the partitions it lost: seek them
        back, commit there (a crash meanwhile replays from there too) and note it."""
        targets = {}
        window = [
            TopicPartition(topic, partition, int((time.time() - settings.CONSUMER_REPLAY_SECONDS) * 1000))
            for (topic, partition), held in lost.items()
            if held is None
        ]
        if window:
            for found in self.consumer.offsets_for_times(window, timeout=5):
                if found.offset < 0:  # no event since: none to apply again
                    found.offset = self._noted[(found.topic, found.partition)]
                targets[(found.topic, found.partition)] = found.offset
        targets.update({key: held for key, held in lost.items() if held is not None})
        for (topic, partition), offset in targets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # being revoked: its next owner starts from the commit below
                logger.warning("could not seek %s[%d] back to %d: %s", topic, partition, offset, exc)
            self._noted[(topic, partition)] = offset
        self._commit(targets)
        self._record(targets)
        self._rewound = True
        CONSUMER_CACHE_ROLLBACKS.labels(self.spec.name).inc(len(targets))
        logger.error(
            "the cache lost events this consumer had applied (a failover, or Redis restarted empty): applying again %s",
            ", ".join(f"{t}[{p}] from {o}" for (t, p), o in sorted(targets.items())),
        )
        sweep_request(f"consumer {self.spec.name} found the cache had lost applied events")

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        self.consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        self._commit_stored()

    def _commit_stored(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                # Still stored: the next commit carries them; a crash first replays them harmlessly.
                logger.warning("offset commit failed: %s", exc)

    def _on_assign(self, consumer, partitions) -> None:
        logger.info("assigned %s", [p.partition for p in partitions])
        if not partitions and not self.cooperative:  # nothing at all: was there a topic to share?
            try:
                self._topic_missing_at_join = not self._topic_exists()
            except KafkaException:
                self._topic_missing_at_join = True
            self._next_topic_check = time.monotonic() + 1
        try:
            self._check_offsets(consumer, partitions)
        except Exception as exc:  # a check: the consumer goes on without it
            logger.warning("could not hold the committed offsets against what was applied: %s", exc)
        if self.ready_file is not None:
            self.ready_file.write_text(f"{os.getpid()}\n")
        if self.from_beginning:
            for partition in partitions:
                partition.offset = OFFSET_BEGINNING
            # A cooperative assignment is a change to what the member has, not the whole of it.
            (consumer.incremental_assign if self.cooperative else consumer.assign)(partitions)

    def _check_offsets(self, consumer, partitions) -> None:
        """The broker lost data if a partition's committed offset is gone, or its log ends before
        what this group applied (see the module's docstring)."""
        if not partitions:
            return
        topic = partitions[0].topic
        keys = node_keys(consumer_offsets_key(self.spec.group, topic))
        applied: dict[int, int] = {}
        for key in keys:
            for p, o in redis_client().hgetall(key).items():
                applied[int(p)] = max(applied.get(int(p), 0), int(o))
        lost = []
        for committed in consumer.committed([TopicPartition(p.topic, p.partition) for p in partitions], timeout=5):
            noted = applied.get(committed.partition)
            if not noted:
                continue
            _low, high = consumer.get_watermark_offsets(committed, timeout=5, cached=False)
            if committed.offset < 0 or high < noted:
                lost.append((committed.partition, noted, committed.offset, high))
        if not lost:
            return
        CONSUMER_OFFSETS_LOST.labels(self.spec.name).inc(len(lost))
        for partition, noted, committed, high in lost:
            logger.error(
                "partition %s[%d]: applied up to %d, but the broker has committed %s and its log ends at %d: "
                "it lost events",
                topic,
                partition,
                noted,
                committed if committed >= 0 else "nothing",
                high,
            )
        for key in keys:
            redis_client().hdel(key, *[partition for partition, *_ in lost])
        sweep_request(f"consumer {self.spec.name} found the broker lost partitions {[p for p, *_ in lost]} of {topic}")

    def _on_revoke(self, consumer, partitions) -> None:
        logger.info("revoked %s", [p.partition for p in partitions])
        self._settle()
        self._commit_stored()
        for partition in partitions:
            self._noted.pop((partition.topic, partition.partition), None)

    def _dead_letter(self, message, exc: Exception) -> bool:
        """Send a poison message to the dead-letter topic; False if even that failed."""
        logger.error("poison message %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), exc)
        headers = [
            *(message.headers() or []),
            ("dlq.error", f"{type(exc).__name__}: {exc}".encode()[:1000]),
            ("dlq.topic", message.topic().encode()),
            ("dlq.partition", str(message.partition()).encode()),
            ("dlq.offset", str(message.offset()).encode()),
            ("dlq.consumer", self.spec.name.encode()),
            ("dlq.at", str(time.time()).encode()),
        ]
        deliveries = Deliveries()
        tag = f"{message.topic()}/{message.partition()}/{message.offset()}"
        deliveries.produce(
            self.spec.dead_letter_topic, tag=tag, key=message.key(), value=message.value(), headers=headers
        )
        if not deliveries.wait(10):
            logger.error("dead-letter publish failed (%s); the batch stays uncommitted", deliveries.failed)
            return False
        self.dead_lettered += 1
        CONSUMER_DEAD_LETTERED.labels(self.spec.name).inc()
        return True


def _lowest(a: int | None, b: int | None) -> int | None:
    """The lower of two notes the cache held (None: none, lowest of all; -1: not seen yet)."""
    if a == -1:
        return b
    if a is None or b is None:
        return None
    return min(a, b)
