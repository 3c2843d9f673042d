"""The write API through Django's test client, against the real MongoDB and Kafka."""

import pytest
from bson import ObjectId
from rest_framework.test import APIClient

from tests.conftest import eventually
from writes import services
from writes.documents import Post, User
from writes.events import utc_now
from writes.services import _KnownUsers

pytestmark = pytest.mark.usefixtures("post_changes")


def counts() -> tuple[int, int, list]:
    posts = list(Post._get_collection().find({}, {"outbox": 0}))
    return User._get_collection().count_documents({}), len(posts), posts


@pytest.fixture
def user(api_client):
    return api_client.post("/api/users", {"username": "author"}, format="json").json()


@pytest.fixture
def post(api_client, user):
    return api_client.post("/api/posts", {"user_id": user["id"], "title": "T", "content": "C"}, format="json").json()


def test_create_user_answers_its_state_version_and_etag(api_client):
    answer = api_client.post("/api/users", {"username": "Al_ice.9-x"}, format="json")
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"id", "username", "created_at", "version"}
    assert body["username"] == "Al_ice.9-x" and body["version"] == 1
    assert answer["ETag"] == '"1"'
    assert api_client.get(f"/api/users/{body['id']}").json() == body


def test_a_taken_username_is_a_conflict(api_client, user):
    answer = api_client.post("/api/users", {"username": "author"}, format="json")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "conflict"
    assert User._get_collection().count_documents({}) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": ""},
        {"username": "   "},
        {"username": "x" * 51},
        {"username": "has space"},
        {"username": "semi;colon"},
        {"username": "ünïcode"},
        {"username": 12345},
        {"username": True},
        {"username": None},
        {"username": ["a"]},
        {"username": {"$gt": ""}},
        {"username": "ok", "admin": True},
    ],
)
def test_bad_usernames_are_refused_and_change_nothing(api_client, body):
    answer = api_client.post("/api/users", body, format="json")
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "invalid" and error["fields"]
    assert User._get_collection().count_documents({}) == 0


def test_a_50_character_username_is_accepted(api_client):
    assert api_client.post("/api/users", {"username": "x" * 50}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("payload", "content_type", "status"),
    [
        (b'["username"]', "application/json", 400),
        (b'"alice"', "application/json", 400),
        (b"null", "application/json", 400),
        (b"{not json", "application/json", 400),
        (b"username=alice", "application/x-www-form-urlencoded", 415),
    ],
)
def test_bodies_that_are_not_json_objects_are_refused(api_client, payload, content_type, status):
    answer = api_client.generic("POST", "/api/users", payload, content_type=content_type)
    assert answer.status_code == status, answer.content
    assert "error" in answer.json()
    assert User._get_collection().count_documents({}) == 0


