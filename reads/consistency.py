"""MongoDB (the record) against Redis (the cache), read model by read model (reads/models.py):
the comparison that check_consistency, the continuous inspector (reads/inspector.py), warm_cache
and the admin's cache panel share.

A document's expected cache writes come from its state (`ops_for`), as the consumer's do. An
entry is consistent when the cache holds that version with those bytes (or a newer version:
a write landed while we looked); a feed place when the cached feed (if it is cached, and above
a truncated feed's cutoff) holds the post with that score. Whatever differs is only a suspect:
`recheck` looks again after the visibility bound, and what still lags then is stale (a write
younger than the bound is in flight, not judged).

Batches stream MongoDB and talk to Redis one pipeline per batch, so 100,000 documents cost
memory for one batch, not for the collection.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from bson import ObjectId

from cqrs_site.core.codec import entry_pattern, feed_name, key_parse
from cqrs_site.core.redis_client import get_many, redis_client
from writes.aggregates import AGGREGATES, Aggregate
from writes.documents import object_id

from .cache import cache_apply, cache_get_many, decode
from .models import Entry, Member, absent_entries, entries_for, ops_for

BATCH = 500


@dataclass
class Report:
    documents: int = 0
    consistent: int = 0  # the cache holds what MongoDB has (or newer)
    stale: int = 0  # behind MongoDB for longer than the visibility bound, or other bytes at its version
    missing: int = 0  # not cached: the next read fills it (not an error)
    in_flight: int = 0  # behind MongoDB by a write younger than the bound: not judged
    orphaned: int = 0  # cached, but MongoDB has no such document
    repaired: int = 0
    stale_keys: list[str] = field(default_factory=list)
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def stale_left(self) -> int:
        return self.stale - self.repaired

    @property
    def judged(self) -> int:
        return self.consistent + self.stale

    def count(self, model: str, outcome: str, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)
        counts = self.by_model.setdefault(model, {"consistent": 0, "stale": 0, "missing": 0, "in_flight": 0})
        counts[outcome] += n

    def as_dict(self) -> dict:
        return {
            "documents": self.documents,
            "consistent": self.consistent,
            "stale": self.stale,
            "missing": self.missing,
            "in_flight": self.in_flight,
            "orphaned": self.orphaned,
            "repaired": self.repaired,
            "by_model": self.by_model,
        }


def _batches(iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def document_count() -> int:
    return sum(spec.collection().estimated_document_count() for spec in AGGREGATES.values())


def model_of(op: Entry | Member) -> str:
    """The read model a write belongs to, by name (reads/models.py): user, post, post-likes, or a feed's."""
    if isinstance(op, Member):
        return feed_name(op.feed)
    parsed = key_parse(op.key)
    return parsed.aggregate if parsed.view is None else f"{parsed.aggregate}-{parsed.view}"


def _feed_sentinels(client, feeds: Iterable[str]) -> dict[str, bytes | None]:
    """Each feed's sentinel (reads/cache.py): None when the feed is not cached."""
    feeds = list(dict.fromkeys(feeds))
    pipe = client.pipeline(transaction=False)
    for feed in feeds:
        pipe.zrangebyscore(feed, "-inf", "-inf", start=0, num=1)
    return {feed: (found[0] if found else None) for feed, found in zip(feeds, pipe.execute(), strict=True)}


def _judge_members(client, members: list[Member]) -> list[str]:
    """Per member: consistent, stale, or unheld: its feed is not cached (or still filling), or
    the post lies below a truncated feed's cutoff. An unheld place is nothing to judge: the
    feed's next read fills it, or reads MongoDB there."""
    if not members:
        return []
    sentinels = _feed_sentinels(client, (m.feed for m in members))
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.zscore(member.feed, member.member)
    outcomes = []
    for member, score in zip(members, pipe.execute(), strict=True):
        sentinel = sentinels[member.feed]
        if sentinel is None or not sentinel.startswith(b"!ready"):
            outcomes.append("unheld")
            continue
        cut = sentinel.decode().split(":")
        if len(cut) == 3 and (member.score, member.member) <= (float(cut[1]), cut[2]):
            outcomes.append("unheld")
        else:
            outcomes.append("consistent" if score is not None and score == member.score else "stale")
    return outcomes


