"""The write pool's hot path: likes and dislikes answered below Django.

A POST to /api/posts/<id>/like or /dislike, with no body, no Idempotency-Key, a token this
process knows (writes/authentication.py) and within its writes per minute, is counted here: the
same service call as the view's (writes/services.py), the same answer, bytes and headers. Django,
its middleware and DRF cost the write pool 40% of its CPU on such a write (README, writes),
for a request that needs none of what they do.

Every other request goes to Django unchanged, and so does one whose answer would be Django's
own: no token or an unknown one (401), a client over its limit (429: counted twice, both over
the limit), an Accept other than JSON's (406), an Idempotency-Key (writes/idempotency.py). Once
the service is called, the fast path answers whatever happens itself, in the API's error shape
and with the same status, so a write is never attempted twice: an unknown or deleted post
(404), MongoDB down (503), anything else (500, logged). With Redis down the limit is not
applied, as in Django. Only the write role installs it (cqrs_site/wsgi.py), and not where
Django would add a header it does not (HSTS); CQRS_WRITE_FAST_PATH=0 turns it off.
"""

import json
import logging
import re

from django.conf import settings
from pymongo.errors import ConnectionFailure
from rest_framework.exceptions import AuthenticationFailed

from cqrs_site.core.errors import ApiError, ServerError, Unavailable
from cqrs_site.core.ratelimit import FixedWindow
from cqrs_site.core.telemetry import ROUTE

from . import services
from .answers import post_reacted
from .authentication import CachedTokenAuthentication
from .idempotency import HEADER as IDEMPOTENCY_KEY

logger = logging.getLogger(__name__)
response_logger = logging.getLogger("django.request")  # where Django logs its 4xx and 5xx answers

REACTION = re.compile(r"/api/posts/(?P<post_id>[^/]+)/(?P<reaction>like|dislike)\Z")
ROUTES = {"like": "api/posts/<str:post_id>/like", "dislike": "api/posts/<str:post_id>/dislike"}
IDEMPOTENCY_ENVIRON = "HTTP_" + IDEMPOTENCY_KEY.upper().replace("-", "_")
# The Accept headers DRF's content negotiation settles on the JSON renderer without a 406.
ACCEPTED = frozenset(("", "*/*", "application/json", "application/*"))
STATUS_LINES = {200: "200 OK", 404: "404 Not Found", 500: "500 Internal Server Error", 503: "503 Service Unavailable"}


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


def rendered(data: dict) -> bytes:
    """As DRF's JSONRenderer renders it here (one renderer, REST_FRAMEWORK's defaults): compact,
    not ASCII-escaped."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class Reactions:
    """WSGI middleware around Django's application (see the module's docstring)."""

    def __init__(self, application) -> None:
        self.application = application
        self.authentication = CachedTokenAuthentication()
        self.limit = FixedWindow("writes", settings.CQRS_WRITES_PER_MINUTE, 60)
        # Django's handler500 answers past DRF and the route's view: without its Allow.
        self.server_error_headers = middleware_headers()
        self.api_headers = [*self.server_error_headers, ("Allow", "POST, OPTIONS")]  # urls_write.by_method

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            match = REACTION.match(environ.get("PATH_INFO", ""))
            if match is not None and self._plain(environ):
                user = self._user(environ)
                if user is not None and self.limit.hit(str(user.pk)).allowed:
                    environ[ROUTE] = ROUTES[match["reaction"]]
                    return self._react(match["post_id"], match["reaction"], environ, start_response)
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

    def _react(self, post_id: str, reaction: str, environ, start_response):
        headers = self.api_headers
        try:
            answer = post_reacted(services.post_react(post_id=post_id, reaction=reaction))
            return self._respond(answer.status, rendered(answer.body), answer.headers, headers, start_response)
        except ApiError as exc:  # nothing was written: an unknown or deleted post
            error = exc
        except ConnectionFailure as exc:  # as writes/errors.py maps it
            logger.error("MongoDB unavailable: %s", exc)
            error = Unavailable("MongoDB is unavailable; the write was not applied. Retry later.")
        except Exception:
            error, headers = ServerError(), self.server_error_headers
            response_logger.exception("Internal Server Error: %s", environ["PATH_INFO"])
        if error.status_code < 500:
            response_logger.warning("%s: %s", STATUS_LINES[error.status_code][4:], environ["PATH_INFO"])
        elif not isinstance(error, ServerError):
            response_logger.error("%s: %s", STATUS_LINES[error.status_code][4:], environ["PATH_INFO"])
        return self._respond(error.status_code, rendered(error.as_dict()), error.headers(), headers, start_response)

    @staticmethod
    def _respond(status: int, body: bytes, extra: dict, headers: list, start_response):
        start_response(STATUS_LINES[status], [*headers, *extra.items(), ("Content-Length", str(len(body)))])
        return [body]
