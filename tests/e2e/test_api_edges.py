"""The API's edges, each through HAProxy as a client meets them: conditional writes, retries
with Idempotency-Key, Location, Cache-Control, CORS, Link, internal endpoints in any spelling,
request ids, JSON errors with Retry-After, Host, the admin's login limit and permissions."""

import http.client
import json
import re
import socket
import threading
import uuid

import pytest
import requests
from bson import ObjectId
from requests.adapters import HTTPAdapter

from tests.stackctl import stack_start, stack_stop

pytestmark = pytest.mark.e2e

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = stack_start(
        tmp_path_factory.mktemp("stack"), own_servers=False, group_suffix="-api-edges", CORS_ALLOWED_ORIGINS=ORIGIN
    )
    yield running
    try:
        running.heal()
    finally:  # whatever heal found, nothing of the stack may be left running
        stack_stop(running)


def new_post(stack) -> dict:
    user = stack.writer.post(stack.url + "/api/users", json={"username": "u" + uuid.uuid4().hex[:12]}).json()
    body = {"user_id": user["id"], "title": "Edges", "content": "C"}
    return stack.writer.post(stack.url + "/api/posts", json=body).json()


def raw(stack, request: bytes, port: int | None = None) -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client normalizes them); the status, headers and body."""
    with socket.create_connection(("127.0.0.1", port or int(stack.env["PORT"])), timeout=10) as connection:
        connection.sendall(request)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def get_raw(stack, path: str, port: int | None = None, **headers) -> tuple[int, dict, bytes]:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return raw(stack, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}Connection: close\r\n\r\n".encode(), port)


def assert_json_error(body: bytes, code: str | None = None) -> None:
    error = json.loads(body)["error"]
    assert error["message"] and (code is None or error["code"] == code), error


# --- conditional writes -----------------------------------------------------------------------


def test_if_match_applies_a_patch_or_delete_only_to_the_version_it_names(stack):
    post = new_post(stack)
    url = f"{stack.url}/api/posts/{post['id']}"
    moved = stack.writer.patch(url, json={"title": "Second"}).json()
    assert moved["version"] == 2
    stale = stack.writer.patch(url, json={"title": "Lost"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.headers["ETag"] == '"2"'
    assert_json_error(stale.content, "precondition_failed")
    assert stack.writer.patch(url, json={"title": "Lost"}, headers={"If-Match": 'W/"2"'}).status_code == 412
    assert stack.writer.patch(url, json={"title": "x"}, headers={"If-Match": "2"}).status_code == 400
    current = stack.writer.patch(url, json={"title": "Third"}, headers={"If-Match": '"1", "2"'})
    assert current.status_code == 200 and current.headers["ETag"] == '"3"'
    assert stack.writer.delete(url, headers={"If-Match": '"2"'}).status_code == 412
    assert stack.mongo.posts.find_one({"title": "Third"})["deleted"] is False
    assert stack.writer.delete(url, headers={"If-Match": "*"}).status_code == 204
    assert stack.writer.patch(url, json={"title": "Gone"}, headers={"If-Match": "*"}).status_code == 404


# --- Idempotency-Key and Location -----------------------------------------------------------------


def test_a_retried_post_with_the_same_key_replays_the_first_answer_with_one_effect(stack):
    key, name = str(uuid.uuid4()), "idem" + uuid.uuid4().hex[:10]
    first = stack.writer.post(stack.url + "/api/users", json={"username": name}, headers={"Idempotency-Key": key})
    again = stack.writer.post(stack.url + "/api/users", json={"username": name}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert first.content == again.content
    assert first.headers["ETag"] == again.headers["ETag"] == '"1"'
    assert first.headers["Location"] == again.headers["Location"] == f"/api/users/{first.json()['id']}"
    assert stack.reader.get(stack.url + first.headers["Location"]).json()["username"] == name
    assert stack.mongo.users.count_documents({"username": name}) == 1
    other = stack.writer.post(stack.url + "/api/users", json={"username": name + "x"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert_json_error(other.content, "unprocessable")
    malformed = stack.writer.post(stack.url + "/api/users", json={"username": "m"}, headers={"Idempotency-Key": "a b"})
    assert malformed.status_code == 400


def test_concurrent_duplicates_have_one_effect_and_keys_belong_to_their_user(stack):
    post = new_post(stack)
    url, key = f"{stack.url}/api/posts/{post['id']}/like", str(uuid.uuid4())
    answers: list = []

    def like():
        answers.append(requests.post(url, headers={**stack.writer.headers, "Idempotency-Key": key}, timeout=30))

    threads = [threading.Thread(target=like) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200] * 8
    assert {answer.json()["like_count"] for answer in answers} == {1}
    assert sum(1 for answer in answers if "Idempotent-Replayed" not in answer.headers) == 1
    token = stack.manage("create_api_token", "second-client").stdout.strip()
    theirs = requests.post(url, headers={"Authorization": f"Token {token}", "Idempotency-Key": key}, timeout=10)
    assert theirs.status_code == 200 and theirs.json()["like_count"] == 2  # the same key, another user
    assert stack.mongo.posts.find_one({"title": "Edges", "like_count": 2}) is not None


# --- reads: Cache-Control, Link -------------------------------------------------------------------


def test_every_read_may_be_stored_but_is_revalidated_first(stack):
    post = new_post(stack)
    path = f"/api/posts/{post['id']}"
    miss = stack.reader.get(stack.url + path, headers={"X-Min-Version": "1"})
    for answer in (miss, stack.reader.get(stack.url + path), stack.reader.get(stack.url + "/api/posts?limit=1")):
        assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-cache", answer.headers
    etag = miss.headers["ETag"]
    revalidated = stack.reader.get(stack.url + path, headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.headers["Cache-Control"] == "no-cache"


def test_a_feed_page_links_to_the_next_one(stack):
    user = stack.writer.post(stack.url + "/api/users", json={"username": "l" + uuid.uuid4().hex[:10]}).json()
    for n in range(3):
        stack.writer.post(stack.url + "/api/posts", json={"user_id": user["id"], "title": f"P{n}", "content": "C"})
    first = stack.reader.get(f"{stack.url}/api/users/{user['id']}/posts?limit=2", headers={"Cache-Control": "no-cache"})
    link = re.fullmatch(r'<(/api/users/\w+/posts\?limit=2&cursor=[\w-]+)>; rel="next"', first.headers["Link"])
    assert link and first.json()["next"] in link.group(1)
    rest = stack.reader.get(stack.url + link.group(1), headers={"Cache-Control": "no-cache"})
    assert [post["title"] for post in rest.json()["results"]] == ["P0"] and "Link" not in rest.headers


# --- CORS -----------------------------------------------------------------------------------------


def test_preflights_from_an_allowed_origin_are_answered_for_reads_and_writes(stack):
    for method, path in (("GET", "/api/posts?order=top"), ("POST", "/api/posts"), ("PATCH", "/api/posts/x")):
        answer = requests.options(
            stack.url + path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
            timeout=5,
        )
        assert answer.status_code == 204 and answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert method in answer.headers["Access-Control-Allow-Methods"]
        allowed = answer.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= {h.strip() for h in allowed.split(",")}
    read = stack.reader.get(stack.url + "/api/posts?limit=1", headers={"Origin": ORIGIN})
    assert read.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in read.headers["Vary"]
    assert "ETag" in read.headers["Access-Control-Expose-Headers"]


def test_an_origin_not_listed_gets_no_cors_headers(stack):
    preflight = requests.options(
        stack.url + "/api/posts",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert preflight.status_code == 403 and "Access-Control-Allow-Origin" not in preflight.headers
    assert_json_error(preflight.content, "forbidden")
    read = stack.reader.get(stack.url + "/api/posts?limit=1", headers={"Origin": "https://evil.example"})
    assert read.status_code == 200 and "Access-Control-Allow-Origin" not in read.headers


# --- internal endpoints, request ids, Host --------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/metrics", "/%6detrics", "/metric%73", "/%6D%65trics", "//metrics", "/./metrics", "/api/../metrics",
     "/metrics/", "/METRICS", "/readyz", "/healthz", "/%72eadyz", "/metrics%", "/metrics%zz"],
)  # fmt: skip
def test_no_internal_endpoint_answers_through_the_public_port_in_any_spelling(stack, path):
    status, headers, body = get_raw(stack, path)
    assert status in (400, 404), (path, status, body[:200])
    assert headers["content-type"] == "application/json" and b"cqrs_" not in body
    assert_json_error(body)


def test_the_pools_refuse_their_internal_endpoints_to_a_proxied_request(stack):
    port = stack.process("write-1").port
    assert get_raw(stack, "/metrics", port)[0] == 200  # a scraper, directly
    for path in ("/metrics", "/readyz", "/healthz"):
        status, _, body = get_raw(stack, path, port, **{"X-Forwarded-For": "203.0.113.9"})
        assert status == 404, path
        assert_json_error(body, "not_found")


@pytest.mark.parametrize("sent", ["bad id", "a" * 65, "x,y", "a:b", "\u00e9t\u00e9", "a" * 10_000])
def test_a_malformed_request_id_is_replaced_in_haproxy_and_in_the_app(stack, sent):
    post = new_post(stack)
    header = {"X-Request-ID": sent.encode("utf-8").decode("latin-1")}
    answer = stack.reader.get(f"{stack.url}/api/posts/{post['id']}", headers=header)
    assert answer.status_code == 200 and re.fullmatch(r"[0-9a-f-]{36}", answer.headers["X-Request-ID"])
    if len(sent) < 8000:  # gunicorn itself refuses a longer header line (431) before the app runs
        pool = f"http://127.0.0.1:{stack.process('read-1').port}/api/posts/{post['id']}"
        assert re.fullmatch(r"[0-9a-f]{32}", requests.get(pool, headers=header, timeout=5).headers["X-Request-ID"])
    kept = stack.reader.get(f"{stack.url}/api/posts/{post['id']}", headers={"X-Request-ID": "client-1.a_b"})
    assert kept.headers["X-Request-ID"] == "client-1.a_b"


def test_a_host_this_api_does_not_serve_is_refused_by_both_pools(stack):
    post = new_post(stack)
    for method, path in (("GET", f"/api/posts/{post['id']}"), ("GET", "/api/posts"), ("POST", "/api/users")):
        answer = requests.request(
            method, stack.url + path, headers={**stack.writer.headers, "Host": "evil.example"}, json={}, timeout=5
        )
        assert answer.status_code == 400, (method, path, answer.text)
        assert_json_error(answer.content, "bad_request")
    assert stack.reader.get(f"{stack.url}/api/posts/{post['id']}", headers={"Host": "localhost:8000"}).ok


# --- errors in the JSON shape, Retry-After --------------------------------------------------------


def test_what_the_pools_servers_refuse_is_answered_in_json(stack):
    post = new_post(stack)
    big = stack.writer.post(f"{stack.url}/api/posts/{post['id']}/like", headers={"X-Big": "a" * 9000})
    assert big.status_code == 431
    assert_json_error(big.content, "headers_too_large")
    long = stack.reader.get(f"{stack.url}/api/posts/{'0' * 24}?q={'a' * 5000}")
    assert long.status_code == 414
    assert_json_error(long.content, "uri_too_long")
    request = b"POST /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2097152\r\n\r\nx"
    status, headers, body = raw(stack, request)  # HAProxy's own refusal, from its errorfile
    assert status == 413 and headers["content-type"] == "application/json"
    assert_json_error(body)
    # Not covered: a request HAProxy 2.6 cannot parse at all gets its built-in HTML 400, whatever
    # the errorfile (haproxy/haproxy#3032, fixed in 3.2); deploy/README.md says so.


def test_a_csrf_refusal_outside_the_admin_is_json(stack):
    port = stack.process("write-1").port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/healthz", body=b"", headers={"Cookie": "csrftoken=x"})
    answer = connection.getresponse()
    assert answer.status == 403 and answer.getheader("Content-Type") == "application/json"
    assert_json_error(answer.read(), "forbidden")


def test_every_503_says_when_to_retry(stack):
    for server in stack.haproxy_servers("write_pool"):
        stack.haproxy_admin("write_pool", server, "maint")
    try:
        answer = stack.writer.post(stack.url + "/api/users", json={"username": "nobody"})
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert_json_error(answer.content, "unavailable")
    finally:
        for server in stack.haproxy_servers("write_pool"):
            stack.haproxy_admin("write_pool", server, "ready")
    ready = requests.get(f"http://127.0.0.1:{stack.process('read-1').port}/readyz", timeout=5)
    assert ready.status_code == 200  # (a 503 there carries Retry-After too: tests/unit/site)


# --- the admin ------------------------------------------------------------------------------------


class FromAddress(HTTPAdapter):
    """Connections from another loopback address (127.0.0.0/8 is all local): another client."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def admin_session(address: str = "127.0.0.1") -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