def _holds(have: Entry | None, want: Entry) -> bool:
    """The cache holds `want`'s version with its bytes, or a newer version (a write landed)."""
    return have is not None and (have.version > want.version or (have.version, have.body) == (want.version, want.body))


def _judge_entries(wanted: list[Entry]) -> list[str]:
    cached = cache_get_many([e.key for e in wanted])
    return [
        "missing" if have is None else "consistent" if _holds(have, want) else "stale"
        for want, have in zip(wanted, cached, strict=True)
    ]


def compare(aggregate: Aggregate, raws: list[dict]) -> tuple[list[tuple[Entry | Member, str]], dict]:
    """Every cache write these MongoDB documents call for, with what the cache holds of it:
    consistent, stale or missing. Also returns each document's version (for a recheck)."""
    ops = [op for raw in raws for op in ops_for(aggregate.name, aggregate.state(raw))]
    entries = [op for op in ops if isinstance(op, Entry)]
    members = [op for op in ops if isinstance(op, Member)]
    judged = dict(zip(entries, _judge_entries(entries), strict=True))
    judged.update(zip(members, _judge_members(redis_client(), members), strict=True))
    versions = {str(raw["_id"]): raw["version"] for raw in raws}
    return [(op, judged[op]) for op in ops], versions


def _doc_id(op: Entry | Member) -> str:
    return op.member if isinstance(op, Member) else key_parse(op.key).doc_id


def recheck(aggregate: Aggregate, suspects: list[Entry | Member], first_versions: dict[str, int]):
    """Look again, after the visibility bound, at what differed: (still stale: the writes that
    repair it, from MongoDB now; no longer differing, or moved by a newer write: in flight)."""
    ids = list(dict.fromkeys(_doc_id(op) for op in suspects))
    fields = dict.fromkeys(aggregate.fields, 1)
    raws = list(aggregate.collection().find({"_id": {"$in": [object_id(i) for i in ids]}}, fields))
    now, versions = compare(aggregate, raws)
    wanted_now = {(_target(op)): (op, outcome) for op, outcome in now}
    stale, in_flight = [], []
    for op in suspects:
        current, outcome = wanted_now.get(_target(op), (None, "unheld"))
        doc_id = _doc_id(op)
        if current is None or outcome != "stale":
            in_flight.append(op)
        elif isinstance(op, Member) and versions.get(doc_id) != first_versions.get(doc_id):
            in_flight.append(op)  # the post was written within the bound: its place may lag that much
        elif isinstance(op, Entry) and _caught_up(op):
            in_flight.append(op)  # it now holds what the first look wanted: only a newer write lags
        else:
            stale.append(current)
    return stale, in_flight


def _target(op: Entry | Member) -> tuple[str, str]:
    return (op.key, "") if isinstance(op, Entry) else (op.feed, op.member)


def _caught_up(want: Entry) -> bool:
    have = cache_get_many([want.key])[0]
    return have is not None and (
        have.version > want.version or (have.version == want.version and have.body == want.body)
    )


def consistency_check(
    *,
    repair: bool = False,
    batch_size: int = BATCH,
    bound: float = 1.0,
    progress: Callable[[int], None] = lambda n: None,
) -> Report:
    """Compare every document's cache entries and feed places with MongoDB; what differs is
    looked at again after `bound` seconds, and what still differs is stale. With `repair`,
    rewrite stale ones (through the fence: a newer write meanwhile is left alone) and delete
    orphaned entries."""
    report = Report()
    for aggregate in AGGREGATES.values():
        cursor = aggregate.collection().find({}, dict.fromkeys(aggregate.fields, 1), batch_size=batch_size)
        for raws in _batches(cursor, batch_size):
            report.documents += len(raws)
            judged, versions = compare(aggregate, raws)
            suspects = [op for op, outcome in judged if outcome == "stale"]
            for op, outcome in judged:
                if outcome in ("consistent", "missing"):
                    report.count(model_of(op), outcome)
            if suspects:
                time.sleep(bound)
                stale, in_flight = recheck(aggregate, suspects, versions)
                for op in in_flight:
                    report.count(model_of(op), "in_flight")
                for op in stale:
                    report.count(model_of(op), "stale")
                report.stale_keys += [_describe(op) for op in stale][: 100 - len(report.stale_keys)]
                if repair and stale:
                    report.repaired += sum(cache_apply(stale, writer="repair", rewrite_same_version=True))
            progress(len(raws))
    orphans = list(_orphans(batch_size))
    report.orphaned = len(orphans)
    if repair and orphans:
        for batch in _batches(orphans, batch_size):
            redis_client().delete(*batch)
    return report


