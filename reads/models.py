"""The read models: what the cache holds, each declared once.

A read model says which aggregate feeds it, where it lives in Redis, what an aggregate's state
makes of it (`entry`, `place`: cache writes, applied through the version fence by
reads/cache.py), which events change it, and how it is built from MongoDB. Everything that
writes or checks the cache works from these declarations: the consumer (an event's state), the
read-through fills (a MongoDB document), warm_cache, check_consistency, the continuous inspector
and the admin's cache panel. The consumer and the fills build their writes from the same state with the same
functions, so the cache and the MongoDB fallback cannot disagree.

Two kinds:
- an entry: one record's bytes, exactly as the API sends them (a user, a post, a post's likes);
- a feed: post ids ordered by a score, newest or most liked first (reads/feeds.py serves it).
  Membership only grows (fills and creates add members, never replace the set); a deleted post
  is skipped, and trimmed, where its entry is a tombstone; a member's score is written only
  with a version at least the post's (the fence the post's entries raise), in the same script
  as the post's entries, so a feed's order is never older than the bodies it shows. (On a Redis
  Cluster a feed lives on its own node, away from its posts' fences: there a place is held by
  the feed's order alone, a post's score only rising with its version: reads/cache.py.)
"""

import functools
from dataclasses import dataclass
from datetime import datetime

import msgspec
import orjson

from cqrs_site.core.codec import LIKES, POST, USER, entry_key, feed_key, high_water_key
from writes.aggregates import post_reactions
from writes.documents import object_id
from writes.events import POST_CREATED, POST_REACTED, POST_REPLAYED


class Entry(msgspec.Struct, frozen=True):
    """One cache entry: the ready-to-send JSON bytes at a version; `body` None is a tombstone.
    `fence`: the high-water key it is written through, its document's (`document_fence`: a
    post's entries and places share one); None, the key's own. (Entries and members are
    msgspec Structs: made five times faster than frozen dataclasses, and the consumer makes
    tens of thousands a second.)"""

    key: str
    version: int
    body: bytes | None
    fence: str | None = None


class Member(msgspec.Struct, frozen=True):
    """One post's place in a feed, written only while the feed is cached and only with a version
    at least the one its `fence` (the post's version high-water mark) holds."""

    feed: str
    member: str
    score: int
    version: int
    fence: str


def json_bytes(data) -> bytes:
    """Compact UTF-8 JSON (orjson: the consumer encodes one or two entries per event)."""
    return orjson.dumps(data)


def document_fence(aggregate: str, doc_id: str) -> str:
    """The version high-water key of one document, shared by every cache write it makes: its
    entries (a post, its likes) and its places in the feeds. They all hold the document's
    version, so one fence serves them all, and an older view of the document is refused
    wherever a newer one was written. One key, not one per entry: a like's apply reads and
    raises one fence, not two."""
    return high_water_key(entry_key(aggregate, doc_id))


def millis(iso_time: str | datetime) -> int:
    """A timestamp as whole milliseconds since the epoch (a feed's score, a cursor's)."""
    when = datetime.fromisoformat(iso_time) if isinstance(iso_time, str) else iso_time
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class EntryModel:
    name: str
    aggregate: str
    view: str | None  # None: the document itself; "likes": its counters
    shape: object = None  # state -> what the entry shows; None: the state itself

    def key(self, doc_id: str) -> str:
        return entry_key(self.aggregate, doc_id, self.view)

    def entry(self, state: dict, fence: str | None = None) -> Entry:
        """Every event changes an entry: the new state, or a tombstone for a deleted document.
        `fence`: the document's (document_fence), when the caller has it already."""
        doc_id = state["id"]
        fence = fence or document_fence(self.aggregate, doc_id)
        if state.get("deleted"):
            return Entry(self.key(doc_id), state["version"], None, fence)
        return Entry(self.key(doc_id), state["version"], json_bytes(self.shape(state) if self.shape else state), fence)


