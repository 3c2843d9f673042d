"""API tokens, kept hashed: a copy of the database holds no token a client could use.

A token is 40 random hex characters, shown once, when it is made (create_api_token). The
database keeps its SHA-256 (what a request's token is looked up by: a token has 160 random bits,
so a fast hash is as safe as a slow one and costs a write nothing) and its first 8 characters,
to tell tokens apart in lists and in the admin. One token per API client (a Django user).
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models

PREFIX_LENGTH = 8


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, related_name="api_token", on_delete=models.CASCADE)
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=PREFIX_LENGTH)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "writes"
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


def api_token_create(*, user) -> str:
    """A new token for `user` (who has none); its key, which is kept nowhere."""
    key = secrets.token_hex(20)
    ApiToken.objects.create(user=user, digest=token_digest(key), prefix=key[:PREFIX_LENGTH])
    return key


def api_token_user(key: str):
    """The active user the token belongs to, or None."""
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
    return token.user if token is not None and token.user.is_active else None