def _describe(op: Entry | Member) -> str:
    return op.key if isinstance(op, Entry) else f"{op.feed} {op.member}"


def _orphans(batch_size: int) -> Iterator[str]:
    """Cached entries (not the version-0 markers of unknown ids) whose document does not exist."""
    client = redis_client()
    for aggregate, spec in AGGREGATES.items():
        for keys in _batches(client.scan_iter(match=entry_pattern(aggregate), count=batch_size), batch_size):
            by_id: dict[str, list[str]] = {}
            for key in keys:
                parsed = key_parse(key)
                if parsed is not None:
                    by_id.setdefault(parsed.doc_id, []).append(key.decode())
            ids = [ObjectId(i) for i in by_id if ObjectId.is_valid(i)]
            known = {str(d["_id"]) for d in spec.collection().find({"_id": {"$in": ids}}, {"_id": 1})}
            candidates = [key for doc_id, doc_keys in by_id.items() if doc_id not in known for key in doc_keys]
            for key, raw in zip(candidates, get_many(candidates), strict=True):
                entry = decode(key, raw)
                if entry is not None and entry.version > 0:
                    yield key


def cache_warm(*, batch_size: int = BATCH, progress: Callable[[int], None] = lambda n: None) -> tuple[int, int]:
    """Fill the cache's entries from MongoDB through the fence; returns (stored, already current).
    Feeds are filled by their first read (one MongoDB query each)."""
    stored = current = 0
    for aggregate in AGGREGATES.values():
        cursor = aggregate.collection().find({}, dict.fromkeys(aggregate.fields, 1), batch_size=batch_size)
        for raws in _batches(cursor, batch_size):
            entries = [entry for raw in raws for entry in entries_for(aggregate.name, aggregate.state(raw))]
            results = cache_apply(entries, writer="warm")
            stored += sum(results)
            current += len(results) - sum(results)
            progress(len(raws))
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


@dataclass(frozen=True)
class CachedPlace:
    """A post's place in a feed as an operator sees it (the same columns as CachedEntry)."""

    key: str
    record_version: int
    state: str
    cached: None = None
    current: bool = True


def _record_ops(aggregate: str, doc_id: str) -> list[Entry | Member]:
    spec, oid = AGGREGATES[aggregate], object_id(doc_id)
    raw = spec.collection().find_one({"_id": oid}, dict.fromkeys(spec.fields, 1)) if oid else None
    return ops_for(aggregate, spec.state(raw)) if raw else absent_entries(aggregate, doc_id)


def cache_inspect(*, aggregate: str, doc_id: str) -> list[CachedEntry | CachedPlace]:
    """What the cache holds for one document, read model by read model, against MongoDB."""
    wanted = _record_ops(aggregate, doc_id)
    entries = [op for op in wanted if isinstance(op, Entry)]
    members = [op for op in wanted if isinstance(op, Member)]
    cached = cache_get_many([entry.key for entry in entries])
    rows: list = [CachedEntry(want.key, want.version, have) for want, have in zip(entries, cached, strict=True)]
    client = redis_client()
    for member, outcome in zip(members, _judge_members(client, members), strict=True):
        score = client.zscore(member.feed, member.member)
        state = {
            "unheld": "feed not cached (or past its cached part)",
            "consistent": f"in feed, score {member.score}",
            "stale": f"stale: score {score} in the feed, {member.score} in MongoDB",
        }[outcome]
        rows.append(CachedPlace(member.feed, member.version, state, current=outcome != "stale"))
    return rows


def cache_refresh(*, aggregate: str, doc_id: str) -> list[CachedEntry | CachedPlace]:
    """Rewrite one document's cache entries and feed places from MongoDB, through the fence (a
    newer write stays), and return what the cache holds afterwards."""
    ops = [op for op in _record_ops(aggregate, doc_id) if op.version > 0]
    cache_apply(ops, writer="repair", rewrite_same_version=True)
    return cache_inspect(aggregate=aggregate, doc_id=doc_id)
