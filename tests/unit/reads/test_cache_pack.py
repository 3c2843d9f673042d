"""The consumer's packer (cache_pack_states) against the fills' way (cache_pack of ops_for): the
same script calls, byte for byte, for every kind of document and event."""

import random

import msgspec
import pytest

from reads.cache import FIELDS_PER_WRITE, cache_pack, cache_pack_states
from reads.models import ops_for
from writes.events import (
    POST,
    POST_CREATED,
    POST_DELETED,
    POST_REACTED,
    POST_REPLAYED,
    POST_UPDATED,
    USER,
    USER_CREATED,
)

POST_STATE = {
    "id": "p1",
    "user_id": "u1",
    "title": "t",
    "content": 'ünïcode "quoted"',
    "like_count": 7,
    "dislike_count": 2,
    "created_at": "2026-11-26T08:00:00.000Z",
    "updated_at": "2026-11-26T08:00:00.000Z",
    "version": 9,
    "deleted": False,
}
USER_STATE = {"id": "u1", "username": "al", "created_at": "2026-11-26T08:00:00.000Z", "version": 1}

DOCUMENTS = [
    (USER, USER_STATE, frozenset({USER_CREATED})),
    (USER, USER_STATE, None),
    (POST, POST_STATE, frozenset({POST_CREATED})),
    (POST, {**POST_STATE, "id": "p2", "like_count": 8}, frozenset({POST_REACTED})),
    (POST, {**POST_STATE, "id": "p3"}, frozenset({POST_UPDATED})),
    (POST, {**POST_STATE, "id": "p4"}, frozenset({POST_UPDATED, POST_REACTED})),
    (POST, {**POST_STATE, "id": "p5"}, frozenset({POST_REPLAYED})),
    (POST, {**POST_STATE, "id": "p6"}, None),
    (POST, {"id": "p7", "version": 12, "deleted": True}, frozenset({POST_DELETED, POST_REACTED})),
    (POST, {"id": "p8", "version": 0, "deleted": True}, None),
]


def packed_by_ops(documents, most):
    """The calls as the consumer made them before: each document's ops_for, at most `most`
    writes a call, a document's all in one."""
    calls, ops = [], []
    for aggregate, state, event_types in documents:
        writes = ops_for(aggregate, state, event_types)
        if ops and len(ops) + len(writes) > most:
            calls.append(("", cache_pack(ops)))
            ops = []
        ops += writes
    if ops:
        calls.append(("", cache_pack(ops)))
    return calls


@pytest.mark.parametrize("most", [1, 3, 4, 1000])
def test_packing_states_makes_the_calls_packing_their_ops_makes(most):
    random.seed(1)  # the live entries' jittered lifetimes: one draw each, in the same order
    expected = packed_by_ops(DOCUMENTS, most)
    random.seed(1)
    assert cache_pack_states(DOCUMENTS, most=most) == expected


def test_a_document_never_spans_two_calls():
    calls = cache_pack_states(DOCUMENTS, most=4)
    writes = [len(msgspec.msgpack.decode(call)) // FIELDS_PER_WRITE for _route, call in calls]
    assert sum(writes) == sum(len(ops_for(*document)) for document in DOCUMENTS)
    # A post created writes five (two entries, three places): more than four, alone in its call.
    assert 5 in writes and all(count <= 4 for count in writes if count != 5)


def test_an_unknown_aggregate_is_refused():
    with pytest.raises(ValueError, match="no read model"):
        cache_pack_states([("comment", {"id": "c1", "version": 1}, None)], most=10)
    assert cache_pack_states([], most=10) == []
