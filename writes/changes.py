"""A post's change applied in one atomic operation, and the event it made read in the same step
where the store allows it: the one place that chooses an access pattern (MONGODB_POST_CHANGES).

- "find_and_modify" (the default, MongoDB's way): one findAndModify matched by `_id`, `deleted`
  and the expected version, returning the event the change appended.
- "update_and_read_back" (the embedded SecantusDB's): an update matched by `_id` alone, which
  decides inside its pipeline whether the change applies, then the event read back by its id.
  SecantusDB runs findAndModify, and any filter beyond `_id`, as a scan of the collection
  (docs/stand-ins.md).

Both return the stored outbox entry, or None when the post is not live (or not at an expected
version). A write that failed in flight is settled by writes/outcome.py through the event's id.
"""

from django.conf import settings
from pymongo import ReturnDocument

from .outcome import read_back, write_resolved

NOT_APPLIED = object()


def change_apply(posts, oid, *, applies: dict, fields: dict, event: dict) -> dict | None:
    """Apply `fields` (aggregation expressions) to the post `oid` if `applies` (a match on its
    `deleted` and `version`) holds; the entry of `event` as stored, or None if it did not apply."""
    mine = {"outbox": {"$elemMatch": {"event_id": event["event_id"]}}}
    mark = {"_id": oid, "outbox.event_id": event["event_id"]}
    if settings.MONGODB_POST_CHANGES == "find_and_modify":
        found = write_resolved(
            posts,
            lambda: (
                posts.find_one_and_update(
                    {"_id": oid, **applies}, [{"$set": fields}], projection=mine, return_document=ReturnDocument.AFTER
                )
                or NOT_APPLIED
            ),
            mark=mark,
            written_at=event["occurred_at"],
        )
        if found is NOT_APPLIED:
            return None
        if found is None:  # failed in flight, and landed
            found = read_back(lambda: posts.find_one({"_id": oid}, mine))
        return _entry(posts, oid, found)
    pipeline = [{"$replaceWith": {"$cond": [_condition(applies), {"$mergeObjects": ["$$ROOT", fields]}, "$$ROOT"]}}]
    result = write_resolved(
        posts, lambda: posts.update_one({"_id": oid}, pipeline), mark=mark, written_at=event["occurred_at"]
    )
    if result is not None and result.modified_count == 0:
        return None
    return _entry(posts, oid, read_back(lambda: posts.find_one({"_id": oid}, mine)))


def _condition(applies: dict) -> dict:
    """The match `applies` (equalities, or `{"$in": [...]}`) as an aggregation expression."""
    terms = [
        {"$in": [f"${name}", value["$in"]]} if isinstance(value, dict) else {"$eq": [f"${name}", value]}
        for name, value in applies.items()
    ]
    return {"$and": terms}


def _entry(posts, oid, stored: dict | None) -> dict:
    """The event's stored entry. If the relay has already sent and removed it (it would have to
    be seconds later, past its grace), the post's current state stands in, with no event id:
    there is nothing left to publish."""
    entries = (stored or {}).get("outbox") or []
    if entries:
        return entries[0]
    return {"state": read_back(lambda: posts.find_one({"_id": oid}))}
