"""The read API: plain Django views, no DRF. A cache hit is one Redis GET and the stored bytes."""

from collections.abc import Mapping
from functools import wraps
from urllib.parse import urlencode

from django.http import HttpResponse

from cqrs_site.core.errors import ApiError, InvalidInput, MethodNotAllowed
from cqrs_site.core.http import etag_for, is_version, none_match
from writes.documents import object_id

from . import feeds, selectors
from .cache import PREFETCHED
from .models import LATEST, TOP, USER_FEED, FeedModel

JSON = "application/json"
# Every read may be stored by a browser or a proxy but must be revalidated before each use (a
# cheap 304 against the ETag, often answered by HAProxy itself): a max-age, however short,
# would show a client its own record from before its write, which X-Min-Version exists to stop.
CACHE_CONTROL = "no-cache"
MAX_PAGE = 100
DEFAULT_PAGE = 20


READ_METHODS = "GET, HEAD"


def error_response(exc: ApiError, *, allow: str = READ_METHODS) -> HttpResponse:
    response = HttpResponse(exc.as_bytes(), status=exc.status_code, content_type=JSON, headers=exc.headers())
    if isinstance(exc, MethodNotAllowed):
        response["Allow"] = allow  # what a 405 must name (RFC 9110)
    return response


def read_api(view):
    """GET/HEAD only; our errors become the one JSON error shape."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed("The read API answers GET and HEAD only.")
            return view(request, *args, **kwargs)
        except ApiError as exc:
            return error_response(exc)

    return wrapper


def min_version(request) -> int:
    """X-Min-Version: the client wants at least this version (read-your-writes)."""
    raw = request.headers.get("X-Min-Version")
    if raw is None:
        return 0
    if not is_version(raw):
        raise InvalidInput("X-Min-Version must be a non-negative integer, such as a write's `version`.")
    return int(raw)


def found_response(request, found: selectors.Found) -> HttpResponse:
    etag = etag_for(found.version)
    if none_match(request.headers.get("If-None-Match"), found.version):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(found.body, content_type=JSON)
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    response["X-Cache"] = found.source
    return response


def read_args(request) -> dict:
    return {"min_version": min_version(request), "prefetched": request.environ.get(PREFETCHED)}


@read_api
def user_detail(request, user_id: str):
    return found_response(request, selectors.user_get(user_id=user_id, **read_args(request)))


@read_api
def post_detail(request, post_id: str):
    return found_response(request, selectors.post_get(post_id=post_id, **read_args(request)))


@read_api
def post_likes(request, post_id: str):
    return found_response(request, selectors.post_likes_get(post_id=post_id, **read_args(request)))


# GET /api/posts?order=…: the feeds of all posts, by their order's name.
ORDERS = {"latest": LATEST, "top": TOP}
DEFAULT_ORDER = "latest"


def page_args(query: Mapping[str, str]) -> tuple[int, str | None]:
    """`limit` (1..MAX_PAGE, default DEFAULT_PAGE) and `cursor` of a feed request."""
    raw_limit = query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}.", fields={"limit": ["out of range"]})
    return int(raw_limit), query.get("cursor") or None


def feed_of(query: Mapping[str, str]) -> FeedModel:
    """The feed GET /api/posts asks for: `order` latest (the default) or top."""
    order = query.get("order", DEFAULT_ORDER)
    if order not in ORDERS:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}.", fields={"order": ["unknown order"]})
    return ORDERS[order]


def next_link(path: str, query: Mapping[str, str], cursor: str) -> str:
    """The Link header of a page that has a next one: the same request, the next cursor."""
    return f'<{path}?{urlencode({**query, "cursor": cursor})}>; rel="next"'


def wants_fresh(cache_control: str | None) -> bool:
    """`Cache-Control: no-cache` on a feed request: read it from MongoDB (read-your-writes)."""
    return cache_control is not None and "no-cache" in cache_control.lower()


def page_response(request, page: feeds.Page) -> HttpResponse:
    response = HttpResponse(page.body, content_type=JSON)
    response["Cache-Control"] = CACHE_CONTROL
    response["X-Cache"] = page.source
    if page.next_cursor is not None:
        response["Link"] = next_link(request.path, request.GET.dict(), page.next_cursor)
    return response


@read_api
def user_posts(request, user_id: str):
    limit, cursor = page_args(request.GET)
    selectors.user_get(user_id=user_id)  # 404 for an unknown user
    fresh = wants_fresh(request.headers.get("Cache-Control"))
    partition = str(object_id(user_id))  # the canonical id: the feed the consumer keeps
    page = feeds.feed_page(USER_FEED, partition=partition, limit=limit, cursor=cursor, fresh=fresh)
    return page_response(request, page)


@read_api
def posts(request):
    feed = feed_of(request.GET)
    limit, cursor = page_args(request.GET)
    fresh = wants_fresh(request.headers.get("Cache-Control"))
    return page_response(request, feeds.feed_page(feed, partition=None, limit=limit, cursor=cursor, fresh=fresh))


def create_only(request):
    """GET of /api/users, which only takes POST (in the write pool): 405, not 404."""
    message = f"{request.method} is not allowed here: this path only creates (POST); there is no list of users."
    return error_response(MethodNotAllowed(message), allow="POST")


def react_only(request, post_id: str):
    """GET of a post's /like or /dislike, which only take POST (in the write pool): 405, not 404.
    The Allow is the write pool's for the same path (cqrs_site/urls_write.py)."""
    message = f"{request.method} is not allowed here: this path only counts a reaction (POST); read it at /likes."
    return error_response(MethodNotAllowed(message), allow="POST, OPTIONS")
