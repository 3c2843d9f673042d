"""The version fence, against the real Redis."""

import pytest

from reads.cache import cache_get, cache_put
from reads.models import Entry


def test_a_newer_version_replaces_an_older_one():
    assert cache_put([Entry("k", 1, b"{}")], writer="fill") == [1]
    assert cache_put([Entry("k", 2, b'{"v":2}')], writer="fill") == [1]
    assert cache_get("k") == Entry("k", 2, b'{"v":2}')


def test_an_older_or_equal_version_never_replaces_a_newer_one():
    cache_put([Entry("k", 5, b'{"v":5}')], writer="fill")
    assert cache_put([Entry("k", 4, b'{"v":4}'), Entry("k", 5, b'{"other":5}')], writer="fill") == [0, 0]
    assert cache_get("k") == Entry("k", 5, b'{"v":5}')


def test_a_tombstone_refuses_a_late_fill_of_what_it_buried():
    cache_put([Entry("k", 3, b'{"v":3}')], writer="fill")
    cache_put([Entry("k", 4, None)], writer="fill")
    assert cache_put([Entry("k", 3, b'{"v":3}')], writer="fill") == [0]
    assert cache_get("k") == Entry("k", 4, None)


def test_an_unknown_id_marker_gives_way_to_the_first_real_version():
    cache_put([Entry("k", 0, None)], writer="fill")
    assert cache_put([Entry("k", 1, b'{"v":1}')], writer="fill") == [1]
    assert cache_get("k").body == b'{"v":1}'


def test_entries_expire_and_tombstones_outlive_live_entries(settings):
    from cqrs_site.core.redis_client import redis_client

    cache_put([Entry("live", 1, b"{}"), Entry("dead", 1, None), Entry("absent", 0, None)], writer="fill")
    live, dead, absent = (redis_client().pttl(key) for key in ("live", "dead", "absent"))
    assert 0 < live <= settings.CQRS_CACHE_TTL_SECONDS * 1000 * (1 + settings.CQRS_CACHE_TTL_JITTER)
    assert dead > live
    assert 0 < absent <= 30_000


def test_a_fill_cannot_put_an_older_version_into_a_key_whose_entry_was_evicted():
    from cqrs_site.core.redis_client import redis_client

    cache_put([Entry("k", 6, b'{"v":6}')], writer="fill")
    redis_client().delete("k")  # expired or evicted
    assert cache_put([Entry("k", 5, b'{"v":5}')], writer="fill") == [0]  # a fill that read MongoDB before v6
    assert cache_get("k") is None
    assert cache_put([Entry("k", 6, b'{"v":6}')], writer="fill") == [1]  # the same version may come back


def test_a_posts_entries_and_places_share_one_fence(settings):
    """A post's body, its likes and its feed places all hold the post's version, and go through
    one high-water key: once any of them was written at v6, no view of the post takes v5, even
    one whose own key never held v6 (a likes fill that read MongoDB before the like)."""
    from bson import ObjectId

    from cqrs_site.core.codec import entry_key, high_water_key
    from cqrs_site.core.redis_client import redis_client
    from reads.models import POST_ENTRY, POST_LIKES, ops_for

    post_id = str(ObjectId())
    state = {
        "id": post_id,
        "user_id": str(ObjectId()),
        "title": "T",
        "content": "C",
        "like_count": 4,
        "dislike_count": 0,
        "created_at": "2026-11-28T00:00:00+00:00",
        "updated_at": "2026-11-28T00:00:00+00:00",
        "version": 6,
        "deleted": False,
    }
    fences = {op.fence for op in ops_for("post", state)}
    assert fences == {high_water_key(entry_key("post", post_id))}
    cache_put([POST_ENTRY.entry(state)], writer="consumer")
    assert redis_client().get(high_water_key(entry_key("post", post_id))) == b"6"
    older_likes = [POST_LIKES.entry({**state, "like_count": 3, "version": 5})]
    assert cache_put(older_likes, writer="fill") == [0]
    assert cache_get(POST_LIKES.key(post_id)) is None
    assert cache_put([POST_LIKES.entry(state)], writer="fill") == [1]  # the same version is taken
    assert not redis_client().exists(high_water_key(POST_LIKES.key(post_id)))  # no fence of its own


@pytest.mark.parametrize(("version", "body"), [(7, b'{"title":"a:b"}'), (2**53 - 1, None)])
def test_the_lua_reads_the_value_format_as_python_writes_it(version, body):
    """cqrs_site/core/entry_value.lua, as the scripts (and the edge) get it, on Redis's own Lua."""
    from cqrs_site.core.codec import ENTRY_VALUE_LUA, value_decode, value_text
    from cqrs_site.core.redis_client import redis_client

    value = value_text(version, body)
    script = ENTRY_VALUE_LUA + "local v, b = entry_split(ARGV[1]) return {v, b, entry_version(ARGV[1])}"
    digits, held, parsed = redis_client().eval(script, 0, value)
    assert (int(digits), held or None, parsed) == (version, body, version) == (*value_decode(value.encode()), version)
    # A value's first bytes are enough for its version (the apply script's GETRANGE); none has none.
    assert redis_client().eval(ENTRY_VALUE_LUA + "return entry_version(ARGV[1])", 0, value[:21]) == version
    assert redis_client().eval(ENTRY_VALUE_LUA + "return {entry_version(''), entry_split('7')}", 0) == []
