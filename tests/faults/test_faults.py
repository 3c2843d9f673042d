"""Fault injection on the whole stack: each test breaks something on purpose and then checks
that nothing was lost and the cache converged (the `stack` fixture also requires
check_consistency to report zero stale entries afterwards)."""

import random
import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.stackctl import guarded_thread

pytestmark = pytest.mark.faults


def paced(stack, count: int, rate: float, write, during=None):
    """Send `count` writes at `rate` per second from a pool; `during(i)` runs before write i.
    Returns the status codes."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures, start = [], time.monotonic()
        for i in range(count):
            if during is not None:
                during(i)
            futures.append(pool.submit(write, i))
            time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        return [f.result().status_code for f in futures]


def like_or_patch(stack, ids):
    def write(i):
        post = ids[i % len(ids)]
        if i % 5 == 0:
            return stack.writer.patch(f"{stack.url}/api/posts/{post}", json={"title": f"w{i}"}, timeout=30)
        return stack.writer.post(f"{stack.url}/api/posts/{post}/like", timeout=30)

    return write


def version_sum(stack, ids) -> int:
    from bson import ObjectId

    return sum(d["version"] for d in stack.mongo.posts.find({"_id": {"$in": [ObjectId(i) for i in ids]}}))


def test_broker_frozen_for_10s_during_500_writes(stack, record):
    ids = stack.posts_in_cache(10)
    frozen = {}

    def fault(i):
        if i == 100:
            stack.signal("kafka", signal.SIGSTOP)
            frozen["at"] = time.monotonic()
        if "at" in frozen and "until" not in frozen and time.monotonic() - frozen["at"] >= 10:
            stack.signal("kafka", signal.SIGCONT)
            frozen["until"] = time.monotonic()
            frozen["writes"] = i - 100

    codes = paced(stack, 500, 25, like_or_patch(stack, ids), during=fault)
    if "until" not in frozen:
        stack.signal("kafka", signal.SIGCONT)
        frozen.update(until=time.monotonic(), writes=400)
    assert codes == [200] * 500
    assert version_sum(stack, ids) == 10 + 500  # every answered write is in MongoDB
    converge = stack.wait_converged("post", ids, 30)
    record(
        "broker_frozen_10s",
        writes=500,
        writes_during_fault=frozen["writes"],
        non_2xx=0,
        events_lost=0,
        seconds_to_converge_after_resume=round(time.monotonic() - frozen["until"], 2),
        seconds_to_converge_after_stream=round(converge, 2),
    )


def test_writer_and_relay_killed_while_events_wait_in_the_outbox(stack, record):
    ids = stack.posts_in_cache(5)
    stack.signal("kafka", signal.SIGSTOP)
    codes = [like_or_patch(stack, ids)(i).status_code for i in range(50)]
    assert codes == [200] * 50
    pending = sum(len(d["outbox"]) for d in stack.mongo.posts.find({"outbox.0": {"$exists": True}}))
    stack.kill("write-1")  # its producer's queue dies with it: only the outboxes hold the events
    stack.kill("relay")
    stack.signal("kafka", signal.SIGCONT)
    stack.heal()  # a relay again...
    time.sleep(2.5)  # ...which starts on the pending events (grace 2 s)
    stack.kill("relay")  # killed mid-stream
    resumed = time.monotonic()
    stack.heal()
    converge = stack.wait_converged("post", ids, 30)
    assert version_sum(stack, ids) == 5 + 50
    record(
        "writer_and_relay_killed",
        writes=50,
        events_pending_when_writer_killed=pending,
        events_lost=0,
        seconds_to_converge=round(time.monotonic() - resumed, 2),
        converge_wait=round(converge, 2),
    )


def test_consumer_killed_mid_stream_and_restarted(stack, record):
    ids = stack.posts_in_cache(10)

    def fault(i):
        if i == 60:
            stack.kill("consumer-1")
        if i == 180:
            stack.heal()

    codes = paced(stack, 300, 30, like_or_patch(stack, ids), during=fault)
    assert codes == [200] * 300
    converge = stack.wait_converged("post", ids, 30)
    record("consumer_killed", writes=300, non_2xx=0, events_lost=0, seconds_to_converge=round(converge, 2))


def committed(stack) -> list[int]:
    probe = Consumer(
        {"bootstrap.servers": servers(stack)["KAFKA_BOOTSTRAP_SERVERS"], "group.id": stack.env["CACHE_CONSUMER_GROUP"]}
    )
    topic = stack.env["KAFKA_EVENTS_TOPIC"]
    partitions = [TopicPartition(topic, p) for p in range(6)]
    offsets = [tp.offset for tp in probe.committed(partitions, timeout=10)]
    probe.close()
    return offsets


def servers(stack) -> dict:
    return dict(line.split("=", 1) for line in (stack.run_dir / "servers.env").read_text().splitlines())


def test_redis_down_reads_degrade_to_mongodb_writes_go_on_and_the_consumer_waits(stack, record):
    ids = stack.posts_in_cache(4)
    before = committed(stack)
    stack.process("redis").stop()

    answer = requests.get(f"{stack.url}/api/posts/{ids[0]}", timeout=10)
    assert (answer.status_code, answer.headers["X-Cache"]) == (200, "degraded")
    codes = [like_or_patch(stack, ids)(i).status_code for i in range(1, 21)]
    assert codes == [200] * 20
    answer = requests.get(f"{stack.url}/api/posts/{ids[1]}/likes", timeout=10)
    likes = sum(1 for i in range(1, 21) if i % len(ids) == 1 and i % 5 != 0)  # like_or_patch's choice
    assert answer.headers["X-Cache"] == "degraded" and answer.json()["like_count"] == likes
    time.sleep(2)
    assert committed(stack) == before  # the consumer applied nothing, so committed nothing

    back = time.monotonic()
    stack.heal()  # an empty Redis on the same port
    converge = stack.wait_converged("post", ids, 30)
    assert committed(stack) != before
    record(
        "redis_down",
        writes_during_fault=20,
        reads_during_fault="200 degraded",
        events_lost=0,
        seconds_to_converge=round(time.monotonic() - back, 2),
        converge_wait=round(converge, 2),
    )


def test_mongodb_down_cached_reads_answer_the_rest_503_and_nothing_is_half_written(stack, record):
    ids = stack.posts_in_cache(3)
    uncached = ids[2]
    stack.redis.delete(f"{stack.prefix}:post:{{{uncached}}}")
    before = {str(d["_id"]): d["version"] for d in stack.mongo.posts.find({}, {"version": 1})}
    stack.process("mongodb").stop()

    hit = requests.get(f"{stack.url}/api/posts/{ids[0]}", timeout=15)
    assert (hit.status_code, hit.headers["X-Cache"]) == (200, "hit")
    miss = requests.get(f"{stack.url}/api/posts/{uncached}", timeout=15)
    assert miss.status_code == 503 and miss.json()["error"]["code"] == "unavailable"
    write = stack.writer.post(f"{stack.url}/api/posts/{ids[0]}/like", timeout=15)
    assert write.status_code == 503 and write.json()["error"]["code"] == "unavailable"

    stack.heal()
    after = {str(d["_id"]): d["version"] for d in stack.mongo.posts.find({}, {"version": 1})}
    assert after == before
    assert requests.get(f"{stack.url}/api/posts/{uncached}", timeout=15).status_code == 200
    record("mongodb_down", cached_reads="200", uncached_reads=503, writes=503, half_written=0)


def test_a_poison_event_is_dead_lettered_and_the_events_behind_it_are_applied(stack):
    ids = stack.posts_in_cache(1)
    bootstrap = servers(stack)["KAFKA_BOOTSTRAP_SERVERS"]
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(stack.env["KAFKA_EVENTS_TOPIC"], key=ids[0].encode(), value=b'{"type":"PostReacted"}')
    assert producer.flush(10) == 0
    assert stack.writer.post(f"{stack.url}/api/posts/{ids[0]}/like").status_code == 200  # same partition
    stack.wait_converged("post", ids, 15)

    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    reader.subscribe([stack.env["KAFKA_DEAD_LETTER_TOPIC"]])
    deadline, found = time.monotonic() + 20, []
    while time.monotonic() < deadline and not found:
        found = [m for m in reader.consume(10, 0.5) if m.error() is None and m.value() == b'{"type":"PostReacted"}']
    reader.close()
    assert found and dict(found[0].headers())["dlq.error"].startswith(b"EventInvalid")


def test_200_concurrent_reads_of_a_cold_key_cause_a_handful_of_mongodb_reads(stack, record):
    ids = stack.posts_in_cache(1)
    stack.redis.delete(f"{stack.prefix}:post:{{{ids[0]}}}")
    stack.signal("relay", signal.SIGSTOP)  # its scans would count too
    try:
        queries = lambda: stack.mongo.client.admin.command("serverStatus")["opcounters"]["query"]  # noqa: E731
        before = queries()
        barrier = threading.Barrier(200)

        def read(_):
            barrier.wait()
            return requests.get(f"{stack.url}/api/posts/{ids[0]}", timeout=30)

        with ThreadPoolExecutor(max_workers=200) as pool:
            answers = list(pool.map(read, range(200)))
        reads = queries() - before
    finally:
        stack.signal("relay", signal.SIGCONT)
    assert [a.status_code for a in answers] == [200] * 200
    assert reads <= 5, f"{reads} MongoDB reads for one cold key"
    record("cold_key_stampede", concurrent_reads=200, mongodb_reads=reads)


def test_randomized_race_readers_never_see_a_version_go_back(stack, record):
    hot = stack.posts_in_cache(4)
    doomed = hot[3]
    stop = threading.Event()
    regressions, reads, writes = [], [0], [0]

    def writer():
        session = requests.Session()
        session.headers.update(stack.writer.headers)
        rng = random.Random()
        while not stop.is_set():
            post = rng.choice(hot[:3])
            if rng.random() < 0.3:
                session.patch(f"{stack.url}/api/posts/{post}", json={"content": str(rng.random())})
            else:
                session.post(f"{stack.url}/api/posts/{post}/{rng.choice(['like', 'dislike'])}")
            writes[0] += 1

    def reader():
        session, rng = requests.Session(), random.Random()
        seen: dict[str, float] = defaultdict(float)
        while not stop.is_set():
            post = rng.choice(hot)
            path = rng.choice(["", "/likes"])
            last = seen[post + path]
            headers = {"X-Min-Version": str(int(last) + 1)} if last != float("inf") and rng.random() < 0.3 else {}
            answer = session.get(f"{stack.url}/api/posts/{post}{path}", headers=headers)
            reads[0] += 1
            version = float("inf") if answer.status_code == 404 else answer.json()["version"]
            if version < seen[post + path]:
                regressions.append((post + path, seen[post + path], version))
            seen[post + path] = max(seen[post + path], version)

    def evict_and_delete():
        rng = random.Random()
        time.sleep(10)
        stack.writer.delete(f"{stack.url}/api/posts/{doomed}")
        # Evicted entries, so fills keep racing the consumer. The evictions end 2 s before the
        # rest: an entry evicted after its post's last write is filled by the next read of it,
        # and nothing else would bring it back (the inspector repairs stale entries, not
        # missing ones), so convergence is judged on what the reads and the consumer wrote.
        ends = time.monotonic() + 8
        while not stop.is_set() and time.monotonic() < ends:
            stack.redis.delete(f"{stack.prefix}:post:{{{rng.choice(hot[:3])}}}{rng.choice(['', ':likes'])}")
            time.sleep(0.2)

    errors = []
    threads = [
        guarded_thread(f, errors, stop) for f in [writer, writer, reader, reader, reader, reader, evict_and_delete]
    ]
    for thread in threads:
        thread.start()
    stop.wait(20)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert not regressions, regressions[:10]
    converge = stack.wait_converged("post", hot, 30)
    record(
        "randomized_race",
        seconds=20,
        reads=reads[0],
        writes=writes[0],
        regressions=0,
        seconds_to_converge=round(converge, 2),
    )


def test_with_redis_stopped_the_edge_falls_through_to_the_pool_which_answers_degraded(stack):
    ids = stack.posts_in_cache(1)
    hit = requests.get(f"{stack.url}/api/posts/{ids[0]}", timeout=10)
    assert (hit.headers["X-Served-By"], hit.headers["X-Cache"]) == ("edge", "hit")
    stack.process("redis").stop()
    started = time.monotonic()
    answer = requests.get(f"{stack.url}/api/posts/{ids[0]}", timeout=10)
    assert (answer.status_code, answer.headers["X-Served-By"], answer.headers["X-Cache"]) == (
        200,
        "read-pool",
        "degraded",
    )
    assert answer.content == hit.content
    assert time.monotonic() - started < 2  # the edge gave up on Redis within its timeout


def test_with_the_read_pool_frozen_cached_records_are_still_answered_by_the_edge(stack, record):
    ids = stack.posts_in_cache(3)
    for post in ids:
        requests.get(f"{stack.url}/api/posts/{post}/likes", timeout=10)  # the likes entries too
    for name in ("read-1", "read-2"):
        stack.signal(name, signal.SIGSTOP)
    try:
        answers = [
            requests.get(f"{stack.url}/api/posts/{post}{suffix}", timeout=5)
            for post in ids
            for suffix in ("", "/likes")
        ]
    finally:
        for name in ("read-1", "read-2"):
            stack.signal(name, signal.SIGCONT)
    assert [(a.status_code, a.headers["X-Served-By"]) for a in answers] == [(200, "edge")] * 6
    record("read_pool_frozen", cached_reads=len(answers), answered_by="edge")
