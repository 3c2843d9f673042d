"""The base layer's answers at the API's edges: Retry-After on every 503, the error headers, the
Host check below Django, and which request ids are kept."""

import json

import pytest

from cqrs_site.core.errors import PreconditionFailed, Unavailable
from cqrs_site.core.hosts import AllowedHosts
from cqrs_site.core.logs import VALID_REQUEST_ID


def test_a_503_says_when_to_retry_and_a_412_names_the_current_version():
    assert int(Unavailable().headers()["Retry-After"]) >= 1
    assert PreconditionFailed("moved", current_version=7).headers() == {"ETag": '"7"'}
    assert PreconditionFailed("moved").headers() == {}


def call(application, host: str, path: str = "/api/posts/x") -> tuple[str, bytes]:
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    body = b"".join(application({"HTTP_HOST": host, "PATH_INFO": path}, start_response))
    return seen["status"], body


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("api.example.com:8000", True),
        ("www.shop.example", True),
        ("shop.example", True),
        ("evil.example", False),
        ("api.example.com.evil.example", False),
        ("", False),
        ("[::1]:80", False),
    ],
)
def test_hosts_are_judged_by_djangos_rules(host, allowed):
    application = AllowedHosts(
        lambda environ, start: [start("200 OK", []) or b"ok"], ["api.example.com", ".shop.example"]
    )
    status, body = call(application, host)
    if allowed:
        assert status == "200 OK" and body == b"ok"
    else:
        assert status.startswith("400") and json.loads(body)["error"]["code"] == "bad_request"


def test_probes_reach_the_internal_endpoints_whatever_their_host():
    application = AllowedHosts(lambda environ, start: [start("200 OK", []) or b"ok"], ["api.example.com"])
    for path in ("/metrics", "/readyz", "/healthz"):
        assert call(application, "10.0.0.7:8101", path)[0] == "200 OK"


@pytest.mark.parametrize("raw", ["a", "client-1.a_b", "0" * 64, "6f1c2d3e-aaaa-bbbb-cccc-123456789012"])
def test_well_formed_request_ids_are_kept(raw):
    assert VALID_REQUEST_ID.match(raw)


@pytest.mark.parametrize("raw", ["", "a" * 65, "a b", "a:b", "a,b", "a\r\nb", "été", "a/b"])
def test_anything_else_is_not_a_request_id(raw):
    assert not VALID_REQUEST_ID.match(raw)
