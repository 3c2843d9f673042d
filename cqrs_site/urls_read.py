"""The read pool's URLs: the public GET API and nothing else."""

from django.urls import include, path

from . import health

urlpatterns = [
    path("api/", include("reads.urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
