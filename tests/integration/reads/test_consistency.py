"""check_consistency and warm_cache against the real MongoDB and Redis."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from cqrs_site.core.codec import post_key, post_likes_key, user_key
from cqrs_site.core.redis_client import redis_client
from reads.cache import cache_get
from writes import services


def check(*args: str) -> dict:
    out = io.StringIO()
    call_command("check_consistency", "--json", "--no-progress", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def records():
    users = [services.user_create(username=f"u{i}") for i in range(3)]
    posts = [services.post_create(user_id=users[i % 3]["id"], title=f"t{i}", content="c") for i in range(7)]
    return users, posts


def test_warm_cache_fills_every_entry_and_the_check_finds_them_consistent(records):
    users, posts = records
    out = io.StringIO()
    call_command("warm_cache", "--no-progress", "--batch-size", "4", stdout=out)
    assert out.getvalue().strip() == f"{len(users) + 2 * len(posts)} entries stored, 0 already current"
    every = {"consistent": 0, "stale": 0, "missing": 0, "in_flight": 0}
    assert check("--batch-size", "4") == {
        "documents": 10,
        "consistent": 17,
        "stale": 0,
        "missing": 0,
        "in_flight": 0,
        "orphaned": 0,
        "repaired": 0,
        # No feed is cached (none was read), so no feed place is judged.
        "by_model": {
            "user": {**every, "consistent": 3},
            "post": {**every, "consistent": 7},
            "post-likes": {**every, "consistent": 7},
        },
    }


def test_stale_and_orphaned_entries_are_reported_and_repaired(records):
    users, posts = records
    call_command("warm_cache", "--no-progress", stdout=io.StringIO())
    services.post_update(post_id=posts[0]["id"], title="newer")  # no consumer runs: the cache is behind
    redis_client().set(post_likes_key(posts[1]["id"]), b'1:{"corrupt":true}')  # same version, other bytes
    redis_client().delete(user_key(users[0]["id"]))
    redis_client().set(post_key("0" * 24), b'3:{"ghost":true}')

    with pytest.raises(CommandError, match="3 stale entries remain"):
        check()
    report = check("--repair")
    assert (report["stale"], report["repaired"], report["missing"], report["orphaned"]) == (3, 3, 1, 1)
    assert b'"title":"newer"' in cache_get(post_key(posts[0]["id"])).body
    assert cache_get(post_key("0" * 24)) is None
    assert check()["stale"] == 0


def test_deleted_posts_are_consistent_as_tombstones(records):
    _, posts = records
    services.post_delete(post_id=posts[2]["id"])
    call_command("warm_cache", "--no-progress", stdout=io.StringIO())
    assert cache_get(post_key(posts[2]["id"])).body is None
    assert check()["stale"] == 0
