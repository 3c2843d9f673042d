"""The whole stack as real processes, through HAProxy: what a new user does with curl."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from bson import ObjectId

pytestmark = pytest.mark.e2e


def visible(stack, path: str, check, timeout: float = 1.0):
    """The read path's answer once `check` holds, which must happen within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = stack.reader.get(stack.url + path)
        if check(answer):
            return answer
        assert time.monotonic() < deadline, f"{path} not visible within {timeout}s: {answer.status_code} {answer.text}"
        time.sleep(0.02)


def test_a_new_users_walkthrough_each_write_visible_through_the_read_path_within_a_second(stack):
    status = stack.command("status")
    assert status.returncode == 0 and "NOT" not in status.stdout, status.stdout

    user = stack.writer.post(stack.url + "/api/users", json={"username": "walker"})
    assert (user.status_code, user.headers["X-Served-By"]) == (201, "write-pool")
    user = user.json()
    answer = visible(stack, f"/api/users/{user['id']}", lambda a: a.status_code == 200)
    # The read path: HAProxy answers from Redis once the consumer has cached the user, else the read pool.
    assert answer.json() == user and answer.headers["X-Served-By"] in ("edge", "read-pool")

    post = stack.writer.post(
        stack.url + "/api/posts", json={"user_id": user["id"], "title": "T", "content": "C"}
    ).json()
    assert visible(stack, f"/api/posts/{post['id']}", lambda a: a.status_code == 200).json() == post

    liked = stack.writer.post(stack.url + f"/api/posts/{post['id']}/like").json()
    visible(stack, f"/api/posts/{post['id']}/likes", lambda a: a.json() == liked)

    patched = stack.writer.patch(stack.url + f"/api/posts/{post['id']}", json={"title": "T2"})
    assert patched.headers["ETag"] == '"3"'
    answer = visible(stack, f"/api/posts/{post['id']}", lambda a: a.json()["version"] == 3)
    assert answer.json()["title"] == "T2" and answer.headers["ETag"] == '"3"'

    assert stack.writer.delete(stack.url + f"/api/posts/{post['id']}").status_code == 204
    visible(stack, f"/api/posts/{post['id']}", lambda a: a.status_code == 404)
    assert visible(stack, f"/api/users/{user['id']}/posts", lambda a: a.ok).json() == {"results": [], "next": None}


def test_200_likes_sent_at_once_through_haproxy_give_200(stack):
    user = stack.writer.post(stack.url + "/api/users", json={"username": "crowd"}).json()
    post = stack.writer.post(
        stack.url + "/api/posts", json={"user_id": user["id"], "title": "T", "content": "C"}
    ).json()

    def like(_):
        return requests.post(stack.url + f"/api/posts/{post['id']}/like", headers=stack.writer.headers, timeout=30)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(like, range(200)))
    assert [a.status_code for a in answers] == [200] * 200
    assert sorted(a.json()["like_count"] for a in answers) == list(range(1, 201))
    final = visible(stack, f"/api/posts/{post['id']}/likes", lambda a: a.json()["version"] == 201, timeout=5)
    assert final.json()["like_count"] == 200


def test_writes_without_a_token_are_refused_and_reads_of_garbage_ids_are_404(stack):
    assert requests.post(stack.url + "/api/users", json={"username": "nobody"}).status_code == 401
    assert stack.reader.get(stack.url + "/api/posts/$gt").status_code == 404
    assert stack.reader.get(stack.url + "/api/posts/" + "f" * 24).status_code == 404


def scrape(address: str) -> dict[str, float]:
    """One /metrics page as {series: value}."""
    text = requests.get(f"http://{address}/metrics", timeout=5).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_one_request_id_is_followed_from_haproxys_log_to_the_consumers(stack):
    liked = stack.writer.post(stack.url + f"/api/posts/{stack.create_posts(1)[0]}/like")
    request_id = liked.headers["X-Request-ID"]  # HAProxy made it: the client sent none
    assert len(request_id) == 36

    def lines_with_id():
        found = {}
        for log in (stack.run_dir / "logs").glob("*.log"):
            hits = [line for line in log.read_text(errors="replace").splitlines() if request_id in line]
            if hits:
                found[log.stem] = hits
        return found if "haproxy" in found and any(name.startswith("consumer") for name in found) else None

    deadline = time.monotonic() + 10
    while (found := lines_with_id()) is None:
        assert time.monotonic() < deadline, "the request id did not reach the consumer's log"
        time.sleep(0.1)
    assert "POST /api/posts/" in found["haproxy"][0] and f"rid={request_id}" in found["haproxy"][0]
    [access] = [json.loads(line) for line in found["write-1"]]
    # One line per request: the application's (gunicorn's own access log is off unless asked for).
    path = liked.request.path_url
    assert sum(path in line for line in (stack.run_dir / "logs" / "write-1.log").read_text().splitlines()) == 1
    assert (access["status"], access["route"]) == (200, "api/posts/<str:post_id>/like")
    [applied] = [json.loads(line) for name, lines in found.items() if name.startswith("consumer") for line in lines]
    assert applied["message"] == "event applied" and applied["event_type"] == "PostReacted"


