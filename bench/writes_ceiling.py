"""The writes' yardstick: the stores' own cost of a write, at the benchmark's concurrency, with
no HTTP, no Django and no application code. Each of N threads loops: one MongoDB update of a
post by `_id`, then one Kafka produce (idempotent, acks=all) waited for. Nothing real can write
faster through these stores.

    python -m bench.writes_ceiling like|patch|create SECONDS THREADS IDS_FILE [--hot]

It writes to the `ceiling_posts` collection (a copy of the posts: the same documents, the same
indexes, made by bench/run.py) and the KAFKA_EVENTS_TOPIC it is given, so the stack's cache,
consumers and inspector never see it.

Prints one JSON line: {"kind", "writes", "seconds", "rps", "latency_ms": {p50, p99}}.
"""

import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pymongo
from bson import ObjectId
from confluent_kafka import Producer

QUANTILES = (("p50", 0.5), ("p99", 0.99))


def main(kind: str, seconds: float, threads: int, ids_file: str, hot: bool = False) -> None:
    db = pymongo.MongoClient(os.environ["MONGODB_URI"]).get_database()
    ids = [ObjectId(line) for line in Path(ids_file).read_text().split()]
    producer = Producer(
        {
            "bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "allow.auto.create.topics": False,
        }
    )
    topic = os.environ.get("KAFKA_EVENTS_TOPIC", "cqrs.events")
    stop, latencies, lock = threading.Event(), [], threading.Lock()
    threading.Thread(target=lambda: [producer.poll(0.05) for _ in iter(stop.is_set, True)], daemon=True).start()
    payload = b'{"bench": "writes ceiling", "state": {"title": "' + b"x" * 400 + b'"}}'

    def write(n: int) -> None:
        post = ids[0] if hot else ids[n % len(ids)]
        if kind == "like":
            db.ceiling_posts.update_one({"_id": post}, {"$inc": {"like_count": 1, "version": 1}})
        elif kind == "patch":
            db.ceiling_posts.update_one({"_id": post}, {"$set": {"title": f"t{n}"}, "$inc": {"version": 1}})
        else:
            db.ceiling_posts.insert_one(
                {
                    "_id": ObjectId(),
                    "user_id": ids[0],
                    "title": "t",
                    "content": "c" * 400,
                    "version": 1,
                    "created_at": datetime.now(UTC),
                }
            )
        acked = threading.Event()
        producer.produce(topic, key=str(post).encode(), value=payload, on_delivery=lambda err, msg: acked.set())
        acked.wait(5)

    def worker(offset: int) -> None:
        n = offset
        while not stop.is_set():
            began = time.perf_counter()
            write(n)
            with lock:
                latencies.append(time.perf_counter() - began)
            n += threads

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker_thread in workers:
        worker_thread.start()
    time.sleep(seconds)
    stop.set()
    for worker_thread in workers:
        worker_thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "kind": kind + (" (one post)" if hot else ""),
                "writes": len(ordered),
                "seconds": round(elapsed, 3),
                "rps": len(ordered) / elapsed,
                "latency_ms": {
                    q: ordered[int(f * (len(ordered) - 1))] * 1000 for q, f in (("p50", 0.5), ("p99", 0.99))
                },
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], hot="--hot" in sys.argv)
