"""Prometheus metrics of every role, defined in one place (names, labels, buckets).

gunicorn pools run several worker processes: deploy/gunicorn_*.py point PROMETHEUS_MULTIPROC_DIR
at a directory of their own, where each worker keeps its values (prometheus-client's
multiprocess mode), and `/metrics` adds them up. The consumer and the relay are one process
each and serve their own registry on a port of their own (`serve_metrics`). HAProxy does not
route /metrics: Prometheus scrapes every instance directly.
"""

import os
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
)

# The *_created series (one timestamp per series) double what is scraped and say nothing here.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STALENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# --- Both pools ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "cqrs_http_requests_total",
    "HTTP requests answered, by pool role, route pattern, method and status code.",
    ["role", "route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "cqrs_http_request_duration_seconds",
    "Time from a request reaching the pool to its answer being handed to the server.",
    ["role", "route", "method"],
    buckets=LATENCY_BUCKETS,
)

# --- The read cache -----------------------------------------------------------------------------
CACHE_LOOKUPS = Counter(
    "cqrs_cache_lookups_total",
    "Read-path lookups of one cache entry: hit, miss (read from MongoDB and filled), or degraded "
    "(Redis unavailable, served from MongoDB).",
    ["result"],
)
CACHE_WRITES = Counter(
    "cqrs_cache_writes_total",
    "Version-fenced cache writes by writer (fill, consumer, repair): stored, or refused because "
    "the cache already held that version or a newer one (the fence at work).",
    ["writer", "result"],
)

# --- Writes and the outbox ----------------------------------------------------------------------
WRITE_OUTCOMES = Counter(
    "cqrs_write_outcomes_total",
    "Writes MongoDB failed with in flight (writes/outcome.py), by what was then established: "
    "landed (answered as usual), not_applied, unknown, applied_unconfirmed (landed, state unread).",
    ["outcome"],
)
OUTBOX_PUBLISHES = Counter(
    "cqrs_outbox_publish_total",
    "Events handed to the broker, by who sent them (write, relay) and result: acked, or "
    "deferred (left in the outbox for the relay).",
    ["sender", "result"],
)
RELAY_PENDING = Gauge(
    "cqrs_relay_pending_events",
    "Events the relay's last pass found waiting in outboxes past the grace period.",
    multiprocess_mode="mostrecent",
)
RELAY_PUBLISH_ERRORS = Counter(
    "cqrs_relay_publish_errors_total",
    "Events the relay could not get acknowledged (they stay pending and are retried).",
)
RELAY_PASS_ERRORS = Counter("cqrs_relay_pass_errors_total", "Relay passes that failed (MongoDB unavailable).")
TOPICS_REMADE = Counter(
    "cqrs_topics_remade_total",
    "Topics the relay found missing or short of partitions and made right (created, grown, recreated).",
)
PRODUCER_RESETS = Counter(
    "cqrs_producer_resets_total",
    "Kafka producers replaced because they could no longer send: `fatal` (a fatal librdkafka "
    "error), `stalled` (messages outstanding while the broker answers) or `reconnected` (the "
    "broker came back after every connection dropped: it may have lost its state).",
    ["reason"],
)
PRODUCER_DIRECT = Gauge(
    "cqrs_producer_direct",
    "1 while this process's producer delivers (writes publish directly), 0 while it is stalled "
    "or being replaced (writes are deferred to the relay). Pools: the lowest of their workers.",
    multiprocess_mode="min",
)

