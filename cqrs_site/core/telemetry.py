"""The outermost WSGI layer of both pools: request id, request metrics, the access log, and
GET /metrics (answered here, below Django: a scraper reaches each instance by its address, which
ALLOWED_HOSTS need not list, and a scrape costs no middleware).

It wraps everything, the read pool's cache-hit layer included, so a hit is counted and timed
like any other request. The route label is the URL pattern (`api/posts/<str:post_id>`), never
the raw path, so the metrics stay a bounded set of series: the hit layer names its route in the
environ, and `route_label` (a Django middleware) does it for every request Django answers.
"""

import ipaddress
import logging
import time
from functools import cache

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST

from .logs import request_id_clear, request_id_set
from .metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, exposition

access_log = logging.getLogger("cqrs.access")

ROUTE = "cqrs.route"
UNMATCHED = "unmatched"
# Any other method is counted as "other": a client must not be able to add series at will.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@cache
def _networks(names: tuple) -> tuple:
    return tuple(ipaddress.ip_network(net, strict=False) for net in names)


def client_address(request) -> str:
    """The client's address: the peer's (REMOTE_ADDR), unless the peer is a proxy we trust
    (CQRS_TRUSTED_PROXIES, HAProxy's address), whose X-Forwarded-For entry (the last one: the
    one it appended) names the client. Anyone else's X-Forwarded-For is ignored, so a client
    cannot choose the address a limit counts it under."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
    try:
        trusted = any(ipaddress.ip_address(remote) in net for net in _networks(tuple(settings.CQRS_TRUSTED_PROXIES)))
    except ValueError:
        trusted = False
    return (forwarded if trusted and forwarded else remote) or "unknown"


def route_label(get_response):
    """Middleware: put the matched URL pattern where the WSGI layer reads it."""

    def middleware(request):
        response = get_response(request)
        match = request.resolver_match
        request.environ[ROUTE] = match.route if match is not None else UNMATCHED
        return response

    return middleware


class Instrumented:
    """WSGI middleware (see the module's docstring)."""

    def __init__(self, application, *, role: str) -> None:
        self.application = application
        self.role = role
        self.log_requests = settings.CQRS_ACCESS_LOG
        self.count_requests = settings.CQRS_REQUEST_METRICS
        # (route, method, status) -> its counter and histogram children: `labels()` costs more
        # than the increment itself, and the hit path is counted in microseconds.
        self._series: dict[tuple[str, str, str], tuple] = {}

    def _children(self, route: str, method: str, status: str) -> tuple:
        key = (route, method, status)
        children = self._series.get(key)
        if children is None:
            label = method if method in METHODS else "other"
            children = (
                HTTP_REQUESTS.labels(self.role, route, label, status),
                HTTP_REQUEST_SECONDS.labels(self.role, route, label),
            )
            if method in METHODS:  # any other method is not worth a cache entry of its own
                self._series[key] = children
        return children

    def __call__(self, environ, start_response):
        # A scraper reaches the instance by its address; through a proxy (X-Forwarded-For) this
        # is someone else, and /metrics is not theirs to read (Django's 404 answers them).
        if (
            environ.get("PATH_INFO") == "/metrics"
            and environ.get("REQUEST_METHOD") == "GET"
            and "HTTP_X_FORWARDED_FOR" not in environ
        ):
            body = exposition()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]
        started = time.perf_counter()
        request_id = request_id_set(environ.get("HTTP_X_REQUEST_ID"))
        status = ["500"]

        def start(status_line, headers, exc_info=None):
            status[0] = status_line[:3]
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        try:
            return self.application(environ, start)
        finally:
            elapsed = time.perf_counter() - started
            route, method = environ.get(ROUTE, UNMATCHED), environ.get("REQUEST_METHOD", "")
            if self.count_requests:
                requests, seconds = self._children(route, method, status[0])
                requests.inc()
                seconds.observe(elapsed)
            if self.log_requests:
                access_log.info(
                    "%s %s %s",
                    method[:16],
                    environ.get("PATH_INFO", ""),
                    status[0],
                    extra={"status": int(status[0]), "route": route, "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_clear()
