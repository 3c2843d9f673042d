"""The benchmark's outputs: latest.json, latest.md (the summary table) and PNG plots."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HTTP_SCENARIOS = [
    ("ceiling_wsgi", "ceiling (bare WSGI + Redis GET)"),
    ("hits_uniform", "cache hits, uniform"),
    ("hits_zipf", "cache hits, Zipf"),
    ("misses", "cache misses"),
    ("mixed", "mixed 95/5 (reads)"),
]


def _row(name: str, label: str, result: dict) -> str:
    latency = result["latency_ms"]
    errors = sum(result.get("errors", {}).values()) if "errors" in result else "-"
    return (
        f"| {label} | {result['rps']:,.0f} | {latency['p50']:.2f} | {latency['p99']:.2f} | "
        f"{latency.get('max', 0):.1f} | {errors} |"
    )


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
        "| scenario | req/s | p50 ms | p99 ms | max ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in HTTP_SCENARIOS:
        if name in scenarios:
            result = scenarios[name]["reads"] if name == "mixed" else scenarios[name]
            lines.append(_row(name, label, {**result, "rps": scenarios[name]["rps"]}))
    redis = scenarios.get("redis_benchmark_get")
    if redis:
        lines.append(
            f"| raw Redis GET (redis-benchmark, no HTTP) | {redis['rps']:,.0f} | {redis['latency_ms']['p50']:.2f} | "
            f"{redis['latency_ms']['p99']:.2f} | - | - |"
        )
    misses = scenarios.get("misses")
    if misses:
        x = misses["x_cache"]
        lines += ["", f"Misses: X-Cache miss {x['miss']:,}, hit {x['hit']:,}, other {x['other']:,} over the passes."]
    mixed = scenarios.get("mixed")
    if mixed:
        w = mixed["write_latency_ms"] or dict.fromkeys(("p50", "p99", "max"), float("nan"))
        lines.append(
            f"Mixed: {mixed['writes']} writes sent at {mixed['write_rate_per_s']:.0f}/s ({mixed['write_share']:.1%} "
            f"of requests; {mixed['writes_not_started']} not sent: all 128 writer threads were waiting), statuses "
            f"{mixed['write_statuses']}; write latency p50 {w['p50']:.1f} ms, p99 {w['p99']:.1f} ms, "
            f"max {w['max']:.1f} ms."
        )
    visibility = scenarios.get("visibility")
    if visibility and visibility["delay_ms"]:
        d = visibility["delay_ms"]
        lines.append(
            f"Visibility at {visibility['rate_per_s']} writes/s ({visibility['writes']} writes, "
            f"{visibility['write_errors']} errors): p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, "
            f"max {d['max']:.1f} ms."
        )
    consumer = scenarios.get("consumer")
    if consumer:
        lines.append(
            f"Consumer: {consumer['events']:,} events; run_consumer {consumer['run_consumer']['events_per_s']:,.0f}/s, "
            f"raw consume {consumer['raw_consume']['events_per_s']:,.0f}/s (ratio {consumer['ratio']:.2f})."
        )
    lines += ["", "| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for target in results["targets"]:
        lines.append(
            f"| {target['target']} | {target['value']} | {target['goal']} | {'yes' if target['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: dict, out: Path) -> None:
    scenarios = results["scenarios"]
    present = [(name, label) for name, label in HTTP_SCENARIOS if name in scenarios]
    if not present:
        return
    labels = [label.replace(" (", "\n(") for _, label in present]

    figure, axis = plt.subplots(figsize=(9, 4.5))
    values = [scenarios[name]["rps"] for name, _ in present]
    bars = axis.bar(labels, values, color=["#777"] + ["#417690"] * (len(values) - 1))
    axis.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=2)
    axis.set_ylabel("requests / s")
    axis.set_title("Throughput through HAProxy (one run)")
    axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(out / "throughput.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(9, 4.5))
    quantiles = ["p50", "p90", "p99", "p999"]
    width = 0.8 / len(present)
    for index, (name, label) in enumerate(present):
        latency = (scenarios[name]["reads"] if name == "mixed" else scenarios[name])["latency_ms"]
        axis.bar(
            [q + index * width for q in range(len(quantiles))],
            [latency[q] for q in quantiles],
            width,
            label=label,
        )
    axis.set_xticks([q + width * (len(present) - 1) / 2 for q in range(len(quantiles))], quantiles)
    axis.set_ylabel("latency, ms")
    axis.set_yscale("log")
    axis.set_title("Latency percentiles (wrk, one run)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(results))
    plots(results, out)
