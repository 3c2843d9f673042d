"""The seed's race: a slow read-through fill must not overwrite the consumer's newer value."""

import threading

from cqrs_site.core.codec import post_key
from reads import selectors
from reads.cache import cache_get
from tests.conftest import eventually
from writes import services


def test_a_slow_fill_of_version_n_arriving_after_the_consumer_stored_n_plus_1_is_refused(
    api_client, consumer, monkeypatch
):
    user = services.user_create(username="racer")
    post = services.post_create(user_id=user["id"], title="v1", content="c")
    key = post_key(post["id"])
    eventually(lambda: cache_get(key))  # the consumer applied PostCreated...
    from cqrs_site.core.redis_client import redis_client

    redis_client().delete(key)  # ...then the entry expires: the next read misses and fills.

    # Hold the fill between its MongoDB read and its cache write.
    loaded, release = threading.Event(), threading.Event()
    real_load = selectors._load

    def slow_load(aggregate, oid):
        entries = real_load(aggregate, oid)
        loaded.set()
        release.wait(10)
        return entries

    monkeypatch.setattr(selectors, "_load", slow_load)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(selectors.post_get(post_id=post["id"])))
    reader.start()
    assert loaded.wait(10), "the fill never read MongoDB"

    newer = services.post_update(post_id=post["id"], title="v2")  # version 2, applied by the consumer
    eventually(lambda: (cache_get(key) or None) and cache_get(key).version == newer["version"])

    release.set()  # the fill now tries to store version 1
    reader.join(10)
    assert answers[0].version == 1  # the slow reader answers what it read...
    entry = cache_get(key)
    assert entry.version == 2  # ...but the cache keeps the consumer's newer value
    assert b'"title":"v2"' in entry.body
    assert selectors.post_get(post_id=post["id"]).version == 2