def admin_login(stack, session: requests.Session, username: str, password: str, **headers) -> requests.Response:
    page = session.get(stack.url + "/admin/login/", timeout=5)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    return session.post(
        stack.url + "/admin/login/", data=form, headers={"Referer": stack.url + "/admin/login/", **headers}, timeout=5
    )


def staff_user(stack, username: str, *codenames: str) -> None:
    granted = f"Permission.objects.filter(content_type__app_label='mongodb', codename__in={codenames!r})"
    code = (
        "from django.contrib.auth import get_user_model; from django.contrib.auth.models import Permission; "
        f"u = get_user_model().objects.create_user({username!r}, password='right-password-1', is_staff=True); "
        f"u.user_permissions.set({granted})"
    )
    stack.manage("shell", "-c", code)


def test_failed_admin_logins_are_limited_per_username_and_address(stack):
    staff_user(stack, "guarded", "view_post")
    attacker = admin_session("127.0.0.2")
    for n in range(10):  # ADMIN_LOGIN_FAILURES_LIMIT; a new X-Forwarded-For each time changes nothing
        failed = admin_login(stack, attacker, "guarded", "wrong", **{"X-Forwarded-For": f"198.51.100.{n}"})
        assert failed.status_code == 200
    blocked = admin_login(stack, attacker, "guarded", "right-password-1")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    elsewhere = admin_session("127.0.0.3")
    assert admin_login(stack, elsewhere, "guarded", "right-password-1").url.endswith("/admin/")
    assert "sessionid" in elsewhere.cookies


