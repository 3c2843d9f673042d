"""The consumer's lag metric, from librdkafka's statistics (their JSON shape, as documented in
librdkafka's STATISTICS.md)."""

import json

from prometheus_client import REGISTRY

from consumers.registry import consumer_specs
from consumers.runner import ConsumerRunner, partition_lag


def stats(partitions: dict) -> str:
    return json.dumps({"topics": {"events": {"partitions": partitions}}})


def lag(partition: str) -> float | None:
    return REGISTRY.get_sample_value(
        "cqrs_consumer_lag_messages", {"consumer": "cache", "topic": "events", "partition": partition}
    )


def test_lag_is_librdkafkas_when_known_else_everything_past_the_low_watermark():
    assert partition_lag({"consumer_lag": 7, "hi_offset": 100, "lo_offset": 0}) == 7
    assert partition_lag({"consumer_lag": -1, "hi_offset": 40, "lo_offset": 10}) == 30
    assert partition_lag({"consumer_lag": -1, "hi_offset": -1, "lo_offset": -1}) is None


def test_held_partitions_get_a_series_and_lost_ones_lose_theirs():
    runner = ConsumerRunner(consumer_specs()["cache"], batch_size=1)
    try:
        active = {"fetch_state": "active", "consumer_lag": 5, "hi_offset": 9, "lo_offset": 0}
        runner._on_stats(stats({"0": active, "1": {**active, "consumer_lag": 0}, "-1": active}))
        assert (lag("0"), lag("1"), lag("-1")) == (5, 0, None)
        # Partition 0 was revoked: librdkafka stops fetching it.
        runner._on_stats(stats({"0": {**active, "fetch_state": "none"}, "1": {**active, "consumer_lag": 2}}))
        assert (lag("0"), lag("1")) == (None, 2)
    finally:
        runner.consumer.close()
