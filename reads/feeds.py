"""Feeds served from Redis: a page is one script call that walks the feed from the cursor and
takes each post's body from its cached entry (a post's bytes are stored once). On a Redis
Cluster the entries live on other nodes than the feed: the script gives the page's ids, and
their bodies are read by slot after (`_cluster_page`).

- A post whose entry is a tombstone is skipped and removed from the feed there and then (a
  delete never shows once it is visible: its tombstone is what a GET of the post sees too).
- A post whose entry is not cached is filled from MongoDB (with the others, in one query), then
  the page is read again.
- A feed that is not cached is filled from MongoDB, one reader at a time (the feed's sentinel
  `!filling` is the lock); the others wait briefly, then read MongoDB themselves.
- A page that reaches past a truncated feed's cutoff, or that the cache cannot serve, is read
  from MongoDB (X-Cache: miss).

Cursors are opaque: `<score>.<post id>` in URL-safe base64, the score being the feed's
(created_at in ms, or a like count); the same keyset serves the cached and the MongoDB page.
"""

import base64
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from pymongo.errors import ConnectionFailure
from redis.exceptions import RedisError

from cqrs_site.core.codec import ENTRY_VALUE_LUA, post_key, value_decode
from cqrs_site.core.errors import InvalidInput, Unavailable
from cqrs_site.core.metrics import CACHE_LOOKUPS
from cqrs_site.core.redis_client import clustered, get_many, redis_client
from writes.aggregates import POST_AGGREGATE
from writes.documents import object_id
from writes.events import POST

from .cache import FEED_LUA, cache_apply, jittered_ms, script
from .models import FeedModel, json_bytes, ops_for

logger = logging.getLogger(__name__)

HIT, MISS, DEGRADED = "hit", "miss", "degraded"
FILL_WAIT_SECONDS = 0.25
FILL_TIMEOUT_MS = 10_000  # a filler that died leaves `!filling` for this long at most

# KEYS[1] the feed. ARGV: the cursor's score and post id ('' for the first page), the page size,
# what comes before and after a post's id in its entry's key (both '' on a cluster, where the
# entries live on other nodes: every body comes back '', the caller reads them, cached_page).
# Returns {state, reached_cutoff, id, score, body, id, score, body…}:
# up to size + 1 posts after the cursor, tombstoned ones dropped (and removed), a body '' for a
# post whose entry is not cached; reached_cutoff '1' when a truncated feed ended before the page
# did. state is absent, filling or ready; nothing follows unless ready.
PAGE_SCRIPT = (
    ENTRY_VALUE_LUA
    + FEED_LUA
    + """
local feed = KEYS[1]
local sentinel = sentinel_of(feed)
if not sentinel then return {'absent'} end
local state, cut_score, cut_member = parse_sentinel(sentinel)
if state ~= 'ready' then return {state} end
local after_score, after_member = tonumber(ARGV[1]), ARGV[2]
local size = tonumber(ARGV[3])
local out, buried, found, offset, below = {'ready', '0'}, {}, 0, 0, false
local top = after_score and ARGV[1] or '+inf'
while found <= size and not below do
  local batch = redis.call('ZREVRANGEBYSCORE', feed, top, '(-inf', 'WITHSCORES', 'LIMIT', offset, size + 1)
  if #batch == 0 then break end
  offset = offset + #batch / 2
  for j = 1, #batch, 2 do
    local member, score = batch[j], tonumber(batch[j + 1])
    if after_score and score == after_score and member >= after_member then
      -- at or before the cursor
    elseif cut_score and at_or_below(score, member, cut_score, cut_member) then
      below = true  -- the rest of the order is MongoDB's
      break
    else
      local value = nil
      if ARGV[4] ~= '' then value = redis.call('GET', ARGV[4] .. member .. ARGV[5]) end
      local body = ''
      if value then
        body = select(2, entry_split(value)) or ''
      end
      if value and body == '' then
        buried[#buried + 1] = member
      else
        out[#out + 1] = member
        out[#out + 1] = batch[j + 1]
        out[#out + 1] = body
        found = found + 1
        if found > size then break end
      end
    end
  end
end
if #buried > 0 then redis.call('ZREM', feed, unpack(buried)) end
-- A truncated feed that ran out before the page was full: the page goes on in MongoDB.
if cut_score and found <= size then out[2] = '1' end
return out
"""
)

