"""Write services: every change to a user or a post, used by the API and the admin alike.

Each write is one atomic MongoDB operation that changes the document, raises its `version`
and appends the state-carrying event to its outbox; the event is then published
(writes/outbox.py). Updates are aggregation pipelines so the event can carry the values the
update itself produced (the counters after `$inc`), with no read-modify-write race.
"""

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from cqrs_site.core.errors import Conflict, InvalidInput, NotFound

from .aggregates import POST_AGGREGATE, USER_AGGREGATE
from .changes import change_apply
from .documents import object_id
from .events import POST, POST_DELETED, POST_REACTED, POST_UPDATED, USER, outbox_entry, utc_now
from .outbox import outbox_publish
from .outcome import write_resolved

REACTION_COUNTERS = {"like": "like_count", "dislike": "dislike_count"}


class VersionConflict(Conflict):
    """The post has moved past the version(s) the caller expected; it is at `current_version`."""

    def __init__(self, message: str, *, fields: dict, current_version: int) -> None:
        super().__init__(message, fields=fields)
        self.current_version = current_version


def _publish(aggregate: str, document: dict) -> None:
    outbox_publish(aggregate=aggregate, aggregate_id=document["_id"], entries=document["outbox"][-1:])


def _insert(collection, document: dict) -> None:
    """Insert a new document; if MongoDB fails in flight, its own `_id` tells whether it landed."""
    write_resolved(collection, lambda: collection.insert_one(document), mark={"_id": document["_id"]}, written_at=None)


def user_document(*, username: str, now) -> dict:
    """A new user's MongoDB document, version 1, its outbox not yet added."""
    return {"_id": ObjectId(), "username": username, "created_at": now, "version": 1}


def post_document(*, author: ObjectId, title: str, content: str, now) -> dict:
    """A new post's MongoDB document, version 1, its outbox not yet added."""
    return {
        "_id": ObjectId(),
        "user_id": author,
        "title": title,
        "content": content,
        "like_count": 0,
        "dislike_count": 0,
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "deleted": False,
    }


def user_create(*, username: str) -> dict:
    """Create a user; Conflict when the username is taken."""
    document = user_document(username=username, now=utc_now())
    document["outbox"] = [outbox_entry(event_type=USER_AGGREGATE.created, aggregate=USER, state=dict(document))]
    try:
        _insert(USER_AGGREGATE.collection(), document)
    except DuplicateKeyError:
        raise Conflict(f"The username {username!r} is taken.", fields={"username": ["taken"]}) from None
    _publish(USER, document)
    return USER_AGGREGATE.state(document)


class _KnownUsers:
    """User ids this process has seen in MongoDB. A user is never deleted (the API has no such
    call, the admin shows users read-only), so a user once found stays found, and a post's
    author is looked up once per process, not once per post (a lookup is 0.6 ms of the
    embedded SecantusDB's CPU, a sixth of a create's). Ids not found are not remembered: the
    user may be created next. Bounded: when full, it starts again empty."""

    def __init__(self, most: int = 100_000) -> None:
        self.most = most
        self.ids: set[ObjectId] = set()

    def exists(self, user_id: ObjectId) -> bool:
        if user_id in self.ids:
            return True
        if USER_AGGREGATE.collection().find_one({"_id": user_id}, {"_id": 1}) is None:
            return False
        if len(self.ids) >= self.most:
            self.ids = set()
        self.ids.add(user_id)
        return True


known_users = _KnownUsers()


def post_create(*, user_id: str, title: str, content: str) -> dict:
    """Create a post by an existing user."""
    author = object_id(user_id)
    if author is None or not known_users.exists(author):
        raise InvalidInput("No user has this user_id.", fields={"user_id": ["unknown user"]})
    document = post_document(author=author, title=title, content=content, now=utc_now())
    document["outbox"] = [outbox_entry(event_type=POST_AGGREGATE.created, aggregate=POST, state=dict(document))]
    _insert(POST_AGGREGATE.collection(), document)
    _publish(POST, document)
    return POST_AGGREGATE.state(document)


def _post_change(post_id: str, event_type: str, changes: dict, expected_version: int | list[int] | None = None) -> dict:
    """Apply `changes` (aggregation expressions over the post as it was) to a live post, raise its
    version and append its event, all in one atomic update. NotFound for an unknown or deleted
    post; VersionConflict when `expected_version` is given (a version, or a list of them:
    If-Match's) and the post is at none of them (optimistic concurrency)."""
    oid = object_id(post_id)
    if oid is None:
        raise NotFound("No post has this id.")
    applies = {"deleted": False}
    if isinstance(expected_version, list):
        applies["version"] = {"$in": expected_version}
    elif expected_version is not None:
        applies["version"] = expected_version
    fields = {**changes, "version": {"$add": ["$version", 1]}, "updated_at": "$$NOW"}
    # The event's state is computed by the same atomic update: each field's new value. The event
    # holds exactly the state this update produced, whatever other writes did since, and stays in
    # the outbox until this request publishes it.
    state = {name: fields.get(name, f"${name}") for name in POST_AGGREGATE.fields}
    event = outbox_entry(event_type=event_type, aggregate=POST, state=state)
    fields["outbox"] = {"$concatArrays": [{"$ifNull": ["$outbox", []]}, [event]]}
    posts = POST_AGGREGATE.collection()
    entry = change_apply(posts, oid, applies=applies, fields=fields, event=event)
    if entry is not None:
        if "event_id" in entry:
            outbox_publish(aggregate=POST, aggregate_id=oid, entries=[entry])
        return POST_AGGREGATE.state(entry["state"])
    current = posts.find_one({"_id": oid, "deleted": False}, {"version": 1})
    if current is None:
        raise NotFound("No post has this id.")
    expected = " or ".join(map(str, expected_version)) if isinstance(expected_version, list) else expected_version
    raise VersionConflict(
        f"The post changed since version {expected or '(none given)'}; it is at version {current['version']}. "
        "Reload it and apply your change again.",
        fields={"version": [f"expected {expected or '(none)'}, found {current['version']}"]},
        current_version=current["version"],
    )


def post_update(
    *,
    post_id: str,
    title: str | None = None,
    content: str | None = None,
    expected_version: int | list[int] | None = None,
) -> dict:
    """Change a post's title and/or content; with `expected_version`, only if it is still there."""
    # $literal: a title such as "$content" must stay text, not become a field path.
    changes = {
        name: {"$literal": value} for name, value in (("title", title), ("content", content)) if value is not None
    }
    if not changes:
        raise InvalidInput("Send at least one of title, content.")
    return _post_change(post_id, POST_UPDATED, changes, expected_version)


def post_react(*, post_id: str, reaction: str) -> dict:
    """Count a like or a dislike. Concurrent reactions are never lost: the increment is atomic."""
    counter = REACTION_COUNTERS[reaction]
    return _post_change(post_id, POST_REACTED, {counter: {"$add": [f"${counter}", 1]}})


def post_delete(*, post_id: str, expected_version: int | list[int] | None = None) -> dict:
    """Delete a post. It stays in MongoDB as a versioned deletion, so the cache keeps a tombstone."""
    return _post_change(post_id, POST_DELETED, {"deleted": True}, expected_version)
