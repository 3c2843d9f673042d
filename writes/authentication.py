"""Token authentication (`Authorization: Token <key>`) against hashed tokens (writes/tokens.py),
that does not ask SQL on every write.

DRF's TokenAuthentication, whose parsing of the header this keeps, looks the token up in Django's
database for each request. Here each process remembers a valid token (by its digest) for
API_TOKEN_CACHE_SECONDS: a write then costs no SQL query.
A token deleted (revoke_api_token, create_api_token --rotate, the admin) is forgotten at once by
the process that deleted it, and refused by every other within API_TOKEN_CACHE_SECONDS.
Unknown keys are never remembered: a guess costs a query, not memory.
"""

import threading
import time

from django.conf import settings
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from .tokens import api_token_user, token_digest

MAX_REMEMBERED = 10_000

_remembered: dict[str, tuple[tuple, float]] = {}
_lock = threading.Lock()


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        now, digest = time.monotonic(), token_digest(key)
        with _lock:
            found = _remembered.get(digest)
        if found is not None and found[1] > now:
            return found[0]
        user = api_token_user(key)
        if user is None:
            raise AuthenticationFailed("Invalid token.")
        credentials = (user, digest)
        with _lock:
            if len(_remembered) >= MAX_REMEMBERED:
                _remembered.clear()
            _remembered[digest] = (credentials, now + settings.API_TOKEN_CACHE_SECONDS)
        return credentials


def token_forget(sender, instance, **kwargs) -> None:
    """post_delete of an ApiToken: this process stops accepting it at once."""
    with _lock:
        _remembered.pop(instance.digest, None)