@dataclass(frozen=True)
class FeedModel:
    """Live posts, highest score first, ties by id (newest first: an ObjectId begins with its
    creation time). `per` names the field a feed is kept per (`user_id`: one feed per author)."""

    name: str
    score_field: str  # created_at (ms) or like_count
    changed_by: frozenset[str]  # the events that can change a post's membership or score here
    per: str | None = None

    def key(self, partition: str | None = None) -> str:
        return feed_key(self.name, partition)

    def score(self, state: dict) -> int:
        value = state[self.score_field]
        return millis(value) if self.score_field == "created_at" else int(value)

    def member(self, partition: str | None, post_id: str, score: int, version: int, fence: str | None = None) -> Member:
        """A post's place here, fenced by the post's version high-water mark."""
        return Member(self.key(partition), post_id, score, version, fence or document_fence(POST, post_id))

    def place(self, state: dict, fence: str | None = None) -> Member | None:
        """A live post's place here, None for a deleted one (which feeds an event can change is
        feeds_changed_by's to say). The state is the newest, whichever event made it."""
        if state.get("deleted"):
            return None
        partition = state[self.per] if self.per else None
        return self.member(partition, state["id"], self.score(state), state["version"], fence)

    def mongo_filter(self, partition: str | None = None) -> dict:
        # The partition's field first: the stand-in (SecantusDB) plans from the filter's first
        # field, and with `deleted` first it scans every post instead of this user's index.
        query = {self.per: object_id(partition)} if self.per else {}
        query["deleted"] = False
        return query

    @property
    def mongo_sort(self) -> list[tuple[str, int]]:
        return [(self.score_field, -1), ("_id", -1)]


USER_ENTRY = EntryModel("user", USER, None)
POST_ENTRY = EntryModel("post", POST, None)
POST_LIKES = EntryModel("post-likes", POST, LIKES, post_reactions)
# Creating a post places it; a replay puts it back; likes move it in `top`. Updates and
# dislikes change neither membership nor score, and a deletion only buries the post's entries.
USER_FEED = FeedModel("user-posts", "created_at", frozenset({POST_CREATED, POST_REPLAYED}), per="user_id")
LATEST = FeedModel("latest", "created_at", frozenset({POST_CREATED, POST_REPLAYED}))
TOP = FeedModel("top", "like_count", frozenset({POST_CREATED, POST_REACTED, POST_REPLAYED}))

ENTRY_MODELS: dict[str, tuple[EntryModel, ...]] = {USER: (USER_ENTRY,), POST: (POST_ENTRY, POST_LIKES)}
FEEDS: dict[str, FeedModel] = {feed.name: feed for feed in (USER_FEED, LATEST, TOP)}
FEED_MODELS: dict[str, tuple[FeedModel, ...]] = {USER: (), POST: tuple(FEEDS.values())}


def entries_for(aggregate: str, state: dict, fence: str | None = None) -> list[Entry]:
    """Every cache entry that shows this state of the aggregate."""
    fence = fence or document_fence(aggregate, state["id"])
    return [model.entry(state, fence) for model in entry_models(aggregate)]


def entry_models(aggregate: str) -> tuple[EntryModel, ...]:
    """The aggregate's entry models; ValueError for an aggregate with none."""
    models = ENTRY_MODELS.get(aggregate)
    if models is None:
        raise ValueError(f"no read model for aggregate {aggregate!r}")
    return models


def ops_for(aggregate: str, state: dict, event_types: frozenset[str] | None = None) -> list[Entry | Member]:
    """Every cache write this state makes: its entries, then its places in the feeds, all
    through the document's one fence. With `event_types` (the consumer: the events that led to
    this state), only what they can change; without (a fill), all. Entries first: they raise
    the fence the members are held to."""
    fence = document_fence(aggregate, state["id"])
    ops: list[Entry | Member] = entries_for(aggregate, state, fence)
    for feed in feeds_changed_by(aggregate, event_types):
        place = feed.place(state, fence)
        if place is not None:
            ops.append(place)
    return ops


@functools.cache
def feeds_changed_by(aggregate: str, event_types: frozenset[str] | None) -> tuple[FeedModel, ...]:
    """The aggregate's feeds that one of `event_types` can change (None: all of them), worked
    out once per set of types: the consumer asks for every document of every batch."""
    feeds = FEED_MODELS[aggregate]
    return feeds if event_types is None else tuple(f for f in feeds if not f.changed_by.isdisjoint(event_types))


def absent_entries(aggregate: str, aggregate_id: str) -> list[Entry]:
    """Version-0 tombstones for an id MongoDB does not know; any real version replaces them."""
    fence = document_fence(aggregate, aggregate_id)
    return [Entry(model.key(aggregate_id), 0, None, fence) for model in ENTRY_MODELS[aggregate]]
