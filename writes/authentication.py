"""Token authentication that does not ask SQL on every write.

DRF's TokenAuthentication looks the token up in Django's database for each request. Here each
process remembers a valid token for API_TOKEN_CACHE_SECONDS: a write then costs no SQL query.
A token deleted (revoke_api_token, create_api_token --rotate, the admin) is forgotten at once by
the process that deleted it, and refused by every other within API_TOKEN_CACHE_SECONDS.
Unknown keys are never remembered: a guess costs a query, not memory.
"""

import threading
import time

from django.conf import settings
from rest_framework.authentication import TokenAuthentication

MAX_REMEMBERED = 10_000

_remembered: dict[str, tuple[tuple, float]] = {}
_lock = threading.Lock()


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        now = time.monotonic()
        with _lock:
            found = _remembered.get(key)
        if found is not None and found[1] > now:
            return found[0]
        credentials = super().authenticate_credentials(key)  # AuthenticationFailed for a bad key
        with _lock:
            if len(_remembered) >= MAX_REMEMBERED:
                _remembered.clear()
            _remembered[key] = (credentials, now + settings.API_TOKEN_CACHE_SECONDS)
        return credentials


def token_forget(sender, instance, **kwargs) -> None:
    """post_delete of a Token: this process stops accepting it at once."""
    with _lock:
        _remembered.pop(instance.key, None)
