"""No lost events: a write the client saw succeed produces its event even when the broker is down."""

from django.core.management import call_command
from prometheus_client import REGISTRY

from cqrs_site.core.codec import post_key
from reads.cache import cache_get
from tests.conftest import eventually
from writes import producer, services
from writes.documents import Post
from writes.outbox import outbox_relay_pass


def pending(post_id: str) -> list[dict]:
    return Post._get_collection().find_one({"_id": Post.objects.get(id=post_id).id})["outbox"]


def forget_queued_events() -> None:
    """Drop what this process's producer still holds, as a crash would."""
    producer.publisher().producer.purge()
    producer.publisher_close(timeout=0)


def test_writes_succeed_while_the_broker_is_down_and_the_relay_sends_their_events(
    settings, paused_broker_ctl, consumer
):
    user = services.user_create(username="patient")
    post = services.post_create(user_id=user["id"], title="T", content="C")
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 0.3
    settings.KAFKA_SUSPECT_SECONDS = 0  # keep waiting on every write, so later tests see a trusted broker
    with paused_broker_ctl():
        liked = services.post_react(post_id=post["id"], reaction="like")
        updated = services.post_update(post_id=post["id"], title="T2")
        assert (liked["version"], updated["version"]) == (2, 3)  # both answered
        assert [e["type"] for e in pending(post["id"])] == ["PostReacted", "PostUpdated"]
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 10
    outbox_relay_pass(grace_seconds=0)
    assert pending(post["id"]) == []
    entry = eventually(lambda: cache_get(post_key(post["id"])) or None, timeout=15)
    eventually(lambda: cache_get(post_key(post["id"])).version == 3, timeout=15)
    assert b'"title":"T2"' in cache_get(post_key(post["id"])).body and entry


def published(sender: str, result: str) -> float:
    return REGISTRY.get_sample_value("cqrs_outbox_publish_total", {"sender": sender, "result": result}) or 0.0


def test_the_relay_command_publishes_what_is_pending(settings, paused_broker_ctl):
    user = services.user_create(username="later")
    deferred, relayed = published("write", "deferred"), published("relay", "acked")
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 0.3
    settings.KAFKA_SUSPECT_SECONDS = 0  # keep waiting on every write, so later tests see a trusted broker
    with paused_broker_ctl():
        post = services.post_create(user_id=user["id"], title="T", content="C")
        # Checked while the broker is still frozen: once it thaws, the producer's own retry
        # delivers the event within milliseconds and it leaves the outbox.
        assert len(pending(post["id"])) == 1
        # As if this process died now: its producer's queue is gone, only the outbox remains.
        forget_queued_events()
    assert len(pending(post["id"])) == 1
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 10
    call_command("run_relay", "--once", "--grace", "0")
    assert pending(post["id"]) == []
    # The metrics saw it: one event deferred by the write, one found and sent by the relay.
    assert published("write", "deferred") == deferred + 1
    assert published("relay", "acked") == relayed + 1
    assert REGISTRY.get_sample_value("cqrs_relay_pending_events") == 1


def test_a_write_that_gives_up_notes_its_document_and_the_relay_sends_it_without_a_scan(settings, paused_broker_ctl):
    from cqrs_site.core.codec import relay_due_key
    from cqrs_site.core.redis_client import redis_client

    user = services.user_create(username="noted")
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 0.3
    settings.KAFKA_SUSPECT_SECONDS = 0
    with paused_broker_ctl():
        post = services.post_create(user_id=user["id"], title="T", content="C")
        forget_queued_events()  # as if this process died: only the outbox and the note remain
    (noted,) = redis_client().smembers(relay_due_key("post"))
    assert noted.decode().partition(":")[0] == post["id"]
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 10
    done = outbox_relay_pass(grace_seconds=3600, due_only=True)  # the grace would keep a full pass away
    assert (done.documents, done.events, done.failed) == (1, 1, 0)
    assert pending(post["id"]) == [] and redis_client().scard(relay_due_key("post")) == 0


def test_the_relay_sends_only_the_noted_events_of_a_noted_document_and_leaves_a_young_one_to_its_writer(
    settings, paused_broker_ctl
):
    """A write whose outcome MongoDB left unknown looks for its event in the outbox
    (writes/outcome.py): an event younger than the grace leaves it only through its own writer."""
    from bson import ObjectId

    from writes.aggregates import POST_AGGREGATE
    from writes.events import POST, POST_REACTED, outbox_entry
    from writes.outbox import relay_due

    user = services.user_create(username="noted_only")
    post = services.post_create(user_id=user["id"], title="T", content="C")
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 0.3
    settings.KAFKA_SUSPECT_SECONDS = 0
    with paused_broker_ctl():
        services.post_react(post_id=post["id"], reaction="like")  # gives up on the broker: noted
        forget_queued_events()
    # Another write's event, in flight: in the outbox, not noted.
    document = Post._get_collection().find_one({"_id": ObjectId(post["id"])})
    state = {name: document[name] for name in POST_AGGREGATE.fields}
    in_flight = outbox_entry(event_type=POST_REACTED, aggregate=POST, state=state)
    Post._get_collection().update_one({"_id": ObjectId(post["id"])}, {"$push": {"outbox": in_flight}})
    settings.KAFKA_PUBLISH_TIMEOUT_SECONDS = 10
    done = outbox_relay_pass(grace_seconds=60, due_only=True)
    assert (done.documents, done.events, done.failed) == (1, 1, 0)
    assert [entry["event_id"] for entry in pending(post["id"])] == [in_flight["event_id"]]
    # Noted too (its writer gave up on it): sent.
    relay_due("post", [(ObjectId(post["id"]), in_flight["event_id"])])
    assert outbox_relay_pass(grace_seconds=60, due_only=True).failed == 0
    assert pending(post["id"]) == []
