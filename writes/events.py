"""Events: past-tense, state-carrying, versioned. Leaf module (stdlib, orjson, msgspec and the base layer).

An event carries the aggregate's full new state and its version, so applying one twice, or an
older one after a newer one, changes nothing: consumers fence on the version. Which events each
aggregate has, and how its state is built, is declared in writes/aggregates.py.
"""

import contextvars
import uuid
from datetime import UTC, datetime

import msgspec
import orjson

from cqrs_site.core.logs import request_id_get

USER = "user"
POST = "post"

USER_CREATED = "UserCreated"
POST_CREATED = "PostCreated"
POST_UPDATED = "PostUpdated"
POST_REACTED = "PostReacted"
POST_DELETED = "PostDeleted"
# An operator re-published the document's current state (manage.py replay_events), e.g. after
# the broker lost events. Not a change: the version is the one the document already has.
USER_REPLAYED = "UserReplayed"
POST_REPLAYED = "PostReplayed"


# The Idempotency-Key record of the POST being served and the answer it gives (writes/
# idempotency.py), if it has one: its write's outbox entry carries them, so that the write can
# be recognised, and its answer rebuilt, after a crash.
idempotency_record: contextvars.ContextVar[dict | None] = contextvars.ContextVar("idempotency_record", default=None)


def utc_now() -> datetime:
    """Now, truncated to the millisecond: what MongoDB stores, so what is sent equals what is read."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def outbox_entry(*, event_type: str, aggregate: str, state) -> dict:
    """A pending event as stored in the document's outbox. `state` holds raw document fields,
    or, inside a pipeline update, the `$field` references that copy them atomically. The
    current request id (the HTTP request's, or a command's) travels with it as a header; it
    cannot hold a "$" (cqrs_site/core/logs.py), so a pipeline update keeps it as text."""
    request_id = request_id_get()
    entry = {
        "event_id": uuid.uuid4().hex,
        "type": event_type,
        "aggregate": aggregate,
        "occurred_at": utc_now(),
        "state": state,
    }
    if request_id is not None:
        entry["request_id"] = request_id
    record = idempotency_record.get()
    if record is not None:
        entry["idempotency"] = record
    return entry


class Event(msgspec.Struct, frozen=True):
    """A msgspec Struct: the consumer decodes and type-checks a message's body into one in a
    single pass in C (writes/aggregates.py: event_decode), 2.5x faster than orjson and a check
    of each field in Python (measured: 10 ms against 25 ms for 5,000 events)."""

    event_id: str
    type: str
    aggregate: str
    aggregate_id: str
    version: int
    occurred_at: str
    state: dict
    request_id: str | None = None  # sent as a header, not in the body

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "type": self.type,
                "aggregate": self.aggregate,
                "aggregate_id": self.aggregate_id,
                "version": self.version,
                "occurred_at": self.occurred_at,
                "state": self.state,
            }
        )


class EventInvalid(ValueError):
    """A message that is not a well-formed event: retrying cannot help, it is dead-lettered."""
