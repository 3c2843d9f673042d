"""Request ids and metrics through the pools' real WSGI stack (cqrs_site/wsgi.py's layers), against
the real Redis, MongoDB and Kafka."""

import json
import uuid

import pytest
from confluent_kafka import Consumer
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from prometheus_client import REGISTRY

from cqrs_site.core.telemetry import Instrumented
from reads.cache import cache_put
from reads.fastpath import CacheHits
from reads.models import Entry
from tests.conftest import eventually
from tests.wsgi import wsgi_call as call
from writes import services
from writes.tokens import api_token_create

POST_ROUTE = "api/posts/<str:post_id>"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def write_app(db):
    return Instrumented(get_wsgi_application(), role="write")


@pytest.fixture
def read_app(db):
    # The test settings' URLs serve the whole API, so this is the read pool's stack over them.
    return Instrumented(CacheHits(get_wsgi_application()), role="read")


@pytest.fixture
def token(db):
    from django.contrib.auth import get_user_model

    return api_token_create(user=get_user_model().objects.create(username="telemetry"))


def event_headers(key: str, timeout: float = 15.0) -> list[dict]:
    """The headers of every event on the topic keyed `key` (read by a group of its own)."""
    reader = Consumer({**settings.KAFKA_CONSUMER_CONFIG, "group.id": f"probe-{uuid.uuid4().hex}"})
    reader.subscribe([settings.KAFKA_EVENTS_TOPIC])
    found: list = []

    def arrived():
        found.extend(m for m in reader.consume(500, 0.5) if m.error() is None and m.key() == key.encode())
        return found

    try:
        eventually(arrived, timeout=timeout)
    finally:
        reader.close()
    return [dict(message.headers()) for message in found]


def test_a_writes_request_id_is_answered_and_travels_in_its_events_header(write_app, token):
    status, headers, body = call(
        write_app,
        "POST",
        "/api/users",
        body={"username": "traced"},
        headers={"Authorization": f"Token {token}", "X-Request-ID": "trace-0001"},
    )
    assert status == 201 and headers["X-Request-ID"] == "trace-0001"
    [event] = event_headers(json.loads(body)["id"])
    assert event["request_id"] == b"trace-0001" and event["type"] == b"UserCreated"


@pytest.mark.parametrize("sent", ["has spaces", "x" * 129, "$where", "a\nforged: header"])
def test_a_malformed_request_id_is_replaced_by_a_new_one(read_app, sent):
    _status, headers, _body = call(read_app, "GET", "/healthz", headers={"X-Request-ID": sent})
    assert headers["X-Request-ID"] != sent and len(headers["X-Request-ID"]) == 32


def read_counts() -> dict[str, float]:
    return {
        "requests": sample("cqrs_http_requests_total", role="read", route=POST_ROUTE, method="GET", status="200"),
        "timed": sample("cqrs_http_request_duration_seconds_count", role="read", route=POST_ROUTE, method="GET"),
        "hits": sample("cqrs_cache_lookups_total", result="hit"),
        "misses": sample("cqrs_cache_lookups_total", result="miss"),
        "fills": sample("cqrs_cache_writes_total", writer="fill", result="stored"),
    }


def test_requests_are_counted_and_timed_by_route_pattern_with_cache_hits_misses_and_fills(read_app):
    user = services.user_create(username="counted")
    posts = [services.post_create(user_id=user["id"], title=f"T{i}", content="C")["id"] for i in range(2)]
    before = read_counts()
    for post_id in posts:
        assert call(read_app, "GET", f"/api/posts/{post_id}")[1]["X-Cache"] == "miss"
        assert call(read_app, "GET", f"/api/posts/{post_id}")[1]["X-Cache"] == "hit"

    after = read_counts()
    # Four requests on one route; each miss filled the post's two entries (post and likes).
    assert {name: after[name] - before[name] for name in before} == {
        "requests": 4,
        "timed": 4,
        "hits": 2,
        "misses": 2,
        "fills": 4,
    }


def requests_with_method(method: str) -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "cqrs_http_requests"
        for s in metric.samples
        if s.name == "cqrs_http_requests_total" and s.labels["method"] == method
    )


def test_an_unknown_method_is_counted_as_other_not_as_a_new_series(read_app):
    before = requests_with_method("other")
    status, _headers, _body = call(read_app, "BREW", "/api/posts/" + "a" * 24)
    assert status in (401, 405)
    assert requests_with_method("other") == before + 1 and requests_with_method("BREW") == 0


def test_a_write_the_fence_refuses_is_counted():
    before = sample("cqrs_cache_writes_total", writer="consumer", result="refused")
    cache_put([Entry("fenced", 5, b"{}")], writer="consumer")
    assert cache_put([Entry("fenced", 4, b"{}"), Entry("fenced", 5, b"{}")], writer="consumer") == [0, 0]
    assert sample("cqrs_cache_writes_total", writer="consumer", result="refused") == before + 2


def test_metrics_are_served_at_slash_metrics_in_prometheus_text_format_whatever_the_host(write_app):
    services.user_create(username="scraped")
    # A scraper names the instance by its address, which ALLOWED_HOSTS need not list.
    status, headers, body = call(write_app, "GET", "/metrics", headers={"Host": "10.1.2.3:8000"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in ("cqrs_http_requests_total", "cqrs_cache_lookups_total", "cqrs_outbox_publish_total"):
        assert f"# HELP {name} " in text
    assert 'cqrs_outbox_publish_total{result="acked",sender="write"}' in text


@pytest.mark.parametrize("path", ["/api/nope", "/api/posts/x/y/z", "/nothing"])
def test_a_path_nothing_serves_is_a_json_404_in_the_one_error_shape(write_app, read_app, path):
    for app in (write_app, read_app):
        status, headers, body = call(app, "POST" if app is write_app else "GET", path)
        assert (status, headers["Content-Type"]) == (404, "application/json")
        assert json.loads(body)["error"]["code"] == "not_found"


def test_an_unhandled_exception_is_a_json_500_counted_and_logged_with_the_request_id(read_app, monkeypatch, caplog):
    from reads import selectors

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "post_get", broken)
    before = sample("cqrs_http_requests_total", role="read", route=POST_ROUTE, method="GET", status="500")
    status, headers, body = call(read_app, "GET", "/api/posts/" + "a" * 24, headers={"X-Request-ID": "trace-500"})
    assert (status, json.loads(body)["error"]["code"]) == (500, "server_error")
    assert b"a bug" not in body and headers["X-Request-ID"] == "trace-500"
    assert sample("cqrs_http_requests_total", role="read", route=POST_ROUTE, method="GET", status="500") == before + 1
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)
