"""The write pool's hot path: likes and dislikes answered below Django.

A POST to /api/posts/<id>/like or /dislike, with no body, no Idempotency-Key, a token this
process knows (writes/authentication.py) and within its writes per minute, is counted here: the
same service call as the view's (writes/services.py), the same answer, bytes and headers. Django,
its middleware and DRF were a fifth to a third of the write pool's CPU on such a write (`make
bench` measures it in every run: bench/README.md), for a request that needs none of
what they do.

Every other request goes to Django unchanged, and so does one whose answer would be Django's
own: no token or an unknown one (401), a client over its limit (429: counted twice, both over
the limit), an Accept other than JSON's (406), an Idempotency-Key (writes/idempotency.py). Once
the service is called, the fast path answers whatever happens itself, in the API's error shape
and with the same status, so a write is never attempted twice: an unknown or deleted post
(404), MongoDB down (503), anything else (500, logged). With Redis down the limit is not
applied, as in Django. Only the write role installs it (cqrs_site/wsgi.py), and not where
Django would add a header it does not (HSTS); CQRS_WRITE_FAST_PATH=0 turns it off.
"""

import logging
import re
from http import HTTPStatus

from django.conf import settings
from django.urls import resolve
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.renderers import JSONRenderer

from cqrs_site.core import routes
from cqrs_site.core.errors import ServerError
from cqrs_site.core.telemetry import ROUTE

from . import services
from .answers import post_reacted
from .authentication import CachedTokenAuthentication
from .errors import api_error
from .idempotency import HEADER as IDEMPOTENCY_KEY
from .throttles import writes_window

response_logger = logging.getLogger("django.request")  # where Django logs its 4xx and 5xx answers

# The like and dislike routes of the table (cqrs_site/core/routes.py), matched by one expression:
# group `r<n>` for REACTIONS[n], its post id in `id<n>`.
REACTIONS = tuple(route for route in routes.ROUTES if route.reaction)
REACTION = re.compile(
    "(?:" + "|".join(f"(?P<r{n}>{route.regex('[^/]+', f'id{n}')})" for n, route in enumerate(REACTIONS)) + r")\Z"
)
IDEMPOTENCY_ENVIRON = "HTTP_" + IDEMPOTENCY_KEY.upper().replace("-", "_")
# The Accept headers DRF's content negotiation settles on the JSON renderer without a 406.
ACCEPTED = frozenset(("", "*/*", "application/json", "application/*"))


def installable() -> bool:
    """Whether the fast path answers as Django would: not with HSTS on (SecurityMiddleware adds it
    to secure requests only), and not when CQRS_WRITE_FAST_PATH is off."""
    return settings.CQRS_WRITE_FAST_PATH and not settings.SECURE_HSTS_SECONDS


def middleware_headers() -> list[tuple[str, str]]:
    """What the write pool's middleware adds to every answer of the API (cqrs_site/settings),
    from the settings they read; tests/integration/writes/test_fastpath.py holds them equal."""
    headers = [("Content-Type", "application/json"), ("X-Frame-Options", settings.X_FRAME_OPTIONS)]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append(("Referrer-Policy", settings.SECURE_REFERRER_POLICY))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers


class Reactions:
    """WSGI middleware around Django's application (see the module's docstring)."""

    def __init__(self, application) -> None:
        self.application = application
        self.authentication = CachedTokenAuthentication()
        self.limit = writes_window()
        self.renderer = JSONRenderer()  # the write API's only renderer (REST_FRAMEWORK)
        # Each reaction's route as the URLconf names it (the metrics' label) and its Allow
        # (urls_write.by_method); Django's handler500 answers past the view, without Allow.
        self.server_error_headers = middleware_headers()
        self.routes = []  # REACTIONS[n]'s route label and error headers
        for route in REACTIONS:
            view = resolve("/" + re.sub(r"<str:\w+>", "0", route.label)).func
            self.routes.append((route.label, [*self.server_error_headers, ("Allow", view.allow)]))

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            match = REACTION.match(environ.get("PATH_INFO", ""))
            if match is not None and self._plain(environ):
                user = self._user(environ)
                if user is not None and self.limit.hit(str(user.pk)).allowed:
                    n = int(match.lastgroup[1:])
                    environ[ROUTE], headers = self.routes[n]
                    return self._react(match[f"id{n}"], REACTIONS[n].reaction, headers, environ, start_response)
        return self.application(environ, start_response)

    @staticmethod
    def _plain(environ) -> bool:
        """No body, no Idempotency-Key, and an Accept the JSON renderer takes as it is."""
        return (
            environ.get("CONTENT_LENGTH") in (None, "", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ
            and IDEMPOTENCY_ENVIRON not in environ
            and environ.get("HTTP_ACCEPT", "").strip() in ACCEPTED
        )

    def _user(self, environ):
        """The token's user, as DRF's TokenAuthentication finds it; None for Django to refuse."""
        words = environ.get("HTTP_AUTHORIZATION", "").split()
        if len(words) != 2 or words[0].lower() != "token":  # DRF's keyword is case-insensitive
            return None
        try:
            user, _token = self.authentication.authenticate_credentials(words[1])
        except AuthenticationFailed:
            return None
        return user

    def _react(self, post_id: str, reaction: str, headers: list, environ, start_response):
        try:
            answer = post_reacted(services.post_react(post_id=post_id, reaction=reaction))
            return self._respond(answer.status, answer.body, answer.headers, headers, start_response)
        except Exception as exc:  # an ApiError wrote nothing (an unknown or deleted post)
            error = api_error(exc)
            if error is None:
                response_logger.exception("Internal Server Error: %s", environ["PATH_INFO"])
                error, headers = ServerError(), self.server_error_headers
            else:  # as Django logs every 4xx and 5xx answer
                log = response_logger.warning if error.status_code < 500 else response_logger.error
                log("%s: %s", HTTPStatus(error.status_code).phrase, environ["PATH_INFO"])
        return self._respond(error.status_code, error.as_dict(), error.headers(), headers, start_response)

    def _respond(self, status: int, data: dict, extra: dict, headers: list, start_response):
        body = self.renderer.render(data)
        status_line = f"{status} {HTTPStatus(status).phrase}"
        start_response(status_line, [*headers, *extra.items(), ("Content-Length", str(len(body)))])
        return [body]
