"""Read role: GET/HEAD of the public API. No admin, no sessions, no CSRF, no DRF on the hot path."""

from .base import *  # noqa: F403

CQRS_ROLE = "read"
ROOT_URLCONF = "cqrs_site.urls_read"
MIDDLEWARE: list[str] = []
