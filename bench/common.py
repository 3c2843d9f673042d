"""What the benchmark's scenario families share: paths, load constants and small helpers."""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
# A 600-byte answer for HAProxy's static ceiling, the size of a cached post.
STATIC_BODY = '{"static":"' + "x" * 586 + '"}'
# The consumer scenario's compacting backlog goes round this many posts.
HOT_KEYS = 500
# The backlogs' versions start here.
BACKLOG_BASE_VERSION = 1_000_000
# Most paced calls in flight at once (the visibility scenarios' writes; the mixed scenario's have
# MIXED_WRITE_WORKERS).
PACED_WORKERS = 128
MIXED_WRITE_WORKERS = 256


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "count": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def scrape(address: str) -> dict[str, float]:
    text = requests.get(f"http://{address}/metrics", timeout=5).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


# A paced write that starts this much behind its plan is counted as late (the client had every
# worker waiting on an answer).
LATE_SECONDS = 0.1


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user and system) of a process and its children, from /proc (0 if gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_seconds(int(child)) for child in children)


def median_pass(passes: list[dict]) -> dict:
    """Of passes of one load, the one with the median rate (the lower of the middle two)."""
    return sorted(passes, key=lambda found: found["rps"])[(len(passes) - 1) // 2]


def statuses(codes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in codes:
        counts[str(code)] = counts.get(str(code), 0) + 1
    return counts


def chunks(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
