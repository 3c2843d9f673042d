"""The cache inspector: sweeps every document's cache entries and feed places against MongoDB,
all the time, at a bounded rate, and repairs what is stale through the version fence.

It is the remedy that covers every way the cache can fall behind for good: a memory-only broker
that lost acknowledged events, a topic or a group's offsets deleted by mistake, a bug. Its
figures are the system's consistency, measured (as Uber's Cache Inspector and Meta's Polaris
do): of the cache writes MongoDB calls for, the share the cache holds, counted over those older
than the visibility bound (a difference younger than that is a write in flight, not judged; see
reads/consistency.py).

One sweep walks each collection by `_id` with one cursor (on the embedded SecantusDB, one
collection scan per sweep; a real MongoDB walks the `_id` index), INSPECTOR_BATCH_SIZE documents
at a time, at most INSPECTOR_DOCS_PER_SECOND. A sweep asked for (cqrs_site/core/sweeps.py: a
consumer or the relay found the broker lost data) starts at once and runs at full speed.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from itertools import islice

from cqrs_site.core.metrics import (
    INSPECTOR_CHECKED,
    INSPECTOR_CONSISTENCY,
    INSPECTOR_JUDGED,
    INSPECTOR_OLDEST_UNCHECKED,
    INSPECTOR_REPAIRED,
    INSPECTOR_SWEEP_SECONDS,
    INSPECTOR_SWEEPS,
)
from cqrs_site.core.sweeps import sweep_requested
from writes.aggregates import AGGREGATES, Aggregate

from .cache import cache_apply
from .consistency import compare, model_of, recheck

logger = logging.getLogger(__name__)


@dataclass
class Suspects:
    """What a batch found different, to look at again once the visibility bound has passed."""

    due: float
    aggregate: Aggregate
    ops: list
    versions: dict


@dataclass
class Sweep:
    requested: str | None  # the reason it was asked for, or None for a regular one
    started: float = field(default_factory=time.monotonic)
    consistent: int = 0
    stale: int = 0
    repaired: int = 0


class Inspector:
    def __init__(self, *, rate: float, bound: float, batch_size: int, min_sweep_seconds: float = 5.0) -> None:
        self.rate, self.bound, self.batch_size = rate, bound, batch_size
        self.min_sweep_seconds = min_sweep_seconds
        self.pending: list[Suspects] = []
        # Every entry was checked at or after this moment: the start of the last whole sweep.
        self.covered_since = time.monotonic()
        INSPECTOR_OLDEST_UNCHECKED.set_function(lambda: time.monotonic() - self.covered_since)
        INSPECTOR_CONSISTENCY.set(float("nan"))  # not measured yet

    def run(self, stop: threading.Event, *, sweeps: int | None = None) -> None:
        """Sweep until `stop` is set (or `sweeps` sweeps are done); each one regular, or at full
        speed when one was asked for. A regular sweep lasts at least INSPECTOR_MIN_SWEEP_SECONDS
        (a small database is not swept in a tight loop), listening for requests meanwhile."""
        request = None
        while not stop.is_set() and sweeps != 0:
            started = time.monotonic()
            request = self.sweep(stop, request or sweep_requested())
            sweeps = None if sweeps is None else sweeps - 1
            while request is None and sweeps != 0 and time.monotonic() - started < self.min_sweep_seconds:
                if stop.wait(0.2):
                    return
                request = sweep_requested()

    def sweep(self, stop: threading.Event, requested: str | None) -> str | None:
        """One sweep of every collection. Returns a request that came in while a regular sweep ran
        (the next sweep answers it, from the start, at full speed)."""
        current = Sweep(requested)
        if requested:
            logger.warning("sweeping the cache now, as asked: %s", requested)
        for aggregate in AGGREGATES.values():
            # Natural order, no sort: the stand-in (SecantusDB) sorts the whole collection first and
            # stalls every other operation meanwhile (137 ms against 46 ms at 6,000 posts, measured).
            cursor = aggregate.collection().find({}, dict.fromkeys(aggregate.fields, 1), batch_size=self.batch_size)
            while not stop.is_set():
                began = time.monotonic()
                raws = list(islice(cursor, self.batch_size))
                if not raws:
                    break
                self._check(current, aggregate, raws)
                self._settle(current, due_only=True)
                if not requested:
                    interrupt = sweep_requested()
                    if interrupt:
                        return interrupt
                    stop.wait(max(0.0, len(raws) / self.rate - (time.monotonic() - began)))
            cursor.close()
        self._settle(current, due_only=False, stop=stop)
        if stop.is_set():
            return None
        self._finish(current)
        return None

    def _check(self, current: Sweep, aggregate: Aggregate, raws: list[dict]) -> None:
        judged, versions = compare(aggregate, raws)
        suspects = []
        for op, outcome in judged:
            model = model_of(op)
            if outcome != "unheld":
                INSPECTOR_CHECKED.labels(model).inc()
            if outcome == "consistent":
                INSPECTOR_JUDGED.labels(model, "consistent").inc()
                current.consistent += 1
            elif outcome == "stale":
                suspects.append(op)
        if suspects:
            self.pending.append(Suspects(time.monotonic() + self.bound, aggregate, suspects, versions))

    def _settle(self, current: Sweep, *, due_only: bool, stop: threading.Event | None = None) -> None:
        """Look again at the suspects whose bound has passed (all of them, waiting if need be)."""
        while self.pending:
            first = self.pending[0]
            wait = first.due - time.monotonic()
            if wait > 0:
                if due_only or (stop is not None and stop.wait(wait)):
                    return
            self.pending.pop(0)
            stale, _in_flight = recheck(first.aggregate, first.ops, first.versions)
            if not stale:
                continue
            for op in stale:
                INSPECTOR_JUDGED.labels(model_of(op), "stale").inc()
            repaired = sum(cache_apply(stale, writer="repair", rewrite_same_version=True))
            current.stale += len(stale)
            current.repaired += repaired
            INSPECTOR_REPAIRED.inc(repaired)
            logger.warning("repaired %d of %d stale cache writes (e.g. %s)", repaired, len(stale), stale[0])

    def _finish(self, current: Sweep) -> None:
        duration = time.monotonic() - current.started
        self.covered_since = current.started
        judged = current.consistent + current.stale
        if judged:
            INSPECTOR_CONSISTENCY.set(current.consistent / judged)
        INSPECTOR_SWEEPS.labels("requested" if current.requested else "regular").inc()
        INSPECTOR_SWEEP_SECONDS.set(duration)
        logger.info(
            "sweep done in %.1fs: %d consistent, %d stale, %d repaired",
            duration,
            current.consistent,
            current.stale,
            current.repaired,
            extra={"requested": current.requested},
        )
