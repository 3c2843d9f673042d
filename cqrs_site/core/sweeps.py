"""Asking the cache inspector (reads/inspector.py) for a sweep now, from any role: a consumer
that found its committed offsets gone, the relay that found a topic gone (the broker lost its
log). Through Redis, where the inspector looks before each batch; the request keeps its reason.
"""

import logging

from redis.exceptions import RedisError

from . import codec
from .redis_client import redis_client

logger = logging.getLogger(__name__)

REQUEST_TTL_SECONDS = 3600


def sweep_request(reason: str) -> None:
    """Ask for an immediate sweep of the whole cache (at full speed)."""
    try:
        redis_client().set(codec.sweep_request_key(), reason.encode()[:500], ex=REQUEST_TTL_SECONDS)
        logger.warning("asked the cache inspector for a sweep now: %s", reason)
    except RedisError as exc:  # the inspector's regular sweep still comes by
        logger.error("could not ask the cache inspector for a sweep (%s): %s", reason, exc)


def sweep_requested() -> str | None:
    """The pending request's reason, taken (so one request makes one sweep), or None."""
    raw = redis_client().getdel(codec.sweep_request_key())
    return None if raw is None else raw.decode(errors="replace")
