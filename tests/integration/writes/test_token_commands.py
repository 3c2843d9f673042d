"""The API token commands: create, list, rotate, revoke, and what the API says afterwards."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient


def command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_a_token_is_created_listed_rotated_and_revoked(db):
    key = command("create_api_token", "mobile-app")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.post("/api/users", {"username": "via_token"}, format="json").status_code == 201

    listed = command("list_api_tokens")
    assert "mobile-app" in listed and key[:8] in listed and key not in listed  # never the whole key

    rotated = command("create_api_token", "mobile-app", "--rotate")
    assert rotated != key
    assert client.post("/api/users", {"username": "old_token"}, format="json").status_code == 401

    assert "revoked" in command("revoke_api_token", "mobile-app")
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated}")
    answer = client.post("/api/users", {"username": "revoked_token"}, format="json")
    assert answer.status_code == 401 and answer.json()["error"]["code"]
    assert command("list_api_tokens") == "no API tokens"
    with pytest.raises(CommandError, match="has no API token"):
        command("revoke_api_token", "mobile-app")
