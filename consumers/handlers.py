"""Event handlers. Each has two steps: `decode` (pure; a failure is a poison message) and
`apply` (talks to a server; a failure is retried and the offsets wait)."""

from reads.cache import cache_put
from reads.projections import Entry, entries_for
from writes.events import Event, event_decode


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
            cache_put(newest.values())
