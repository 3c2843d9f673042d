"""Cache hits answered by HAProxy from Redis (deploy/edge.lua): the same bytes and headers the
read pool sends, and everything the edge does not answer falls through to the pool unchanged."""

import os
import re
import time

import pytest
import redis
import requests

from deploy import processes
from tests.conftest import eventually

pytestmark = pytest.mark.e2e

# What the application sets on a hit; HAProxy adds the rest to every answer (checked below).
APP_HEADERS = ("Content-Type", "ETag", "X-Cache", "Content-Length")


def pool(stack, path: str, **headers) -> requests.Response:
    """The read pool's own answer (read-1, directly): the reference the edge must equal."""
    return requests.get(f"http://127.0.0.1:{stack.process('read-1').port}{path}", headers=headers, timeout=10)


def edge(stack, path: str, **headers) -> requests.Response:
    return stack.reader.get(stack.url + path, headers=headers)


def cached_post(stack) -> dict:
    post = stack.writer.post(stack.url + f"/api/posts/{stack.create_posts(1)[0]}/like").json()
    deadline = time.monotonic() + 10
    while stack.cached_version("post", post["post_id"]) != post["version"]:
        assert time.monotonic() < deadline, "the like never reached the cache"
        time.sleep(0.02)
    stack.reader.get(stack.url + f"/api/posts/{post['post_id']}/likes")  # and its likes entry
    return post


def test_a_hit_of_each_entry_route_is_answered_by_haproxy_with_the_pools_bytes_and_headers(stack):
    post = cached_post(stack)
    user_id = stack.reader.get(stack.url + f"/api/posts/{post['post_id']}").json()["user_id"]
    stack.reader.get(stack.url + f"/api/users/{user_id}")  # the user's entry is filled
    for path in (f"/api/users/{user_id}", f"/api/posts/{post['post_id']}", f"/api/posts/{post['post_id']}/likes"):
        answer, reference = edge(stack, path), pool(stack, path)
        assert answer.headers["X-Served-By"] == "edge", path
        assert answer.status_code == reference.status_code == 200
        assert answer.content == reference.content
        for name in APP_HEADERS:
            assert answer.headers[name] == reference.headers[name], (path, name)
        # What HAProxy sets on every answer, the edge's included.
        assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["X-Request-ID"])
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert edge(stack, path, **{"X-Request-ID": "kept-1"}).headers["X-Request-ID"] == "kept-1"


@pytest.mark.parametrize("if_none_match", ['"{v}"', 'W/"{v}"', '"1", "{v}"', "*", 'W/"0" , "{v}" ,'])
def test_if_none_match_answers_304_at_the_edge_as_the_pool_does(stack, if_none_match):
    post = cached_post(stack)
    path = f"/api/posts/{post['post_id']}/likes"
    header = {"If-None-Match": if_none_match.format(v=post["version"])}
    answer, reference = edge(stack, path, **header), pool(stack, path, **header)
    assert (answer.status_code, answer.headers["X-Served-By"]) == (304, "edge")
    assert reference.status_code == 304 and answer.content == reference.content == b""
    assert (answer.headers["ETag"], answer.headers["X-Cache"]) == (reference.headers["ETag"], "hit")


@pytest.mark.parametrize("if_none_match", ['"999"', 'W/"x"', "garbage", '"{v}" junk'])
def test_an_if_none_match_that_does_not_name_the_version_gets_the_body(stack, if_none_match):
    post = cached_post(stack)
    path = f"/api/posts/{post['post_id']}/likes"
    header = {"If-None-Match": if_none_match.format(v=post["version"])}
    answer, reference = edge(stack, path, **header), pool(stack, path, **header)
    assert answer.status_code == reference.status_code == 200 and answer.content == reference.content


def test_x_min_version_at_or_below_the_entry_is_a_hit_and_above_it_falls_through(stack):
    post = cached_post(stack)
    path = f"/api/posts/{post['post_id']}/likes"
    for minimum in (post["version"], post["version"] - 1, 0):
        answer = edge(stack, path, **{"X-Min-Version": str(minimum)})
        assert (answer.status_code, answer.headers["X-Served-By"]) == (200, "edge"), minimum
    above = edge(stack, path, **{"X-Min-Version": str(post["version"] + 1)})
    assert above.headers["X-Served-By"] == "read-pool" and above.headers["X-Cache"] == "miss"
    assert above.json()["version"] == post["version"]  # MongoDB has no newer one
    malformed = edge(stack, path, **{"X-Min-Version": "²"})
    assert (malformed.status_code, malformed.headers["X-Served-By"]) == (400, "read-pool")


def test_what_the_edge_does_not_answer_falls_through_to_the_pool(stack):
    post = cached_post(stack)
    post_id = post["post_id"]
    assert stack.reader.head(stack.url + f"/api/posts/{post_id}").headers["X-Served-By"] == "read-pool"
    assert edge(stack, f"/api/posts/{post_id.upper()}").headers["X-Served-By"] == "read-pool"
    assert edge(stack, "/api/posts").headers["X-Served-By"] == "read-pool"  # a feed
    assert edge(stack, f"/api/posts/{'0' * 24}").headers["X-Served-By"] == "read-pool"  # a miss
    assert stack.writer.delete(stack.url + f"/api/posts/{post_id}").status_code == 204
    deadline = time.monotonic() + 10
    while (buried := edge(stack, f"/api/posts/{post_id}")).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert buried.headers["X-Served-By"] == "read-pool"  # a tombstone: the pool's 404
    assert buried.json() == pool(stack, f"/api/posts/{post_id}").json()


