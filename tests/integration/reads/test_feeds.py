"""Feeds as read models: a user's posts, the latest and the most liked, from Redis when cached,
filled from MongoDB when not, kept by the consumer, and never showing a post after its deletion
is visible."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

from cqrs_site.core.codec import feed_key, post_key
from cqrs_site.core.redis_client import redis_client
from reads.cache import cache_apply, cache_get
from reads.fastpath import CacheHits
from reads.models import LATEST, TOP
from tests.conftest import eventually
from tests.wsgi import wsgi_call
from writes import services


@pytest.fixture
def author():
    return services.user_create(username="feeder")


def ids(answer) -> list[str]:
    return [post["id"] for post in answer.json()["results"]]


def pages(client, path: str, limit: int, order: str | None = None) -> tuple[list[str], list[str]]:
    """Every page of a feed: (the ids in order, the X-Cache of each page)."""
    seen, sources, cursor = [], [], None
    while True:
        query = {"limit": limit, **({"order": order} if order else {}), **({"cursor": cursor} if cursor else {})}
        answer = client.get(path, query)
        assert answer.status_code == 200, answer.content
        seen += ids(answer)
        sources.append(answer["X-Cache"])
        cursor = answer.json()["next"]
        if cursor is None:
            assert "Link" not in answer
            return seen, sources
        assert answer["Link"].startswith("<") and 'rel="next"' in answer["Link"] and cursor in answer["Link"]


def test_a_users_feed_is_filled_on_its_first_read_then_served_from_redis_with_the_same_pages(client, author):
    created = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(5)]
    path = f"/api/users/{author['id']}/posts"
    first, sources = pages(client, path, 2)
    assert first == list(reversed(created)) and sources[0] == "miss"
    again, sources = pages(client, path, 2)
    assert again == first and set(sources) == {"hit"}
    # The same bytes as the MongoDB page (read-your-writes: Cache-Control: no-cache).
    fresh = client.get(path, {"limit": 2}, HTTP_CACHE_CONTROL="no-cache")
    cached = client.get(path, {"limit": 2})
    assert (fresh["X-Cache"], cached["X-Cache"]) == ("miss", "hit") and fresh.content == cached.content


def test_latest_and_top_list_every_live_post_in_their_order(client, author):
    posts = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(6)]
    for post, likes in zip(posts, [2, 0, 3, 0, 2, 1], strict=True):
        for _ in range(likes):
            services.post_react(post_id=post, reaction="like")
    services.post_delete(post_id=posts[5])
    latest, _ = pages(client, "/api/posts", 4)
    assert latest == list(reversed(posts[:5]))
    assert ids(client.get("/api/posts", {"order": "latest"})) == latest  # the default order
    top, _ = pages(client, "/api/posts", 2, order="top")
    # Most liked first; ties by id, newest first (an ObjectId begins with its creation time).
    by_likes = sorted(posts[:5], key=lambda p: ([2, 0, 3, 0, 2][posts.index(p)], p), reverse=True)
    assert top == by_likes
    assert client.get("/api/posts", {"order": "top"})["X-Cache"] == "hit"


@pytest.mark.parametrize("query", [{"order": "oldest"}, {"limit": 0}, {"limit": "²"}, {"cursor": "bm9wZQ"}])
def test_a_bad_order_limit_or_cursor_is_a_400(client, query):
    answer = client.get("/api/posts", query)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"


def test_the_consumer_keeps_cached_feeds_in_step_and_a_deleted_post_leaves_them(client, author, consumer):
    consumer.wait_ready()
    first = services.post_create(user_id=author["id"], title="first", content="c")
    eventually(lambda: cache_get(post_key(first["id"])))
    for path in (f"/api/users/{author['id']}/posts", "/api/posts", "/api/posts?order=top"):
        assert ids(client.get(path)) == [first["id"]]  # each feed is now cached
    second = services.post_create(user_id=author["id"], title="second", content="c")
    for path in (f"/api/users/{author['id']}/posts", "/api/posts"):
        answer = eventually(lambda path=path: (a := client.get(path)) and len(ids(a)) == 2 and a)
        assert ids(answer) == [second["id"], first["id"]] and answer["X-Cache"] == "hit"  # not refilled
    services.post_react(post_id=first["id"], reaction="like")
    eventually(lambda: ids(client.get("/api/posts", {"order": "top"})) == [first["id"], second["id"]])
    services.post_delete(post_id=first["id"])
    eventually(lambda: ids(client.get("/api/posts")) == [second["id"]])
    # Dropped from the feed on the read that found its tombstone.
    assert redis_client().zscore(feed_key("latest"), first["id"]) is None


def test_a_fill_older_than_the_feed_cannot_move_a_score_back(client, author):
    post = services.post_create(user_id=author["id"], title="p", content="c")
    services.post_react(post_id=post["id"], reaction="like")
    assert client.get("/api/posts", {"order": "top"})["X-Cache"] == "miss"  # filled at version 2, 1 like
    older = TOP.member(None, post["id"], 0, 1)  # a fill that read MongoDB before the like
    assert cache_apply([older], writer="fill") == [0]
    assert redis_client().zscore(feed_key("top"), post["id"]) == 1


def test_a_bounded_feed_serves_its_head_from_redis_and_deeper_pages_from_mongodb(client, author, settings):
    settings.FEED_MAX_MEMBERS = 3
    posts = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(7)]
    call_command("warm_cache", "--no-progress", stdout=io.StringIO())  # the posts' entries (no consumer runs)
    client.get("/api/posts", {"limit": 1})  # fills the feed: its 3 newest posts
    assert redis_client().zcard(feed_key("latest")) == 3 + 1  # and its state
    seen, sources = pages(client, "/api/posts", 2)
    assert seen == list(reversed(posts))
    assert sources == ["hit", "miss", "miss", "miss"]  # the second page reaches past the cached three


def test_a_feed_page_hit_is_answered_below_django_with_djangos_bytes(db, author):
    services.post_create(user_id=author["id"], title="p", content="c")
    django = get_wsgi_application()
    app = CacheHits(django)
    for path in ("/api/posts?limit=5", f"/api/users/{author['id']}/posts", "/api/posts?order=top&limit=1"):
        wsgi_call(django, "GET", path)  # fills the feed
        slow, fast = wsgi_call(django, "GET", path), wsgi_call(app, "GET", path)
        assert fast[0] == slow[0] == 200 and fast[2] == slow[2]
        assert (fast[1]["X-Cache"], fast[1]["Content-Type"]) == ("hit", slow[1]["Content-Type"])


def test_check_consistency_judges_feed_places_and_repairs_a_stale_score(client, author):
    post = services.post_create(user_id=author["id"], title="p", content="c")
    client.get("/api/posts", {"order": "top"})  # the top feed is cached
    redis_client().zadd(feed_key("top"), {post["id"]: 9})  # a score MongoDB never had
    out = io.StringIO()
    call_command("check_consistency", "--json", "--no-progress", "--repair", "--bound", "0.1", stdout=out)
    report = json.loads(out.getvalue())
    assert report["by_model"]["top"]["stale"] == 1 and report["repaired"] == 1
    assert redis_client().zscore(feed_key("top"), post["id"]) == 0
    assert LATEST.key() not in [k.decode() for k in redis_client().keys("*")]  # never read: never filled


def test_one_call_adding_past_a_feeds_bound_keeps_the_newest_and_moves_the_cutoff(client, author, settings):
    """The apply script remembers a feed's state and size within a call (reads/cache.py): members
    added at once are trimmed once, after the last, and the cutoff moves to the highest member
    dropped; a member the call added below it is dropped with the rest."""
    settings.FEED_MAX_MEMBERS = 3
    posts = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(3)]
    client.get("/api/posts", {"limit": 1})  # the feed is cached: its 3 posts and its state
    feed = feed_key("latest")
    newest = max(redis_client().zscore(feed, post) for post in posts)
    newer = [f"{'f' * 23}{i}" for i in range(3)]
    below = LATEST.member(None, "a" * 24, int(newest) - 1000, 1)
    ops = [LATEST.member(None, post, int(newest) + 10 + i, 1) for i, post in enumerate(newer)]
    assert cache_apply([*ops, below], writer="fill") == [1, 1, 1, 1]  # each above the cutoff it met
    held = [m.decode() for m in redis_client().zrange(feed, 0, -1)]
    [state] = [m for m in held if m.startswith("!")]
    assert [m for m in held if not m.startswith("!")] == newer
    assert state == f"!ready:{int(newest)}:{posts[-1]}"  # cut below the newest post it dropped
    # The next call meets the cutoff: a member below it is refused.
    assert cache_apply([LATEST.member(None, "b" * 24, int(newest) - 1, 1)], writer="fill") == [0]


def test_one_call_of_a_like_storm_leaves_its_feed_holding_the_highest_scores(client, author, settings):
    """A like storm's batch: many places in one call, each of which would fill the bounded feed
    alone, and a member of the cached head moving to the top among them. The feed ends holding
    the highest scores of everything it was told (trimmed once, after the call's last member)."""
    settings.FEED_MAX_MEMBERS = 3
    posts = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(3)]
    client.get("/api/posts", {"limit": 1})  # the feed is cached: its 3 posts and its state
    feed = feed_key("latest")
    scores = {post: int(redis_client().zscore(feed, post)) for post in posts}
    base = max(scores.values())
    newcomers = {f"{'e' * 22}{i:02d}": base + 100 + i for i in range(4)}  # would each fill the feed alone
    scores.update(newcomers)
    moved = posts[-1]
    scores[moved] = base + 200  # the newest of them all, at a higher version
    ops = [LATEST.member(None, post, score, 1) for post, score in newcomers.items()]
    ops.insert(2, LATEST.member(None, moved, scores[moved], 5))
    assert cache_apply(ops, writer="consumer") == [1] * len(ops)
    held = {m.decode(): s for m, s in redis_client().zrange(feed, 0, -1, withscores=True) if not m.startswith(b"!")}
    highest = sorted(scores, key=lambda post: (scores[post], post), reverse=True)[:3]
    assert held == {post: scores[post] for post in highest}
