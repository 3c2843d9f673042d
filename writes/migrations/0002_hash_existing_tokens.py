"""Tokens that DRF's authtoken kept in clear (authtoken_token) become hashed ApiTokens, and the
clear ones are deleted: clients keep working with the keys they hold. The table is read with SQL
because the authtoken app is no longer installed."""

import hashlib
from datetime import UTC

from django.db import migrations
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

CLEAR = "authtoken_token"


def hash_clear_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if CLEAR not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("writes", "ApiToken")
    table = schema_editor.quote_name(CLEAR)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {schema_editor.quote_name('key')}, user_id, created FROM {table}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        token = ApiToken.objects.create(
            user_id=user_id, digest=hashlib.sha256(key.encode()).hexdigest(), prefix=key[:8]
        )
        if isinstance(created, str):  # SQLite's raw rows
            created = parse_datetime(created)
        if created is not None:  # auto_now_add set it to now
            created = make_aware(created, UTC) if is_naive(created) else created
            ApiToken.objects.filter(pk=token.pk).update(created=created)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")


class Migration(migrations.Migration):
    dependencies = [("writes", "0001_api_tokens")]

    operations = [migrations.RunPython(hash_clear_tokens, migrations.RunPython.noop)]
