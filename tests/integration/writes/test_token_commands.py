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


def test_the_database_holds_no_usable_token_and_a_token_is_shown_once(db):
    from writes.tokens import ApiToken

    key = command("create_api_token", "hashed-client")
    stored = ApiToken.objects.get(user__username="hashed-client")
    assert key not in {stored.digest, stored.prefix} and stored.prefix == key[:8]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {stored.digest}")  # what a copy of the database gives
    assert client.post("/api/users", {"username": "stolen"}, format="json").status_code == 401
    with pytest.raises(CommandError, match="cannot be shown again"):
        command("create_api_token", "hashed-client")


@pytest.mark.django_db(transaction=True)
def test_tokens_kept_in_clear_by_an_earlier_version_are_hashed_and_keep_working():
    """The migration from DRF's authtoken table: each clear key becomes a hash, the clear row goes."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from writes.tokens import ApiToken

    user = get_user_model().objects.create(username="old-client")
    clear_key = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE "authtoken_token" ("key" varchar(40) PRIMARY KEY, "created" datetime, "user_id" integer)'
        )
        cursor.execute('INSERT INTO "authtoken_token" VALUES (%s, %s, %s)', [clear_key, "2026-11-01 10:00:00", user.pk])
    try:
        call_command("migrate", "writes", "zero", verbosity=0)
        with connection.cursor() as cursor:  # zero removed the ApiToken table; the clear row is still there
            cursor.execute('SELECT COUNT(*) FROM "authtoken_token"')
            assert cursor.fetchone()[0] == 1
        call_command("migrate", "writes", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute('SELECT COUNT(*) FROM "authtoken_token"')
            assert cursor.fetchone()[0] == 0
        assert ApiToken.objects.get(user=user).prefix == clear_key[:8]
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {clear_key}")
        assert client.post("/api/users", {"username": "kept_working"}, format="json").status_code == 201
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP TABLE IF EXISTS "authtoken_token"')
