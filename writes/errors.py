"""Maps every error the write API raises onto the one error shape, `{"error": {...}}`."""

import logging

from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from cqrs_site.core.errors import ApiError

from .outcome import NotApplied

logger = logging.getLogger(__name__)

DRF_CODES = {
    exceptions.ParseError: "malformed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def api_error(exc: Exception) -> ApiError | None:
    """The API's error for one of ours or a dependency fault (MongoDB unreachable: logged), None
    for anything else. DRF's exception handler and the write fast path (writes/fastpath.py).

    A write MongoDB fails in flight says what is known of it (writes/outcome.py); a connection
    failure that reaches here came before any write was sent (a lookup, a check), or after one
    that changed nothing, so nothing was applied."""
    if isinstance(exc, (ServerSelectionTimeoutError, ConnectionFailure)):
        logger.error("MongoDB unavailable: %s", exc)
        return NotApplied()
    return exc if isinstance(exc, ApiError) else None


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: our errors, DRF's errors and dependency faults, one shape."""
    exc = api_error(exc) or exc
    if isinstance(exc, ApiError):
        return Response(exc.as_dict(), status=exc.status_code, headers=exc.headers())
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = {name: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])] for name, msgs in detail.items()}
        error = ApiError("The request body is invalid; see fields.", fields=fields)
        return Response(error.as_dict(), status=400)
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        code = DRF_CODES.get(type(exc), "error")
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response({"error": {"code": code, "message": str(exc.detail)}}, status=exc.status_code, headers=headers)
    return None
