"""The read pool's routes: the API's route table (cqrs_site/core/routes.py), each with its read
view. reads/urls.py serves every one of them through Django; the read pool's fast path
(reads/fastpath.py) answers, below Django, the cache hits of those that read one cache entry
(`entry`: its aggregate and view, see cqrs_site/core/codec.py) or one page of a feed (`feed`:
which feed a request reads, from its path's id and its query).
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cqrs_site.core import routes
from cqrs_site.core.codec import entry_key, prefix

from . import apis
from .models import USER_FEED, FeedModel


@dataclass(frozen=True)
class Route:
    pattern: str  # a Django path pattern, under /api/
    view: Callable
    name: str
    label: str  # the route label of its metrics
    entry: tuple[str, str | None] | None = None  # (aggregate, view) of the one entry a hit reads
    # (the path's id, the query) -> (the feed, its partition); InvalidInput for a bad query
    feed: Callable[[str | None, Mapping[str, str]], tuple[FeedModel, str | None]] | None = None


# The view of each route (GET and HEAD; a write-only path answers 405 with its Allow).
VIEWS = {
    "users": apis.create_only,
    "posts": apis.posts,
    "user-detail": apis.user_detail,
    "user-posts": apis.user_posts,
    "post-detail": apis.post_detail,
    "post-likes": apis.post_likes,
    "post-like": apis.react_only,
    "post-dislike": apis.react_only,
}
# Which feed a feed route's page reads.
FEEDS = {
    "posts": lambda _id, query: (apis.feed_of(query), None),
    "user-posts": lambda user_id, _query: (USER_FEED, user_id),
}

ROUTES = tuple(
    Route(
        route.pattern,
        view,
        route.name,
        route.label,
        entry=route.entry,
        feed=FEEDS[route.name] if route.feed else None,
    )
    for route, view in routes.views_for(routes.ROUTES, VIEWS, "the read pool")
)
# What the fast path answers: a route that reads one entry or one feed page.
FAST_ROUTES = tuple(route for route in ROUTES if route.entry is not None or route.feed is not None)
# What HAProxy's edge answers: a route that reads one entry.
ENTRY_ROUTES = tuple(route for route in ROUTES if route.entry is not None)


def fast_paths() -> re.Pattern:
    """One regular expression for the paths of FAST_ROUTES: group `r<n>` matches when the path
    is FAST_ROUTES[n]'s, and group `id<n>` holds its id, if it has one."""
    alternatives = [
        f"(?P<r{n}>" + re.sub(r"<str:\w+>", f"(?P<id{n}>{routes.ID_PATTERN})", route.pattern) + ")"
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
    header = (
        "-- The entry routes of cqrs_site/core/routes.py for deploy/edge.lua. Generated: python manage.py edge_routes"
    )
    return header + "\nreturn {\n" + "\n".join(rows) + "\n}\n"
