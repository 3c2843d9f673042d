"""MongoDB documents: the store of record. Leaf module (mongoengine and stdlib only).

Every aggregate carries `version`, raised by every write in the same atomic operation, and an
`outbox` of events not yet acknowledged by the broker (see writes/outbox.py).
"""

import mongoengine as me
from bson import ObjectId
from bson.errors import InvalidId

MONGO_ALIAS = "default"


def mongo_connect(uri: str, **options) -> None:
    """Register the MongoDB connection. No socket opens until first use, so this is fork-safe."""
    me.connect(host=uri, alias=MONGO_ALIAS, connect=False, tz_aware=True, uuidRepresentation="standard", **options)


def object_id(value: str) -> ObjectId | None:
    """The ObjectId an opaque API id stands for, or None when it cannot be one."""
    if not isinstance(value, str) or len(value) != 24:
        return None
    try:
        return ObjectId(value)
    except InvalidId:
        return None


class User(me.Document):
    meta = {
        "collection": "users",
        "indexes": [{"fields": ["username"], "unique": True}, {"fields": ["outbox.occurred_at"]}],
        "auto_create_index": False,
    }

    username = me.StringField(required=True, max_length=50)
    created_at = me.DateTimeField(required=True)
    version = me.IntField(required=True, min_value=1)
    outbox = me.ListField(me.DictField())

    def __str__(self) -> str:
        return self.username


class Post(me.Document):
    meta = {
        "collection": "posts",
        "indexes": [
            # The feeds' MongoDB reads (fills, deeper pages), keyset-paginated: a user's posts
            # newest first, all live posts newest first, and the most liked first.
            {"fields": ["user_id", "-created_at", "-_id"]},
            {"fields": ["deleted", "-created_at", "-_id"]},
            {"fields": ["deleted", "-like_count", "-_id"]},
            # The relay's scan for events left pending.
            {"fields": ["outbox.occurred_at"]},
        ],
        "auto_create_index": False,
    }

    user_id = me.ObjectIdField(required=True)
    title = me.StringField(required=True, max_length=200)
    content = me.StringField(required=True, max_length=10_000)
    like_count = me.IntField(required=True, default=0, min_value=0)
    dislike_count = me.IntField(required=True, default=0, min_value=0)
    created_at = me.DateTimeField(required=True)
    updated_at = me.DateTimeField(required=True)
    version = me.IntField(required=True, min_value=1)
    # Deletion is a versioned state, not a removal: the event and the cache tombstone need it.
    deleted = me.BooleanField(required=True, default=False)
    outbox = me.ListField(me.DictField())

    def __str__(self) -> str:
        return self.title


# Idempotency-Key records (writes/idempotency.py) are kept this long, then MongoDB's TTL
# monitor removes them (within a minute or so after; lookups ignore older ones meanwhile).
IDEMPOTENCY_KEY_SECONDS = 24 * 3600


class IdempotencyRecord(me.Document):
    """The first answer to a POST sent with an Idempotency-Key, stored in the same transaction
    as the POST's effect. `_id` is "<user id>:<key>"."""

    meta = {
        "collection": "idempotency_keys",
        "indexes": [{"fields": ["created_at"], "expireAfterSeconds": IDEMPOTENCY_KEY_SECONDS}],
        "auto_create_index": False,
    }

    id = me.StringField(primary_key=True)
    fingerprint = me.StringField(required=True)  # the request's method, path and body, hashed
    status = me.IntField(required=True)
    body = me.BinaryField(required=True)
    headers = me.DictField()
    created_at = me.DateTimeField(required=True)


def ensure_indexes() -> None:
    User.ensure_indexes()
    Post.ensure_indexes()
    IdempotencyRecord.ensure_indexes()
