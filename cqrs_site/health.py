"""Liveness and readiness for every pool instance (HAProxy checks /readyz).

Readiness fails only when the instance can serve nothing: a read instance needs Redis or
MongoDB (either alone still answers, degraded), a write instance needs MongoDB (with Kafka down,
writes still succeed and their events wait in the outbox). An instance that serves, but not as
it should, answers 200 with `"status": "degraded"`: a read instance without Redis, a write
instance whose producer cannot publish directly (its writes are deferred to the relay; the
`kafka` field says why: suspect, stalled, resetting). Probes touch only what decides
readiness, so a hung dependency cannot make the check outlast HAProxy's check timeout.
"""

import json

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_safe

from .core.errors import NotFound, Unavailable

JSON = "application/json"


def _mongo() -> bool:
    from writes.aggregates import USER_AGGREGATE

    try:
        USER_AGGREGATE.collection().database.command("ping")
        return True
    except Exception:
        return False


def _redis() -> bool:
    from cqrs_site.core.redis_client import redis_client

    try:
        return bool(redis_client().ping())
    except Exception:
        return False


def _read_ready() -> tuple[bool, bool, dict]:
    """(ready, degraded, details). Redis first: while it answers, MongoDB's state does not matter."""
    if _redis():
        return True, False, {"redis": "up"}
    mongodb = _mongo()
    return mongodb, True, {"redis": "down", "mongodb": "up" if mongodb else "down"}


def _write_ready() -> tuple[bool, bool, dict]:
    # The producer's own view (no network call): a probe must answer fast, and Kafka does not
    # decide readiness (writes succeed without it), only whether this instance is degraded.
    from writes.producer import producer_state

    mongodb, kafka = _mongo(), producer_state()
    kafka = "up" if kafka in ("direct", "idle") else kafka
    return mongodb, kafka != "up", {"mongodb": "up" if mongodb else "down", "kafka": kafka}


CHECKS = {"read": _read_ready, "write": _write_ready}


def internal(view):
    """Probes reach an instance by its address; a request through a proxy (X-Forwarded-For) is
    a client's, and gets the API's 404."""

    def guarded(request):
        if "HTTP_X_FORWARDED_FOR" in request.META:
            return HttpResponse(NotFound().as_bytes(), status=404, content_type=JSON)
        return view(request)

    guarded.__name__ = view.__name__
    return guarded


@internal
@require_safe
def healthz(request):
    return HttpResponse(b'{"status":"alive"}', content_type=JSON)


@internal
@require_safe
def readyz(request):
    ready, degraded, details = CHECKS[settings.CQRS_ROLE]()
    status = "unavailable" if not ready else "degraded" if degraded else "ready"
    body = {"status": status, "role": settings.CQRS_ROLE, **details}
    response = HttpResponse(json.dumps(body), status=200 if ready else 503, content_type=JSON)
    if not ready:
        response["Retry-After"] = str(Unavailable.retry_after_seconds)
    return response
