from prometheus_client import CollectorRegistry, Histogram

from cqrs_site.core.metrics import observe_many


def samples(histogram: Histogram) -> dict[tuple[str, str | None], float]:
    [metric] = histogram.collect()
    return {(sample.name, sample.labels.get("le")): sample.value for sample in metric.samples}


def test_observe_many_counts_as_observe_does():
    """Bounds included in their bucket, amounts beyond the last bound in +Inf, the sum exact."""
    buckets = (0.01, 0.1, 1.0)
    one, many = (Histogram(name, "a test", buckets=buckets, registry=CollectorRegistry()) for name in ("one", "many"))
    amounts = [0.0, 0.005, 0.01, 0.0100001, 0.05, 0.1, 0.5, 1.0, 1.5, 30.0, 0.05]
    for amount in amounts:
        one.observe(amount)
    observe_many(many, amounts)
    observe_many(many, [])
    found = {(name.replace("many", "one"), le): value for (name, le), value in samples(many).items()}
    assert found == samples(one)
    assert found[("one_bucket", "0.1")] == 7 and found[("one_bucket", "+Inf")] == 11
