"""Event handlers. Each has two steps: `decode` (pure; a failure is a poison message) and
`apply` (talks to a server; a failure is retried and the offsets wait)."""

import time
from datetime import datetime

from cqrs_site.core.metrics import WRITE_TO_APPLY_SECONDS
from reads.cache import cache_put
from reads.projections import Entry, entries_for
from writes.aggregates import REPLAY_TYPES, event_decode
from writes.events import Event


class CacheProjection:
    """Keeps the read cache equal to the newest state each event carries."""

    def decode(self, payload: bytes | None) -> tuple[Event, list[Entry]]:
        event = event_decode(payload)
        return event, entries_for(event.aggregate, event.state)

    def apply(self, items: list[tuple[Event, list[Entry]]]) -> None:
        """One Redis pipeline for the batch, keeping per key only the newest entry in it."""
        newest: dict[str, Entry] = {}
        for _event, entries in items:
            for entry in entries:
                held = newest.get(entry.key)
                if held is None or entry.version > held.version:
                    newest[entry.key] = entry
        if newest:
            cache_put(newest.values(), writer="consumer")
        applied_at = time.time()
        for event, _entries in items:
            # A replay's occurred_at is when the operator ran it, not a write's commit.
            if event.type not in REPLAY_TYPES:
                committed_at = datetime.fromisoformat(event.occurred_at).timestamp()
                WRITE_TO_APPLY_SECONDS.observe(max(applied_at - committed_at, 0.0))
