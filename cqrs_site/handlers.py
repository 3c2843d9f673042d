"""Django's error views for both pools: the API's one error shape instead of HTML pages.

Paths under /admin/ keep Django's own pages: a person reads those in a browser.
"""

from django.http import HttpResponse
from django.views import defaults

from .core.errors import ApiError, BadRequest, Forbidden, NotFound, ServerError

JSON = "application/json"


def _json(error: ApiError) -> HttpResponse:
    return HttpResponse(error.as_bytes(), status=error.status_code, content_type=JSON, headers=error.headers())


def _is_admin(request) -> bool:
    return request.path.startswith("/admin/")


def not_found(request, exception):
    if _is_admin(request):
        return defaults.page_not_found(request, exception)
    return _json(NotFound("No such resource: see /api/docs/ for the API's paths."))


def server_error(request):
    if _is_admin(request):
        return defaults.server_error(request)
    return _json(ServerError())


def bad_request(request, exception):
    if _is_admin(request):
        return defaults.bad_request(request, exception)
    return _json(BadRequest())


def permission_denied(request, exception):
    if _is_admin(request):
        return defaults.permission_denied(request, exception)
    return _json(Forbidden())


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: the admin's forms keep Django's page; elsewhere (a cookie-less API
    client posting where a browser form was expected) the API's shape."""
    if _is_admin(request):
        from django.views.csrf import csrf_failure as django_csrf_failure

        return django_csrf_failure(request, reason)
    return _json(Forbidden(f"CSRF verification failed: {reason or 'no valid CSRF token'}."))
