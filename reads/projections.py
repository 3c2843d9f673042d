"""The one projection: an aggregate's state (writes/events.py) -> its cache entries.

The consumer (from an event's state) and the read fallback (from a MongoDB document, through
the same state function) both call `entries_for`, so the cache and the fallback cannot disagree.
"""

from dataclasses import dataclass

import orjson

from cqrs_site.core.codec import post_key, post_likes_key, user_key
from writes.aggregates import post_reactions
from writes.events import POST, USER


@dataclass(frozen=True, slots=True)
class Entry:
    """One cache entry: the ready-to-send JSON bytes at a version; `body` None is a tombstone."""

    key: str
    version: int
    body: bytes | None


def json_bytes(data) -> bytes:
    """Compact UTF-8 JSON (orjson: the consumer encodes one or two entries per event)."""
    return orjson.dumps(data)


def entries_for(aggregate: str, state: dict) -> list[Entry]:
    """Every cache entry that shows this state of the aggregate."""
    version = state["version"]
    if aggregate == USER:
        return [Entry(user_key(state["id"]), version, json_bytes(state))]
    if aggregate == POST:
        keys = (post_key(state["id"]), post_likes_key(state["id"]))
        if state.get("deleted"):
            return [Entry(key, version, None) for key in keys]
        return [Entry(keys[0], version, json_bytes(state)), Entry(keys[1], version, json_bytes(post_reactions(state)))]
    raise ValueError(f"no projection for aggregate {aggregate!r}")


def absent_entries(aggregate: str, aggregate_id: str) -> list[Entry]:
    """Version-0 tombstones for an id MongoDB does not know; any real version replaces them."""
    return [Entry(key, 0, None) for key in _keys(aggregate, aggregate_id)]


def _keys(aggregate: str, aggregate_id: str) -> tuple[str, ...]:
    if aggregate == USER:
        return (user_key(aggregate_id),)
    return (post_key(aggregate_id), post_likes_key(aggregate_id))
