"""The API's errors: one small hierarchy, one JSON shape, used by both pools.

Stdlib only, so the read hot path and the write API can both import it.
"""

import json


class ApiError(Exception):
    """An error the client can act on. Subclasses set the HTTP status and a stable code."""

    status_code = 400
    code = "invalid"
    default_message = "The request is invalid."

    def __init__(self, message: str | None = None, *, fields: dict | None = None):
        self.message = message or self.default_message
        self.fields = fields
        super().__init__(self.message)

    def as_dict(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}

    def as_bytes(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the body (Retry-After on a 503, ETag on a 412)."""
        return {}


class InvalidInput(ApiError):
    status_code = 400
    code = "invalid"


class BadRequest(ApiError):
    """What Django itself refuses before any view (a Host not in ALLOWED_HOSTS, bad syntax)."""

    status_code = 400
    code = "bad_request"
    default_message = "The request is malformed (its Host header or syntax)."


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"
    default_message = "Not allowed."


class NotFound(ApiError):
    status_code = 404
    code = "not_found"
    default_message = "No such resource."


class MethodNotAllowed(ApiError):
    status_code = 405
    code = "method_not_allowed"
    default_message = "This method is not allowed on this path."


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PreconditionFailed(ApiError):
    """If-Match named a version the resource has moved past; the answer's ETag is the current one."""

    status_code = 412
    code = "precondition_failed"

    def __init__(self, message: str | None = None, *, fields: dict | None = None, current_version: int | None = None):
        super().__init__(message, fields=fields)
        self.current_version = current_version

    def headers(self) -> dict[str, str]:
        return {} if self.current_version is None else {"ETag": f'"{self.current_version}"'}


class Unprocessable(ApiError):
    """Well-formed, but not something this request may do (an Idempotency-Key reused with
    another request)."""

    status_code = 422
    code = "unprocessable"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "too_large"
    default_message = "The request body is too large."


class Unavailable(ApiError):
    """A dependency the request needs is down; retrying later is safe."""

    status_code = 503
    code = "unavailable"
    default_message = "A backing service is unavailable; retry later."
    retry_after_seconds = 2

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class ServerError(ApiError):
    """An unhandled exception: logged with its request id; the client learns nothing of it."""

    status_code = 500
    code = "server_error"
    default_message = "The server failed to answer this request; it was logged. Retrying may help."
