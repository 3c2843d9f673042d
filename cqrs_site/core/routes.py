"""The API's routes, declared once. Everything that knows a path is derived from this table: the
read pool's URLs and fast path (reads/routes.py, reads/fastpath.py), HAProxy's edge
(deploy/edge_routes.lua, generated), the write pool's URLs (cqrs_site/urls_write.py), the write
fast path (writes/fastpath.py) and the OpenAPI description (cqrs_site/openapi.py). A route each
of them must serve and does not stops its URLconf from loading (tests/unit/site/test_routes.py).
"""

import re
from dataclasses import dataclass

from .codec import LIKES, POST, USER

# What an id in a path can be for the fast paths and the edge: the canonical (lower-case) form of
# an ObjectId. Anything else is Django's to answer: a 404, or the canonical id's entry.
ID_PATTERN = "[0-9a-f]{24}"


@dataclass(frozen=True)
class Route:
    pattern: str  # a Django path pattern, under /api/
    name: str
    read: bool = False  # GET and HEAD are answered (by the read pool)
    write: tuple[str, ...] = ()  # the write methods (answered by the write pool)
    entry: tuple[str, str | None] | None = None  # (aggregate, view) of the one cache entry a hit reads
    feed: bool = False  # a hit reads one page of a feed
    reaction: str | None = None  # a like or a dislike: what the write fast path counts

    @property
    def label(self) -> str:
        """The route label of its metrics: the pattern, never the raw path."""
        return f"api/{self.pattern}"

    def regex(self, id_pattern: str = ID_PATTERN, name: str = "id") -> str:
        """The path as a regular expression, its id (if any) in group `name`."""
        return "/api/" + re.sub(r"<str:\w+>", f"(?P<{name}>{id_pattern})", self.pattern)


ROUTES = (
    Route("users", "users", write=("POST",)),
    Route("posts", "posts", read=True, feed=True, write=("POST",)),
    Route("users/<str:user_id>", "user-detail", read=True, entry=(USER, None)),
    Route("users/<str:user_id>/posts", "user-posts", read=True, feed=True),
    Route("posts/<str:post_id>", "post-detail", read=True, entry=(POST, None), write=("PATCH", "DELETE")),
    Route("posts/<str:post_id>/likes", "post-likes", read=True, entry=(POST, LIKES)),
    Route("posts/<str:post_id>/like", "post-like", write=("POST",), reaction="like"),
    Route("posts/<str:post_id>/dislike", "post-dislike", write=("POST",), reaction="dislike"),
)


def views_for(routes, views: dict, what: str) -> list[tuple["Route", object]]:
    """Each of `routes` with its view from `views` (by route name); ImproperlyConfigured for a
    route that has none, or a view for no route: a path in the table is served, or nothing loads."""
    from django.core.exceptions import ImproperlyConfigured

    names = [route.name for route in routes]
    missing, unknown = sorted(set(names) - set(views)), sorted(set(views) - set(names))
    if missing or unknown:
        raise ImproperlyConfigured(f"{what}: no view for routes {missing}; views for no route {unknown}")
    return [(route, views[route.name]) for route in routes]