def test_create_post_answers_its_full_state(api_client, user):
    answer = api_client.post("/api/posts", {"user_id": user["id"], "title": "Hi", "content": "There"}, format="json")
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {
        "id",
        "user_id",
        "title",
        "content",
        "like_count",
        "dislike_count",
        "created_at",
        "updated_at",
        "version",
    }
    assert (body["user_id"], body["like_count"], body["dislike_count"], body["version"]) == (user["id"], 0, 0, 1)
    assert answer["ETag"] == '"1"'


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "0" * 24},  # well-formed, unknown
        {"user_id": "nope"},
        {"user_id": {"$ne": None}},
        {"title": None},
        {"title": ""},
        {"title": "x" * 201},
        {"content": "x" * 10_001},
        {"content": 5},
        {"title": {"$gt": ""}},
        {"extra": 1},
    ],
)
def test_bad_posts_are_refused_and_change_nothing(api_client, user, change):
    body = {"user_id": user["id"], "title": "T", "content": "C", **change}
    answer = api_client.post("/api/posts", {k: v for k, v in body.items() if v is not None}, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["fields"]
    assert Post._get_collection().count_documents({}) == 0


def test_a_missing_post_field_is_refused(api_client, user):
    for missing in ("user_id", "title", "content"):
        body = {"user_id": user["id"], "title": "T", "content": "C"}
        del body[missing]
        answer = api_client.post("/api/posts", body, format="json")
        assert answer.status_code == 400 and missing in answer.json()["error"]["fields"]
    assert Post._get_collection().count_documents({}) == 0


def test_an_author_is_looked_up_once_and_an_unknown_one_not_remembered(api_client, db):
    """The write process remembers the authors it found (users are never deleted), never the
    ids it did not find: a user made after a refused post can post."""
    user_id = ObjectId()
    body = {"user_id": str(user_id), "title": "T", "content": "C"}
    assert api_client.post("/api/posts", body, format="json").status_code == 400
    User._get_collection().insert_one({"_id": user_id, "username": "late", "created_at": utc_now(), "version": 1})
    assert api_client.post("/api/posts", body, format="json").status_code == 201
    # Found once, it is not looked up again (proof: gone from MongoDB behind the API's back,
    # which nothing but an operator's shell can do, it is still accepted).
    User._get_collection().delete_one({"_id": user_id})
    assert api_client.post("/api/posts", body, format="json").status_code == 201
    assert Post._get_collection().count_documents({"user_id": user_id}) == 2


def test_known_authors_are_bounded():
    known = _KnownUsers(most=2)
    ids = [services.user_create(username=f"bounded{n}")["id"] for n in range(3)]
    for user_id in ids:
        assert known.exists(ObjectId(user_id))
    assert known.ids == {ObjectId(ids[2])}  # full at the third: started again
    assert not known.exists(ObjectId())


def test_the_longest_title_and_content_are_accepted(api_client, user):
    body = {"user_id": user["id"], "title": "t" * 200, "content": "c" * 10_000}
    assert api_client.post("/api/posts", body, format="json").status_code == 201


def test_patch_changes_only_what_is_sent_and_raises_the_version(api_client, post):
    answer = api_client.patch(f"/api/posts/{post['id']}", {"title": "New"}, format="json")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["title"], body["content"], body["version"]) == ("New", "C", 2)
    assert answer["ETag"] == '"2"'
    assert body["updated_at"] >= post["updated_at"] and body["created_at"] == post["created_at"]


def test_patch_keeps_text_that_looks_like_an_operator_as_text(api_client, post):
    body = api_client.patch(f"/api/posts/{post['id']}", {"title": "$content", "content": "$$NOW"}, format="json").json()
    assert (body["title"], body["content"]) == ("$content", "$$NOW")


@pytest.mark.parametrize("body", [{}, {"title": ""}, {"title": 1}, {"like_count": 99}, {"title": "x" * 201}])
def test_bad_patches_are_refused_and_change_nothing(api_client, post, body):
    _, _, before = counts()
    answer = api_client.patch(f"/api/posts/{post['id']}", body, format="json")
    assert answer.status_code == 400, answer.content
    assert counts()[2] == before


def test_delete_answers_204_and_then_the_post_is_gone(api_client, post):
    answer = api_client.delete(f"/api/posts/{post['id']}")
    assert answer.status_code == 204
    assert answer["ETag"] == '"2"'
    assert api_client.get(f"/api/posts/{post['id']}").status_code == 404
    assert api_client.get(f"/api/posts/{post['id']}/likes").status_code == 404
    assert api_client.delete(f"/api/posts/{post['id']}").status_code == 404
    assert api_client.patch(f"/api/posts/{post['id']}", {"title": "x"}, format="json").status_code == 404
    assert api_client.post(f"/api/posts/{post['id']}/like").status_code == 404


