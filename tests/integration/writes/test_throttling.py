"""Writes per token per minute: the next one answers 429 with Retry-After; other clients and
reads are not affected."""

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from writes.documents import User
from writes.tokens import api_token_create


def client_for(name: str) -> APIClient:
    client = APIClient()
    token = api_token_create(user=get_user_model().objects.create(username=name))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_client_over_its_write_rate_gets_429_and_nothing_is_written(db, settings):
    settings.CQRS_WRITES_PER_MINUTE = 3
    busy, other = client_for("busy"), client_for("other")
    assert [busy.post("/api/users", {"username": f"u{n}"}, format="json").status_code for n in range(3)] == [201] * 3
    refused = busy.post("/api/users", {"username": "u3"}, format="json")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert User.objects(username="u3").count() == 0
    assert other.post("/api/users", {"username": "v0"}, format="json").status_code == 201
    user_id = str(User.objects.get(username="u0").id)
    assert busy.get(f"/api/users/{user_id}").status_code == 200  # reads are not throttled


def test_zero_means_no_limit(db, settings):
    settings.CQRS_WRITES_PER_MINUTE = 0
    client = client_for("unlimited")
    assert {client.post("/api/users", {"username": f"w{n}"}, format="json").status_code for n in range(5)} == {201}
