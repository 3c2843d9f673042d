"""Liveness and readiness for every pool instance (HAProxy checks /readyz).

Readiness fails only when the instance can serve nothing: a read instance needs Redis or
MongoDB (either alone still answers, degraded), a write instance needs MongoDB (with Kafka down,
writes still succeed and their events wait in the outbox). Probes touch only what decides
readiness, so a hung dependency cannot make the check outlast HAProxy's check timeout.
"""

import json

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_safe

JSON = "application/json"


def _mongo() -> bool:
    from writes.documents import User

    try:
        User._get_collection().database.command("ping")
        return True
    except Exception:
        return False


def _redis() -> bool:
    from reads.cache import cache_client

    try:
        return bool(cache_client().ping())
    except Exception:
        return False


def _kafka() -> bool:
    # The publisher's own view (no network call): false while writes have stopped waiting for
    # the broker after a timeout. A probe must answer fast, and Kafka does not decide readiness.
    from writes.outbox import broker_trusted

    return broker_trusted()


def _read_ready() -> dict:
    # Redis first: while it answers, MongoDB's state does not matter for readiness.
    if _redis():
        return {"ready": True, "redis": "up"}
    mongodb = _mongo()
    return {"ready": mongodb, "redis": "down", "mongodb": "up" if mongodb else "down"}


def _write_ready() -> dict:
    mongodb = _mongo()
    return {"ready": mongodb, "mongodb": "up" if mongodb else "down", "kafka": "up" if _kafka() else "suspect"}


CHECKS = {"read": _read_ready, "write": _write_ready}


@require_safe
def healthz(request):
    return HttpResponse(b'{"status":"alive"}', content_type=JSON)


@require_safe
def readyz(request):
    results = CHECKS[settings.CQRS_ROLE]()
    ready = results.pop("ready")
    body = {"status": "ready" if ready else "unavailable", "role": settings.CQRS_ROLE, **results}
    return HttpResponse(json.dumps(body), status=200 if ready else 503, content_type=JSON)
