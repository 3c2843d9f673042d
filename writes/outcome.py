"""What a write answers when MongoDB fails while it is in flight: only what the server knows.

A connection that drops after the write was sent leaves its outcome unknown: the server may
have applied it (and journaled it) before it died, or not. `write_resolved` then asks MongoDB,
once it answers again and within WRITE_OUTCOME_SECONDS, whether the write landed, by a mark
the write leaves in the document (its event id in the outbox, or the new document's `_id`):
- found: the write landed, and the caller answers as if nothing had failed;
- not found, and the server that answers is a new process (its `hello` names another
  `topologyVersion.processId` than before the write) or the write was never sent (no server
  could be selected): it did not land, and never will: `NotApplied`, safe to retry;
- otherwise (the same process still runs and may yet apply it, or no answer in time):
  `OutcomeUnknown`, retry with the same Idempotency-Key.

An event younger than RELAY_GRACE_SECONDS leaves its outbox only through its own writer
(writes/outbox.py), so its absence means something only within that grace: past it, the answer
is `OutcomeUnknown` too.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError

from cqrs_site.core.errors import Unavailable
from cqrs_site.core.metrics import WRITE_OUTCOMES

from .events import utc_now

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Between the check and the relay's grace: clocks of two hosts may differ by this much.
CLOCK_MARGIN = timedelta(milliseconds=500)


class NotApplied(Unavailable):
    """MongoDB failed and the write is known not to have landed: retrying is safe. Its code is
    the API's for any dependency that was down with nothing done (clients already read it)."""

    code = "unavailable"
    default_message = "MongoDB is unavailable; the write was not applied. Retry later."


class OutcomeUnknown(Unavailable):
    """MongoDB failed with the write in flight, and whether it landed could not be established."""

    code = "outcome_unknown"
    default_message = (
        "MongoDB failed while the write was in flight, and whether it was applied could not be established. "
        "Retry with the same Idempotency-Key: it is applied at most once."
    )


class AppliedUnconfirmed(Unavailable):
    """The write landed, but MongoDB failed before its new state could be read back."""

    code = "applied_unconfirmed"
    default_message = (
        "The write was applied, but MongoDB failed before its new state could be read. "
        "Read the resource for its new version; do not send the write again."
    )


def write_resolved(
    collection: Collection, write: Callable[[], T], *, mark: dict, written_at: datetime | None
) -> T | None:
    """`write()`'s result; None when it failed in flight but landed (found by `mark`, a filter
    that matches the document only if the write landed). Raises NotApplied or OutcomeUnknown.

    `written_at`: when the write's event was made, for a mark that leaves the document after
    RELAY_GRACE_SECONDS (an outbox entry); None for one that stays (a new document's `_id`)."""
    before = _process_ids(collection)
    try:
        return write()
    except ServerSelectionTimeoutError:  # pymongo sent nothing (a retry's failure raises the first error)
        WRITE_OUTCOMES.labels("not_applied").inc()
        raise NotApplied() from None
    except ConnectionFailure as exc:
        logger.warning("MongoDB failed with a write in flight, finding out whether it landed: %s", exc)
        outcome = _outcome(collection, mark, before, written_at)
        WRITE_OUTCOMES.labels(outcome).inc()
        if outcome == "landed":
            return None
        raise (NotApplied if outcome == "not_applied" else OutcomeUnknown)() from exc


def read_back(read: Callable[[], T]) -> T:
    """A read of what a landed write made, tried until WRITE_OUTCOME_SECONDS pass; then
    AppliedUnconfirmed, never a claim that the write failed."""
    deadline = time.monotonic() + settings.WRITE_OUTCOME_SECONDS
    while True:
        try:
            return read()
        except ConnectionFailure as exc:
            if time.monotonic() >= deadline:
                WRITE_OUTCOMES.labels("applied_unconfirmed").inc()
                raise AppliedUnconfirmed() from exc
            time.sleep(0.1)


def _outcome(collection: Collection, mark: dict, before: dict, written_at: datetime | None) -> str:
    """landed, not_applied or unknown (see the module)."""
    deadline = time.monotonic() + settings.WRITE_OUTCOME_SECONDS
    if written_at is not None:
        grace_left = written_at + timedelta(seconds=settings.RELAY_GRACE_SECONDS) - CLOCK_MARGIN - utc_now()
        deadline = min(deadline, time.monotonic() + grace_left.total_seconds())
    while time.monotonic() < deadline:
        try:
            first = _process_id(collection)
            found = collection.find_one(mark, {"_id": 1}) is not None
            then = _process_id(collection)
        except PyMongoError:
            time.sleep(0.1)
            continue
        if found:
            return "landed"
        if time.monotonic() >= deadline:
            break
        address, process = first
        known = before.get(address)
        if first == then and known is not None and known != process:
            return "not_applied"  # what the old process had journaled is here; the rest died with it
        return "unknown"
    return "unknown"


def _process_ids(collection: Collection) -> dict:
    """Each known server's process id (its last `hello`'s topologyVersion), from the client's
    view of the topology: no round trip."""
    servers = collection.database.client.topology_description.server_descriptions()
    return {address: (server.topology_version or {}).get("processId") for address, server in servers.items()}


def _process_id(collection: Collection) -> tuple:
    """(address, process id) of the server that answers writes now."""
    client = collection.database.client
    hello = client.admin.command("hello")
    return client.address, (hello.get("topologyVersion") or {}).get("processId")
