"""Idempotency-Key on every POST: a POST retried after a timeout has one effect.

A client sends `Idempotency-Key: <key>` (1 to 255 visible ASCII characters, new for each
operation: a UUID is the usual choice). Keys belong to the token's user, so two clients never
collide. For 24 hours (IDEMPOTENCY_KEY_SECONDS):

- the same key with the same request (method, path and body) replays the first answer, its
  status, body, ETag and Location, marked `Idempotent-Replayed: true`, with no second effect;
- the same key with another request answers 422;
- a duplicate sent while the first is still running waits for its answer (409 with
  Retry-After if it takes over WAIT_SECONDS).

How, without a multi-document transaction (the embedded SecantusDB wedges under concurrent
ones, measured; real MongoDB would need a replica set):

1. The first request inserts the key's record, `pending`, holding a lease (LEASE_SECONDS). A
   duplicate finds it (the unique `_id`) and waits for it to be `done`.
2. It makes its write, whose outbox entry names the record (writes/events.py), in the same
   atomic update as the write itself.
3. It stores its answer in the record: `done`.

A crash between 2 and 3 leaves the record pending and the write made. The relay, before it
sends an outbox entry that names a pending record, completes the record from the entry's state
(the answer is a function of it: writes/answers.py). Once the lease has run out, a retry takes
the record over and looks for an entry naming it: found, it completes the record from it; not
found while the record is still pending, the write was never made (whoever removes such an
entry completes the record first), and it makes it. The lease outlasts any MongoDB call of the
crashed request (socket timeout 10 s), so a write cannot land after it.
Only a success is recorded: a 4xx or 5xx had no effect, so the record is removed and a retry
runs afresh.
"""

import functools
import hashlib
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

from pymongo.errors import DuplicateKeyError, PyMongoError
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from cqrs_site.core.errors import ApiError, Conflict, InvalidInput, Unprocessable

from .aggregates import AGGREGATES
from .answers import ANSWERS
from .documents import IDEMPOTENCY_KEY_SECONDS, IdempotencyRecord
from .events import idempotency_record
from .outcome import AppliedUnconfirmed, OutcomeUnknown

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_FORM = re.compile(r"[\x21-\x7e]{1,255}\Z")
WAIT_SECONDS = 10.0
LEASE_SECONDS = 60.0
PENDING, DONE = "pending", "done"


