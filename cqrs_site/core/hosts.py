"""ALLOWED_HOSTS for every request of both pools, checked once below Django.

Django validates the Host header only when a view asks for it (`request.get_host()`); the read
views and the read pool's fast path never do, so without this a request for any host was
answered. Here each distinct Host value is judged once by Django's own rules (exact names,
".example.com" with its subdomains, "*") and remembered, so the hit path pays a dict lookup.
The internal endpoints (/metrics, /readyz, /healthz) are exempt: probes and scrapers address
an instance by its IP.
"""

from django.http.request import split_domain_port, validate_host

from .errors import BadRequest

INTERNAL_PATHS = frozenset({"/metrics", "/readyz", "/healthz"})
_REMEMBERED = 1024  # distinct Host values judged once; a flood of new ones is judged each time


class AllowedHosts:
    """WSGI middleware: 400 in the API's shape for a Host not in `allowed` (see the module)."""

    def __init__(self, application, allowed: list[str]) -> None:
        self.application = application
        self.allowed = list(allowed)
        self._judged: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        verdict = self._judged.get(host)
        if verdict is None:
            domain, _port = split_domain_port(host)
            verdict = bool(domain) and validate_host(domain, self.allowed)
            if len(self._judged) < _REMEMBERED:
                self._judged[host] = verdict
        return verdict

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if self.allows(host) or environ.get("PATH_INFO") in INTERNAL_PATHS:
            return self.application(environ, start_response)
        error = BadRequest("The Host header names no host this API serves (DJANGO_ALLOWED_HOSTS).")
        body = error.as_bytes()
        start_response("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
