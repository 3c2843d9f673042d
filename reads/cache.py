"""The read cache's only writer: an atomic, version-fenced script, one call per batch of writes.

Entries: a stored value is `b"<version>:<body>"` (cqrs_site/core/codec.py); an empty body is a
tombstone. An entry is replaced only by a strictly newer version, and never with a version below
its document's high-water mark (the highest version any entry or feed place of the document
held, one key per document, kept for a day after the entries expire or are evicted), so a slow
read-through fill can never overwrite the consumer's newer value, a redelivered or reordered
event is a no-op, and a tombstone refuses a late fill of the document it buried.

Feed members (reads/models.py): added to a feed only while it is cached (a feed that is not is
filled from MongoDB by its next read), and only with a version at least the post's high-water
mark, which the member raises too: a fill that read MongoDB before a newer like cannot put the
older score back. A feed holds at most FEED_MAX_MEMBERS posts; adding past that drops the
lowest and moves the feed's cutoff (below it, pages come from MongoDB).

Fills, the consumer, warm_cache and repairs all write through `cache_apply`.
"""

import functools
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
from django.conf import settings

from cqrs_site.core.codec import (
    ENTRY_VALUE_LUA,
    entry_key,
    fill_lock_key,
    high_water_key,
    value_decode,
    value_text,
    view_key,
)
from cqrs_site.core.metrics import CACHE_WRITES
from cqrs_site.core.redis_client import clustered, get_many, node_of, redis_client

from .models import Entry, Member, entry_models, feeds_changed_by, json_bytes, ops_for

# A feed's state lives in the feed itself, as its one member scored -inf: `!filling` or `!ready`,
# with `:<score>:<member>` when the feed is truncated (it holds every live post above that
# cutoff, not below). So a feed and its state expire, or are evicted, together.
FEED_LUA = """
local function sentinel_of(feed)
  return redis.call('ZRANGEBYSCORE', feed, '-inf', '-inf', 'LIMIT', 0, 1)[1]
end
local function parse_sentinel(sentinel)
  local state, score, member = string.match(sentinel, '^!(%a+):([^:]+):(.*)$')
  if state then return state, tonumber(score), member end
  return string.sub(sentinel, 2), nil, nil
end
-- (score, member) at or below (cut_score, cut_member), in the feed's order
local function at_or_below(score, member, cut_score, cut_member)
  return score < cut_score or (score == cut_score and member <= cut_member)
end
"""

# Each write's fields in cache_pack's array: the apply script's stride.
FIELDS_PER_WRITE = 6

