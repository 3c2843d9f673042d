"""The consumer's two threads (consumers/runner.py): the next batch is prepared while one is being
written, and written only once the one before is applied and committed. In process, against the
real broker and Redis, with the cache handler recording what it is asked to do."""

import contextlib
import threading
import uuid
from dataclasses import replace

from confluent_kafka import Producer
from django.conf import settings

from consumers.handlers import CacheProjection
from consumers.registry import consumer_specs
from consumers.runner import ConsumerRunner
from cqrs_site.core.codec import consumer_offsets_key, user_key
from cqrs_site.core.redis_client import clustered, node_keys, node_of
from reads.cache import cache_get
from tests.conftest import eventually, group_starting_at_the_end
from writes.events import USER, USER_CREATED, Event


def user_event() -> tuple[str, bytes]:
    user_id = uuid.uuid4().hex[:24]
    state = {"id": user_id, "username": "piped", "created_at": "2026-01-01T00:00:00.000Z", "version": 1}
    return user_id, Event(uuid.uuid4().hex, USER_CREATED, USER, user_id, 1, state["created_at"], state).encode()


def produce(*values: bytes) -> None:
    producer = Producer(settings.KAFKA_PRODUCER_CONFIG)
    for value in values:
        producer.produce(settings.KAFKA_EVENTS_TOPIC, key=b"one-partition", value=value)
    assert producer.flush(10) == 0


