"""The benchmark's outputs: latest.json, latest.md (the summary tables) and PNG plots."""

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

READS = [
    ("haproxy_static", "HAProxy's static answer (ceiling)"),
    ("ceiling_wsgi", "bare WSGI + Redis GET (pool ceiling)"),
    ("edge_hits_uniform", "edge hits, uniform"),
    ("edge_hits_zipf", "edge hits, Zipf"),
    ("edge_hits_tcp", "edge hits, uniform, Redis over TCP"),
    ("edge_hits_all_logged", "edge hits, uniform, every hit logged"),
    ("pool_hits_uniform", "pool hits (edge off)"),
    ("pool_hits_no_metrics", "pool hits, request metrics off"),
    ("misses", "cache misses"),
    ("feed_hits", "feed pages, cached"),
    ("feed_misses", "feed pages, from MongoDB"),
]
WRITES = [("likes", "likes"), ("patches", "patches"), ("creates", "creates"), ("likes_hot", "likes of one post")]


def _reads(scenarios: dict) -> list[tuple[str, str, dict]]:
    present = []
    for name, label in READS:
        if name in scenarios:
            present.append((name, label, scenarios[name]))
    return present


def markdown(results: dict) -> str:
    scenarios = results["scenarios"]
    lines = [
        f"# Benchmark, {results['started_at']}",
        "",
        f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}; the load generator, "
        "HAProxy, the pools and the servers share them. Settings: "
        + ", ".join(f"{k}={v}" for k, v in results["settings"].items() if k != "out")
        + f". Whole run {results['total_s']} s.",
        "",
        "| reads (through HAProxy) | req/s | p50 ms | p99 ms | max ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for _name, label, result in _reads(scenarios):
        latency = result["latency_ms"]
        errors = sum(result.get("errors", {}).values())
        lines.append(
            f"| {label} | {result['rps']:,.0f} | {latency['p50']:.2f} | {latency['p99']:.2f} | "
            f"{latency.get('max', 0):.1f} | {errors} |"
        )
    redis = scenarios.get("redis_benchmark_get")
    if redis:
        lines.append(
            f"| raw Redis GET (redis-benchmark, no HTTP) | {redis['rps']:,.0f} | {redis['latency_ms']['p50']:.2f} | "
            f"{redis['latency_ms']['p99']:.2f} | - | - |"
        )
    for name, label in (("edge_hits_uniform", "the edge's uniform pass"), ("edge_hits_tcp", "its pass over TCP")):
        edge = scenarios.get(name)
        if edge:
            tw = edge["time_wait"]
            lines += [
                "",
                f"TIME_WAIT sockets of Redis's TCP port, before and after {label}"
                f"{' (' + edge['redis_transport'] + ')' if 'redis_transport' in edge else ''}: Redis's side "
                f"{tw['before']['redis_side']} -> {tw['after']['redis_side']}, the clients' side "
                f"{tw['before']['client_side']} -> {tw['after']['client_side']} (over TCP Redis closes first: QUIT).",
            ]
    writes = [(label, scenarios[f"writes_{name}"]) for name, label in WRITES if f"writes_{name}" in scenarios]
    if writes:
        lines += [
            "",
            "| writes (16 connections), median pass | req/s | p50 ms | p99 ms | the stores' own cost, req/s | ratio "
            "| each pass: app/ceiling, req/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, found in writes:
            app, ceiling = found["app"], found["ceiling"]
            lines.append(
                f"| {label} | {app['rps']:,.0f} | {app['latency_ms']['p50']:.1f} | {app['latency_ms']['p99']:.1f} | "
                f"{ceiling['rps']:,.0f} | {found['ratio']:.2f} | "
                + ", ".join(f"{r['app_rps']:,.0f}/{r['ceiling_rps']:,.0f}" for r in found.get("rounds", []))
                + " |"
            )
        exact = scenarios.get("writes_likes_hot", {}).get("exact")
        if exact:
            lines += [
                "",
                "Likes of one post, counted: "
                + ", ".join(
                    f"{e['answered']:,} answered, {e['counted']:,} counted in MongoDB (like_count "
                    f"{e['stored']['like_count']:,}), the cache at "
                    f"{e['cache']['like_count'] if e['cache'] else '?'} after {e['cache_after_s']} s "
                    f"({'exact' if e['met'] else 'NOT exact'})"
                    for e in exact
                )
                + ".",
            ]
        without = scenarios.get("writes_likes", {}).get("without_fast_path")
        if without:
            rounds = without["rounds"]
            lines += [
                "",
                "Likes with the write fast path off (writes/fastpath.py; Django and DRF answer each), a "
                "write instance of their own, each round beside the pass with it on: "
                + ", ".join(
                    f"{r['rps']:,.0f}/s at {r['pool_cpu_ms']} ms of the pool's CPU a like, against "
                    f"{r['fast_rps']:,.0f}/s at {r['fast_cpu_ms']} ms"
                    for r in rounds
                )
                + ".",
            ]
    lines.append("")
    for name, label in (("visibility", "a like"), ("feed_visibility", "a new post, in its author's feed and latest")):
        found = scenarios.get(name)
        if found and found["delay_ms"]:
            d = found["delay_ms"]
            lines.append(
                f"Visibility of {label} at {found['rate_per_s']} writes/s ({found['writes']} writes, "
                f"{found['write_errors']} errors): p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms."
            )
    mixed = scenarios.get("mixed", {}).get("rates")
    if mixed:
        lines += [
            "",
            "| mixed 95/5, planned req/s | reads/s | read p99 ms | writes sent / planned | started > 0.1 s late "
            "| write p50 ms | write p99 ms | the inspector: cache writes judged, consistent |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in mixed:
            w = row["write_latency_ms"] or dict.fromkeys(("p50", "p99"), float("nan"))
            i = row["inspector"]
            lines.append(
                f"| {row['planned_rate_per_s']:,} | {row['rps']:,.0f} | {row['reads']['latency_ms']['p99']:.1f} | "
                f"{row['writes']:,} / {row['writes_planned']:,} ({row['write_statuses']}) | "
                f"{row['writes_started_late']} | {w['p50']:.1f} | {w['p99']:.1f} | "
                f"{i['consistent'] + i['stale']:,.0f}, {i['consistency']:.4%} |"
            )
        lines.append("")
    memory = results.get("cache_memory")
    if memory:
        lines.append(
            f"Redis with {memory['posts']:,} posts (and their users) cached: {memory['keys']:,} keys, "
            f"{memory['used_memory'] / 2**20:.1f} MiB, {memory['per_post']:,} bytes a post."
        )
    pairs = topology_rows(scenarios, results.get("topologies", {}))
    if pairs:
        lines += [
            "",
            "| Redis topology | what | req/s (events/s) | one Redis, same make bench | ratio |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for topology, what, mine, single, _goal in pairs:
            lines.append(f"| {topology} | {what} | {mine:,.0f} | {single:,.0f} | {mine / single:.2f} |")
    consumer = scenarios.get("consumer")
    if consumer:
        lines.append(
            f"Consumer: {consumer['events']:,} events; run_consumer {consumer['run_consumer']['events_per_s']:,.0f}/s "
            f"({consumer['run_consumer_without_event_lines']['events_per_s']:,.0f}/s without its event lines, "
            f"{consumer['two_consumers']['events_per_s']:,.0f}/s with two), raw consume "
            f"{consumer['raw_consume']['events_per_s']:,.0f}/s (ratio {consumer['ratio']:.2f})."
        )
        applied = consumer["run_consumer"]
        if "consumer_cpu_s" in applied:
            lines.append(
                f"Where run_consumer's {applied['seconds']:.3f} s went: its own CPU {applied['consumer_cpu_s']:.2f} s "
                f"(librdkafka's threads included), Redis's apply script {applied['redis_script_s']:.2f} s; "
                f"the raw consume took {consumer['raw_consume']['seconds']:.3f} s."
            )
        hot = consumer.get("hot_keys")
        if hot:
            lines.append(
                f"A backlog of as many events over {hot['posts']:,} posts only (many versions of each post "
                f"in a batch, one cache write per post): run_consumer {hot['run_consumer']['events_per_s']:,.0f}/s "
                f"(ratio {hot['run_consumer']['events_per_s'] / consumer['raw_consume']['events_per_s']:.2f})."
            )
        cached = consumer.get("feeds_cached")
        if cached:
            run = cached["run_consumer"]
            lines.append(
                f"The same backlog over every post with the {' and '.join(cached['feeds'])} feeds cached (each like "
                f"also moves its post into top): run_consumer {run['events_per_s']:,.0f}/s (ratio "
                f"{run['events_per_s'] / consumer['raw_consume']['events_per_s']:.2f}), Redis's apply script "
                f"{run['redis_script_s']:.2f} s."
            )
    lines += ["", "| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['value']} | {target['goal']} | {'yes' if target['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: dict, out: Path) -> None:
    present = _reads(results["scenarios"])
    if not present:
        return
    labels = ["\n".join(textwrap.wrap(label, 16)) for _, label, _ in present]
    figure, axis = plt.subplots(figsize=(11, 5))
    values = [result["rps"] for _, _, result in present]
    colors = ["#777" if "ceiling" in label else "#417690" for _, label, _ in present]
    bars = axis.bar(labels, values, color=colors)
    axis.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2, fontsize=8)
    axis.set_ylabel("requests / s")
    axis.set_yscale("log")
    axis.set_title("Reads through HAProxy (one run; ceilings in grey)")
    axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(11, 5))
    quantiles = ["p50", "p90", "p99", "p999"]
    width = 0.8 / len(present)
    for index, (_name, label, result) in enumerate(present):
        latency = result["latency_ms"]
        axis.bar(
            [q + index * width for q in range(len(quantiles))], [latency[q] for q in quantiles], width, label=label
        )
    axis.set_xticks([q + width * (len(present) - 1) / 2 for q in range(len(quantiles))], quantiles)
    axis.set_ylabel("latency, ms")
    axis.set_yscale("log")
    axis.set_title("Read latency percentiles (wrk, one run)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)

    writes = [(label, results["scenarios"].get(f"writes_{name}")) for name, label in WRITES]
    writes = [(label, found) for label, found in writes if found]
    if writes:
        figure, axis = plt.subplots(figsize=(8, 4))
        positions = range(len(writes))
        app = axis.bar([x - 0.2 for x in positions], [f["rps"] for _, f in writes], 0.4, label="through the API")
        own = axis.bar(
            [x + 0.2 for x in positions],
            [f["ceiling"]["rps"] for _, f in writes],
            0.4,
            color="#777",
            label="the stores' own cost (ceiling)",
        )
        for bars in (app, own):
            axis.bar_label(bars, labels=[f"{bar.get_height():,.0f}" for bar in bars], padding=2, fontsize=8)
        axis.set_xticks(list(positions), [label for label, _ in writes])
        axis.set_ylabel("writes / s (16 connections)")
        axis.set_title("Writes beside their ceilings (one run)")
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(out / "writes.png", dpi=110)
        plt.close(figure)


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results))
    plots(results, out)


# What each topology's run is held to, beside the single server's in the same `make bench`.
TOPOLOGY_GOALS = (
    ("edge_hits_uniform", "edge hits", 0.8),
    ("pool_hits_uniform", "pool hits", None),
    ("feed_hits", "feed pages, cached", None),
)


def topology_rows(scenarios: dict, topologies: dict) -> list[tuple[str, str, float, float, float | None]]:
    """(topology, what, its rate, the single server's, the goal for their ratio) for each measured pair."""
    rows = []
    for topology, other in topologies.items():
        for name, label, goal in TOPOLOGY_GOALS:
            if name in scenarios and name in other:
                rows.append((topology, label, other[name]["rps"], scenarios[name]["rps"], goal))
        if "consumer" in scenarios and "consumer" in other:
            rate = "events_per_s"
            mine, theirs = other["consumer"]["run_consumer"][rate], scenarios["consumer"]["run_consumer"][rate]
            rows.append((topology, "run_consumer events", mine, theirs, 0.7))
    return rows


def targets(scenarios: dict, topologies: dict | None = None) -> list[dict]:
    """The issues' targets, as ratios and figures from this run."""
    rows = []
    for topology, label, mine, single, goal in topology_rows(scenarios, topologies or {}):
        if goal is not None:
            rows.append(_target(f"{label} under {topology} / one Redis", mine / single, ">=", goal))
    ceiling, pool, edge = (
        scenarios.get("ceiling_wsgi"),
        scenarios.get("pool_hits_uniform"),
        scenarios.get("edge_hits_uniform"),
    )
    static = scenarios.get("haproxy_static")
    if ceiling and pool:
        rows.append(_target("pool hits / bare-WSGI ceiling", pool["rps"] / ceiling["rps"], ">=", 0.8))
    if edge and pool:
        rows.append(_target("edge hits / pool hits", edge["rps"] / pool["rps"], ">=", 5.0))
    if edge and static:
        rows.append(_target("edge hits / HAProxy's static answer", edge["rps"] / static["rps"], ">=", 0.1))
    if edge:
        rows.append(_target("edge hits p99 (ms)", edge["latency_ms"]["p99"], "<", 10.0))
    misses = scenarios.get("misses")
    if pool and misses:
        rows.append(_target("pool hits / misses", pool["rps"] / misses["rps"], ">=", 3.0))
    feeds = scenarios.get("feed_hits")
    if feeds and pool:
        rows.append(
            _target("feed hits / single-post hits (both by the read pool)", feeds["rps"] / pool["rps"], ">=", 0.5)
        )
    for name, label in (("visibility", "a like"), ("feed_visibility", "a new post in its feeds")):
        found = scenarios.get(name)
        if found and found["delay_ms"]:
            rows.append(
                _target(f"visibility p99 (ms) of {label} at 100 writes/s", found["delay_ms"]["p99"], "<", 100.0)
            )
    for name in ("likes", "patches", "creates"):
        found = scenarios.get(f"writes_{name}")
        if found:
            rows.append(_target(f"{name} / the stores' own cost", found["ratio"], ">=", 0.6))
    hot = scenarios.get("writes_likes_hot")
    if hot and hot.get("exact"):
        exact = sum(1 for found in hot["exact"] if found["met"]) / len(hot["exact"])
        rows.append(_target("likes of one post counted exactly (MongoDB, then the cache): passes", exact, ">=", 1.0))
    for mixed in scenarios.get("mixed", {}).get("rates", []):
        at = f"mixed 95/5 at {mixed['planned_rate_per_s']:,}/s"
        rows.append(_target(f"{at}: planned writes sent", mixed["writes"] / mixed["writes_planned"], ">=", 1.0))
        if mixed["write_latency_ms"]:
            rows.append(_target(f"{at}: write p99 (ms)", mixed["write_latency_ms"]["p99"], "<", 250.0))
        rows.append(_target(f"{at}: the inspector's consistency", mixed["inspector"]["consistency"], ">=", 0.9999))
    consumer = scenarios.get("consumer")
    if consumer:
        rows.append(_target("run_consumer / raw consume", consumer["ratio"], ">=", 0.3))
    return rows


def _target(name: str, value: float, operator: str, goal: float) -> dict:
    met = {">=": value >= goal, "<=": value <= goal, "<": value < goal}[operator]
    return {"target": name, "value": round(value, 4), "goal": f"{operator} {goal}", "met": met}