# KEYS[1] the feed: claim its fill (single flight) unless it is cached or being filled.
FILL_BEGIN_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[1], '-inf', '!filling')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] the feed; ARGV: its TTL, and the fill's cutoff score and post id ('' when the fill
# found every post). The feed becomes ready, keeping the higher of its cutoffs.
FILL_END_SCRIPT = (
    FEED_LUA
    + """
local sentinel = sentinel_of(KEYS[1])
if not sentinel or string.sub(sentinel, 1, 9) ~= '!filling' then return 0 end
local _, cut_score, cut_member = parse_sentinel(sentinel)
local score, member = tonumber(ARGV[2]), ARGV[3]
if score and not (cut_score and at_or_below(score, member, cut_score, cut_member)) then
  cut_score, cut_member = score, member
end
redis.call('ZREM', KEYS[1], sentinel)
if cut_score then
  redis.call('ZADD', KEYS[1], '-inf', '!ready:' .. ARGV[2] .. ':' .. cut_member)
else
  redis.call('ZADD', KEYS[1], '-inf', '!ready')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
)


@dataclass(frozen=True)
class Page:
    body: bytes  # {"results": [...], "next": cursor|null}
    source: str  # hit, miss, degraded
    next_cursor: str | None


def cursor_encode(score: int | str, post_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}.{post_id}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[int, str]:
    try:
        score, _, post_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(".")
        if object_id(post_id) is None:
            raise ValueError
        return int(score), post_id
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidInput("The cursor is not one this API gave out; send the `next` value unchanged.") from None


def page_body(bodies: list[bytes], next_cursor: str | None) -> bytes:
    return b'{"results":[' + b",".join(bodies) + b'],"next":' + json_bytes(next_cursor) + b"}"


def cached_page(feed: FeedModel, partition: str | None, limit: int, after: tuple[int, str] | None):
    """One run of the page script: (state, reached_cutoff, [(post id, score, body or b"")])."""
    if clustered():
        return _cluster_page(feed, partition, limit, after)
    score, post_id = after if after else ("", "")
    head, _, tail = post_key("%s").partition("%s")
    reply = script("feed-page", PAGE_SCRIPT)(keys=[feed.key(partition)], args=[score, post_id, limit, head, tail])
    return _page_reply(reply)


def _page_reply(reply: list) -> tuple[str, bool, list[tuple[str, str, bytes]]]:
    state = reply[0].decode()
    if state != "ready":
        return state, False, []
    rows = [(reply[i].decode(), reply[i + 1].decode(), reply[i + 2]) for i in range(2, len(reply), 3)]
    return state, reply[1] == b"1", rows


def _cluster_page(feed: FeedModel, partition: str | None, limit: int, after):
    """cached_page on a cluster: the page's ids from the feed's node, then its posts' entries
    read by slot (get_many). Posts found buried are removed from the feed, and the page read
    again without them; a feed that keeps turning up buried posts is left to MongoDB."""
    score, post_id = after if after else ("", "")
    key = feed.key(partition)
    for _ in range(3):
        state, reached, rows = _page_reply(
            script("feed-page", PAGE_SCRIPT)(keys=[key], args=[score, post_id, limit, "", ""])
        )
        values = get_many([post_key(member) for member, _score, _body in rows])
        decoded = [None if raw is None else value_decode(raw) for raw in values]
        buried = [member for (member, *_), held in zip(rows, decoded, strict=True) if held and held[1] is None]
        if buried:
            redis_client().zrem(key, *buried)
            continue
        return state, reached, [(m, s, held[1] if held else b"") for (m, s, _), held in zip(rows, decoded, strict=True)]
    return "ready", True, []  # unservable (_servable): this page is read from MongoDB


def page_from_cache(feed: FeedModel, partition: str | None, limit: int, after) -> Page | None:
    """The page when the cache alone can answer it (the fast path's question), else None."""
    state, reached, rows = cached_page(feed, partition, limit, after)
    if _servable(state, reached, rows, limit):
        return _page(rows, limit, HIT)
    return None


def _servable(state: str, reached: bool, rows: list, limit: int) -> bool:
    """Ready, every post's entry cached, and not a page that goes past a truncated feed's end."""
    return state == "ready" and all(body for _id, _score, body in rows) and not (reached and len(rows) <= limit)


def feed_page(feed: FeedModel, *, partition: str | None, limit: int, cursor: str | None, fresh: bool = False) -> Page:
    """A page of `feed`: from Redis (filling the feed, or the posts' entries, from MongoDB when
    they are not cached), or from MongoDB (`fresh`: the client's own writes, read-your-writes)."""
    after = cursor_decode(cursor) if cursor else None
    if fresh:
        CACHE_LOOKUPS.labels(MISS).inc()
        return _mongo_page(feed, partition, limit, after, MISS)
    try:
        state, reached, rows = cached_page(feed, partition, limit, after)
        source = HIT
        if state != "ready":
            source = MISS
            if (state == "absent" and _fill(feed, partition)) or _wait_ready(feed, partition):
                state, reached, rows = cached_page(feed, partition, limit, after)
        missing = [post_id for post_id, _score, body in rows if not body]
        if state == "ready" and missing:
            source = MISS
            _fill_posts(missing)
            state, reached, rows = cached_page(feed, partition, limit, after)
        if _servable(state, reached, rows, limit):
            CACHE_LOOKUPS.labels(source).inc()
            return _page(rows, limit, source)
    except RedisError as exc:
        logger.warning("Redis unavailable, reading feed %s from MongoDB: %s", feed.name, exc)
        CACHE_LOOKUPS.labels(DEGRADED).inc()
        return _mongo_page(feed, partition, limit, after, DEGRADED)
    CACHE_LOOKUPS.labels(MISS).inc()
    return _mongo_page(feed, partition, limit, after, MISS)


def _page(rows: list[tuple[str, str, bytes]], limit: int, source: str) -> Page:
    page = rows[:limit]
    next_cursor = cursor_encode(page[-1][1], page[-1][0]) if len(rows) > limit else None
    return Page(page_body([body for _id, _score, body in page], next_cursor), source, next_cursor)


def _mongo(operation):
    try:
        return operation()
    except ConnectionFailure:
        raise Unavailable("MongoDB is unavailable and this page is not cached; retry later.") from None


def _fill(feed: FeedModel, partition: str | None) -> bool:
    """Fill the feed from MongoDB unless someone else is; True when this call filled it."""
    key = feed.key(partition)
    if not script("feed-fill-begin", FILL_BEGIN_SCRIPT)(keys=[key], args=[FILL_TIMEOUT_MS]):
        return False
    most = settings.FEED_MAX_MEMBERS
    projection = {"_id": 1, feed.score_field: 1, "version": 1}
    cursor = POST_AGGREGATE.collection().find(feed.mongo_filter(partition), projection)
    rows = _mongo(lambda: list(cursor.sort(feed.mongo_sort).limit(most + 1)))
    members = [feed.member(partition, str(row["_id"]), _score(feed, row), row["version"]) for row in rows[:most]]
    cache_apply(members, writer="fill")
    cut = (_score(feed, rows[most]), str(rows[most]["_id"])) if len(rows) > most else ("", "")
    script("feed-fill-end", FILL_END_SCRIPT)(keys=[key], args=[jittered_ms(settings.FEED_TTL_SECONDS), *cut])
    return True


def _wait_ready(feed: FeedModel, partition: str | None) -> bool:
    deadline, key = time.monotonic() + FILL_WAIT_SECONDS, feed.key(partition)
    while time.monotonic() < deadline:
        time.sleep(0.005)
        sentinel = redis_client().zrangebyscore(key, "-inf", "-inf", start=0, num=1)
        if sentinel and sentinel[0].startswith(b"!ready"):
            return True
    return False


def _fill_posts(post_ids: list[str]) -> None:
    """The entries (and feed places) of these posts, from MongoDB, through the fence."""
    fields = dict.fromkeys(POST_AGGREGATE.fields, 1)
    oids = [object_id(post_id) for post_id in post_ids]
    documents = _mongo(lambda: list(POST_AGGREGATE.collection().find({"_id": {"$in": oids}}, fields)))
    cache_apply([op for raw in documents for op in ops_for(POST, POST_AGGREGATE.state(raw))], writer="fill")


def _score(feed: FeedModel, row: dict) -> int:
    value = row[feed.score_field]
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    return int(value)


def _mongo_page(feed: FeedModel, partition: str | None, limit: int, after, source: str) -> Page:
    """The page from MongoDB (keyset on the feed's order), its posts' entries filled on the way."""
    query = feed.mongo_filter(partition)
    if after:
        score = datetime.fromtimestamp(after[0] / 1000, UTC) if feed.score_field == "created_at" else after[0]
        last = object_id(after[1])
        query["$or"] = [{feed.score_field: {"$lt": score}}, {feed.score_field: score, "_id": {"$lt": last}}]
    fields = dict.fromkeys(POST_AGGREGATE.fields, 1)
    documents = _mongo(
        lambda: list(POST_AGGREGATE.collection().find(query, fields).sort(feed.mongo_sort).limit(limit + 1))
    )
    states = [POST_AGGREGATE.state(raw) for raw in documents]
    if source != DEGRADED:
        try:
            cache_apply([op for state in states for op in ops_for(POST, state)], writer="fill")
        except RedisError:
            pass  # the page is answered anyway; the entries fill on their next read
    page = states[:limit]
    last = documents[limit - 1] if len(documents) > limit else None
    next_cursor = cursor_encode(_score(feed, last), str(last["_id"])) if last is not None else None
    return Page(page_body([json_bytes(state) for state in page], next_cursor), source, next_cursor)
