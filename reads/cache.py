"""The read cache's only writer: an atomic, version-fenced set.

A stored value is `b"<version>:<body>"`; an empty body is a tombstone. The script replaces an
entry only with a strictly newer version (and never writes one below the key's high-water mark),
so a slow read-through fill can never overwrite the
consumer's newer value, a redelivered or reordered event is a no-op, and a tombstone refuses a
late fill of the document it buried. Fill and consumer both write through `cache_put`.
"""

import random
import time
from collections.abc import Iterable

from django.conf import settings

from cqrs_site.core.codec import fill_lock_key, high_water_key, value_decode, value_encode
from cqrs_site.core.metrics import CACHE_WRITES
from cqrs_site.core.redis_client import redis_client

from .projections import Entry

# KEYS[1] the entry, KEYS[2] its high-water mark: the highest version the key ever held, kept
# (for the tombstone TTL) after the entry itself expires or is evicted, so a fill that read
# MongoDB before a newer version came and went cannot put the older one back into an empty key.
# ARGV: version, the encoded value, TTL in ms, high-water TTL in ms, and "1" to let an entry of
# the same version be rewritten (an operator's repair of corrupt bytes; never the normal path).
FENCE_SCRIPT = """
local version = tonumber(ARGV[1])
local high = tonumber(redis.call('GET', KEYS[2]) or '0')
if version < high then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local stored = tonumber(string.match(current, '^(%d+):'))
  if stored and (stored > version or (stored == version and ARGV[5] ~= '1')) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if version > 0 then redis.call('SET', KEYS[2], version, 'PX', ARGV[4]) end
return 1
"""

# The WSGI environ key under which the read pool's fast path (reads/fastpath.py) leaves what it
# read, `(key, raw value or None)`, when it hands the request to Django: the view then does not
# read the same key again.
PREFETCHED = "cqrs.cache_entry"

# Version-0 tombstones (ids MongoDB does not know) only shield MongoDB from repeated misses.
ABSENT_TTL_MS = 30_000

_fence = None


def _fence_script():
    global _fence
    if _fence is None:
        _fence = redis_client().register_script(FENCE_SCRIPT)
    return _fence


def decode(key: str, raw: bytes | None) -> Entry | None:
    return None if raw is None else Entry(key, *value_decode(raw))


def ttl_ms(entry: Entry) -> int:
    if entry.body is None:
        return ABSENT_TTL_MS if entry.version == 0 else settings.CQRS_TOMBSTONE_TTL_SECONDS * 1000
    jitter = settings.CQRS_CACHE_TTL_JITTER
    return int(settings.CQRS_CACHE_TTL_SECONDS * 1000 * random.uniform(1 - jitter, 1 + jitter))


def cache_put(entries: Iterable[Entry], *, writer: str, rewrite_same_version: bool = False) -> list[int]:
    """Store the entries that are newer than what the cache holds, in one round trip; returns 1
    per entry stored, 0 per entry fenced off. `writer` (fill, consumer, repair, warm) labels the
    cqrs_cache_writes_total metric; `rewrite_same_version` is for repairs only."""
    pipe = redis_client().pipeline(transaction=False)
    script = _fence_script()
    same = "1" if rewrite_same_version else "0"
    high_ttl = settings.CQRS_TOMBSTONE_TTL_SECONDS * 1000
    for entry in entries:
        keys = [entry.key, high_water_key(entry.key)]
        script(
            keys=keys,
            args=[entry.version, value_encode(entry.version, entry.body), ttl_ms(entry), high_ttl, same],
            client=pipe,
        )
    results = pipe.execute()
    stored = sum(results)
    if stored:
        CACHE_WRITES.labels(writer, "stored").inc(stored)
    if stored < len(results):
        CACHE_WRITES.labels(writer, "refused").inc(len(results) - stored)
    return results


def cache_get(key: str) -> Entry | None:
    return decode(key, redis_client().get(key))


def cache_get_many(keys: list[str]) -> list[Entry | None]:
    if not keys:
        return []
    return [decode(key, raw) for key, raw in zip(keys, redis_client().mget(keys), strict=True)]


def fill_lock(key: str, *, ttl_ms: int) -> bool:
    """Claim the right to fill `key` (single-flight): True for exactly one caller at a time."""
    return bool(redis_client().set(fill_lock_key(key), b"1", nx=True, px=ttl_ms))


def fill_unlock(key: str) -> None:
    redis_client().delete(fill_lock_key(key))


def cache_wait(key: str, *, min_version: int, timeout: float, interval: float = 0.005) -> Entry | None:
    """Wait for another request's fill of `key` to land; None when it did not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(interval)
        entry = cache_get(key)
        if entry is not None and entry.version >= min_version:
            return entry
    return None
