"""The read API's routes, declared once. reads/urls.py serves every one of them through Django;
the read pool's fast path (reads/fastpath.py) answers, below Django, the cache hits of those
that read one cache entry (`entry`: its aggregate and view, see cqrs_site/core/codec.py) or one
page of a feed (`feed`: which feed a request reads, from its path's id and its query).
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cqrs_site.core.codec import LIKES, POST, USER, entry_key, prefix

from . import apis
from .models import USER_FEED, FeedModel

# What an id in a path can be for the fast path and the edge: the canonical (lower-case) form of
# an ObjectId. Anything else is Django's to answer: a 404, or the canonical id's entry.
ID_PATTERN = "[0-9a-f]{24}"


@dataclass(frozen=True)
class Route:
    pattern: str  # a Django path pattern, under /api/
    view: Callable
    name: str
    entry: tuple[str, str | None] | None = None  # (aggregate, view) of the one entry a hit reads
    # (the path's id, the query) -> (the feed, its partition); InvalidInput for a bad query
    feed: Callable[[str | None, Mapping[str, str]], tuple[FeedModel, str | None]] | None = None

    @property
    def label(self) -> str:
        """The route label of its metrics: the pattern, never the raw path."""
        return f"api/{self.pattern}"


ROUTES = (
    Route("users", apis.create_only, "users"),
    Route("posts", apis.posts, "posts", feed=lambda _id, query: (apis.feed_of(query), None)),
    Route("users/<str:user_id>", apis.user_detail, "user-detail", entry=(USER, None)),
    Route("users/<str:user_id>/posts", apis.user_posts, "user-posts", feed=lambda user_id, _q: (USER_FEED, user_id)),
    Route("posts/<str:post_id>", apis.post_detail, "post-detail", entry=(POST, None)),
    Route("posts/<str:post_id>/likes", apis.post_likes, "post-likes", entry=(POST, LIKES)),
)
# What the fast path answers: a route that reads one entry or one feed page.
FAST_ROUTES = tuple(route for route in ROUTES if route.entry is not None or route.feed is not None)
# What HAProxy's edge answers: a route that reads one entry.
ENTRY_ROUTES = tuple(route for route in ROUTES if route.entry is not None)


def fast_paths() -> re.Pattern:
    """One regular expression for the paths of FAST_ROUTES: group `r<n>` matches when the path
    is FAST_ROUTES[n]'s, and group `id<n>` holds its id, if it has one."""
    alternatives = [
        f"(?P<r{n}>" + re.sub(r"<str:\w+>", f"(?P<id{n}>{ID_PATTERN})", route.pattern) + ")"
        for n, route in enumerate(FAST_ROUTES)
    ]
    return re.compile(r"^/api/(?:" + "|".join(alternatives) + r")\Z")


def edge_routes_lua() -> str:
    """deploy/edge_routes.lua: the entry routes for HAProxy's edge (deploy/edge.lua), each as a
    Lua pattern of its path (the id captured) and its cache key after the prefix."""
    rows = []
    for route in ENTRY_ROUTES:
        pattern = "^/api/" + re.sub(r"<str:\w+>", "(" + "[0-9a-f]" * 24 + ")", route.pattern) + "$"
        aggregate, view = route.entry
        key = entry_key(aggregate, "%s", view).removeprefix(f"{prefix()}:")
        rows.append(f'  {{ pattern = "{pattern}", key = "{key}" }},  -- {route.label}')
    header = "-- The entry routes of reads/routes.py for deploy/edge.lua. Generated: python manage.py edge_routes"
    return header + "\nreturn {\n" + "\n".join(rows) + "\n}\n"
