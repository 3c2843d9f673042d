"""What each write answers, as a function of the state it produced: status, body and headers.

The write views answer with these, and so does an Idempotency-Key's record when the answer is
rebuilt from a write's event after a crash (writes/idempotency.py), so the two are the same.
"""

from typing import NamedTuple

from cqrs_site.core.http import etag_for

from .aggregates import post_reactions


class Answer(NamedTuple):
    status: int
    body: dict
    headers: dict[str, str]


def user_created(state: dict) -> Answer:
    return Answer(201, state, {"ETag": etag_for(state["version"]), "Location": f"/api/users/{state['id']}"})


def post_created(state: dict) -> Answer:
    return Answer(201, state, {"ETag": etag_for(state["version"]), "Location": f"/api/posts/{state['id']}"})


def post_changed(state: dict) -> Answer:
    return Answer(200, state, {"ETag": etag_for(state["version"])})


def post_reacted(state: dict) -> Answer:
    return Answer(200, post_reactions(state), {"ETag": etag_for(state["version"])})


ANSWERS = {answer.__name__: answer for answer in (user_created, post_created, post_changed, post_reacted)}
