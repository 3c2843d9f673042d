"""Fuzzing the write endpoints (hypothesis): whatever the body, the answer is never a 5xx, and a
refused request changes nothing in MongoDB."""

import itertools
import json
from urllib.parse import quote

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from writes import services
from writes.documents import Post, User
from writes.outbox import outbox_flush

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=12,
)
text = st.text(max_size=300)
value = st.one_of(text, text, text, json_values)
stray_names = st.sampled_from(["version", "$set", "like_count", "username", "user_id", ""]) | st.text(max_size=10)
stray_fields = st.one_of(st.just({}), st.just({}), st.just({}), st.dictionaries(stray_names, json_values, max_size=1))


def bodies(fields: tuple[str, ...]):
    """Bodies for a write whose fields are `fields`: mostly objects of those fields, mostly with
    text values (valid or not; "{user}" stands for a real user's id), now and then a stray
    field; then any JSON at all, and bytes that are not JSON."""
    known = st.fixed_dictionaries(
        {}, optional={name: (st.just("{user}") | value) if name == "user_id" else value for name in fields}
    )
    objects = st.builds(lambda known, stray: {**stray, **known}, known, stray_fields)
    encoded = objects.map(lambda body: json.dumps(body).encode())
    return encoded | encoded | json_values.map(lambda body: json.dumps(body).encode()) | st.binary(max_size=400)


# Mostly the live post and a JSON body, so most examples get past routing and parsing.
post_ids = st.sampled_from(["{post}"] * 4 + ["0" * 24, "$gt", "{post}x", "%00", "ffffffffffffffffffffffff"])
content_types = st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www-form-urlencoded"])
# Each write, with the fields its body takes.
OPERATIONS = [
    ("post", "/api/users", ("username",)),
    ("post", "/api/posts", ("user_id", "title", "content")),
    ("patch", "/api/posts/{id}", ("title", "content")),
    ("delete", "/api/posts/{id}", ()),
    ("post", "/api/posts/{id}/like", ()),
    ("post", "/api/posts/{id}/dislike", ()),
]


def snapshot() -> list:
    return [list(documents._get_collection().find({}, sort=[("_id", 1)])) for documents in (User, Post)]


@pytest.fixture
def author():
    return services.user_create(username="fuzzed")


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: " ".join(operation[:2]))
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(post_id=post_ids, content_type=content_types, data=st.data())
def test_no_write_body_makes_a_5xx_and_a_refused_one_changes_nothing(
    api_client, author, operation, post_id, content_type, data
):
    method, path, fields = operation
    body = data.draw(bodies(fields), label="body").replace(b"{user}", author["id"].encode())
    post = services.post_create(user_id=author["id"], title="T", content="C")  # a live one each time
    outbox_flush()  # its acknowledged event leaves the outbox now, not during the request below
    path = path.replace("{id}", quote(post_id.replace("{post}", post["id"]), safe="%"))
    before = snapshot()
    answer = api_client.generic(method.upper(), path, data=body, content_type=content_type)
    assert answer.status_code < 500, (method, path, body, answer.content)
    if answer.status_code >= 400:
        assert answer.json()["error"]["code"] and answer.json()["error"]["message"]
        assert snapshot() == before, (method, path, body, answer.status_code)


# Retries as a client makes them: keys (some shared between writes), bodies (some changed on
# retry), how many times each is sent, and how many of the sends race each other.
retries = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 4, 5]),  # the write, from RETRIED
        st.sampled_from(["k1", "k2", "k3"]),
        st.booleans(),  # the retry's body differs from the first send's
        st.integers(min_value=1, max_value=3),  # sends, sequential
        st.booleans(),  # two of them race
    ),
    min_size=1,
    max_size=5,
)
RETRIED = [
    ("/api/users", lambda n, author, post: {"username": f"fuzz{n}"}),  # n: unique per example and step
    ("/api/posts", lambda n, author, post: {"user_id": author, "title": f"T{n}", "content": "C"}),
    ("/api/posts/{post}/like", lambda n, author, post: None),
    ("/api/posts/{post}/dislike", lambda n, author, post: None),
    ("/api/users", lambda n, author, post: {"username": f"other{n}"}),
    ("/api/posts/{post}/like", lambda n, author, post: None),
]


EXAMPLES = itertools.count()  # usernames stay unique across examples (MongoDB keeps them)


def _effects() -> tuple:
    posts = list(Post._get_collection().find({}, {"like_count": 1, "dislike_count": 1}))
    return (
        User._get_collection().count_documents({}),
        len(posts),
        sum(post["like_count"] for post in posts),
        sum(post["dislike_count"] for post in posts),
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=retries)
# The token is remembered for the whole example: on a loaded machine an example outlived the 5 s
# default, and two racing requests then both read SQLite, which refused one ("table is locked").
@override_settings(API_TOKEN_CACHE_SECONDS=3600)
def test_a_fuzzed_retry_with_an_idempotency_key_never_has_two_effects(api_client, author, plan):
    from concurrent.futures import ThreadPoolExecutor

    from writes.documents import IdempotencyRecord

    IdempotencyRecord._get_collection().delete_many({})
    # The token is looked up once, here: the test database (SQLite) refuses concurrent readers,
    # and racing requests then find it in the process's token cache (writes/authentication.py).
    assert api_client.post(f"/api/posts/{'0' * 24}/like").status_code == 404
    post = services.post_create(user_id=author["id"], title="T", content="C")
    outbox_flush()
    first_use: dict[str, tuple] = {}  # key -> (path, body) of its first send
    expected = list(_effects())
    effect_of = {"/api/users": 0, "/api/posts": 1, "like": 2, "dislike": 3}

    def send(path: str, body, key: str):
        return api_client.post(path, data=body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    example = next(EXAMPLES)
    for step, (which, key, changed, sends, race) in enumerate(plan):
        path, make = RETRIED[which]
        path = path.replace("{post}", post["id"])
        body = make(f"{example}-{step}", author["id"], post["id"])
        if key not in first_use:
            first_use[key] = (path, body)
            kind = path.rsplit("/", 1)[-1] if "{post}" in RETRIED[which][0] else path
            expected[effect_of[kind]] += 1
        elif changed and body is not None:
            body = {**body, "title": "changed"} if "title" in body else {"username": body["username"] + "x"}
        same = (path, body) == first_use[key]
        if race:
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda args: send(*args), [(path, body, key)] * 2))
        else:
            answers = [send(path, body, key) for _ in range(sends)]
        for answer in answers:
            if same:
                assert answer.status_code in (200, 201), answer.content
            else:
                assert answer.status_code == 422 and answer.json()["error"]["code"] == "unprocessable"
    assert list(_effects()) == expected, plan
