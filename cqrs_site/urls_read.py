"""The read pool's URLs: the public GET API and nothing else."""

from django.urls import include, path

from . import health

urlpatterns = [
    path("api/", include("reads.urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]

# Errors Django answers itself (no route, an unhandled exception, a bad Host) in the API's shape.
handler400 = "cqrs_site.handlers.bad_request"
handler403 = "cqrs_site.handlers.permission_denied"
handler404 = "cqrs_site.handlers.not_found"
handler500 = "cqrs_site.handlers.server_error"
