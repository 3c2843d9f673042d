"""The read pool's WSGI fast path: a cache hit answered below Django, the same bytes and headers
Django would send; everything else handed to Django untouched."""

import threading

import pytest

from cqrs_site.core.codec import post_key
from cqrs_site.core.redis_client import clustered, redis_client
from reads.fastpath import CacheHits
from tests.wsgi import DjangoSpy, wsgi_call
from writes import services


def call(app, path: str, method: str = "GET", **headers) -> tuple[int, dict, bytes]:
    return wsgi_call(app, method, path, headers=headers)


@pytest.fixture
def spy(db):
    return DjangoSpy()


@pytest.fixture
def app(spy):
    return CacheHits(spy)


@pytest.fixture
def post():
    user = services.user_create(username="fast")
    return services.post_create(user_id=user["id"], title="T", content="C")


def test_a_hit_is_answered_below_django_with_djangos_bytes_and_headers(app, spy, post):
    for path in (f"/api/posts/{post['id']}", f"/api/posts/{post['id']}/likes", f"/api/users/{post['user_id']}"):
        redis_client().flushdb()
        status, headers, body = call(app, path)  # a miss: Django fills the cache
        assert (status, headers["X-Cache"], spy.calls) == (200, "miss", 1)
        django = call(spy.django, path)
        fast = call(app, path)
        assert spy.calls == 1  # the hit never reached Django
        assert fast[0] == django[0] == 200 and fast[2] == django[2] == body
        for name in ("Content-Type", "ETag", "X-Cache"):
            assert fast[1][name] == django[1][name], name
        assert int(fast[1]["Content-Length"]) == len(body)
        spy.calls = 0


def keys_read(action, near: str) -> list[str]:
    """The keys clients GET from Redis while `action` runs, as Redis's MONITOR saw them (the
    version-fence script's own reads left out); on a cluster, the node of the key `near`."""
    seen, started = [], threading.Event()
    client = redis_client()
    start, stop = f"{near}:monitor-start", f"{near}:monitor-stop"  # (in its slot)
    monitor = client.monitor(target_node=client.get_node_from_key(near)) if clustered() else client.monitor()

    def watch():
        with monitor:
            for command in monitor.listen():
                words = command["command"].split()
                if words == ["GET", start]:
                    started.set()
                elif words == ["GET", stop]:
                    return
                elif words[0] == "GET" and command.get("client_type") != "lua" and started.is_set():
                    seen.append(words[1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    while not started.is_set():
        client.get(start)
        started.wait(0.05)
    action()
    client.get(stop)
    watcher.join(5)
    return seen


def test_a_request_the_fast_path_hands_to_django_reads_its_key_from_redis_once(app, spy, post):
    path = f"/api/posts/{post['id']}"
    key = post_key(post["id"])
    redis_client().flushdb()
    assert keys_read(lambda: call(app, path), key) == [key]  # a miss: the fast path's GET only
    assert spy.calls == 1
    services.post_delete(post_id=post["id"])  # no consumer here: the next miss fills a tombstone
    redis_client().flushdb()
    assert call(app, path)[0] == 404
    assert keys_read(lambda: call(app, path), key) == [key] and spy.calls == 3  # Django answers the tombstone


def test_if_none_match_on_a_hit_answers_304(app, spy, post):
    path = f"/api/posts/{post['id']}"
    call(app, path)
    status, headers, body = call(app, path, If_None_Match='"1"')
    assert (status, body, headers["ETag"], spy.calls) == (304, b"", '"1"', 1)
    assert call(app, path, If_None_Match='"0"')[0] == 200


def test_x_min_version_above_the_cached_entry_goes_to_django(app, spy, post):
    path = f"/api/posts/{post['id']}"
    call(app, path)  # cached at version 1
    services.post_update(post_id=post["id"], title="T2")  # no consumer: the cache stays at 1
    assert call(app, path, X_Min_Version="1")[1]["X-Cache"] == "hit" and spy.calls == 1
    status, headers, body = call(app, path, X_Min_Version="2")
    assert (status, headers["X-Cache"], spy.calls) == (200, "miss", 2) and b'"title":"T2"' in body
    assert call(app, path, X_Min_Version="two")[0] == 400 and spy.calls == 3  # Django explains


def test_tombstones_unknown_ids_and_other_requests_go_to_django(app, spy, post):
    services.post_delete(post_id=post["id"])
    path = f"/api/posts/{post['id']}"
    assert call(app, path)[0] == 404 and call(app, path)[0] == 404  # the second reads the tombstone
    assert spy.calls == 2
    assert call(app, f"/api/posts/{'0' * 24}")[0] == 404
    assert call(app, "/api/posts/not-an-id")[0] == 404
    assert call(app, path, method="HEAD")[0] == 404
    assert call(app, f"/api/users/{post['user_id']}/posts")[0] == 200
    assert spy.calls == 6
