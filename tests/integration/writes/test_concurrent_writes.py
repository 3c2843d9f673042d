"""Concurrent writes on one document are never lost, and every one publishes its event."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import eventually
from writes import services
from writes.documents import Post

pytestmark = pytest.mark.usefixtures("post_changes")


def test_200_likes_sent_at_once_count_200_each_with_its_own_version():
    user = services.user_create(username="popular")
    post = services.post_create(user_id=user["id"], title="T", content="C")
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: services.post_react(post_id=post["id"], reaction="like"), range(200)))
    assert sorted(a["version"] for a in answers) == list(range(2, 202))  # no two writes saw the same state
    assert sorted(a["like_count"] for a in answers) == list(range(1, 201))
    stored = Post._get_collection().find_one({"_id": Post.objects.get(id=post["id"]).id})
    assert (stored["like_count"], stored["version"]) == (200, 201)
    # All 200 events acknowledged by the broker, and so removed (in batches, off the request path).
    assert eventually(lambda: Post._get_collection().find_one({"_id": stored["_id"]})["outbox"] == [], timeout=5)
