import json
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from cqrs_site.core.logs import request_id_clear
from writes.aggregates import event_decode, event_from_outbox, post_state
from writes.events import POST, POST_REACTED, EventInvalid, outbox_entry

RAW_POST = {
    "_id": ObjectId("6b07f2915351253b0a29167f"),
    "user_id": ObjectId("6b07f28fde34f3730a2d5d92"),
    "title": "hello",
    "content": "world",
    "like_count": 3,
    "dislike_count": 1,
    "created_at": datetime(2026, 11, 26, 8, 0, 0, 123000, tzinfo=UTC),
    "updated_at": datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC),
    "version": 7,
    "deleted": False,
}


def test_an_outbox_entry_encodes_to_an_event_that_decodes_to_itself():
    request_id_clear()  # a request id travels as a header, not in the body (a test before may leave one)
    event = event_from_outbox(outbox_entry(event_type=POST_REACTED, aggregate=POST, state=RAW_POST))
    decoded = event_decode(event.encode())
    assert decoded == event
    assert decoded.aggregate_id == "6b07f2915351253b0a29167f"
    assert decoded.version == 7
    assert decoded.state["created_at"] == "2026-11-26T08:00:00.123Z"


def test_a_deleted_post_state_is_only_its_id_version_and_flag():
    assert post_state({**RAW_POST, "deleted": True}) == {"id": str(RAW_POST["_id"]), "version": 7, "deleted": True}


def valid_event() -> dict:
    return json.loads(event_from_outbox(outbox_entry(event_type=POST_REACTED, aggregate=POST, state=RAW_POST)).encode())


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({**valid_event(), "version": "7"}).encode(),
        json.dumps({**valid_event(), "version": True}).encode(),
        json.dumps({**valid_event(), "type": "PostExploded"}).encode(),
        json.dumps({**valid_event(), "aggregate": "comment"}).encode(),
        json.dumps({**valid_event(), "aggregate_id": "someone-else"}).encode(),
        json.dumps({**valid_event(), "version": 8}).encode(),
        json.dumps({k: v for k, v in valid_event().items() if k != "state"}).encode(),
        json.dumps({**valid_event(), "occurred_at": "yesterday"}).encode(),
        json.dumps({**valid_event(), "state": None}).encode(),
    ],
)
def test_malformed_events_are_refused(payload):
    with pytest.raises(EventInvalid):
        event_decode(payload)
