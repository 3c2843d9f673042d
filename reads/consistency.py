"""The consistency inspector and the cache warmer: MongoDB (the record) against Redis (the cache).

Both stream MongoDB in batches and talk to Redis one pipeline per batch, so 100,000 documents
cost memory for one batch, not for the collection.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from bson import ObjectId

from cqrs_site.core.codec import entry_pattern, key_parse
from cqrs_site.core.redis_client import redis_client
from writes.aggregates import AGGREGATES
from writes.documents import object_id

from .cache import cache_get_many, cache_put, decode
from .projections import Entry, absent_entries, entries_for

BATCH = 500


@dataclass
class Report:
    documents: int = 0
    consistent: int = 0  # the cache holds exactly what MongoDB has
    stale: int = 0  # the cache holds an older version, or other bytes at the same version
    missing: int = 0  # not cached: the next read fills it (not an error)
    orphaned: int = 0  # cached, but MongoDB has no such document
    repaired: int = 0
    stale_keys: list[str] = field(default_factory=list)

    @property
    def stale_left(self) -> int:
        return self.stale - self.repaired

    def as_dict(self) -> dict:
        return {
            "documents": self.documents,
            "consistent": self.consistent,
            "stale": self.stale,
            "missing": self.missing,
            "orphaned": self.orphaned,
            "repaired": self.repaired,
        }


def _batches(iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def document_count() -> int:
    return sum(spec.collection().estimated_document_count() for spec in AGGREGATES.values())


def _mongo_entries(batch_size: int) -> Iterator[tuple[int, list[Entry]]]:
    """(documents in the batch, their cache entries as MongoDB has them), batch by batch."""
    for aggregate, spec in AGGREGATES.items():
        cursor = spec.collection().find({}, dict.fromkeys(spec.fields, 1), batch_size=batch_size)
        for batch in _batches(cursor, batch_size):
            yield len(batch), [entry for raw in batch for entry in entries_for(aggregate, spec.state(raw))]


def consistency_check(
    *, repair: bool = False, batch_size: int = BATCH, progress: Callable[[int], None] = lambda n: None
) -> Report:
    """Compare every document's cache entries with MongoDB; with `repair`, rewrite stale entries
    (through the fence: an entry that moved on meanwhile is left alone) and delete orphans."""
    report = Report()
    for documents, wanted in _mongo_entries(batch_size):
        report.documents += documents
        stale = []
        for want, have in zip(wanted, cache_get_many([e.key for e in wanted]), strict=True):
            if have is None:
                report.missing += 1
            elif have.version > want.version or (have.version == want.version and have.body == want.body):
                report.consistent += 1  # newer than our read: a write landed while we looked
            else:
                report.stale += 1
                stale.append(want)
        report.stale_keys += [entry.key for entry in stale][: 100 - len(report.stale_keys)]
        if repair and stale:
            report.repaired += sum(cache_put(stale, writer="repair", rewrite_same_version=True))
        progress(documents)
    orphans = list(_orphans(batch_size))
    report.orphaned = len(orphans)
    if repair and orphans:
        for batch in _batches(orphans, batch_size):
            redis_client().delete(*batch)
    return report


def _orphans(batch_size: int) -> Iterator[str]:
    """Cached entries (not the version-0 markers of unknown ids) whose document does not exist."""
    client = redis_client()
    for aggregate, spec in AGGREGATES.items():
        for keys in _batches(client.scan_iter(match=entry_pattern(aggregate), count=batch_size), batch_size):
            parsed = {key.decode(): key_parse(key) for key in keys}
            by_id: dict[str, list[str]] = {}
            for key, entry_key in parsed.items():
                if entry_key is not None:
                    by_id.setdefault(entry_key.doc_id, []).append(key)
            ids = [ObjectId(i) for i in by_id if ObjectId.is_valid(i)]
            known = {str(d["_id"]) for d in spec.collection().find({"_id": {"$in": ids}}, {"_id": 1})}
            candidates = [key for doc_id, doc_keys in by_id.items() if doc_id not in known for key in doc_keys]
            for key, raw in zip(candidates, client.mget(candidates) if candidates else [], strict=True):
                entry = decode(key, raw)
                if entry is not None and entry.version > 0:
                    yield key


def cache_warm(*, batch_size: int = BATCH, progress: Callable[[int], None] = lambda n: None) -> tuple[int, int]:
    """Fill the cache from MongoDB through the fence; returns (entries stored, already current)."""
    stored = current = 0
    for documents, entries in _mongo_entries(batch_size):
        results = cache_put(entries, writer="warm")
        stored += sum(results)
        current += len(results) - sum(results)
        progress(documents)
    return stored, current


@dataclass(frozen=True)
class CachedEntry:
    """One cache entry of a document as an operator sees it: MongoDB's version beside Redis's."""

    key: str
    record_version: int  # 0 when MongoDB has no such document
    cached: Entry | None  # None: not cached

    @property
    def state(self) -> str:
        if self.cached is None:
            return "not cached"
        if self.cached.body is None:
            return "tombstone"
        return "cached"

    @property
    def current(self) -> bool:
        return self.cached is not None and self.cached.version >= self.record_version


def _record_entries(aggregate: str, doc_id: str) -> list[Entry]:
    spec, oid = AGGREGATES[aggregate], object_id(doc_id)
    raw = spec.collection().find_one({"_id": oid}, dict.fromkeys(spec.fields, 1)) if oid else None
    return entries_for(aggregate, spec.state(raw)) if raw else absent_entries(aggregate, doc_id)


def cache_inspect(*, aggregate: str, doc_id: str) -> list[CachedEntry]:
    """What the cache holds for one document, entry by entry, against its version in MongoDB."""
    wanted = _record_entries(aggregate, doc_id)
    cached = cache_get_many([entry.key for entry in wanted])
    return [CachedEntry(want.key, want.version, have) for want, have in zip(wanted, cached, strict=True)]


def cache_refresh(*, aggregate: str, doc_id: str) -> list[CachedEntry]:
    """Rewrite one document's cache entries from MongoDB, through the fence (a newer entry stays),
    and return what the cache holds afterwards."""
    cache_put(
        [entry for entry in _record_entries(aggregate, doc_id) if entry.version > 0],
        writer="repair",
        rewrite_same_version=True,
    )
    return cache_inspect(aggregate=aggregate, doc_id=doc_id)
