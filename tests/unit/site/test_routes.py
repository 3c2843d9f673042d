"""One route table (cqrs_site/core/routes.py): every path in it is served by both pools, documented,
answered by the fast paths where it should be, and a path added without a view stops the URLconfs."""

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import Resolver404, get_resolver

from cqrs_site.core import routes
from cqrs_site.core.routes import Route

AN_ID = "0123456789abcdef01234567"


def sample(route: Route) -> str:
    return "/" + re.sub(r"<str:\w+>", AN_ID, route.label)


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda route: route.name)
def test_each_route_is_served_by_both_pools_and_documented(route):
    write = get_resolver("cqrs_site.urls_write").resolve(sample(route))
    read = get_resolver("cqrs_site.urls_read").resolve(sample(route))
    documented = get_resolver("cqrs_site.openapi").resolve(sample(route))
    assert write.route == read.route == documented.route == route.label
    view = write.func
    assert bool(view.read_view) == route.read
    methods = set(view.allow.split(", "))
    assert methods == ({"GET", "HEAD"} if route.read else set()) | set(route.write) | (
        {"OPTIONS"} if route.write else set()
    )


def test_the_fast_paths_and_the_edge_take_their_routes_from_the_table():
    from reads.routes import ENTRY_ROUTES, FAST_ROUTES, edge_routes_lua, fast_paths
    from writes.fastpath import REACTION, REACTIONS

    assert [r.name for r in FAST_ROUTES] == [r.name for r in routes.ROUTES if r.entry or r.feed]
    assert [r.name for r in ENTRY_ROUTES] == [r.name for r in routes.ROUTES if r.entry]
    for route in routes.ROUTES:
        assert (fast_paths().match(sample(route)) is not None) == bool(route.entry or route.feed), route.name
        assert (f"-- {route.label}\n" in edge_routes_lua()) == bool(route.entry), route.name
    assert {(r.reaction, r.name) for r in REACTIONS} == {("like", "post-like"), ("dislike", "post-dislike")}
    for n, route in enumerate(REACTIONS):
        match = REACTION.match(sample(route))
        assert (match.lastgroup, match[f"id{n}"]) == (f"r{n}", AN_ID)
    assert REACTION.match(f"/api/posts/{AN_ID}/likes") is None


def test_a_path_added_to_the_table_without_a_view_stops_the_urlconf():
    added = (*routes.ROUTES, Route("posts/<str:post_id>/shares", "post-shares", write=("POST",)))
    with pytest.raises(ImproperlyConfigured, match="no view for routes \\['post-shares'\\]"):
        routes.views_for(
            [r for r in added if r.write],
            {"users": None, "posts": None, "post-detail": None, "post-like": None, "post-dislike": None},
            "the write pool",
        )
    with pytest.raises(Resolver404):
        get_resolver("cqrs_site.urls_write").resolve(f"/api/posts/{AN_ID}/shares")
