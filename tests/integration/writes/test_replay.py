"""replay_events: the current state of chosen documents re-published, applied by the consumer."""

import pytest
from django.core.management import CommandError, call_command

from cqrs_site.core.codec import post_key, user_key
from cqrs_site.core.redis_client import redis_client
from reads.cache import cache_get
from tests.conftest import eventually
from writes import services
from writes.aggregates import event_decode


def test_replayed_events_bring_an_emptied_cache_back_to_mongodbs_state(consumer, capsys):
    consumer.wait_ready()
    user = services.user_create(username="replayed")
    kept = services.post_create(user_id=user["id"], title="Kept", content="C")
    services.post_react(post_id=kept["id"], reaction="like")
    gone = services.post_create(user_id=user["id"], title="Gone", content="C")
    services.post_delete(post_id=gone["id"])
    eventually(lambda: cache_get(post_key(gone["id"])))
    redis_client().flushdb()  # as if the cache had been rebuilt while the broker lost these events

    call_command("replay_events", "--all", "--no-progress")

    assert "posts: 2 replayed, 0 not acknowledged" in capsys.readouterr().out
    assert eventually(lambda: cache_get(post_key(kept["id"]))).version == 2
    assert eventually(lambda: cache_get(post_key(gone["id"]))).body is None  # a tombstone
    assert eventually(lambda: cache_get(user_key(user["id"]))).version == 1


def test_a_replay_never_moves_the_cache_backwards(consumer):
    consumer.wait_ready()
    user = services.user_create(username="fenced")
    post = services.post_create(user_id=user["id"], title="T", content="C")
    call_command("replay_events", "--posts", post["id"], "--no-progress")
    services.post_update(post_id=post["id"], title="T2")
    eventually(lambda: (cache_get(post_key(post["id"])) or None) and cache_get(post_key(post["id"])).version == 2)
    call_command("replay_events", "--posts", post["id"], "--no-progress")  # version 2 again: a no-op
    assert b'"title":"T2"' in cache_get(post_key(post["id"])).body


def test_unknown_ids_and_a_missing_choice_are_errors(db):
    with pytest.raises(CommandError, match="no such documents: 000000000000000000000000, nope"):
        call_command("replay_events", "--posts", "000000000000000000000000", "nope", "--no-progress")
    with pytest.raises(CommandError, match="say what to replay"):
        call_command("replay_events")


def test_the_replayed_event_decodes_as_a_post_event():
    from datetime import UTC, datetime

    from bson import ObjectId

    from writes.aggregates import event_from_outbox
    from writes.events import POST, POST_REPLAYED, outbox_entry

    now = datetime.now(UTC)
    state = {
        "_id": ObjectId(),
        "user_id": ObjectId(),
        "title": "T",
        "content": "C",
        "like_count": 0,
        "dislike_count": 0,
        "created_at": now,
        "updated_at": now,
        "version": 3,
        "deleted": False,
    }
    event = event_from_outbox(outbox_entry(event_type=POST_REPLAYED, aggregate=POST, state=state))
    assert event_decode(event.encode()).type == "PostReplayed" and event_decode(event.encode()).version == 3
