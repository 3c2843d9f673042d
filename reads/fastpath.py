"""The read pool's hot path: cache hits answered below Django.

A GET of a route that reads one cache entry (reads/routes.py: a user, a post, a post's likes)
whose entry is in Redis is answered here: one GET, the stored bytes, the same headers the Django
view sends (ETag, X-Cache, 304 on If-None-Match). So is a page of a feed the cache can answer
alone (one script call, reads/feeds.py). Every other request (a miss, a tombstone, an
X-Min-Version the entry does not meet, an unreadable header or query, Redis down, any other
path or method) goes to Django unchanged, which answers it exactly as before. Only the read role
installs it (cqrs_site/wsgi.py).
"""

from urllib.parse import parse_qsl

from redis.exceptions import RedisError

from cqrs_site.core.codec import entry_key, value_decode
from cqrs_site.core.errors import ApiError
from cqrs_site.core.http import etag_for, is_version, none_match
from cqrs_site.core.metrics import CACHE_LOOKUPS
from cqrs_site.core.redis_client import redis_client
from cqrs_site.core.telemetry import ROUTE

from .apis import CACHE_CONTROL, next_link, page_args, wants_fresh
from .cache import PREFETCHED
from .feeds import cursor_decode, page_from_cache
from .routes import FAST_ROUTES, fast_paths

JSON = ("Content-Type", "application/json")
REVALIDATE = ("Cache-Control", CACHE_CONTROL)
HIT_COUNTER = CACHE_LOOKUPS.labels("hit")
PATHS = fast_paths()


def fast_route(path: str):
    """(the route, the path's id or None) of a path the fast path may answer, or None."""
    match = PATHS.match(path)
    if match is None:
        return None
    index = match.lastgroup[1:]
    return FAST_ROUTES[int(index)], match.groupdict().get(f"id{index}")


class CacheHits:
    """WSGI middleware around Django's application (see the module's docstring)."""

    def __init__(self, application) -> None:
        self.application = application

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET":
            found = fast_route(environ.get("PATH_INFO", ""))
            if found is not None:
                route, doc_id = found
                if route.entry is not None:
                    aggregate, view = route.entry
                    answer = self._hit(entry_key(aggregate, doc_id, view), environ, start_response)
                else:
                    answer = self._page(route, doc_id, environ, start_response)
                if answer is not None:
                    environ[ROUTE] = route.label
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
            start_response("304 Not Modified", [("ETag", etag), REVALIDATE, ("X-Cache", "hit")])
            return [b""]
        headers = [JSON, ("Content-Length", str(len(body))), ("ETag", etag), REVALIDATE, ("X-Cache", "hit")]
        start_response("200 OK", headers)
        return [body]

    def _page(self, route, doc_id: str | None, environ, start_response):
        if wants_fresh(environ.get("HTTP_CACHE_CONTROL")):
            return None
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        try:
            feed, partition = route.feed(doc_id, query)
            limit, cursor = page_args(query)
            page = page_from_cache(feed, partition, limit, cursor_decode(cursor) if cursor else None)
        except (ApiError, RedisError):
            return None  # Django explains the error, or reads MongoDB
        if page is None:
            return None
        headers = [JSON, ("Content-Length", str(len(page.body))), REVALIDATE, ("X-Cache", "hit")]
        if page.next_cursor is not None:
            headers.append(("Link", next_link(environ.get("PATH_INFO", ""), query, page.next_cursor)))
        start_response("200 OK", headers)
        return [page.body]
