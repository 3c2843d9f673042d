"""The whole stack as real processes, through HAProxy: what a new user does with curl."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

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
    assert answer.json() == user and answer.headers["X-Served-By"] == "read-pool"

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