class InProgress(Conflict):
    code = "in_progress"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def fingerprint(request) -> str:
    """What makes two requests the same one: method, path and body (as JSON, keys sorted)."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def idempotent(answer):
    """Decorator for an APIView's `post` whose answer is `answer(state)`, `answer` being one of
    writes/answers.py (see the module's docstring)."""
    return functools.partial(_idempotent, answer.__name__)


def _idempotent(answer: str, handler):
    @functools.wraps(handler)
    def post(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not KEY_FORM.match(key):
            raise InvalidInput(
                f"{HEADER} must be 1 to 255 visible ASCII characters (a UUID, for example).",
                fields={HEADER: ["malformed"]},
            )
        record_id, digest, owner = f"{request.user.pk}:{key}", fingerprint(request), uuid.uuid4().hex
        claimed = _claim(record_id, digest, owner)
        if isinstance(claimed, Response):
            return claimed
        token = idempotency_record.set({"record": record_id, "answer": answer})
        try:
            response = handler(view, request, *args, **kwargs)
        except (OutcomeUnknown, AppliedUnconfirmed):
            _settle(record_id)  # it may have landed: never a fresh start for a retry
            raise
        except (ApiError, APIException):
            # Refused before anything was written (input, a missing post, a taken name).
            _records().delete_one({"_id": record_id, "owner": owner, "state": PENDING})
            raise
        except BaseException:
            _release(record_id, owner)
            raise
        finally:
            idempotency_record.reset(token)
        try:
            _complete(record_id, response.status_code, response.data, _kept_headers(response), owner=owner)
        except PyMongoError as exc:  # the write publishing its event completed the record first
            logger.warning("the answer of %s was not stored in its record: %s", record_id, exc)
        return response

    return post


def record_complete_from_entry(entry: dict) -> None:
    """Called by whoever removes an outbox entry that names a record (the relay), first: store
    the answer its write gave, if the record is still pending."""
    _complete_from_entry(entry["idempotency"]["record"], entry)


# --- the record ---------------------------------------------------------------------------------


def _records():
    return IdempotencyRecord._get_collection()


def _oldest_kept() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=IDEMPOTENCY_KEY_SECONDS)


def _claim(record_id: str, digest: str, owner: str) -> Response | None:
    """Insert the pending record (None: go ahead), or answer from an existing one: its replay,
    422, or 409 after waiting; or take over one whose owner's lease has run out."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        now = datetime.now(UTC)
        # A record past its 24 hours that MongoDB's TTL monitor has not removed yet makes way.
        _records().delete_one({"_id": record_id, "created_at": {"$lte": _oldest_kept()}})
        try:
            _records().insert_one(
                {
                    "_id": record_id,
                    "fingerprint": digest,
                    "state": PENDING,
                    "owner": owner,
                    "lease_until": now + timedelta(seconds=LEASE_SECONDS),
                    "created_at": now,
                }
            )
            return None
        except DuplicateKeyError:
            record = _records().find_one({"_id": record_id})
        if record is None:
            continue  # removed meanwhile (its request failed, or it expired): try again
        if record["fingerprint"] != digest:
            raise Unprocessable(
                f"This {HEADER} was used for another request (another path or body) in the last 24 hours; "
                "use a new key for a new request.",
                fields={HEADER: ["reused with another request"]},
            )
        if record["state"] == DONE:
            return _replay(record)
        if record["lease_until"].replace(tzinfo=UTC) < now and _take_over(record, owner):
            written = _written(record_id)
            if written is not None:
                return _replay(written)
            return None  # the crashed owner never wrote: this request does
        if time.monotonic() > deadline:
            raise InProgress(f"A request with this {HEADER} is still being processed; retry it shortly.")
        time.sleep(0.02)


def _take_over(record: dict, owner: str) -> bool:
    lease = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    taken = _records().update_one(
        {"_id": record["_id"], "owner": record["owner"], "state": PENDING},
        {"$set": {"owner": owner, "lease_until": lease}},
    )
    return taken.modified_count == 1


def _written(record_id: str) -> dict | None:
    """The record, done, if the write it stands for was made (its outbox entry, still there,
    gives the answer; or whoever removed the entry stored it); None if it was not."""
    for aggregate in AGGREGATES.values():
        document = aggregate.collection().find_one(
            {"outbox.idempotency.record": record_id},
            {"outbox": {"$elemMatch": {"idempotency.record": record_id}}},
        )
        if document and document.get("outbox"):
            _complete_from_entry(record_id, document["outbox"][0])
            break
    record = _records().find_one({"_id": record_id})
    return record if record is not None and record["state"] == DONE else None


def _settle(record_id: str) -> None:
    """A write whose outcome is unknown, or unconfirmed: its record keeps the write's answer if it
    is found; otherwise it stays pending, and a retry takes it over once the lease is out and
    looks again (a write still in flight can land until then)."""
    try:
        _written(record_id)
    except PyMongoError:
        pass


def _release(record_id: str, owner: str) -> None:
    """The request failed unexpectedly: remove its pending record, so a retry runs afresh,
    unless its write was made (MongoDB gone after it, before the answer): then the record keeps
    that write's answer. If MongoDB cannot tell now, a retry finds out once the lease is over."""
    try:
        if _written(record_id) is None:
            _records().delete_one({"_id": record_id, "owner": owner, "state": PENDING})
    except PyMongoError:
        pass


def _kept_headers(response: Response) -> dict[str, str]:
    return {name: response[name] for name in ("ETag", "Location") if response.has_header(name)}


def _complete(record_id: str, status: int, data, headers: dict, *, owner: str | None = None) -> None:
    """Store the answer: `done`. Conditional on the owner (the request's own completion), or on
    the record being pending (a completion from the write's entry)."""
    match = {"_id": record_id, "state": PENDING}
    if owner is not None:
        match["owner"] = owner
    done = {"state": DONE, "status": status, "body": JSONRenderer().render(data), "headers": headers}
    _records().update_one(match, {"$set": done})


def _complete_from_entry(record_id: str, entry: dict) -> None:
    state = AGGREGATES[entry["aggregate"]].state(entry["state"])
    answer = ANSWERS[entry["idempotency"]["answer"]](state)
    _complete(record_id, answer.status, answer.body, answer.headers)


def _replay(record: dict) -> Response:
    response = Response(json.loads(record["body"]), status=record["status"], headers=record.get("headers") or {})
    response[REPLAYED] = "true"
    return response