# --- Consumers ----------------------------------------------------------------------------------
CONSUMER_EVENTS_APPLIED = Counter(
    "cqrs_consumer_events_applied_total",
    "Events a consumer applied (and then committed), by event type.",
    ["consumer", "type"],
)
CONSUMER_REJOINS = Counter(
    "cqrs_consumer_rejoins_total",
    "Times a consumer joined its group again because its topic reappeared after a rebalance that "
    "found none (consumers/runner.py).",
    ["consumer"],
)
CONSUMER_DEAD_LETTERED = Counter(
    "cqrs_consumer_dead_lettered_total",
    "Messages a consumer could not decode and sent to the dead-letter topic.",
    ["consumer"],
)
CONSUMER_APPLY_FAILURES = Counter(
    "cqrs_consumer_apply_failures_total",
    "Batches whose apply failed (a server down) and was retried; the offsets wait.",
    ["consumer"],
)
CONSUMER_OFFSETS_LOST = Counter(
    "cqrs_consumer_offsets_lost_total",
    "Partitions a consumer found the broker had lost: committed offsets gone, or a log that ends "
    "before what was applied. Each asks the cache inspector for an immediate sweep.",
    ["consumer"],
)
CONSUMER_CACHE_ROLLBACKS = Counter(
    "cqrs_consumer_cache_rollbacks_total",
    "Partitions whose applied events a consumer found the cache no longer held (a failover to a "
    "replica that had not received them, a Redis restarted empty) and applied again.",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "cqrs_consumer_lag_messages",
    "Messages in a partition the consumer has not yet applied (high watermark minus its position).",
    ["consumer", "topic", "partition"],
    multiprocess_mode="mostrecent",
)
# --- The cache inspector -------------------------------------------------------------------------
INSPECTOR_CHECKED = Counter(
    "cqrs_inspector_checked_total",
    "Cache entries and feed places the inspector compared with MongoDB, by read model.",
    ["model"],
)
INSPECTOR_JUDGED = Counter(
    "cqrs_inspector_judged_total",
    "Of those, the ones judged (older than the visibility bound): consistent, or stale, by read model. "
    "consistent / (consistent + stale) is the system's consistency.",
    ["model", "outcome"],
)
INSPECTOR_REPAIRED = Counter("cqrs_inspector_repaired_total", "Stale cache writes the inspector repaired.")
INSPECTOR_CONSISTENCY = Gauge(
    "cqrs_inspector_consistency_ratio",
    "The share of judged cache writes found consistent in the last whole sweep that judged any "
    "(1.0 when all were); NaN until then, so that no alert reads an unmeasured 0.",
)
INSPECTOR_CONSISTENCY.set(float("nan"))  # every process exports it; only the inspector measures it
INSPECTOR_OLDEST_UNCHECKED = Gauge(
    "cqrs_inspector_oldest_unchecked_seconds",
    "Seconds since the oldest check of any cache entry: every entry was checked at least this recently.",
)
INSPECTOR_OUTAGES = Counter(
    "cqrs_inspector_outage_errors_total",
    "Operations the inspector found a dependency (mongodb, redis) down for: it waits and resumes "
    "where it was, never exits.",
    ["dependency"],
)
INSPECTOR_SWEEPS = Counter(
    "cqrs_inspector_sweeps_total",
    "Whole sweeps: regular (at INSPECTOR_DOCS_PER_SECOND), or requested (at once, at full speed, "
    "because the broker lost data).",
    ["kind"],
)
INSPECTOR_SWEEP_SECONDS = Gauge("cqrs_inspector_sweep_seconds", "How long the last whole sweep took.")

WRITE_TO_APPLY_SECONDS = Histogram(
    "cqrs_write_to_apply_seconds",
    "Time from a write's commit to its event being applied in the read cache: the staleness "
    "the design trades for speed. Operator replays are not counted.",
    buckets=STALENESS_BUCKETS,
)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe(amount)` for each amount, but one increment per bucket: the consumer
    observes every event of a batch of thousands, and an observe() each cost it a twentieth of
    its time (measured). Uses prometheus_client's own fields (_upper_bounds, _buckets, _sum);
    tests/unit/site/test_metrics.py holds it to observe(), so an upgrade that changes them fails there."""
    amounts = list(amounts)
    if not amounts:
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(sum(amounts))
    bounds, buckets = histogram._upper_bounds, histogram._buckets
    # observe() counts an amount in the first bucket whose bound is at least it; the last is +Inf.
    for index, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
        buckets[index].inc(count)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """Every metric of this process or, under a gunicorn pool, of all its workers."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def serve_metrics(port: int, host: str) -> None:
    """Serve /metrics from a background thread (the consumer and the relay); port 0 means off.
    The pools answer /metrics in their WSGI layer (cqrs_site/core/telemetry.py)."""
    if port:
        start_http_server(port, addr=host)
