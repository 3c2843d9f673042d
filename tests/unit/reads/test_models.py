from cqrs_site.core.codec import post_key, post_likes_key, user_key
from reads.models import entries_for
from writes.events import POST, USER


def test_a_post_projects_to_its_body_and_its_counters_at_one_version():
    state = {
        "id": "p1",
        "user_id": "u1",
        "title": "t",
        "content": "ünïcode",
        "like_count": 2,
        "dislike_count": 0,
        "created_at": "2026-11-26T08:00:00.000Z",
        "updated_at": "2026-11-26T08:00:00.000Z",
        "version": 4,
    }
    body, likes = entries_for(POST, state)
    assert (body.key, body.version) == (post_key("p1"), 4)
    assert body.body.decode() == (
        '{"id":"p1","user_id":"u1","title":"t","content":"ünïcode","like_count":2,"dislike_count":0,'
        '"created_at":"2026-11-26T08:00:00.000Z","updated_at":"2026-11-26T08:00:00.000Z","version":4}'
    )
    assert (likes.key, likes.version) == (post_likes_key("p1"), 4)
    assert likes.body == b'{"post_id":"p1","like_count":2,"dislike_count":0,"version":4}'


def test_a_deleted_post_projects_to_tombstones():
    entries = entries_for(POST, {"id": "p1", "version": 9, "deleted": True})
    assert [(e.key, e.version, e.body) for e in entries] == [(post_key("p1"), 9, None), (post_likes_key("p1"), 9, None)]


def test_a_user_projects_to_one_entry():
    state = {"id": "u1", "username": "al", "created_at": "2026-11-26T08:00:00.000Z", "version": 1}
    [entry] = entries_for(USER, state)
    assert entry.key == user_key("u1")


def test_an_events_types_choose_the_feed_places_it_writes():
    from reads.models import LATEST, TOP, USER_FEED, Member, ops_for
    from writes.events import POST_CREATED, POST_REACTED, POST_UPDATED

    state = {
        "id": "p1",
        "user_id": "u1",
        "like_count": 2,
        "dislike_count": 0,
        "created_at": "2026-11-26T08:00:00.000Z",
        "version": 4,
    }

    def feeds(event_types):
        return {op.feed for op in ops_for(POST, state, event_types) if type(op) is Member}

    every = {LATEST.key(), TOP.key(), USER_FEED.key("u1")}
    assert feeds(frozenset({POST_REACTED})) == {TOP.key()}
    assert feeds(frozenset({POST_UPDATED})) == set()
    assert feeds(frozenset({POST_UPDATED, POST_REACTED})) == {TOP.key()}
    assert feeds(frozenset({POST_CREATED})) == every
    assert feeds(None) == every  # a fill from MongoDB: every place
    assert len(ops_for(POST, {**state, "deleted": True}, frozenset({POST_REACTED}))) == 2  # tombstones only
