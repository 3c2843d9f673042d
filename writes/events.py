"""Events: past-tense, state-carrying, versioned. Leaf module (stdlib, bson, orjson and the
stdlib-only cqrs_site.logs).

An event carries the aggregate's full new state and its version, so applying one twice, or an
older one after a newer one, changes nothing: consumers fence on the version.

The state functions here are also the API's representation of a document: the write answers,
the read fallback and the consumer all build their JSON from them, so they cannot disagree.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from cqrs_site.logs import request_id_get

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
REPLAYED = {USER: USER_REPLAYED, POST: POST_REPLAYED}

EVENT_TYPES = {
    USER: {USER_CREATED, USER_REPLAYED},
    POST: {POST_CREATED, POST_UPDATED, POST_REACTED, POST_DELETED, POST_REPLAYED},
}

# The document fields an event's state is built from (a MongoDB projection, and the fields a
# pipeline update copies into the outbox entry).
USER_FIELDS = ("_id", "username", "created_at", "version")
POST_FIELDS = (
    "_id",
    "user_id",
    "title",
    "content",
    "like_count",
    "dislike_count",
    "created_at",
    "updated_at",
    "version",
    "deleted",
)


def utc_now() -> datetime:
    """Now, truncated to the millisecond: what MongoDB stores, so what is sent equals what is read."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_state(raw) -> dict:
    """The API's representation of a user, from a MongoDB document or an outbox state."""
    return {
        "id": str(raw["_id"]),
        "username": raw["username"],
        "created_at": iso(raw["created_at"]),
        "version": int(raw["version"]),
    }


def post_state(raw) -> dict:
    """The API's representation of a post; a deleted post is only its id, version and the flag."""
    if raw.get("deleted"):
        return {"id": str(raw["_id"]), "version": int(raw["version"]), "deleted": True}
    return {
        "id": str(raw["_id"]),
        "user_id": str(raw["user_id"]),
        "title": raw["title"],
        "content": raw["content"],
        "like_count": int(raw["like_count"]),
        "dislike_count": int(raw["dislike_count"]),
        "created_at": iso(raw["created_at"]),
        "updated_at": iso(raw["updated_at"]),
        "version": int(raw["version"]),
    }


def post_reactions(state: dict) -> dict:
    """The counters view of a post (the like/dislike answers and GET /likes)."""
    return {
        "post_id": state["id"],
        "like_count": state["like_count"],
        "dislike_count": state["dislike_count"],
        "version": state["version"],
    }


STATE_BUILDERS = {USER: user_state, POST: post_state}


def outbox_entry(*, event_type: str, aggregate: str, state) -> dict:
    """A pending event as stored in the document's outbox. `state` holds raw document fields,
    or, inside a pipeline update, the `$field` references that copy them atomically. The
    current request id (the HTTP request's, or a command's) travels with it as a header; it
    cannot hold a "$" (cqrs_site/logs.py), so a pipeline update keeps it as text."""
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
    return entry


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    aggregate: str
    aggregate_id: str
    version: int
    occurred_at: str
    state: dict
    request_id: str | None = None  # sent as a header, not in the body

    @classmethod
    def from_outbox(cls, entry: dict) -> "Event":
        state = STATE_BUILDERS[entry["aggregate"]](entry["state"])
        return cls(
            event_id=entry["event_id"],
            type=entry["type"],
            aggregate=entry["aggregate"],
            aggregate_id=state["id"],
            version=state["version"],
            occurred_at=iso(entry["occurred_at"]),
            state=state,
            request_id=entry.get("request_id"),
        )

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


# What an event's body holds (the request id travels as a header), and the type of each.
BODY_FIELDS = (
    ("event_id", str),
    ("type", str),
    ("aggregate", str),
    ("aggregate_id", str),
    ("version", int),
    ("occurred_at", str),
    ("state", dict),
)


class EventInvalid(ValueError):
    """A message that is not a well-formed event: retrying cannot help, it is dead-lettered."""


def event_decode(payload: bytes | None) -> Event:
    try:
        data = orjson.loads(payload or b"")
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise EventInvalid(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventInvalid("not a JSON object")
    for name, kind in BODY_FIELDS:
        if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool):
            raise EventInvalid(f"field {name!r} missing or not {kind.__name__}")
    if data["type"] not in EVENT_TYPES.get(data["aggregate"], ()):
        raise EventInvalid(f"unknown event {data['aggregate']}/{data['type']}")
    state = data["state"]
    if state.get("id") != data["aggregate_id"] or state.get("version") != data["version"]:
        raise EventInvalid("state does not match the event's aggregate id and version")
    if data["version"] < 1:
        raise EventInvalid("version must be positive")
    return Event(**{name: data[name] for name, _kind in BODY_FIELDS})