def test_the_admin_honours_djangos_permissions_on_mongodb_records(stack):
    post = new_post(stack)
    change = f"{stack.url}/admin/mongodb/posts/{post['id']}/change/"
    staff_user(stack, "no-perms")
    staff_user(stack, "viewer", "view_post")
    nobody, viewer = admin_session(), admin_session()
    admin_login(stack, nobody, "no-perms", "right-password-1")
    admin_login(stack, viewer, "viewer", "right-password-1")
    assert nobody.get(change).status_code == 403
    page = viewer.get(change)
    assert page.status_code == 200 and "View post" in page.text and 'name="title"' not in page.text
    token = viewer.cookies["csrftoken"]
    form = {"title": "Hacked", "content": "C", "version": "1", "_save": "1", "csrfmiddlewaretoken": token}
    viewer.post(change, data=form, headers={"Referer": change})
    assert viewer.get(f"{stack.url}/admin/mongodb/posts/{post['id']}/delete/").status_code == 403
    stored = stack.mongo.posts.find_one({"_id": ObjectId(post["id"])})
    assert (stored["title"], stored["version"], stored["deleted"]) == ("Edges", 1, False)


def test_a_client_straight_at_the_write_pool_cannot_choose_the_address_the_limit_counts(stack):
    """Only HAProxy's address (CQRS_TRUSTED_PROXIES) is believed: a local client that connects to
    the pool itself, with X-Forwarded-For, is counted under its own address."""
    staff_user(stack, "direct")
    pool = f"http://127.0.0.1:{stack.process('write-1').port}"
    direct = admin_session("127.0.0.1")
    for n in range(10):
        page = direct.get(pool + "/admin/login/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        form = {"username": "direct", "password": "wrong", "csrfmiddlewaretoken": token, "next": "/admin/"}
        headers = {"Referer": pool + "/admin/login/", "X-Forwarded-For": f"198.51.100.{n}"}
        assert direct.post(pool + "/admin/login/", data=form, headers=headers, timeout=5).status_code == 200
    # Ten failures counted under 127.0.0.1, whatever each claimed: the eleventh is refused.
    blocked = direct.post(pool + "/admin/login/", data=form, headers={"Referer": pool + "/admin/login/"}, timeout=5)
    assert blocked.status_code == 429


FULL_WIDTH = {code: code + 0xFEE0 for code in range(0x21, 0x7F)}  # "admin" -> its full-width form


@pytest.mark.parametrize(
    "spelling",
    [" {}".format, "{} ".format, "{}\t".format, lambda name: name.translate(FULL_WIDTH), str.upper],
    ids=["leading space", "trailing space", "tab", "full width", "upper case"],
)
def test_the_login_limit_counts_the_username_as_django_compares_it(stack, spelling):
    """After ten failures, every spelling Django's login reads as the same name is refused too."""
    name = f"limited{uuid.uuid4().hex[:6]}"
    staff_user(stack, name)
    client = admin_session(f"127.0.0.{random_octet()}")
    for _ in range(10):
        assert admin_login(stack, client, name, "wrong").status_code == 200
    assert admin_login(stack, client, spelling(name), "right-password-1").status_code == 429


def random_octet() -> int:
    return 10 + uuid.uuid4().int % 200


@pytest.mark.parametrize("through", ["haproxy", "write pool"])
def test_a_chunked_body_is_read_as_the_same_body_with_content_length(stack, through):
    """requests sends a generator's parts as chunks (Transfer-Encoding: chunked, no Content-Length)."""
    base = stack.url if through == "haproxy" else f"http://127.0.0.1:{stack.process('write-1').port}"
    user = stack.writer.post(stack.url + "/api/users", json={"username": "c" + uuid.uuid4().hex[:12]}).json()
    body = json.dumps({"user_id": user["id"], "title": "Chunked", "content": "C" * 3000}).encode()
    parts = (body[:1000], body[1000:2500], body[2500:])
    headers = {"Content-Type": "application/json"}
    created = stack.writer.post(base + "/api/posts", data=iter(parts), headers=headers, timeout=10)
    assert created.request.headers.get("Transfer-Encoding") == "chunked"
    assert created.status_code == 201, created.text
    assert (created.json()["title"], len(created.json()["content"])) == ("Chunked", 3000)
    # Over the body limit, chunked as well: 413 in the API's shape, nothing created.
    big = stack.writer.post(base + "/api/posts", data=iter([b"x" * 40000] * 2), headers=headers, timeout=10)
    assert big.status_code == 413
    assert_json_error(big.content, "too_large")
