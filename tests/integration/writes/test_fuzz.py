"""Fuzzing the write endpoints (hypothesis): whatever the body, the answer is never a 5xx, and a
refused request changes nothing in MongoDB."""

import json
from urllib.parse import quote

import pytest
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
