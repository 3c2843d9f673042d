"""The write pool's URLs: the write API and the admin.

GET and HEAD on the API's paths are answered by the read views, so the write pool (and the
test client, which uses these URLs) serves the whole API; in production HAProxy sends reads to
the read pool and never here.
"""

from django.contrib import admin
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cqrs_site import health
from cqrs_site.core import routes
from cqrs_site.core.errors import MethodNotAllowed
from reads import apis as reads
from reads import routes as read_routes
from writes import apis as writes


def by_method(read_view=None, write_view=None):
    """One URL, two roles: GET/HEAD go to the read view, every other method to the write view.
    Every answer's Allow header names the methods of both (DRF's would name only its own)."""
    methods = ["GET", "HEAD"] if read_view else []
    if write_view is not None:
        methods += [name.upper() for name in ("post", "put", "patch", "delete") if hasattr(write_view.view_class, name)]
        methods.append("OPTIONS")
    allow = ", ".join(methods)

    @csrf_exempt
    def view(request, *args, **kwargs):
        handler = read_view if request.method in ("GET", "HEAD") else write_view
        if handler is None:
            message = f"{request.method} is not allowed on this path; it answers {allow}."
            return reads.error_response(MethodNotAllowed(message), allow=allow)
        response = handler(request, *args, **kwargs)
        response["Allow"] = allow
        return response

    view.read_view, view.write_view = read_view, write_view  # what tests/unit/site/test_openapi.py checks
    view.allow = allow  # what writes/fastpath.py answers in Allow
    return view


# The write view of each route of the table (cqrs_site/core/routes.py) that takes writes.
WRITE_VIEWS = {
    "users": writes.UserCreateApi.as_view(),
    "posts": writes.PostCreateApi.as_view(),
    "post-detail": writes.PostDetailApi.as_view(),
    "post-like": writes.PostReactApi.as_view(reaction="like"),
    "post-dislike": writes.PostReactApi.as_view(reaction="dislike"),
}
READ_VIEWS = {route.name: route.view for route in read_routes.ROUTES}
# Every route, its read view for GET/HEAD (a write-only path answers 405) and its write view.
API = [
    (route, by_method(READ_VIEWS[route.name] if route.read else None, view))
    for route, view in routes.views_for([r for r in routes.ROUTES if r.write], WRITE_VIEWS, "the write pool")
] + [(route, by_method(READ_VIEWS[route.name])) for route in routes.ROUTES if not route.write]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    # The API's description; cqrs_site/openapi.py explains why it has a URLconf of its own.
    path("api/schema/", SpectacularAPIView.as_view(urlconf="cqrs_site.openapi"), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    *(path(f"api/{route.pattern}", view) for route, view in API),
]

# Errors Django answers itself (no route, an unhandled exception, a bad Host) in the API's shape.
handler400 = "cqrs_site.handlers.bad_request"
handler403 = "cqrs_site.handlers.permission_denied"
handler404 = "cqrs_site.handlers.not_found"
handler500 = "cqrs_site.handlers.server_error"