# On a Redis Cluster a call is made per node and routed by its first key (KEYS[1]); the flag lets
# it write the node's other slots too (Redis 7.0), which hash tags alone cannot make one.
APPLY_SCRIPT = (
    "#!lua flags=allow-cross-slot-keys\n"
    + ENTRY_VALUE_LUA
    + FEED_LUA
    + """
-- ARGV[1]: the fences' TTL (ms). ARGV[2]: the writes, one MessagePack array of their fields
-- in a row (Redis's cmsgpack decodes it in C), each write's in order:
--   'E', key, fence, version, value, ttl_ms
--   'M', feed, fence, version, member, score (text); fence '': the feed's own order only (a
--        cluster's, whose feeds live away from their posts' fences: see cache_pack)
-- ARGV[3]: 1 if an entry may be rewritten at an equal version (a repair). ARGV[4]: a feed's
-- most members.
local writes = cmsgpack.unpack(ARGV[2])
local results, fence_ttl, rewrite, most = {}, ARGV[1], ARGV[3] == '1', tonumber(ARGV[4])
-- What this call has read or written already: each fence's value (a post's entries and its
-- places share one), and each feed's state and size (nothing else changes them meanwhile).
local fences, feeds = {}, {}
local function feed_of(key)
  local feed = feeds[key]
  if feed == nil then
    local sentinel = sentinel_of(key)
    feed = false
    if sentinel then
      local state, cut_score, cut_member = parse_sentinel(sentinel)
      feed = {sentinel = sentinel, state = state, cut_score = cut_score, cut_member = cut_member,
              size = redis.call('ZCARD', key) - 1}
    end
    feeds[key] = feed
  end
  return feed
end
for i = 1, #writes, """
    + str(FIELDS_PER_WRITE)
    + """ do
  local kind, key, fence, version = writes[i], writes[i + 1], writes[i + 2], writes[i + 3]
  local a, b = writes[i + 4], writes[i + 5]
  local high = 0
  if fence ~= '' then
    high = fences[fence] or tonumber(redis.call('GET', fence) or '0')
    fences[fence] = high
  end
  local stored = 0
  if version >= high then
    if kind == 'E' then
      -- Only the version's digits (at most 19) and the colon: not the body, which Lua would copy.
      -- A missing key reads as '' (no version: nothing held).
      local held = entry_version(redis.call('GETRANGE', key, 0, 20))
      if not held or held < version or (held == version and rewrite) then
        redis.call('SET', key, a, 'PX', b)
        stored = 1
      end
    else
      local feed = feed_of(key)
      if feed then
        local member, score = a, tonumber(b)
        if not (feed.cut_score and at_or_below(score, member, feed.cut_score, feed.cut_member)) then
          -- Without its post's fence (fence ''), a place is held by its own order: a post's
          -- score only rises with its version (created_at never changes, like_count only counts
          -- up), so a lower score is an older place. A repair may lower it.
          local held = fence == '' and not rewrite and redis.call('ZSCORE', key, member)
          if not (held and tonumber(held) > score) then
            feed.size = feed.size + redis.call('ZADD', key, b, member)
            stored = 1
          end
        end
      end
    end
    if version > high and fence ~= '' then
      redis.call('SET', fence, string.format('%d', version), 'PX', fence_ttl)
      fences[fence] = version
    end
  end
  results[#results + 1] = stored
end
-- Each feed past its most members drops its lowest once, after all its members are in (not
-- after each: a like storm moves every post into `top`, and trimming per member cost Redis a
-- third of the consumer's script time). Its cutoff rises to the highest member dropped.
for key, feed in pairs(feeds) do
  local extra = feed and feed.size - most or 0
  if extra > 0 then
    local dropped = redis.call('ZRANGE', key, 1, extra, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', key, 1, extra)
    local top_member, top_score = dropped[#dropped - 1], tonumber(dropped[#dropped])
    if not feed.cut_score or not at_or_below(top_score, top_member, feed.cut_score, feed.cut_member) then
      redis.call('ZREM', key, feed.sentinel)
      redis.call('ZADD', key, '-inf', '!' .. feed.state .. ':' .. dropped[#dropped] .. ':' .. top_member)
    end
  end
end
return results
"""
)


# The WSGI environ key under which the read pool's fast path (reads/fastpath.py) leaves what it
# read, `(key, raw value or None)`, when it hands the request to Django: the view then does not
# read the same key again.
PREFETCHED = "cqrs.cache_entry"

# Version-0 tombstones (ids MongoDB does not know) only shield MongoDB from repeated misses.
ABSENT_TTL_MS = 30_000

_scripts: dict[str, object] = {}


def script(name: str, source: str):
    """A registered Lua script (EVALSHA, loaded on first use)."""
    if name not in _scripts:
        _scripts[name] = redis_client().register_script(source)
    return _scripts[name]


def decode(key: str, raw: bytes | None) -> Entry | None:
    return None if raw is None else Entry(key, *value_decode(raw))


@dataclass(frozen=True)
class Ttls:
    entry_seconds: float
    jitter: float
    tombstone_ms: int
    fence_ms: int
    feed_max_members: int


@functools.cache
def ttls() -> Ttls:
    """The cache's lifetimes, read once per process (Django's settings object costs a lookup
    per attribute, and the consumer writes thousands of entries a second)."""
    return Ttls(
        entry_seconds=settings.CQRS_CACHE_TTL_SECONDS,
        jitter=settings.CQRS_CACHE_TTL_JITTER,
        tombstone_ms=settings.CQRS_TOMBSTONE_TTL_SECONDS * 1000,
        fence_ms=settings.CQRS_TOMBSTONE_TTL_SECONDS * 1000,
        feed_max_members=settings.FEED_MAX_MEMBERS,
    )


def tombstone_ms(version: int, lifetimes: Ttls) -> int:
    """A tombstone's lifetime, fixed (a live entry's is jittered: jitter_span)."""
    return ABSENT_TTL_MS if version == 0 else lifetimes.tombstone_ms


