"""The yardstick: a bare WSGI function (no framework) that answers GET /api/posts/{id} with one
Redis GET of the same cache entry the read API serves, run under the read pool's gunicorn config
and behind the same HAProxy config. Nothing real can be faster through this stack.

    GUNICORN_BIND=127.0.0.1:9100 gunicorn -c deploy/gunicorn_read.py bench.ceiling_wsgi
"""

import os

import redis

from cqrs_site.core.codec import post_key, value_decode

_client = None


def _redis() -> redis.Redis:
    global _client  # made on first use, after gunicorn forks
    if _client is None:
        from deploy.redis_topology import client_for

        _client = client_for({**os.environ, "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6380/0")})
    return _client


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path in ("/readyz", "/healthz"):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    raw = _redis().get(post_key(path.rpartition("/")[2])) if path.startswith("/api/posts/") else None
    body = value_decode(raw)[1] if raw else None
    if not body:
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
