"""Calling a WSGI application directly, as gunicorn would: the pools' layers below Django
(cqrs_site/core/telemetry.py, reads/fastpath.py) are not reached by Django's test client."""

import io
import json
from wsgiref.util import setup_testing_defaults


def wsgi_call(app, method: str, path: str, *, body: dict | None = None, headers: dict | None = None):
    """One request: (status, headers, body). Header names as sent (`X-Min-Version`); the path
    may carry a query string."""
    environ: dict = {}
    setup_testing_defaults(environ)
    data = json.dumps(body).encode() if body is not None else b""
    path, _, query = path.partition("?")
    environ.update(
        REQUEST_METHOD=method,
        PATH_INFO=path,
        QUERY_STRING=query,
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH=str(len(data)),
        **{"wsgi.input": io.BytesIO(data)},
    )
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer.update(status=int(status[:3]), headers=dict(response_headers))

    chunks = app(environ, start_response)
    content = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return answer["status"], answer["headers"], content


class DjangoSpy:
    """Django's application, counting the requests that reach it: what a fast path below Django
    (reads/fastpath.py, writes/fastpath.py) hands on."""

    def __init__(self) -> None:
        from django.core.wsgi import get_wsgi_application

        self.django, self.calls = get_wsgi_application(), 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.django(environ, start_response)
