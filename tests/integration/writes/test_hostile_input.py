"""Hostile bodies get a clear 4xx in the one error shape, and change nothing in MongoDB."""

import pytest

from writes import services
from writes.documents import Post, User

DEEP = b'{"username":' + b"[" * 5000 + b"]" * 5000 + b"}"


def snapshot() -> tuple:
    return (
        list(User._get_collection().find({}, {"outbox": 0}).sort("_id")),
        list(Post._get_collection().find({}, {"outbox": 0}).sort("_id")),
    )


@pytest.fixture
def post():
    user = services.user_create(username="target")
    return services.post_create(user_id=user["id"], title="T", content="C")


@pytest.mark.parametrize(
    "body,content_type,status,code",
    [
        (b'{"username":"' + b"a" * 70_000 + b'"}', "application/json", 413, "too_large"),
        (DEEP, "application/json", 400, "malformed"),
        (b'{"username":{"a":{"b":"c"}}}', "application/json", 400, "invalid"),
        (b'["alice"]', "application/json", 400, "invalid"),
        (b'"alice"', "application/json", 400, "invalid"),
        (b"null", "application/json", 400, "invalid"),
        (b'{"username":', "application/json", 400, "malformed"),
        (b'{"username":"\xff\xfe"}', "application/json", 400, "malformed"),
        (b"username=alice", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_a_hostile_body_is_a_4xx_and_changes_nothing(api_client, post, body, content_type, status, code):
    before = snapshot()
    for method, path in (("POST", "/api/users"), ("POST", "/api/posts"), ("PATCH", f"/api/posts/{post['id']}")):
        answer = api_client.generic(method, path, body, content_type=content_type)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (method, path)
    assert snapshot() == before


def test_operators_in_user_input_stay_text(api_client, post):
    answer = api_client.patch(f"/api/posts/{post['id']}", {"title": {"$set": {"like_count": 99}}}, format="json")
    assert answer.status_code == 400
    answer = api_client.patch(f"/api/posts/{post['id']}", {"title": "$like_count"}, format="json")
    assert answer.status_code == 200 and answer.json()["title"] == "$like_count"
    assert Post._get_collection().find_one({"title": "$like_count"})["like_count"] == 0