def test_every_process_serves_metrics_and_the_staleness_histogram_moves_with_writes(stack):
    targets = {
        group["labels"]["job"]: group["targets"]
        for group in json.loads((stack.run_dir / "prometheus-targets.json").read_text())
    }
    assert set(targets) == {"read-pool", "write-pool", "consumer", "relay", "inspector", "haproxy"}

    def applied() -> float:
        return sum(scrape(address).get("cqrs_write_to_apply_seconds_count", 0) for address in targets["consumer"])

    before = applied()
    posts = stack.create_posts(5)  # a user and five posts: six events
    deadline = time.monotonic() + 10
    while applied() < before + 6:
        assert time.monotonic() < deadline, "the consumers did not count the writes' delays"
        time.sleep(0.2)

    # Between them the two consumers hold the 6 partitions, and report the lag of each.
    deadline = time.monotonic() + 10
    while True:
        lag = {
            name: value
            for address in targets["consumer"]
            for name, value in scrape(address).items()
            if name.startswith("cqrs_consumer_lag_messages")
        }
        if len(lag) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(lag) == 6 and all(value >= 0 for value in lag.values()), lag

    writes = scrape(targets["write-pool"][0])
    assert writes['cqrs_outbox_publish_total{result="acked",sender="write"}'] >= 6
    assert any(name.startswith("cqrs_http_request_duration_seconds_bucket") for name in writes)
    for post_id in posts:
        assert stack.reader.get(stack.url + f"/api/posts/{post_id}").status_code == 200
    # Each read was answered by the read pool (a miss) or by HAProxy from Redis (an edge hit): both count it.
    series = 'cqrs_http_requests_total{method="GET",role="read",route="api/posts/<str:post_id>",status="200"}'
    pool = sum(scrape(address).get(series, 0) for address in targets["read-pool"])
    edge = sum(
        value
        for name, value in scrape(targets["haproxy"][0]).items()
        if name.startswith("haproxy_backend_http_responses_total{")
        and 'proxy="edge_hits"' in name
        and 'code="2xx"' in name
    )
    assert pool + edge >= 5, (pool, edge)
    assert "cqrs_relay_pending_events" in scrape(targets["relay"][0])
    # The inspector measures the consistency it sweeps (every entry checked recently).
    inspector = scrape(targets["inspector"][0])
    assert inspector["cqrs_inspector_oldest_unchecked_seconds"] < 60 and "cqrs_inspector_consistency_ratio" in inspector
    # HAProxy's exporter has every series the Grafana dashboard and the alert rules use.
    haproxy = {name.split("{")[0] for name in scrape(targets["haproxy"][0])}
    deploy = Path(__file__).parents[2] / "deploy"
    dashboard = json.loads((deploy / "grafana/dashboards/cqrs.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions.append((deploy / "alerts.yml").read_text())
    used = {name for expr in expressions for name in re.findall(r"\bhaproxy_[a-z_]+", expr)}
    assert {"haproxy_frontend_http_responses_total", "haproxy_server_status"} <= used <= haproxy, used - haproxy
    # Not through the public entry point.
    public = requests.get(stack.url + "/metrics", timeout=5)
    assert public.status_code == 404 and public.json()["error"]["code"] == "not_found"


def test_after_redis_lost_everything_warm_cache_rebuilds_it_from_mongodb(stack):
    """deploy/README.md, "Backups": Redis holds nothing that cannot be rebuilt. Lose all of it:
    the consumers find their notes gone and apply the last minute of the log again (the posts
    written in it come back by themselves); warm_cache rebuilds the rest, and the cache is whole
    again: every document's entry current."""
    posts = stack.posts_in_cache(5)
    stack.writer.post(stack.url + f"/api/posts/{posts[0]}/like")
    stack.wait_converged("post", posts, 10)
    stack.redis.flushdb()  # a Redis restarted without persistence, or failed over to an empty replica

    stack.wait_converged("post", posts, 10)  # no command typed: the consumers' replay
    warmed = stack.manage("warm_cache", "--no-progress").stdout
    assert re.fullmatch(r"\d+ entries stored, \d+ already current\n", warmed), warmed
    rebuilt = stack.consistency()
    # Every read model of every document (a post's entry, its likes, its user's) is there and current.
    assert (rebuilt["missing"], rebuilt["stale"]) == (0, 0) and rebuilt["consistent"] >= 2 * len(posts) + 1, rebuilt
    assert stack.converged("post", posts)
    for post in posts:  # hits again, answered at the edge from the rebuilt entries
        answer = stack.reader.get(f"{stack.url}/api/posts/{post}/likes")
        assert (answer.status_code, answer.headers["X-Cache"], answer.headers["X-Served-By"]) == (200, "hit", "edge")

    # Reads refill what they ask for: an entry lost (evicted), a read is a miss answered by the
    # read pool from MongoDB, at the version MongoDB holds, and the next is a hit.
    stack.redis.delete(f"{stack.prefix}:post:{{{posts[0]}}}:likes")
    version = stack.mongo.posts.find_one({"_id": ObjectId(posts[0])})["version"]
    path = f"{stack.url}/api/posts/{posts[0]}/likes"
    missed, refilled = stack.reader.get(path), stack.reader.get(path)
    assert (missed.headers["X-Cache"], missed.headers["X-Served-By"], missed.json()["version"]) == (
        "miss",
        "read-pool",
        version,
    )
    assert (refilled.headers["X-Cache"], refilled.headers["X-Served-By"], refilled.json()["version"]) == (
        "hit",
        "edge",
        version,
    )
