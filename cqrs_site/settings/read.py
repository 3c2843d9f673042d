"""Read role: GET/HEAD of the public API. No admin, no sessions, no CSRF, no DRF on the hot path."""

from .base import *  # noqa: F403
from .base import flag

CQRS_ROLE = "read"
ROOT_URLCONF = "cqrs_site.urls_read"
# Only the route label of the request metrics (hits are answered before Django).
MIDDLEWARE = ["cqrs_site.core.telemetry.route_label"]
# HAProxy logs every request with its id; a line per cache hit here would cost throughput.
CQRS_ACCESS_LOG = flag("CQRS_ACCESS_LOG", False)