def jitter_span(seconds: float, jitter: float) -> tuple[float, float]:
    """A jittered TTL as (lowest, spread) in ms: the TTL is lowest + spread * random.random()."""
    return seconds * 1000 * (1 - jitter), seconds * 1000 * 2 * jitter


def jittered_ms(seconds: float, jitter: float | None = None) -> int:
    """A TTL with jitter (CQRS_CACHE_TTL_JITTER unless given), so entries filled together do not
    expire together."""
    lowest, spread = jitter_span(seconds, ttls().jitter if jitter is None else jitter)
    return int(lowest + spread * random.random())


def cache_apply(ops: Iterable[Entry | Member], *, writer: str, rewrite_same_version: bool = False) -> list[int]:
    """Apply cache writes in order, each through its fence, in one script call (on a cluster,
    one per node); returns 1 per write stored, 0 per write refused (fenced off, or a member of
    a feed that is not cached). `writer` (fill, consumer, repair, warm) labels
    cqrs_cache_writes_total; `rewrite_same_version` is for repairs only."""
    if clustered():
        ops = list(ops)
        results = [0] * len(ops)
        for indexes in _by_node(ops).values():
            route = _route(ops[indexes[0]])
            packed = cache_pack([ops[i] for i in indexes])
            for index, result in zip(
                indexes, cache_apply_packed(packed, route, rewrite_same_version=rewrite_same_version), strict=True
            ):
                results[index] = result
    else:
        results = cache_apply_packed(cache_pack(ops), rewrite_same_version=rewrite_same_version)
    count_writes(writer, results)
    return results


def _route(op: Entry | Member) -> str:
    return op.key if type(op) is Entry else op.feed


def _by_node(ops: list) -> dict[str, list[int]]:
    """On a cluster: the writes' indexes, by the node that serves them."""
    nodes: dict[str, list[int]] = {}
    for index, op in enumerate(ops):
        nodes.setdefault(node_of(_route(op)), []).append(index)
    return nodes


def cache_pack(ops: Iterable[Entry | Member]) -> bytes | None:
    """Cache writes as the apply script takes them (None: no write). The consumer packs a batch
    on its consuming thread and leaves its writer thread nothing but the call.

    The writes travel as one MessagePack argument, not as KEYS and ARGV: packing a batch's tens
    of thousands of arguments cost the consumer an eighth of its time, and a text framing parsed
    in Lua cost Redis 50 ms a batch of 10,000 writes, against 8 ms for cmsgpack (measured). A
    batch touches keys in many hash slots, so it is a single-node script either way. Redis 7.0's
    cmsgpack does not take MessagePack's binary type: values travel as text (the bodies are
    UTF-8 JSON).

    On a cluster, the caller packs each node's writes apart (cache_apply), and a feed's places
    go without their post's fence, which lives on another node: the script holds them to their
    feed's order instead (a score only rises with its post's version)."""
    lifetimes = ttls()
    # A live entry's jittered lifetime (jittered_ms), its span worked out once per batch.
    lowest, spread = jitter_span(lifetimes.entry_seconds, lifetimes.jitter)
    draw = random.random
    apart = clustered()
    fields: list = []
    add = fields.extend
    for op in ops:
        if type(op) is Entry:
            ttl = tombstone_ms(op.version, lifetimes) if op.body is None else int(lowest + spread * draw())
            fence = op.fence or high_water_key(op.key)
            add(("E", op.key, fence, op.version, value_text(op.version, op.body), ttl))
        else:
            add(("M", op.feed, "" if apart else op.fence, op.version, op.member, str(op.score)))
    return msgspec.msgpack.encode(fields) if fields else None


