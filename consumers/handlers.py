"""Event handlers. Each has four steps: `decode` (pure; a failure is a poison message),
`prepare` (pure: a batch of events into what to write), `write` (talks to a server; a failure
is retried and the offsets wait) and `written` (the batch's metrics, once it is applied). The
runner prepares the next batch while the one before is being written, on a thread that does
nothing else (so it holds Python's GIL as little as it can)."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from cqrs_site.core.metrics import WRITE_TO_APPLY_SECONDS, observe_many
from cqrs_site.core.redis_client import node_of
from reads.cache import cache_apply_packed, cache_pack_states, count_writes
from writes.aggregates import REPLAY_TYPES, event_decode
from writes.events import Event


@dataclass(frozen=True, slots=True)
class CacheWrites:
    """A batch's cache writes, packed for the script (one call each, in order), and when each
    of its events (replays aside) was committed."""

    calls: list[tuple[str, bytes]]  # (the key routing it on a cluster, or '', the packed writes)
    committed_at: list[float]


class CacheProjection:
    """Keeps the read models (reads/models.py) equal to the newest state each event carries."""

    def decode(self, payload: bytes | None) -> Event:
        return event_decode(payload)

    def prepare(self, events: list[Event]) -> CacheWrites:
        """Events carry whole states, so per document only the newest matters; what it writes
        is what any of the batch's events of it could change."""
        newest: dict[tuple[str, str], Event] = {}
        kinds: dict[tuple[str, str], set[str]] = {}
        for event in events:
            document = (event.aggregate, event.aggregate_id)
            held = newest.get(document)
            if held is None or event.version > held.version:
                newest[document] = event
            kinds.setdefault(document, set()).add(event.type)
        calls = cache_pack_states(
            ((event.aggregate, event.state, frozenset(kinds[document])) for document, event in newest.items()),
            most=settings.CONSUMER_WRITES_PER_CALL,
        )
        # A replay's occurred_at is when the operator ran it, not a write's commit.
        committed_at = [
            datetime.fromisoformat(event.occurred_at).timestamp() for event in events if event.type not in REPLAY_TYPES
        ]
        return CacheWrites(calls, committed_at)

    def write(self, writes: CacheWrites) -> tuple[list[int], float]:
        """The batch's script calls, in order: their results, and when the last was applied. A
        failure retries them all; those applied already are refused by their fences. On a
        cluster, each node's calls in order, the nodes in parallel."""
        if len({route for route, _ in writes.calls}) > 1:
            return _write_per_node(writes.calls), time.time()
        results = []
        for route, packed in writes.calls:
            results += cache_apply_packed(packed, route)
        return results, time.time()

    def written(self, writes: CacheWrites, outcome: tuple[list[int], float]) -> None:
        """Count the batch's cache writes and how long its events took from commit to cache."""
        results, applied_at = outcome
        count_writes("consumer", results)
        observe_many(
            WRITE_TO_APPLY_SECONDS, [max(applied_at - committed_at, 0.0) for committed_at in writes.committed_at]
        )


_nodes_pool: ThreadPoolExecutor | None = None


def _write_per_node(calls: list[tuple[str, bytes]]) -> list[int]:
    """A cluster's calls, each node's in order on a thread of its own: the nodes apply them at
    once (issue 34 measured a batch at 1.3-1.5x one server's time so, 2x one node after another)."""
    global _nodes_pool
    by_node: dict[str, list[tuple[str, bytes]]] = {}
    for route, packed in calls:
        by_node.setdefault(node_of(route), []).append((route, packed))
    if _nodes_pool is None:
        _nodes_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cache-node")

    def apply(node_calls):
        return [result for route, packed in node_calls for result in cache_apply_packed(packed, route)]

    return [result for results in _nodes_pool.map(apply, by_node.values()) for result in results]
