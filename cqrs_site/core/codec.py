"""Everything this project keeps in Redis, in one place: every key (built and parsed) and the
cache's value format (in Lua: entry_value.lua, beside this file). HAProxy's edge (deploy/edge.lua)
reads the same keys and values; tests/e2e/test_edge.py holds the two to each other.

Cache entries, one per read of the API:

    <prefix>:user:{<id>}          GET /api/users/<id>
    <prefix>:post:{<id>}          GET /api/posts/<id>
    <prefix>:post:{<id>}:likes    GET /api/posts/<id>/likes

beside each document's, `<prefix>:<aggregate>:{<id>}:hw` (the highest version any of its entries
and feed places ever held: the fence's memory, one per document, see reads/cache.py and
reads/models.py's document_fence) and beside each entry `<key>:filling` (a read-through fill
in progress: single flight). The id in braces is a Redis Cluster hash tag: a document's entries,
fence and markers share one slot, so one script call on one node writes them together (on one
server or under Sentinel the braces cost two bytes and change nothing).

A value is `b"<version>:<body>"`, the body being the exact bytes the API sends; an empty body is
a tombstone (deleted, or version 0: an id MongoDB does not know).

Feeds: `<prefix>:feed:latest`, `<prefix>:feed:top`, `<prefix>:feed:user-posts:<id>`, sorted sets of
post ids (reads/models.py, reads/feeds.py).

Other keys: `<prefix>:window:<name>:<identity>:<n>` (fixed-window counters: the write throttle,
the admin's login limit), `<prefix>:inspector:…` and `<prefix>:consumer:…` (the pipeline's own
bookkeeping).
"""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

USER, POST = "user", "post"
LIKES = "likes"
HIGH_WATER, FILLING = "hw", "filling"
# Suffixes of the keys that stand beside an entry and are not entries themselves.
AUXILIARY_SUFFIXES = (f":{HIGH_WATER}".encode(), f":{FILLING}".encode())


_prefix: str | None = None


def prefix_forget(**kwargs) -> None:
    """Django's setting_changed signal (tests' overrides): read CQRS_CACHE_PREFIX again."""
    global _prefix
    _prefix = None


def prefix() -> str:
    """CQRS_CACHE_PREFIX, read once per process (Django's settings object costs a lookup per
    attribute, and the consumer builds thousands of keys a second)."""
    global _prefix
    if _prefix is None:
        _prefix = settings.CQRS_CACHE_PREFIX
    return _prefix


# --- Cache entries -----------------------------------------------------------------------------


def entry_key(aggregate: str, doc_id: str, view: str | None = None) -> str:
    """The key of one cache entry: an aggregate's document, or one `view` of it (likes)."""
    key = f"{prefix()}:{aggregate}:{{{doc_id}}}"
    return key if view is None else view_key(key, view)


def view_key(document_key: str, view: str) -> str:
    """The key of one view of a document (likes), from the document's entry key."""
    return f"{document_key}:{view}"


def user_key(user_id: str) -> str:
    return entry_key(USER, user_id)


def post_key(post_id: str) -> str:
    return entry_key(POST, post_id)


def post_likes_key(post_id: str) -> str:
    return entry_key(POST, post_id, LIKES)


def high_water_key(key: str) -> str:
    return beside(key, HIGH_WATER)


def fill_lock_key(key: str) -> str:
    return beside(key, FILLING)


def beside(key: str, suffix: str) -> str:
    """`<key>:<suffix>`, in `key`'s Redis Cluster slot: a key without a hash tag becomes the
    tag (`{<key>}:<suffix>`), so a fence is always written with its entry in one call."""
    start = key.find("{")
    if start != -1 and key.find("}", start + 2) != -1:
        return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


def entry_pattern(aggregate: str) -> str:
    """A SCAN pattern for every key of one aggregate's entries (and their auxiliary keys)."""
    return f"{prefix()}:{aggregate}:*"


@dataclass(frozen=True, slots=True)
class EntryKey:
    aggregate: str
    doc_id: str
    view: str | None


def key_parse(key: str | bytes) -> EntryKey | None:
    """What an entry's key names, or None for any other key (auxiliary, feed, counter…)."""
    if isinstance(key, bytes):
        key = key.decode()
    head, _, rest = key.partition(f"{prefix()}:")
    if head or not rest:
        return None
    parts = rest.split(":")
    if parts[0] not in (USER, POST) or len(parts) not in (2, 3) or len(parts[1]) < 3:
        return None
    if parts[1][0] != "{" or parts[1][-1] != "}":
        return None
    view = parts[2] if len(parts) == 3 else None
    if view is not None and (parts[0], view) != (POST, LIKES):
        return None
    return EntryKey(parts[0], parts[1][1:-1], view)


# --- Cache values ------------------------------------------------------------------------------


# The same format in Lua (entry_version, entry_split), put in front of every Redis script that
# reads an entry's value; HAProxy's edge loads the file itself.
ENTRY_VALUE_LUA = (Path(__file__).parent / "entry_value.lua").read_text()


def value_text(version: int, body: bytes | None) -> str:
    """A value as the apply script is handed it: text, for Redis 7.0's cmsgpack takes no binary
    (bodies are UTF-8 JSON); Redis stores its UTF-8 bytes, `b"<version>:<body>"`."""
    return f"{version}:{body.decode()}" if body else f"{version}:"


def value_decode(raw: bytes) -> tuple[int, bytes | None]:
    """(version, body), the body None for a tombstone."""
    version, _, body = raw.partition(b":")
    return int(version), body or None


# --- Feeds ---------------------------------------------------------------------------------------


def feed_key(name: str, partition: str | None = None) -> str:
    """A feed (reads/models.py): `<prefix>:feed:latest`, or one per author, `<prefix>:feed:user-posts:<id>`."""
    key = f"{prefix()}:feed:{name}"
    return key if partition is None else f"{key}:{partition}"


def feed_name(key: str) -> str | None:
    """The name of the feed a key is (latest, top, user-posts), or None if it is not a feed's."""
    head, _, rest = key.partition(f"{prefix()}:feed:")
    return None if head or not rest else rest.split(":", 1)[0]


# --- Other keys --------------------------------------------------------------------------------


def sweep_request_key() -> str:
    """A request for an immediate sweep of the cache inspector (cqrs_site/core/sweeps.py)."""
    return f"{prefix()}:inspector:sweep"


def relay_due_key(aggregate: str) -> str:
    """The documents whose events a write could not publish itself: the relay's next work."""
    return f"{prefix()}:relay:due:{aggregate}"


def consumer_offsets_key(group: str, topic: str) -> str:
    """Per partition, the offset a consumer group applied up to (consumers/runner.py)."""
    return f"{prefix()}:consumer:{group}:{topic}"


def window_key(name: str, identity: str, window: int) -> str:
    """One fixed-window counter (cqrs_site/core/ratelimit.py)."""
    return f"{prefix()}:window:{name}:{identity}:{window}"
