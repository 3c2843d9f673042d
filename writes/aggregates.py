"""The aggregates, each declared once. Leaf module (mongoengine, stdlib, bson, msgspec and the
base layer only), so the read side may import it.

A Document (writes/documents.py) declares an aggregate's fields and their rules (max_length,
min_value); everything else is derived from it here, and every part of the system reads it
from here:
- the fields its state is built from: the MongoDB projection of reads and sweeps, and the
  `$field` references a pipeline update copies into its event (writes/services.py);
- its state, which is the API's representation (the write answers, the read fallback, the
  events and so the consumer all use it, so they cannot disagree);
- its event types and the one an operator's replay publishes;
- the limits the API's serializers and the admin's forms enforce.

Adding a field to a post is a field on the Document; its place in the state, the projections
and the events follows.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import mongoengine as me
import msgspec

from .documents import Post, User
from .events import (
    POST,
    POST_CREATED,
    POST_DELETED,
    POST_REACTED,
    POST_REPLAYED,
    POST_UPDATED,
    USER,
    USER_CREATED,
    USER_REPLAYED,
    Event,
    EventInvalid,
    iso,
)

# Stored, never shown: the pending events, and the deletion flag (a deleted post's state is
# only its id, its version and `"deleted": true`).
HIDDEN = frozenset({"outbox", "deleted"})


def _converter(document_field) -> Callable:
    if isinstance(document_field, me.ObjectIdField):
        return str
    if isinstance(document_field, me.DateTimeField):
        return iso
    if isinstance(document_field, me.IntField):
        return int
    return lambda value: value


@dataclass(frozen=True)
class Aggregate:
    name: str
    document: type[me.Document]
    event_types: frozenset[str]
    created: str  # the event of its creation
    replayed: str  # the event `replay_events` publishes: its current state, not a change
    # (API name, MongoDB field, converter) of every shown field, in the Document's order.
    _shown: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shown = []
        for name in self.document._fields_ordered:
            if name in HIDDEN:
                continue
            stored = "_id" if name == "id" else name
            shown.append((name, stored, _converter(self.document._fields[name])))
        object.__setattr__(self, "_shown", tuple(shown))

    @property
    def shown(self) -> tuple[tuple[str, me.fields.BaseField], ...]:
        """(API name, Document field) of every field its state shows, in order (the schema's)."""
        return tuple((name, self.document._fields[name]) for name, _stored, _convert in self._shown)

    @property
    def fields(self) -> tuple[str, ...]:
        """The MongoDB fields its state is built from (a projection; a pipeline's `$field`s)."""
        stored = tuple(stored for _name, stored, _convert in self._shown)
        return (*stored, "deleted") if "deleted" in self.document._fields else stored

    def collection(self):
        return self.document._get_collection()

    def state(self, raw: Mapping) -> dict:
        """The API's representation, from a MongoDB document or an event's stored state."""
        if raw.get("deleted"):
            return {"id": str(raw["_id"]), "version": int(raw["version"]), "deleted": True}
        return {name: convert(raw[stored]) for name, stored, convert in self._shown}

    def rules(self, name: str) -> dict:
        """The Document's rules for one field, as keyword arguments (max_length, min_value)."""
        document_field = self.document._fields[name]
        rules = {"max_length": getattr(document_field, "max_length", None)}
        rules["min_value"] = getattr(document_field, "min_value", None)
        return {key: value for key, value in rules.items() if value is not None}


USER_AGGREGATE = Aggregate(
    name=USER,
    document=User,
    event_types=frozenset({USER_CREATED, USER_REPLAYED}),
    created=USER_CREATED,
    replayed=USER_REPLAYED,
)
POST_AGGREGATE = Aggregate(
    name=POST,
    document=Post,
    event_types=frozenset({POST_CREATED, POST_UPDATED, POST_REACTED, POST_DELETED, POST_REPLAYED}),
    created=POST_CREATED,
    replayed=POST_REPLAYED,
)
AGGREGATES: dict[str, Aggregate] = {USER: USER_AGGREGATE, POST: POST_AGGREGATE}
REPLAY_TYPES = frozenset(aggregate.replayed for aggregate in AGGREGATES.values())


def user_state(raw: Mapping) -> dict:
    return USER_AGGREGATE.state(raw)


def post_state(raw: Mapping) -> dict:
    return POST_AGGREGATE.state(raw)


def post_reactions(state: dict) -> dict:
    """The counters view of a post (the like/dislike answers and GET /likes)."""
    return {
        "post_id": state["id"],
        "like_count": state["like_count"],
        "dislike_count": state["dislike_count"],
        "version": state["version"],
    }


def event_from_outbox(entry: Mapping) -> Event:
    """The event an outbox entry stands for (its state turned into the API's representation)."""
    state = AGGREGATES[entry["aggregate"]].state(entry["state"])
    return Event(
        event_id=entry["event_id"],
        type=entry["type"],
        aggregate=entry["aggregate"],
        aggregate_id=state["id"],
        version=state["version"],
        occurred_at=iso(entry["occurred_at"]),
        state=state,
        request_id=entry.get("request_id"),
    )


# Exact types: msgspec refuses a bool where an int belongs, a float for an int, a missing field.
_EVENT_BODY = msgspec.json.Decoder(Event)


def event_decode(payload: bytes | None) -> Event:
    """An event from a message's body; EventInvalid (a poison message) if it is not one.
    (On the consumer's hot path: decoded and type-checked in one pass by msgspec.)"""
    try:
        event = _EVENT_BODY.decode(payload or b"")
    except msgspec.ValidationError as exc:
        raise EventInvalid(f"not an event: {exc}") from None
    except msgspec.DecodeError as exc:  # also invalid UTF-8
        raise EventInvalid(f"not JSON: {exc}") from None
    aggregate = AGGREGATES.get(event.aggregate)
    if aggregate is None or event.type not in aggregate.event_types:
        raise EventInvalid(f"unknown event {event.aggregate}/{event.type}")
    if event.state.get("id") != event.aggregate_id or event.state.get("version") != event.version:
        raise EventInvalid("state does not match the event's aggregate id and version")
    if event.version < 1:
        raise EventInvalid("version must be positive")
    try:
        datetime.fromisoformat(event.occurred_at)
    except ValueError:
        raise EventInvalid(f"occurred_at is not a time: {event.occurred_at!r}") from None
    return event
