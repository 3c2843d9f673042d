"""Structured logs: one JSON object per line, each carrying the request id of the work it is about.

The request id comes from HAProxy (X-Request-ID, which it sets unless the client did); the WSGI
layer (cqrs_site/core/telemetry.py) keeps it in a context variable for the request's thread or
greenlet, writes keep it in their outbox entries, the producer sends it as an event header and
the consumer logs it beside the event it applied: one write can be followed end to end.

Stdlib and orjson only, so every role (and the leaf modules of writes) can import it.
"""

import contextvars
import logging
import re
import uuid
from datetime import UTC, datetime

import orjson

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# What we accept from a client or a proxy: an id, not a payload to smuggle into logs or headers.
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")

# LogRecord's own attributes; anything else on a record came from `extra=` and is logged as a field.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def request_id_get() -> str | None:
    """The request id of the work this thread or greenlet is doing, if any."""
    return _request_id.get()


def request_id_set(raw: str | None) -> str:
    """Adopt `raw` as the current request id when it is a well-formed one, else a new id."""
    request_id = raw if raw is not None and VALID_REQUEST_ID.match(raw) else uuid.uuid4().hex
    _request_id.set(request_id)
    return request_id


def request_id_clear() -> None:
    _request_id.set(None)


def log_many(logger: logging.Logger, message: str, rows: list[dict]) -> None:
    """One INFO line per row (its fields beside `message`), as `logger.info(message, extra=row)`
    writes them, but, where the logger's handlers are JSON lines on a stream, rendered with
    orjson and written at once: a consumer logs every event it applies, and a LogRecord per
    event cost it a third of its time (measured)."""
    if not rows or not logger.isEnabledFor(logging.INFO):
        return
    handlers = logging.getLogger().handlers if logger.propagate else logger.handlers
    if not handlers or not all(
        isinstance(h, logging.StreamHandler) and isinstance(h.formatter, JsonFormatter) for h in handlers
    ):
        for row in rows:
            logger.info(message, extra=row)
        return
    head = {"ts": _now_iso(), "level": "INFO", "logger": logger.name, "message": message}
    # The fields every line shares are rendered once; each row's are spliced in after them.
    opening = orjson.dumps(head)[:-1] + b","
    lines = b"".join(
        [
            opening + orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE)[1:]
            if row and head.keys().isdisjoint(row)
            else orjson.dumps({**head, **row}, default=str, option=orjson.OPT_APPEND_NEWLINE)
            for row in rows
        ]
    )
    for handler in handlers:
        with handler.lock:
            _write_lines(handler.stream, lines)
            handler.flush()


def _write_lines(stream, lines: bytes) -> None:
    """UTF-8 lines onto a text stream: straight into its byte buffer when it has one (after what
    the text layer holds), not decoded to be encoded again."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None or (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8":
        stream.write(lines.decode())
        return
    stream.flush()
    buffer.write(lines)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, ...extra fields, "exc"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()
