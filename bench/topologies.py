"""The read side's scenarios again on each other Redis topology (deploy/redis_topology.py), right
after the whole run on one Redis, each on a stack of its own: `make bench`'s topology table and
targets (bench/report.py) hold each beside the single server's from the same `make bench`."""

import argparse

from .common import log
from .report import targets

# The scenarios whose cost the topology changes.
TOPOLOGY_SCENARIOS = ["hits", "feeds", "consumer"]


def add_topology_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topologies",
        nargs="*",
        choices=["single", "sentinel", "cluster"],
        default=["sentinel", "cluster"],
        help="after the run, hits, feeds and consumer again on each of these (default: sentinel cluster)",
    )
    parser.add_argument(
        "--redis-topology",
        choices=["single", "sentinel", "cluster"],
        default="single",
        help="the cache: one Redis; a primary, a replica the edge reads and three sentinels; or a six-node"
        " Redis Cluster (default single)",
    )


def run_topologies(bench, args, scenarios: list[str]) -> dict:
    """bench(args).run(), then TOPOLOGY_SCENARIOS (those asked for) on each other topology:
    results["topologies"][name] holds their scenarios."""
    results = bench(args).run()
    only = [name for name in (args.only or scenarios) if name in TOPOLOGY_SCENARIOS]
    for topology in args.topologies:
        if topology == args.redis_topology or not only:
            continue
        log(f"the read side again, Redis under {topology}: {', '.join(only)}")
        other = bench(argparse.Namespace(**{**vars(args), "redis_topology": topology, "only": only})).run()
        results.setdefault("topologies", {})[topology] = other["scenarios"]
        results["total_s"] = round(results["total_s"] + other["total_s"], 1)
    results["targets"] = targets(results["scenarios"], results.get("topologies", {}))
    return results
