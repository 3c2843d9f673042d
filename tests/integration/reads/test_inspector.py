"""The continuous cache inspector: what stays behind MongoDB past the visibility bound is found,
counted and repaired through the fence; what is in flight is not judged; a sweep asked for
starts at once."""

import io
import threading
import time

from django.core.management import call_command
from prometheus_client import REGISTRY

from cqrs_site.core.codec import feed_key, post_key, user_key
from cqrs_site.core.redis_client import redis_client
from cqrs_site.core.sweeps import sweep_request, sweep_requested
from reads.cache import cache_apply, cache_get
from reads.inspector import Inspector
from reads.models import entries_for
from writes import services
from writes.aggregates import post_state


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_sweep_repairs_what_stays_stale_and_measures_the_consistency(client):
    user = services.user_create(username="inspected")
    posts = [services.post_create(user_id=user["id"], title=f"t{i}", content="c")["id"] for i in range(6)]
    call_command("warm_cache", "--no-progress", stdout=io.StringIO())
    client.get("/api/posts", {"order": "top"})  # the top feed is cached too
    # What lost events leave behind: older versions in the cache, and a score MongoDB never had.
    services.post_update(post_id=posts[0], title="lost update")
    services.post_react(post_id=posts[1], reaction="like")
    redis_client().zadd(feed_key("top"), {posts[2]: 7})
    redis_client().delete(user_key(user["id"]))  # not cached: nothing to judge
    stale_before = sample("cqrs_inspector_judged_total", model="post", outcome="stale")
    repaired_before = sample("cqrs_inspector_repaired_total")

    Inspector(rate=10_000, bound=0.1, batch_size=4).run(threading.Event(), sweeps=1)

    assert b'"title":"lost update"' in cache_get(post_key(posts[0])).body
    assert cache_get(post_key(posts[1])).version == 2
    assert redis_client().zscore(feed_key("top"), posts[1]) == 1
    assert redis_client().zscore(feed_key("top"), posts[2]) == 0
    # posts[0] and posts[1]: their post and likes entries (an update raises the version of both);
    # posts[1] and posts[2]: their places in top.
    assert sample("cqrs_inspector_judged_total", model="post", outcome="stale") - stale_before == 2
    assert sample("cqrs_inspector_repaired_total") - repaired_before == 6
    assert 0.5 < sample("cqrs_inspector_consistency_ratio") < 1.0
    assert sample("cqrs_inspector_oldest_unchecked_seconds") < 5


def test_a_difference_that_catches_up_within_the_bound_is_in_flight_not_stale():
    user = services.user_create(username="flying")
    post = services.post_create(user_id=user["id"], title="t", content="c")
    call_command("warm_cache", "--no-progress", stdout=io.StringIO())
    services.post_update(post_id=post["id"], title="just now")  # no consumer runs: the entry lags
    stale_before = sample("cqrs_inspector_judged_total", model="post", outcome="stale")
    sweep = threading.Thread(
        target=Inspector(rate=10_000, bound=2.0, batch_size=10).run, args=(threading.Event(),), kwargs={"sweeps": 1}
    )
    sweep.start()
    time.sleep(0.5)  # the sweep has seen the lag; the event arrives within the bound
    cache_apply(entries_for("post", post_state(post_document(post["id"]))), writer="consumer")
    sweep.join(10)
    assert sample("cqrs_inspector_judged_total", model="post", outcome="stale") == stale_before


def post_document(post_id: str) -> dict:
    from bson import ObjectId

    from writes.aggregates import POST_AGGREGATE

    return POST_AGGREGATE.collection().find_one({"_id": ObjectId(post_id)})


def test_a_sweep_can_be_asked_for_and_one_request_makes_one_sweep():
    sweep_request("the broker lost partition 3")
    assert sweep_requested() == "the broker lost partition 3"
    assert sweep_requested() is None
