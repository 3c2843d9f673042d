"""MongoDB SIGKILLed under likes: every acknowledged like survives, one by one, and every 503
says only what is true.

Each like carries its own X-Request-ID, which its event carries as a header: once the stack has
converged, the events topic names every like that landed in MongoDB. Then:
- every like answered 200 landed, and its `like_count` and `version` were handed to no other
  like (a lost write followed by another reuses both: totals would hide it);
- MongoDB's final count of each post is exactly the number of likes that landed;
- every "not applied" 503 did not land, every "applied, unconfirmed" did, and "outcome unknown"
  may be either (counted);
- the stack converges by itself (cache equal to MongoDB, outboxes empty) within the bound.
"""

import threading
import time
import uuid
from collections import defaultdict

import orjson
import pymongo
import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.stackctl import Background

pytestmark = pytest.mark.faults

KILLS = 3
CONVERGED_WITHIN_SECONDS = 60
WRITERS = 6


class Likes(Background):
    """WRITERS threads sending likes to a few posts, each with its own request id."""

    def __init__(self, stack, posts: list[str]):
        super().__init__(*[self._run] * WRITERS)
        self.stack, self.posts = stack, posts
        self.answers: list[tuple[str, str, int, dict]] = []  # (request id, post, status, body)
        self.cut: list[str] = []  # request ids answered with no HTTP answer at all
        self.lock = threading.Lock()

    def _run(self) -> None:
        session = requests.Session()
        session.headers.update(self.stack.writer.headers)
        i = 0
        while not self.stop.is_set():
            post, rid = self.posts[i % len(self.posts)], uuid.uuid4().hex
            i += 1
            try:
                answer = session.post(
                    f"{self.stack.url}/api/posts/{post}/like", headers={"X-Request-ID": rid}, timeout=60
                )
            except requests.RequestException:
                with self.lock:
                    self.cut.append(rid)
                continue
            try:
                body = answer.json()
            except ValueError:
                body = {"raw": answer.text[:200]}
            with self.lock:
                self.answers.append((rid, post, answer.status_code, body))
            if answer.status_code != 200:
                time.sleep(0.05)


def mongodb_answers(stack) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            stack.mongo.client.admin.command("ping")
            return
        except pymongo.errors.PyMongoError:
            assert time.monotonic() < deadline, "MongoDB did not come back within 30 s"
            time.sleep(0.1)


def landed_likes(stack, posts: set[str]) -> dict[str, str]:
    """Request id -> post of every PostReacted event of `posts` on the events topic."""
    servers = dict(line.split("=", 1) for line in (stack.run_dir / "servers.env").read_text().splitlines())
    consumer = Consumer(
        {
            "bootstrap.servers": servers["KAFKA_BOOTSTRAP_SERVERS"],
            "group.id": f"durability-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    topic = stack.env.get("KAFKA_EVENTS_TOPIC", "cqrs.events")
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    # Assigned, not subscribed: no group to join (Tansu holds a JoinGroup for seconds).
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    landed, seen, quiet_since = {}, set(), time.monotonic()
    try:
        while time.monotonic() - quiet_since < 3:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error():
                    continue
                quiet_since = time.monotonic()
                event = orjson.loads(message.value())
                if event["type"] != "PostReacted" or event["aggregate_id"] not in posts:
                    continue
                if event["event_id"] in seen:  # the relay may send an event twice
                    continue
                seen.add(event["event_id"])
                rid = dict(message.headers() or []).get("request_id", b"").decode()
                assert rid not in landed, f"two events for one like: {rid}"
                landed[rid] = event["aggregate_id"]
    finally:
        consumer.close()
    return landed


def test_mongodb_sigkilled_under_likes_keeps_every_acknowledged_like_and_every_503_is_true(stack, record):
    posts = stack.posts_in_cache(4)
    before = {d["_id"]: d["like_count"] for d in stack.mongo.posts.find({}, {"like_count": 1})}
    with Likes(stack, posts) as likes:
        time.sleep(2)
        for _ in range(KILLS):
            stack.kill("mongodb")
            mongodb_answers(stack)
            time.sleep(3)
    answered_at = time.monotonic()
    converged_in = stack.wait_converged("post", posts, CONVERGED_WITHIN_SECONDS)

    landed = landed_likes(stack, set(posts))
    final = {str(d["_id"]): d["like_count"] - before[d["_id"]] for d in stack.mongo.posts.find({}, {"like_count": 1})}
    by_status: dict = defaultdict(list)
    for rid, post, status, body in likes.answers:
        by_status[(status, body.get("error", {}).get("code"))].append((rid, post, body))

    acknowledged = by_status.pop((200, None), [])
    assert acknowledged, "no like was acknowledged"
    # Every acknowledged like landed, and handed out a count and a version of its own.
    assert [rid for rid, _post, _body in acknowledged if rid not in landed] == []
    for field in ("like_count", "version"):
        handed = defaultdict(list)
        for _rid, post, body in acknowledged:
            handed[post].append(body[field])
        assert all(len(values) == len(set(values)) for values in handed.values()), f"a {field} handed out twice"
    # MongoDB holds exactly the likes that landed.
    for post in posts:
        assert final[post] == sum(1 for landed_post in landed.values() if landed_post == post)
    # Every 503 says what is true.
    not_applied = by_status.pop((503, "unavailable"), [])
    unconfirmed = by_status.pop((503, "applied_unconfirmed"), [])
    unknown = by_status.pop((503, "outcome_unknown"), [])
    assert [rid for rid, _post, _body in not_applied if rid in landed] == []
    assert [rid for rid, _post, _body in unconfirmed if rid not in landed] == []
    assert not by_status, f"answers other than 200 and the three 503s: {dict(by_status)}"

    record(
        "mongodb_sigkilled_under_likes",
        kills=KILLS,
        acknowledged=len(acknowledged),
        acknowledged_lost=0,
        counts_handed_twice=0,
        not_applied=len(not_applied),
        applied_unconfirmed=len(unconfirmed),
        outcome_unknown=len(unknown),
        outcome_unknown_landed=sum(1 for rid, _post, _body in unknown if rid in landed),
        no_answer=len(likes.cut),
        no_answer_landed=sum(1 for rid in likes.cut if rid in landed),
        converged_seconds=round(converged_in, 2),
        after_load_seconds=round(time.monotonic() - answered_at, 2),
    )
