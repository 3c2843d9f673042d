"""The read pool's hot path: a cache hit answered below Django.

A GET of a route that reads one cache entry (reads/routes.py: a user, a post, a post's likes)
whose entry is in Redis is answered here: one GET, the stored bytes, the same headers the Django
view sends (ETag, X-Cache, 304 on If-None-Match). Every other request (a miss, a tombstone, an
X-Min-Version the entry does not meet, an unreadable header, Redis down, any other path or
method) goes to Django unchanged, which answers it exactly as before. Only the read role
installs it (cqrs_site/wsgi.py).
"""

from redis.exceptions import RedisError

from cqrs_site.core.codec import entry_key, value_decode
from cqrs_site.core.http import etag_for, is_version, none_match
from cqrs_site.core.metrics import CACHE_LOOKUPS
from cqrs_site.core.redis_client import redis_client
from cqrs_site.core.telemetry import ROUTE

from .cache import PREFETCHED
from .routes import ENTRY_ROUTES, entry_paths

JSON = ("Content-Type", "application/json")
HIT_COUNTER = CACHE_LOOKUPS.labels("hit")
PATHS = entry_paths()


def hot_key(path: str) -> tuple[str, str] | None:
    """The cache key a hot path reads and its route label, or None for any other path."""
    match = PATHS.match(path)
    if match is None:
        return None
    route = ENTRY_ROUTES[int(match.lastgroup[1:])]
    aggregate, view = route.entry
    return entry_key(aggregate, match.group(match.lastgroup), view), route.label


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
            raw = redis_client().get(key)
        except RedisError:
            return None  # Django serves it from MongoDB, marked degraded
        environ[PREFETCHED] = (key, raw)  # whatever follows, Django need not read it again
        if not raw:
            return None
        version, body = value_decode(raw)
        if body is None or (minimum is not None and version < int(minimum)):
            return None
        etag = etag_for(version)
        if none_match(environ.get("HTTP_IF_NONE_MATCH"), version):
            start_response("304 Not Modified", [("ETag", etag), ("X-Cache", "hit")])
            return [b""]
        headers = [JSON, ("Content-Length", str(len(body))), ("ETag", etag), ("X-Cache", "hit")]
        start_response("200 OK", headers)
        return [body]