def test_like_and_dislike_answer_the_counters_with_the_new_version(api_client, post):
    liked = api_client.post(f"/api/posts/{post['id']}/like")
    assert liked.status_code == 200
    assert liked.json() == {"post_id": post["id"], "like_count": 1, "dislike_count": 0, "version": 2}
    assert liked["ETag"] == '"2"'
    disliked = api_client.post(f"/api/posts/{post['id']}/dislike").json()
    assert disliked == {"post_id": post["id"], "like_count": 1, "dislike_count": 1, "version": 3}
    assert api_client.get(f"/api/posts/{post['id']}/likes").json() == disliked


@pytest.mark.parametrize("bad_id", ["nope", "0" * 24, "6b07f2915351253b0a29167", "zzzzzzzzzzzzzzzzzzzzzzzz", "%24gt"])
def test_unknown_or_malformed_ids_answer_404(api_client, bad_id):
    assert api_client.get(f"/api/posts/{bad_id}").status_code == 404
    assert api_client.get(f"/api/posts/{bad_id}/likes").status_code == 404
    assert api_client.get(f"/api/users/{bad_id}").status_code == 404
    assert api_client.get(f"/api/users/{bad_id}/posts").status_code == 404
    assert api_client.patch(f"/api/posts/{bad_id}", {"title": "x"}, format="json").status_code == 404
    assert api_client.delete(f"/api/posts/{bad_id}").status_code == 404
    assert api_client.post(f"/api/posts/{bad_id}/like").status_code == 404


def test_writes_need_a_valid_token(db, user, post):
    anonymous = APIClient()
    assert anonymous.post("/api/users", {"username": "x"}, format="json").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    for answer in (
        bad.post("/api/users", {"username": "x"}, format="json"),
        bad.post("/api/posts", {"user_id": user["id"], "title": "T", "content": "C"}, format="json"),
        bad.patch(f"/api/posts/{post['id']}", {"title": "x"}, format="json"),
        bad.delete(f"/api/posts/{post['id']}"),
        bad.post(f"/api/posts/{post['id']}/like"),
    ):
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "not_authenticated"
    assert User._get_collection().count_documents({}) == 1
    assert Post._get_collection().find_one()["version"] == 1
    # Reads are public.
    assert anonymous.get(f"/api/posts/{post['id']}").status_code == 200


def test_every_write_is_published_and_leaves_no_pending_event(api_client, post):
    api_client.post(f"/api/posts/{post['id']}/like")
    api_client.patch(f"/api/posts/{post['id']}", {"content": "new"}, format="json")
    # Acknowledged events leave their outboxes in batches, a few milliseconds after the answer.
    assert eventually(lambda: Post._get_collection().count_documents({"outbox.0": {"$exists": True}}) == 0)
    assert eventually(lambda: User._get_collection().count_documents({"outbox.0": {"$exists": True}}) == 0)


def test_a_refused_change_leaves_the_post_exactly_as_it_was(api_client, post):
    """The update decides inside itself whether the post may change (writes/services.py): one
    that may not is left untouched, no version raised, no event added to its outbox."""
    from bson import ObjectId

    from writes.outbox import outbox_flush

    posts = Post._get_collection()
    url = f"/api/posts/{post['id']}"
    outbox_flush()
    before = posts.find_one({"_id": ObjectId(post["id"])})
    answer = api_client.patch(url, {"title": "Lost"}, format="json", HTTP_IF_MATCH='"7", "9"')
    assert answer.status_code == 412 and answer.json()["error"]["fields"]["If-Match"] == ["current version 1"]
    assert posts.find_one({"_id": ObjectId(post["id"])}) == before

    assert api_client.delete(url, HTTP_IF_MATCH='"1"').status_code == 204
    outbox_flush()
    deleted = posts.find_one({"_id": ObjectId(post["id"])})
    assert deleted["deleted"] is True and deleted["version"] == 2
    for refused in (
        api_client.post(f"{url}/like"),
        api_client.patch(url, {"title": "Gone"}, format="json"),
        api_client.delete(url),
    ):
        assert refused.status_code == 404
    assert posts.find_one({"_id": ObjectId(post["id"])}) == deleted
