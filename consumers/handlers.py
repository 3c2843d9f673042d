"""Event handlers. Each has two steps: `decode` (pure; a failure is a poison message) and
`apply` (talks to a server; a failure is retried and the offsets wait)."""

import time
from datetime import datetime

from cqrs_site.core.metrics import WRITE_TO_APPLY_SECONDS
from reads.cache import cache_apply
from reads.models import ops_for
from writes.aggregates import REPLAY_TYPES, event_decode
from writes.events import Event


class CacheProjection:
    """Keeps the read models (reads/models.py) equal to the newest state each event carries."""

    def decode(self, payload: bytes | None) -> Event:
        return event_decode(payload)

    def apply(self, events: list[Event]) -> None:
        """One script call for the batch. Events carry whole states, so per document only the
        newest matters; what it writes is what any of the batch's events of it could change."""
        newest: dict[tuple[str, str], Event] = {}
        kinds: dict[tuple[str, str], set[str]] = {}
        for event in events:
            document = (event.aggregate, event.aggregate_id)
            held = newest.get(document)
            if held is None or event.version > held.version:
                newest[document] = event
            kinds.setdefault(document, set()).add(event.type)
        ops = [
            op
            for document, event in newest.items()
            for op in ops_for(event.aggregate, event.state, frozenset(kinds[document]))
        ]
        if ops:
            cache_apply(ops, writer="consumer")
        applied_at = time.time()
        for event in events:
            # A replay's occurred_at is when the operator ran it, not a write's commit.
            if event.type not in REPLAY_TYPES:
                committed_at = datetime.fromisoformat(event.occurred_at).timestamp()
                WRITE_TO_APPLY_SECONDS.observe(max(applied_at - committed_at, 0.0))
