"""The read pool's hot path: a cache hit answered below Django.

A GET of one user, post or post's likes whose entry is in Redis is answered here: one GET, the
stored bytes, the same headers the Django view sends (ETag, X-Cache, 304 on If-None-Match). Every
other request (a miss, a tombstone, an X-Min-Version the entry does not meet, an unreadable
header, Redis down, any other path or method) goes to Django unchanged, which answers it exactly
as before. Only the read role installs it (cqrs_site/wsgi.py).
"""

import re

from redis.exceptions import RedisError

from cqrs_site.metrics import CACHE_LOOKUPS
from cqrs_site.telemetry import ROUTE

from .apis import etag_for, is_version
from .cache import PREFETCHED, cache_client
from .keys import post_key, post_likes_key, user_key

HOT_PATH = re.compile(r"^/api/(?:(users)/([0-9a-fA-F]{24})|(posts)/([0-9a-fA-F]{24})(/likes)?)$")
JSON = ("Content-Type", "application/json")


# The URL patterns of reads/urls.py these paths match: the route label of a hit's metrics.
USER_ROUTE = "api/users/<str:user_id>"
POST_ROUTE = "api/posts/<str:post_id>"
LIKES_ROUTE = "api/posts/<str:post_id>/likes"
HIT_COUNTER = CACHE_LOOKUPS.labels("hit")


def hot_key(path: str) -> tuple[str, str] | None:
    """The cache key a hot path reads and its route pattern, or None for any other path."""
    match = HOT_PATH.match(path)
    if match is None:
        return None
    if match.group(1):
        return user_key(match.group(2)), USER_ROUTE
    if match.group(5):
        return post_likes_key(match.group(4)), LIKES_ROUTE
    return post_key(match.group(4)), POST_ROUTE


class CacheHits:
    """WSGI middleware around Django's application (see the module's docstring)."""

    def __init__(self, application) -> None:
        self.application = application

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            hot = hot_key(environ.get("PATH_INFO", ""))
            if hot is not None:
                answer = self._hit(hot[0], environ, start_response)
                if answer is not None:
                    environ[ROUTE] = hot[1]
                    HIT_COUNTER.inc()
                    return answer
        return self.application(environ, start_response)

    def _hit(self, key: str, environ, start_response):
        minimum = environ.get("HTTP_X_MIN_VERSION")
        if minimum is not None and not is_version(minimum):
            return None  # Django explains the error
        try:
            raw = cache_client().get(key)
        except RedisError:
            return None  # Django serves it from MongoDB, marked degraded
        environ[PREFETCHED] = (key, raw)  # whatever follows, Django need not read it again
        if not raw:
            return None
        stored, _, body = raw.partition(b":")
        version = int(stored)
        if not body or (minimum is not None and version < int(minimum)):
            return None
        etag = etag_for(version)
        if environ.get("HTTP_IF_NONE_MATCH") == etag:
            start_response("304 Not Modified", [("ETag", etag), ("X-Cache", "hit")])
            return [b""]
        headers = [JSON, ("Content-Length", str(len(body))), ("ETag", etag), ("X-Cache", "hit")]
        start_response("200 OK", headers)
        return [body]