@pytest.mark.skipif(os.environ.get("REDIS_TOPOLOGY") != "cluster", reason="a Redis Cluster's slots")
def test_on_a_cluster_the_edge_follows_a_slot_that_moves_to_another_primary(stack):
    """The edge routes by slot (deploy/edge.lua): while the post's slot is being migrated its
    old primary answers ASK, once it has moved MOVED; both are followed and still hits."""
    post = cached_post(stack)
    path = f"/api/posts/{post['post_id']}"
    reference = pool(stack, path).content
    assert edge(stack, path).headers["X-Served-By"] == "edge"  # its slot map names the slot's primary
    key = f"{stack.prefix}:post:{{{post['post_id']}}}"
    slot = stack.redis.keyslot(key)
    source = stack.redis.get_node_from_key(key)
    target = next(node for node in stack.redis.get_primaries() if node.name != source.name)
    old, new = (redis.Redis(host=n.host, port=n.port, socket_timeout=5) for n in (source, target))
    old_id, new_id = (client.execute_command("CLUSTER", "MYID") for client in (old, new))
    new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", old_id)
    old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
    keys = old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    assert key.encode() in keys
    old.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    asked = edge(stack, path)  # the old primary answers ASK: the key is on the new one already
    assert (asked.headers["X-Served-By"], asked.content) == ("edge", reference)
    for node in stack.redis.get_primaries():
        redis.Redis(host=node.host, port=node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
    moved = edge(stack, path)  # the old primary answers MOVED
    assert (moved.headers["X-Served-By"], moved.content) == ("edge", reference)
    assert edge(stack, path).headers["X-Served-By"] == "edge"


def test_edge_hits_are_counted_by_haproxys_exporter(stack):
    post = cached_post(stack)

    def edge_2xx() -> float:
        text = requests.get(f"{stack.stats_url}/metrics", timeout=5).text
        found = re.search(r'haproxy_backend_http_responses_total\{proxy="edge_hits",code="2xx"\} (\d+)', text)
        return float(found.group(1)) if found else 0.0

    before = edge_2xx()
    for _ in range(5):
        assert edge(stack, f"/api/posts/{post['post_id']}").headers["X-Served-By"] == "edge"
    # HAProxy counts a response when its stream ends, which can be just after the client has it:
    # a scrape right after the fifth answer once saw four (2026-11-29).
    eventually(lambda: edge_2xx() - before >= 5, timeout=5)


def test_no_origin_may_call_the_api_from_a_browser_by_default(stack):
    """CORS_ALLOWED_ORIGINS is empty unless set (tests/e2e/test_api_edges.py sets one)."""
    preflight = requests.options(
        stack.url + "/api/posts",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        timeout=5,
    )
    assert preflight.status_code == 403 and "Access-Control-Allow-Origin" not in preflight.headers
    hit = edge(stack, f"/api/posts/{cached_post(stack)['post_id']}", Origin="http://localhost:3000")
    assert hit.headers["X-Served-By"] == "edge" and "Access-Control-Allow-Origin" not in hit.headers


def logged(log_file, request_ids: list[str]) -> set[str]:
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return {rid for rid in request_ids if f"rid={rid}" in text}


def test_edge_hits_are_logged_in_a_sample_and_everything_else_always(stack):
    """EDGE_HIT_LOG_PERCENT is 1 by default: a line per hit would cost 16-30% of the edge's
    throughput (bench: "every hit logged"). Hits are still all counted, by the exporter above."""
    post = cached_post(stack)
    hits = [f"hit-{n}" for n in range(1000)]
    for rid in hits:
        assert edge(stack, f"/api/posts/{post['post_id']}", **{"X-Request-ID": rid}).headers["X-Served-By"] == "edge"
    fell_through = edge(stack, f"/api/posts/{post['post_id']}", **{"X-Request-ID": "min-1", "X-Min-Version": "99999"})
    assert fell_through.headers["X-Served-By"] == "read-pool"
    log_file = stack.process("haproxy").log_file
    deadline = time.monotonic() + 5
    while not logged(log_file, ["min-1"]):  # the last request's line: the ones before are written too
        assert time.monotonic() < deadline, "the read pool's answer was not logged"
        time.sleep(0.05)
    # 1% of 1,000: 10 expected; none has a probability of 4e-5, 50 or more under 1e-15.
    assert 1 <= len(logged(log_file, hits)) < 50


def test_every_edge_hit_is_logged_when_asked(stack, tmp_path):
    """The same HAProxy config and environment, with EDGE_HIT_LOG_PERCENT=100."""
    haproxy = stack.process("haproxy")
    port = processes.free_port()
    env = {
        **haproxy.env,
        "HAPROXY_BIND": f"127.0.0.1:{port}",
        "HAPROXY_STATS_BIND": f"127.0.0.1:{processes.free_port()}",
        "EDGE_HIT_LOG_PERCENT": "100",
    }
    every = processes.Process("haproxy-every-hit", haproxy.argv, tmp_path, port, env=env)
    every.start()
    try:
        every.wait_ready(15)
        post = cached_post(stack)
        hits = [f"every-{n}" for n in range(50)]
        for rid in hits:
            answer = requests.get(
                f"http://127.0.0.1:{port}/api/posts/{post['post_id']}", headers={"X-Request-ID": rid}, timeout=5
            )
            assert answer.headers["X-Served-By"] == "edge"
        deadline = time.monotonic() + 5
        while len(logged(every.log_file, hits)) < len(hits):
            assert time.monotonic() < deadline, f"{len(hits) - len(logged(every.log_file, hits))} hits not logged"
            time.sleep(0.05)
    finally:
        every.stop()