class Recording(CacheProjection):
    """The cache handler, noting each step in `calls`; the first write waits for `release`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.release = threading.Event()

    def prepare(self, events):
        self.calls.append(("prepare", [event.aggregate_id for event in events]))
        return super().prepare(events)

    def write(self, writes):
        first = not any(call == "write" for call, _ in self.calls)
        self.calls.append(("write", None))
        if first:
            assert self.release.wait(20)
        return super().write(writes)


def test_the_next_batch_is_prepared_during_a_write_and_written_only_after_that_one_is_committed():
    handler = Recording()
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    group_starting_at_the_end(group)
    (first_id, first), (second_id, second) = user_event(), user_event()
    produce(first, second)  # both there at the first fetch: a batch of one each
    runner = ConsumerRunner(replace(consumer_specs()["cache"], group=group, handler=handler), batch_size=1)
    committed = []
    commit = runner._commit
    runner._commit = lambda offsets: (committed.append(dict(offsets)), commit(offsets))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        eventually(lambda: ("write", None) in handler.calls, timeout=20)  # the first write is held
        # The second batch is prepared meanwhile, on the consuming thread...
        eventually(lambda: ("prepare", [second_id]) in handler.calls, timeout=10)
        # ...but neither written, nor anything committed, while the first is not applied.
        assert handler.calls == [("prepare", [first_id]), ("write", None), ("prepare", [second_id])]
        assert committed == [] and cache_get(user_key(first_id)) is None

        handler.release.set()
        eventually(lambda: cache_get(user_key(second_id)) is not None)
        assert cache_get(user_key(first_id)).version == 1
        eventually(lambda: len(committed) == 2)
        assert [call for call, _ in handler.calls] == ["prepare", "write", "prepare", "write"]
        assert runner.applied == 2
    finally:
        handler.release.set()
        runner.stop()
        thread.join(30)
    assert not thread.is_alive()
    [(topic, partition)] = committed[0].keys()
    assert committed[1][(topic, partition)] == committed[0][(topic, partition)] + 1


def test_a_stopped_consumer_finishes_the_batch_being_written_and_commits_it():
    handler = Recording()
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    group_starting_at_the_end(group)
    runner = ConsumerRunner(replace(consumer_specs()["cache"], group=group, handler=handler))
    committed = []
    commit = runner._commit
    runner._commit = lambda offsets: (committed.append(dict(offsets)), commit(offsets))
    thread = threading.Thread(target=runner.run)
    thread.start()
    user_id, event = user_event()
    produce(event)
    # Stopped while the first batch is being written, once its own event is prepared (an earlier
    # test's late event may come first, in a batch of its own).
    eventually(
        lambda: ("write", None) in handler.calls and any(user_id in ids for call, ids in handler.calls if ids),
        timeout=20,
    )
    runner.stop()
    handler.release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert cache_get(user_key(user_id)).version == 1
    # Each batch prepared was written once, its own event in one of them, and committed.
    prepared = [ids for call, ids in handler.calls if call == "prepare"]
    written = [call for call, _ in handler.calls if call == "write"]
    assert sum(ids.count(user_id) for ids in prepared) == 1 and len(written) == len(prepared), handler.calls
    assert len(committed) == len(prepared), committed


def test_a_batch_goes_to_redis_in_calls_of_bounded_size_each_holding_whole_documents(settings):
    """CONSUMER_WRITES_PER_CALL bounds how long one script call holds Redis; a document's writes
    (its entries and its feed places) always share one call, and every call is applied."""
    import msgspec
    from bson import ObjectId

    from cqrs_site.core.codec import post_key
    from reads.cache import FIELDS_PER_WRITE
    from writes.aggregates import event_from_outbox
    from writes.events import POST, POST_CREATED, POST_REACTED, outbox_entry, utc_now
    from writes.services import post_document

    author, now = ObjectId(), utc_now()
    documents = [post_document(author=author, title=f"chunk {n}", content="C", now=now) for n in range(5)]
    created = [event_from_outbox(outbox_entry(event_type=POST_CREATED, aggregate=POST, state=d)) for d in documents]
    liked = event_from_outbox(
        outbox_entry(event_type=POST_REACTED, aggregate=POST, state={**documents[0], "like_count": 1, "version": 2})
    )
    handler = CacheProjection()
    # A created post makes 5 writes (its two entries, its places in three feeds): 2 a call at 12.
    settings.CONSUMER_WRITES_PER_CALL = 12
    writes = handler.prepare([*created, liked])  # the like supersedes the first post's creation
    calls = [msgspec.msgpack.decode(packed) for _route, packed in writes.calls]
    if clustered():
        # Each node's writes in calls of their own, routed by a key of that node; a document's
        # entries in one call, its places in calls of their feed's node.
        for (route, _), call in zip(writes.calls, calls, strict=True):
            assert len(call) // FIELDS_PER_WRITE <= 12
            assert {node_of(call[i + 1]) for i in range(0, len(call), FIELDS_PER_WRITE)} == {node_of(route)}
        entry_calls = [
            {
                index
                for index, call in enumerate(calls)
                for i in range(0, len(call), FIELDS_PER_WRITE)
                if call[i] == "E" and call[i + 2] == fence
            }
            for fence in {
                call[i + 2] for call in calls for i in range(0, len(call), FIELDS_PER_WRITE) if call[i] == "E"
            }
        ]
        assert len(entry_calls) == 5 and all(len(held) == 1 for held in entry_calls)
    else:
        assert [len(call) // FIELDS_PER_WRITE for call in calls] == [10, 10, 5]
        fences = [{call[i + 2] for i in range(0, len(call), FIELDS_PER_WRITE)} for call in calls]
        assert [len(f) for f in fences] == [2, 2, 1] and not (fences[0] & fences[1] or fences[1] & fences[2])

    results, _ = handler.write(writes)
    kinds = [call[i] for call in calls for i in range(0, len(call), FIELDS_PER_WRITE)]
    assert len(results) == 25  # every call applied; a place counts only in a feed that is cached
    assert [stored for kind, stored in zip(kinds, results, strict=True) if kind == "E"] == [1] * 10
    versions = [cache_get(post_key(str(d["_id"]))).version for d in documents]
    assert versions == [2, 1, 1, 1, 1]

    settings.CONSUMER_WRITES_PER_CALL = 1  # fewer than one document's writes: a call each
    assert len(handler.prepare(created).calls) == (5 + 5 * 3 if clustered() else 5)


def note_key(group: str, near: str) -> str:
    """The consumer group's note of how far it applied, as the node holding `near` keeps it
    (on one server, the one note)."""
    keys = node_keys(consumer_offsets_key(group, settings.KAFKA_EVENTS_TOPIC))
    return next(key for key in keys if node_of(key) == node_of(near))


@contextlib.contextmanager
def running_cache_consumer():
    """The cache consumer of a new group starting at the topic's end, running on a thread of its
    own for the `with` block: (its spec, its group); stopped and joined after."""
    group = f"pipeline-{uuid.uuid4().hex[:8]}"
    group_starting_at_the_end(group)
    spec = replace(consumer_specs()["cache"], group=group)
    runner = ConsumerRunner(spec)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        yield spec, group
    finally:
        runner.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_cache_that_lost_what_the_consumer_applied_gets_it_again_from_the_consumers_note():
    """A failover to a replica that had not received the last writes takes back both the entries
    and the note of how far they were applied. Here the note is moved back and the entry deleted,
    as such a replica would hold them: the consumer finds its note went back, seeks there, and
    applies the event again, with no new event to prompt it."""
    from cqrs_site.core.codec import high_water_key
    from cqrs_site.core.metrics import CONSUMER_CACHE_ROLLBACKS
    from cqrs_site.core.redis_client import redis_client

    with running_cache_consumer() as (spec, group):
        user_id, event = user_event()
        produce(event)
        eventually(lambda: cache_get(user_key(user_id)) is not None, timeout=20)
        key = note_key(group, user_key(user_id))
        noted = eventually(lambda: {int(p): int(o) for p, o in redis_client().hgetall(key).items()})
        [(partition, after)] = [(p, o) for p, o in noted.items() if o > 0]
        before = CONSUMER_CACHE_ROLLBACKS.labels(spec.name)._value.get()
        # What the promoted replica holds: the note one event back, neither the entry nor its fence.
        redis_client().hset(key, partition, after - 1)
        redis_client().delete(user_key(user_id), high_water_key(user_key(user_id)))
        entry = eventually(lambda: cache_get(user_key(user_id)), timeout=10)
        assert entry.version == 1
        assert CONSUMER_CACHE_ROLLBACKS.labels(spec.name)._value.get() == before + 1
        # Noted again once the replayed batch is committed (after its writes: waited for).
        eventually(lambda: int(redis_client().hget(key, partition)) == after)


def test_a_cache_that_kept_no_note_at_all_gets_the_last_minute_of_the_log_again():
    """A Redis restarted empty keeps no note of what was applied: the consumer applies the last
    CONSUMER_REPLAY_SECONDS of the log again (here, the event it had just applied)."""
    from cqrs_site.core.codec import high_water_key
    from cqrs_site.core.metrics import CONSUMER_CACHE_ROLLBACKS
    from cqrs_site.core.redis_client import redis_client

    with running_cache_consumer() as (spec, group):
        user_id, event = user_event()
        produce(event)
        eventually(lambda: cache_get(user_key(user_id)) is not None, timeout=20)
        key = note_key(group, user_key(user_id))
        eventually(lambda: redis_client().exists(key))
        before = CONSUMER_CACHE_ROLLBACKS.labels(spec.name)._value.get()
        redis_client().delete(key)
        redis_client().delete(user_key(user_id), high_water_key(user_key(user_id)))
        entry = eventually(lambda: cache_get(user_key(user_id)), timeout=10)
        assert entry.version == 1
        assert CONSUMER_CACHE_ROLLBACKS.labels(spec.name)._value.get() > before
