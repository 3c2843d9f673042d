"""The read API's routes, declared once. reads/urls.py serves every one of them through Django;
the read pool's fast path (reads/fastpath.py) answers, below Django, the cache hits of those
that read one cache entry (`entry`: its aggregate and view, see cqrs_site/core/codec.py).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from cqrs_site.core.codec import LIKES, POST, USER

from . import apis

# What an id in a path can be for the fast path: anything else is Django's to answer (a 404).
ID_PATTERN = "[0-9a-fA-F]{24}"


@dataclass(frozen=True)
class Route:
    pattern: str  # a Django path pattern, under /api/
    view: Callable
    name: str
    entry: tuple[str, str | None] | None = None  # (aggregate, view) of the one entry a hit reads

    @property
    def label(self) -> str:
        """The route label of its metrics: the pattern, never the raw path."""
        return f"api/{self.pattern}"


ROUTES = (
    Route("users", apis.create_only, "users"),
    Route("posts", apis.create_only, "posts"),
    Route("users/<str:user_id>", apis.user_detail, "user-detail", entry=(USER, None)),
    Route("users/<str:user_id>/posts", apis.user_posts, "user-posts"),
    Route("posts/<str:post_id>", apis.post_detail, "post-detail", entry=(POST, None)),
    Route("posts/<str:post_id>/likes", apis.post_likes, "post-likes", entry=(POST, LIKES)),
)
ENTRY_ROUTES = tuple(route for route in ROUTES if route.entry is not None)


def entry_paths() -> re.Pattern:
    """One regular expression for the paths of ENTRY_ROUTES: group `r<n>` holds the id when the
    path is ENTRY_ROUTES[n]'s."""
    alternatives = [
        re.sub(r"<str:\w+>", f"(?P<r{index}>{ID_PATTERN})", route.pattern) for index, route in enumerate(ENTRY_ROUTES)
    ]
    return re.compile(r"^/api/(?:" + "|".join(alternatives) + r")\Z")
