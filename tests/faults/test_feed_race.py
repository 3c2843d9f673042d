"""Feeds under a race: writers create, like and delete posts while the consumers are paused and
resumed and cache entries and whole feeds are evicted; readers page through every feed.

During the run, no reader may see a deleted post in a feed after having seen it gone (a 404 of
the post). Once the consumers have caught up, every feed lists exactly MongoDB's live posts in
MongoDB's order (top: by like count, the order MongoDB's counts give)."""

import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from bson import ObjectId

from tests.stackctl import guarded_thread

pytestmark = pytest.mark.faults

RUN_SECONDS = 20


def feed_ids(session, url: str, limit: int, fresh: bool = False, most_pages: int = 200) -> list[str]:
    """Every page of one feed, in order (`fresh`: from MongoDB, Cache-Control: no-cache); a walk
    longer than `most_pages` is a cursor that does not move on."""
    seen, cursor = [], None
    headers = {"Cache-Control": "no-cache"} if fresh else {}
    for _ in range(most_pages):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = session.get(url, params=params, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        seen += [post["id"] for post in answer.json()["results"]]
        cursor = answer.json()["next"]
        if cursor is None:
            return seen
    raise AssertionError(f"{url} did not end within {most_pages} pages")


def mongo_order(stack, query: dict, field: str) -> list[str]:
    documents = stack.mongo.posts.find({**query, "deleted": False}, {"_id": 1}).sort([(field, -1), ("_id", -1)])
    return [str(d["_id"]) for d in documents]


def test_readers_never_see_a_deleted_post_come_back_and_feeds_converge_to_mongodb(stack, record):
    authors = [
        stack.writer.post(f"{stack.url}/api/users", json={"username": f"racer{n}-{time.monotonic_ns()}"}).json()["id"]
        for n in range(3)
    ]
    posts: list[str] = []
    lock, stop, errors = threading.Lock(), threading.Event(), []
    gone: dict[str, float] = {}  # post id -> when a reader first saw it deleted (a 404)
    comebacks, pages, writes = [], [0], [0]

    def writer():
        session, rng = requests.Session(), random.Random()
        session.headers.update(stack.writer.headers)
        while not stop.is_set():
            roll = rng.random()
            with lock:
                live = list(posts)
            if roll < 0.3 or len(live) < 5:
                author = rng.choice(authors)
                answer = session.post(
                    f"{stack.url}/api/posts", json={"user_id": author, "title": "race", "content": "c"}, timeout=30
                )
                assert answer.status_code == 201, answer.text
                with lock:
                    posts.append(answer.json()["id"])
            elif roll < 0.85:
                session.post(f"{stack.url}/api/posts/{rng.choice(live)}/like", timeout=30)
            else:
                session.delete(f"{stack.url}/api/posts/{rng.choice(live)}", timeout=30)
            writes[0] += 1

    def reader():
        session, rng = requests.Session(), random.Random()
        while not stop.is_set():
            with lock:
                known = list(posts)
            if known and rng.random() < 0.5:
                post = rng.choice(known)
                if session.get(f"{stack.url}/api/posts/{post}", timeout=30).status_code == 404:
                    gone.setdefault(post, time.monotonic())
                continue
            url = rng.choice(
                [f"{stack.url}/api/posts", f"{stack.url}/api/posts?order=top"]
                + [f"{stack.url}/api/users/{author}/posts" for author in authors]
            )
            started = time.monotonic()
            buried_before = {post for post, when in list(gone.items()) if when < started}
            # Pages from Redis, past the cached head (the stack keeps 40 posts per feed) and,
            # now and then, from MongoDB (no-cache): every path that serves a page is checked.
            # A walk's bound scales with the posts: a keyset cursor only moves down, so each post
            # shows at most twice (a stale score in Redis, then MongoDB's), plus the posts created
            # during the walk (a fast hour's writers made 684 in 20 s: 200 pages of 3 were too few).
            limit = rng.choice([3, 10, 50])
            most_pages = (2 * len(known) + 1000) // limit + 10
            shown = set(feed_ids(session, url, limit, fresh=rng.random() < 0.2, most_pages=most_pages))
            pages[0] += 1
            comebacks.extend((url, post) for post in shown & buried_before)

    def pause_consumers_and_evict():
        rng = random.Random()
        while not stop.is_set():
            # Under the 6 s session timeout: the group keeps its members (Tansu may strand a
            # member that rejoins right after the others left).
            for name in ("consumer-1", "consumer-2"):
                stack.signal(name, signal.SIGSTOP)
            stop.wait(rng.uniform(0.5, 3))
            for name in ("consumer-1", "consumer-2"):
                stack.signal(name, signal.SIGCONT)
            with lock:
                known = list(posts)
            for post in rng.sample(known, min(5, len(known))):
                stack.redis.delete(f"{stack.prefix}:post:{{{post}}}")
            if rng.random() < 0.3:
                feed = rng.choice(["latest", "top", f"user-posts:{rng.choice(authors)}"])
                stack.redis.delete(f"{stack.prefix}:feed:{feed}")
            stop.wait(rng.uniform(0.5, 2))

    threads = [
        guarded_thread(w, errors, stop) for w in (writer, writer, reader, reader, reader, pause_consumers_and_evict)
    ]
    for thread in threads:
        thread.start()
    stop.wait(RUN_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(60)
    for name in ("consumer-1", "consumer-2"):
        stack.signal(name, signal.SIGCONT)
    assert not errors, errors
    assert not comebacks, comebacks[:10]

    # Converged: the consumers caught up (no event pending), then every feed equals MongoDB.
    deadline, session = time.monotonic() + 60, requests.Session()
    expected = {
        f"{stack.url}/api/posts": mongo_order(stack, {}, "created_at"),
        f"{stack.url}/api/posts?order=top": mongo_order(stack, {}, "like_count"),
        **{
            f"{stack.url}/api/users/{author}/posts": mongo_order(stack, {"user_id": ObjectId(author)}, "created_at")
            for author in authors
        },
    }
    while True:
        with ThreadPoolExecutor(max_workers=5) as pool:
            actual = dict(zip(expected, pool.map(lambda url: feed_ids(session, url, 25), expected), strict=True))
        if actual == expected:
            break
        assert time.monotonic() < deadline, {url: (actual[url][:5], expected[url][:5]) for url in expected}
        time.sleep(0.5)
    record(
        "feed_race",
        seconds=RUN_SECONDS,
        writes=writes[0],
        feed_reads=pages[0],
        deleted_seen=len(gone),
        comebacks=0,
        posts=len(posts),
    )
