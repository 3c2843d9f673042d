"""The consistency inspector and the cache warmer: MongoDB (the record) against Redis (the cache).

Both stream MongoDB in batches and talk to Redis one pipeline per batch, so 100,000 documents
cost memory for one batch, not for the collection.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from bson import ObjectId

from .cache import cache_client, cache_get_many, cache_put, decode
from .keys import AUXILIARY_SUFFIXES, PREFIX
from .projections import Entry, absent_entries, entries_for
from .selectors import SOURCES

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
    return sum(source[0]._get_collection().estimated_document_count() for source in SOURCES.values())


def _mongo_entries(batch_size: int) -> Iterator[tuple[int, list[Entry]]]:
    """(documents in the batch, their cache entries as MongoDB has them), batch by batch."""
    for aggregate, (document_class, fields, state_of) in SOURCES.items():
        cursor = document_class._get_collection().find({}, dict.fromkeys(fields, 1), batch_size=batch_size)
        for batch in _batches(cursor, batch_size):
            yield len(batch), [entry for raw in batch for entry in entries_for(aggregate, state_of(raw))]


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
            cache_client().delete(*batch)
    return report


def _orphans(batch_size: int) -> Iterator[str]:
    """Cached entries (not the version-0 markers of unknown ids) whose document does not exist."""
    client = cache_client()
    for aggregate, (document_class, _fields, _state_of) in SOURCES.items():
        pattern = f"{PREFIX}:{aggregate}:*"
        for keys in _batches(client.scan_iter(match=pattern, count=batch_size), batch_size):
            keys = [k.decode() for k in keys if not k.endswith(AUXILIARY_SUFFIXES)]
            by_id: dict[str, list[str]] = {}
            for key in keys:
                by_id.setdefault(key.split(":")[2], []).append(key)
            ids = [ObjectId(i) for i in by_id if ObjectId.is_valid(i)]
            known = {str(d["_id"]) for d in document_class._get_collection().find({"_id": {"$in": ids}}, {"_id": 1})}
            values = dict(zip(keys, client.mget(keys), strict=True))
            for doc_id, doc_keys in by_id.items():
                if doc_id in known:
                    continue
                for key in doc_keys:
                    entry = decode(key, values[key])
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
    document_class, fields, state_of = SOURCES[aggregate]
    oid = ObjectId(doc_id) if ObjectId.is_valid(doc_id) else None
    raw = document_class._get_collection().find_one({"_id": oid}, dict.fromkeys(fields, 1)) if oid else None
    return entries_for(aggregate, state_of(raw)) if raw else absent_entries(aggregate, doc_id)


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
