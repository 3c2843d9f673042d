"""The write pool's WSGI fast path for likes and dislikes: the same effect, bytes and headers as
Django's answer; every request it cannot answer before writing handed to Django untouched.
MongoDB down under a like (503 in the API's shape, nothing written) is a fault test, through
the stack: tests/faults/test_faults.py."""

import pytest

from tests.wsgi import DjangoSpy, wsgi_call
from writes import services
from writes.documents import Post
from writes.fastpath import Reactions

# Headers that differ between any two answers, by design.
OWN = {"X-Request-ID", "Date", "Server"}


@pytest.fixture
def spy(db):
    return DjangoSpy()


@pytest.fixture
def app(spy):
    return Reactions(spy)


@pytest.fixture
def token(db):
    from django.contrib.auth import get_user_model

    from writes.tokens import api_token_create

    return api_token_create(user=get_user_model().objects.create(username="api-client"))


@pytest.fixture
def post():
    user = services.user_create(username="fast")
    return services.post_create(user_id=user["id"], title="T", content="C")


def like(app, token: str, post_id: str, reaction: str = "like", **headers):
    headers = {"Authorization": f"Token {token}", **headers}
    return wsgi_call(app, "POST", f"/api/posts/{post_id}/{reaction}", headers=headers)


def same_answer(fast, django) -> None:
    assert fast[0] == django[0]
    assert fast[2] == django[2]
    assert {k: v for k, v in fast[1].items() if k not in OWN} == {k: v for k, v in django[1].items() if k not in OWN}


def counts(post_id: str) -> tuple[int, int, int]:
    document = Post._get_collection().find_one({"_id": Post.objects.get(id=post_id).id})
    return document["like_count"], document["dislike_count"], document["version"]


def test_a_like_and_a_dislike_are_counted_below_django_with_djangos_bytes_and_headers(app, spy, token, post):
    twin = services.post_create(user_id=post["user_id"], title="T", content="C")
    for reaction, after in (("like", (1, 0, 2)), ("dislike", (1, 1, 3))):
        fast = like(app, token, post["id"], reaction)
        assert spy.calls == 0, "the fast path handed it to Django"
        django = like(spy.django, token, twin["id"], reaction)
        assert counts(post["id"]) == counts(twin["id"]) == after
        # Two posts in the same state: the answers differ by the post's id alone.
        same_answer(fast, (django[0], django[1], django[2].replace(twin["id"].encode(), post["id"].encode())))
        assert int(fast[1]["Content-Length"]) == len(fast[2])


def test_an_unknown_or_deleted_post_answers_as_django_does(app, spy, token, post):
    services.post_delete(post_id=post["id"])
    for post_id in (post["id"], "0" * 24, "not-an-id"):
        same_answer(like(app, token, post_id), like(spy.django, token, post_id))
    assert spy.calls == 0
    assert counts(post["id"])[:2] == (0, 0)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Token not-a-token"},
        {"Authorization": ""},
        {"Authorization": "Bearer x"},
        {"Idempotency-Key": "k-1"},
        {"Accept": "text/html"},
        {"body": {"unused": 1}},
    ],
    ids=["unknown token", "no token", "another scheme", "idempotency key", "accept html", "a body"],
)
def test_what_the_fast_path_cannot_answer_before_writing_goes_to_django(app, spy, token, post, headers):
    headers = {"Authorization": f"Token {token}", **headers}
    if not headers["Authorization"]:
        del headers["Authorization"]
    body = headers.pop("body", None)
    status, _, _ = wsgi_call(app, "POST", f"/api/posts/{post['id']}/like", headers=headers, body=body)
    assert spy.calls == 1
    assert status in (200, 401, 406)


def test_a_client_over_its_limit_is_refused_by_django(spy, token, post, settings):
    settings.CQRS_WRITES_PER_MINUTE = 1
    limited = Reactions(spy)
    assert like(limited, token, post["id"])[0] == 200 and spy.calls == 0
    status, headers, _ = like(limited, token, post["id"])
    assert (status, spy.calls) == (429, 1) and "Retry-After" in headers
    assert counts(post["id"])[0] == 1
