"""The consumer scenario's three steps, each its own process (Django consumer settings):

    python -m bench.backlog produce TOPIC N IDS_FILE [B] N PostReacted events over the posts in IDS_FILE
                                                        (versions from B + 2: above an earlier backlog's)
    python -m bench.backlog raw TOPIC N                 a bare consumer reads them: the broker's rate
    python -m bench.backlog apply TOPIC N [C]           C `manage.py run_consumer cache` (default 1) apply them

`raw` and `apply` print one JSON line; both are timed from the partition assignment to the last
event read (raw) or committed after its apply (run_consumer), with the same consumer settings.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cqrs_site.settings.consumer")
django.setup()

from bson import ObjectId  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from django.conf import settings  # noqa: E402

from writes.aggregates import event_from_outbox  # noqa: E402
from writes.events import POST, POST_REACTED, outbox_entry  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# How often `apply` asks the broker for the group's committed offsets: its rate's end is known to
# within this (plus an OffsetFetch round trip), where `raw` stamps its last message itself. At
# 50 ms a 0.7 s apply measured about 40 ms longer than at 10 ms (three pairs of runs, 2026-11-28).
POLL_SECONDS = 0.01


def produce(topic: str, count: int, ids_file: str, base: str = "0") -> None:
    """Versions base + 2, base + 3, … of every post in turn: each event is newer than what the
    cache holds (give each backlog a base above the versions of the one before), so every one
    is a real apply through the fence."""
    ids = Path(ids_file).read_text().split()
    producer = Producer({**settings.KAFKA_PRODUCER_CONFIG, "linger.ms": 20, "batch.num.messages": 2000})
    now = datetime.now(UTC)
    author = ObjectId()
    for n in range(count):
        post_id, version = ids[n % len(ids)], int(base) + 2 + n // len(ids)
        state = {
            "_id": ObjectId(post_id),
            "user_id": author,
            "title": f"Post {post_id}",
            "content": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8,
            "like_count": version - 1,
            "dislike_count": 0,
            "created_at": now,
            "updated_at": now,
            "version": version,
            "deleted": False,
        }
        event = event_from_outbox(outbox_entry(event_type=POST_REACTED, aggregate=POST, state=state))
        while True:
            try:
                producer.produce(topic, key=post_id.encode(), value=event.encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise SystemExit(f"{left} events were not acknowledged")
    print(json.dumps({"produced": count}))


def raw(topic: str, count: int) -> None:
    assigned_at: list[float] = []
    consumer = Consumer(
        {
            **settings.KAFKA_CONSUMER_CONFIG,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic], on_assign=lambda c, parts: assigned_at.append(time.perf_counter()))
    seen, last = 0, 0.0
    deadline = time.monotonic() + 300
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(500, 1.0):
            if message.error() is None:
                seen += 1
                last = time.perf_counter()
    consumer.close()
    seconds = last - assigned_at[0]
    print(json.dumps({"events": seen, "seconds": round(seconds, 3), "events_per_s": seen / seconds}))


def apply(topic: str, count: int, consumers: str = "1") -> None:
    """`consumers` run_consumer processes in one new group; timed from the first assignment."""
    group = f"bench-apply-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp())
    env = {**os.environ, "KAFKA_EVENTS_TOPIC": topic, "KAFKA_DEAD_LETTER_TOPIC": topic + ".dlq"}
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_consumer", "cache", "--group", group, "--ready-file", str(ready)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for ready in (folder / f"consumer-{n}.ready" for n in range(int(consumers)))
    ]
    watcher = Consumer({**settings.KAFKA_CONSUMER_CONFIG, "group.id": group})
    partitions = [TopicPartition(topic, p) for p in watcher.list_topics(topic, timeout=10).topics[topic].partitions]
    try:
        deadline = time.monotonic() + 300
        while not any(folder.glob("*.ready")):
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise SystemExit("run_consumer did not join its group")
            time.sleep(0.005)
        # From the moment the first consumer was assigned its partitions (its ready file's
        # time), as `raw` is timed from its assignment.
        started = min(ready.stat().st_mtime for ready in folder.glob("*.ready"))
        scripts_before, cpu_before = _script_seconds(), _cpu_seconds(processes)
        committed = 0
        while committed < count and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            committed = sum(max(tp.offset, 0) for tp in watcher.committed(partitions, timeout=10))
        seconds = time.time() - started
        # Where the time went: the consumers' CPU (their librdkafka threads included) and
        # Redis's time in the cache's apply script, over the same span.
        cpu, scripts = _cpu_seconds(processes) - cpu_before, _script_seconds() - scripts_before
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
        watcher.close()
    rate = committed / seconds
    print(
        json.dumps(
            {
                "consumers": len(processes),
                "events": committed,
                "seconds": round(seconds, 3),
                "events_per_s": rate,
                "consumer_cpu_s": round(cpu, 3),
                "redis_script_s": round(scripts, 3),
            }
        )
    )


def _cpu_seconds(processes) -> float:
    """User and system CPU the processes have used so far (Linux /proc)."""
    total = 0
    for process in processes:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return total / os.sysconf("SC_CLK_TCK")


def _script_seconds() -> float:
    """Redis's time in EVALSHA so far (every caller's: the bench's stack is otherwise idle); on a
    cluster, every primary's added up."""
    from cqrs_site.core.redis_client import clustered, redis_client

    client = redis_client()
    if clustered():
        nodes = client.get_primaries()
        infos = [client.info("commandstats", target_nodes=node) for node in nodes]
    else:
        infos = [client.info("commandstats")]
    return sum(info.get("cmdstat_evalsha", {}).get("usec", 0) for info in infos) / 1e6


if __name__ == "__main__":
    command, topic, count, *rest = sys.argv[1:]
    {"produce": produce, "raw": raw, "apply": apply}[command](topic, int(count), *rest)
