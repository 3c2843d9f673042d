"""The read API: cache first, MongoDB on a miss, read-your-writes on request."""

import pytest

from cqrs_site.core.codec import post_key
from cqrs_site.core.redis_client import redis_client
from reads.cache import cache_get
from writes import services


@pytest.fixture
def author():
    return services.user_create(username="reader")


@pytest.fixture
def post(author):
    return services.post_create(user_id=author["id"], title="T", content="C")


def test_a_miss_reads_mongodb_and_fills_then_a_hit_serves_the_same_bytes(client, post):
    first = client.get(f"/api/posts/{post['id']}")
    assert (first.status_code, first["X-Cache"], first["ETag"]) == (200, "miss", '"1"')
    assert first.json() == post
    assert cache_get(post_key(post["id"])).body == first.content
    second = client.get(f"/api/posts/{post['id']}")
    assert (second["X-Cache"], second.content) == ("hit", first.content)


def test_if_none_match_on_the_current_version_answers_304(client, post):
    client.get(f"/api/posts/{post['id']}")
    answer = client.get(f"/api/posts/{post['id']}", HTTP_IF_NONE_MATCH='"1"')
    assert answer.status_code == 304 and answer.content == b""
    assert client.get(f"/api/posts/{post['id']}", HTTP_IF_NONE_MATCH='"0"').status_code == 200


def test_x_min_version_skips_an_older_cached_entry(client, post):
    client.get(f"/api/posts/{post['id']}")  # cached at version 1
    newer = services.post_update(post_id=post["id"], title="T2")  # no consumer runs: the cache stays at 1
    assert client.get(f"/api/posts/{post['id']}").json()["version"] == 1
    answer = client.get(f"/api/posts/{post['id']}", HTTP_X_MIN_VERSION=str(newer["version"]))
    assert (answer.json()["title"], answer.json()["version"], answer["X-Cache"]) == ("T2", 2, "miss")
    assert client.get(f"/api/posts/{post['id']}").json()["version"] == 2  # and the fill moved the cache on


# "²" and "٣" are digits to str.isdigit but not to int(): they once made a 500.
@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "9" * 30, "²", "٣"])
def test_a_malformed_x_min_version_is_a_400(client, post, bad):
    answer = client.get(f"/api/posts/{post['id']}", HTTP_X_MIN_VERSION=bad)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"


def test_an_unknown_id_is_remembered_briefly_so_misses_do_not_hammer_mongodb(client):
    unknown = "0" * 24
    assert client.get(f"/api/posts/{unknown}").status_code == 404
    assert cache_get(post_key(unknown)).version == 0
    assert client.get(f"/api/posts/{unknown}").status_code == 404


def test_a_post_created_after_its_id_was_looked_up_is_readable(client, author):
    post = services.post_create(user_id=author["id"], title="T", content="C")
    redis_client().delete(post_key(post["id"]))
    assert client.get(f"/api/posts/{post['id']}", HTTP_X_MIN_VERSION="1").status_code == 200


def test_reads_never_accept_writes_and_a_405_names_the_allowed_methods(client, post):
    answer = client.put(f"/api/posts/{post['id']}/likes")
    assert (answer.status_code, answer["Allow"]) == (405, "GET, HEAD")
    assert client.patch(f"/api/posts/{post['id']}", {"title": "x"})["Allow"] == "GET, HEAD, PATCH, DELETE, OPTIONS"


# GET /api/posts is the feed of all posts (issue 13), no longer a creation-only path.
@pytest.mark.urls("cqrs_site.urls_read")
@pytest.mark.parametrize("path", ["/api/users"])
def test_the_read_pool_answers_a_get_of_a_creation_path_with_405_not_404(client, path):
    answer = client.get(path)
    assert (answer.status_code, answer["Allow"], answer.json()["error"]["code"]) == (405, "POST", "method_not_allowed")


@pytest.mark.parametrize("reaction", ["like", "dislike"])
def test_a_get_of_a_reaction_path_answers_405_with_the_write_pools_allow_in_both_pools(
    client, post, reaction, settings
):
    path = f"/api/posts/{post['id']}/{reaction}"
    for urlconf in ("cqrs_site.urls_read", "cqrs_site.urls_write"):
        settings.ROOT_URLCONF = urlconf
        for answer in (client.get(path), client.head(path)):
            assert (answer.status_code, answer["Allow"]) == (405, "POST, OPTIONS")
        assert client.get(path).json()["error"]["code"] == "method_not_allowed"


def test_user_posts_are_newest_first_with_a_cursor_and_skip_deleted(client, author):
    ids = [services.post_create(user_id=author["id"], title=f"p{i}", content="c")["id"] for i in range(7)]
    services.post_delete(post_id=ids[3])
    expected = [i for i in reversed(ids) if i != ids[3]]
    seen, cursor = [], None
    while True:
        answer = client.get(f"/api/users/{author['id']}/posts", {"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200
        body = answer.json()
        assert len(body["results"]) <= 2
        seen += [post["id"] for post in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == expected
    first = client.get(f"/api/users/{author['id']}/posts").json()
    assert first["next"] is None and [p["title"] for p in first["results"]] == ["p6", "p5", "p4", "p2", "p1", "p0"]


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "garbage!"}, {"cursor": "MTIz"}]
)
def test_bad_paging_parameters_are_400(client, author, query):
    answer = client.get(f"/api/users/{author['id']}/posts", query)
    assert answer.status_code == 400, answer.content


def test_a_user_with_no_posts_has_an_empty_page_and_an_unknown_user_404(client, author):
    assert client.get(f"/api/users/{author['id']}/posts").json() == {"results": [], "next": None}
    assert client.get(f"/api/users/{'0' * 24}/posts").status_code == 404