def cache_pack_states(
    documents: Iterable[tuple[str, dict, frozenset[str] | None]], *, most: int
) -> list[tuple[str, bytes]]:
    """What `cache_pack(ops_for(aggregate, state, event_types))` packs for each document, in
    script calls of at most `most` writes (a document's all in one call), built from the same
    declarations (reads/models.py) without the Entry and Member in between: the consumer packs
    every document of every batch, and making then reading those objects was 40% of that work
    (a liked post 4.4-4.7 us against 2.8-3.0 us; the bench's 50,000-event backlog applied in
    0.73 s against 0.90 s, five runs each, alternated: bench/README.md, the consumer). `ops_for` and
    `cache_pack` stay the fills' and repairs' way; tests/unit/reads/test_cache_pack.py holds the
    two equal.

    Each call comes with the key it is routed by: '' (one server), or on a cluster the first key
    of the node it writes (each node's writes are packed apart, a feed's places on the feed's
    node: cache_pack)."""
    if clustered():
        return _pack_states_per_node(documents, most=most)
    lifetimes = ttls()
    lowest, spread = jitter_span(lifetimes.entry_seconds, lifetimes.jitter)
    draw = random.random
    calls: list[tuple[str, bytes]] = []
    fields: list = []
    add = fields.extend
    for aggregate, state, event_types in documents:
        models, feeds = entry_models(aggregate), feeds_changed_by(aggregate, event_types)
        doc_id, version = state["id"], state["version"]
        deleted = state.get("deleted")
        writes = len(models) if deleted else len(models) + len(feeds)
        if fields and len(fields) // FIELDS_PER_WRITE + writes > most:
            calls.append(("", msgspec.msgpack.encode(fields)))
            fields = []
            add = fields.extend
        key = entry_key(aggregate, doc_id)
        fence = high_water_key(key)  # document_fence(aggregate, doc_id)
        if deleted:  # tombstones, and no place in any feed (FeedModel.place)
            value, ttl = value_text(version, None), tombstone_ms(version, lifetimes)
            for model in models:
                add(("E", key if model.view is None else view_key(key, model.view), fence, version, value, ttl))
            continue
        for model in models:
            value = value_text(version, json_bytes(model.shape(state) if model.shape else state))
            ttl = int(lowest + spread * draw())
            add(("E", key if model.view is None else view_key(key, model.view), fence, version, value, ttl))
        for feed in feeds:
            partition = state[feed.per] if feed.per else None
            add(("M", feed.key(partition), fence, version, doc_id, str(feed.score(state))))
    if fields:
        calls.append(("", msgspec.msgpack.encode(fields)))
    return calls


def _pack_states_per_node(documents, *, most: int) -> list[tuple[str, bytes]]:
    """cache_pack_states on a cluster: each node's writes in calls of their own, through the
    Entry and Member of ops_for (a cluster's client spends more per write than this packing)."""
    nodes: dict[str, list] = {}
    for aggregate, state, event_types in documents:
        ops = ops_for(aggregate, state, event_types)
        entries = [op for op in ops if type(op) is Entry]
        nodes.setdefault(node_of(entries[0].key), []).append(entries)
        for op in ops[len(entries) :]:
            nodes.setdefault(node_of(op.feed), []).append([op])
    calls = []
    for groups in nodes.values():
        chunk: list = []
        for group in groups:
            if chunk and len(chunk) + len(group) > most:
                calls.append((_route(chunk[0]), cache_pack(chunk)))
                chunk = []
            chunk += group
        if chunk:
            calls.append((_route(chunk[0]), cache_pack(chunk)))
    return calls


def cache_apply_packed(packed: bytes | None, route: str = "", *, rewrite_same_version: bool = False) -> list[int]:
    """Run the apply script over writes packed by cache_pack: 1 per write stored, 0 per refused.
    `route`: on a cluster, a key of the node the writes are for."""
    if packed is None:
        return []
    lifetimes = ttls()
    args = [lifetimes.fence_ms, packed, 1 if rewrite_same_version else 0, lifetimes.feed_max_members]
    return script("apply", APPLY_SCRIPT)(keys=[route] if route else [], args=args, client=redis_client())


def count_writes(writer: str, results: list[int]) -> None:
    """Count a cache_apply's results in cqrs_cache_writes_total (done by cache_apply itself
    unless its call was queued on a pipeline)."""
    stored = sum(results)
    if stored:
        CACHE_WRITES.labels(writer, "stored").inc(stored)
    if stored < len(results):
        CACHE_WRITES.labels(writer, "refused").inc(len(results) - stored)


def cache_put(entries: Iterable[Entry], *, writer: str, rewrite_same_version: bool = False) -> list[int]:
    """Store the entries that are newer than what the cache holds (see cache_apply)."""
    return cache_apply(entries, writer=writer, rewrite_same_version=rewrite_same_version)


def cache_get(key: str) -> Entry | None:
    return decode(key, redis_client().get(key))


def cache_get_many(keys: list[str]) -> list[Entry | None]:
    return [decode(key, raw) for key, raw in zip(keys, get_many(keys), strict=True)]


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
