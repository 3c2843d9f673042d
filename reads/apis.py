"""The read API: plain Django views, no DRF. A cache hit is one Redis GET and the stored bytes."""

from functools import wraps

from django.http import HttpResponse

from cqrs_site.core.errors import ApiError, InvalidInput, MethodNotAllowed
from cqrs_site.core.http import etag_for, is_version, none_match

from . import selectors
from .cache import PREFETCHED

JSON = "application/json"
MAX_PAGE = 100
DEFAULT_PAGE = 20


READ_METHODS = "GET, HEAD"


def error_response(exc: ApiError, *, allow: str = READ_METHODS) -> HttpResponse:
    response = HttpResponse(exc.as_bytes(), status=exc.status_code, content_type=JSON)
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


@read_api
def user_posts(request, user_id: str):
    raw_limit = request.GET.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}.", fields={"limit": ["out of range"]})
    body = selectors.user_posts_page(user_id=user_id, limit=int(raw_limit), cursor=request.GET.get("cursor") or None)
    return HttpResponse(body, content_type=JSON)


def create_only(request):
    """GET of /api/users or /api/posts, which only take POST (in the write pool): 405, not 404."""
    message = f"{request.method} is not allowed here: this path only creates (POST); lists are per user."
    return error_response(MethodNotAllowed(message), allow="POST")
