"""Read selectors: Redis first, MongoDB on a miss, then a version-fenced fill.

A hit is one GET and the stored bytes. A miss reads MongoDB once per key however many requests
want it (single-flight: one request fills, the others wait briefly for its entry). If Redis is
down, reads are served from MongoDB (degraded, and the answer says so).
"""

import logging
import random
import time
from dataclasses import dataclass

from django.conf import settings
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError

from cqrs_site.core.codec import post_key, post_likes_key, user_key
from cqrs_site.core.errors import NotFound, Unavailable
from cqrs_site.core.metrics import CACHE_LOOKUPS
from writes.aggregates import AGGREGATES
from writes.documents import object_id
from writes.events import POST, USER

from . import cache
from .models import Entry, Member, absent_entries, ops_for

logger = logging.getLogger(__name__)

HIT, MISS, DEGRADED = "hit", "miss", "degraded"
# How long a request whose key is being filled by another waits before reading MongoDB itself.
FILL_WAIT_SECONDS = 0.25
FILL_LOCK_MS = 2_000


@dataclass(frozen=True, slots=True)
class Found:
    body: bytes
    version: int
    source: str


def _load(aggregate: str, oid) -> list[Entry | Member]:
    """The aggregate's cache writes as MongoDB has it now: its entries and its places in the
    feeds (version-0 tombstones if MongoDB does not know it)."""
    spec = AGGREGATES[aggregate]
    try:
        raw = spec.collection().find_one({"_id": oid}, dict.fromkeys(spec.fields, 1))
    except ConnectionFailure as exc:
        logger.error("MongoDB unavailable on a cache miss: %s", exc)
        raise Unavailable("MongoDB is unavailable and this record is not cached; retry later.") from None
    if raw is None:
        return absent_entries(aggregate, str(oid))
    return ops_for(aggregate, spec.state(raw))


def _pick(ops: list[Entry | Member], key: str) -> Entry:
    return next(op for op in ops if isinstance(op, Entry) and op.key == key)


def _found(entry: Entry, source: str) -> Found:
    if entry.body is None:
        raise NotFound()
    return Found(entry.body, entry.version, source)


def _fill(aggregate: str, oid, key: str, min_version: int) -> Entry:
    """Read MongoDB and fill, once per key at a time; the other requests for the key wait for
    that fill. One that waits in vain reads and fills itself: what a reader was shown from
    MongoDB is in the cache (or something newer) before it answers, so no later hit is older."""
    owner = cache.fill_lock(key, ttl_ms=FILL_LOCK_MS)
    if not owner:
        entry = cache.cache_wait(key, min_version=min_version, timeout=FILL_WAIT_SECONDS)
        if entry is not None:
            return entry
    try:
        entries = _load(aggregate, oid)
        if settings.CQRS_FAULT_FILL_DELAY_SECONDS:
            time.sleep(random.uniform(0, settings.CQRS_FAULT_FILL_DELAY_SECONDS))
        cache.cache_apply(entries, writer="fill")
    finally:
        if owner:
            cache.fill_unlock(key)
    return _pick(entries, key)


def _read(aggregate: str, doc_id: str, key_of, min_version: int, prefetched: tuple | None) -> Found:
    oid = object_id(doc_id)
    if oid is None:
        raise NotFound()
    key = key_of(str(oid))  # the canonical id (lower-case hex): the key the consumer writes
    try:
        if prefetched is not None and prefetched[0] == key:
            entry = cache.decode(key, prefetched[1])  # the fast path's read of this request
        else:
            entry = cache.cache_get(key)
        if entry is not None and entry.version >= min_version:
            CACHE_LOOKUPS.labels(HIT).inc()
            return _found(entry, HIT)
        CACHE_LOOKUPS.labels(MISS).inc()
        return _found(_fill(aggregate, oid, key, min_version), MISS)
    except RedisError as exc:
        logger.warning("Redis unavailable, reading %s from MongoDB: %s", key, exc)
        CACHE_LOOKUPS.labels(DEGRADED).inc()
        return _found(_pick(_load(aggregate, oid), key), DEGRADED)


# `prefetched`: what this request's fast path already read from Redis (reads/cache.py PREFETCHED).


def user_get(*, user_id: str, min_version: int = 0, prefetched: tuple | None = None) -> Found:
    return _read(USER, user_id, user_key, min_version, prefetched)


def post_get(*, post_id: str, min_version: int = 0, prefetched: tuple | None = None) -> Found:
    return _read(POST, post_id, post_key, min_version, prefetched)


def post_likes_get(*, post_id: str, min_version: int = 0, prefetched: tuple | None = None) -> Found:
    return _read(POST, post_id, post_likes_key, min_version, prefetched)
