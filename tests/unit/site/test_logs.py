"""Structured logs: one JSON object per line, with the current request id."""

import io
import json
import logging

import pytest

from cqrs_site.core.logs import JsonFormatter, request_id_clear, request_id_get, request_id_set


def formatted(message: str, *args, **extra) -> dict:
    record = logging.LogRecord("cqrs.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_record_is_one_json_object_with_the_request_id_and_its_extra_fields():
    request_id_set("abc-123")
    try:
        entry = formatted("applied %d events", 3, partition=2, key="k")
    finally:
        request_id_clear()
    assert entry["message"] == "applied 3 events" and entry["level"] == "WARNING" and entry["logger"] == "cqrs.test"
    assert entry["request_id"] == "abc-123" and (entry["partition"], entry["key"]) == (2, "k")
    assert entry["ts"].endswith("Z")


def test_without_a_request_there_is_no_request_id_and_an_extra_field_can_name_one():
    assert "request_id" not in formatted("idle")
    assert formatted("from a header", request_id="from-event")["request_id"] == "from-event"


def test_a_message_with_newlines_and_quotes_stays_on_one_line():
    assert formatted('a "quoted"\nsecond line')["message"] == 'a "quoted"\nsecond line'


@pytest.mark.parametrize("raw", [None, "", "has space", "x" * 129, "a\r\nInjected: 1", "$gt", "ü"])
def test_a_missing_or_malformed_request_id_is_replaced(raw):
    adopted = request_id_set(raw)
    assert adopted != raw and len(adopted) == 32 and request_id_get() == adopted
    request_id_clear()


def test_a_well_formed_request_id_is_kept():
    assert request_id_set("7f1c0c3e-2b4d-4cc1-9d7e-0a4b5c6d7e8f") == "7f1c0c3e-2b4d-4cc1-9d7e-0a4b5c6d7e8f"
    request_id_clear()


def byte_buffered() -> io.TextIOWrapper:
    """A stream like sys.stderr: text over a byte buffer, holding what was written to it."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=False)


def written(stream) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode() if hasattr(stream, "buffer") else stream.getvalue()


@pytest.mark.parametrize("make_stream", [io.StringIO, byte_buffered], ids=["text", "bytes-underneath"])
def test_log_many_writes_a_json_line_per_row_beside_the_shared_fields(make_stream):
    from cqrs_site.core.logs import log_many

    stream = make_stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    # A logger of its own per run: pytest's capture handlers join a logger it has seen log.
    name = f"cqrs.test.many.{make_stream.__name__}"
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        logger.info("before")  # through the text layer: it must come out first
        log_many(logger, "event applied", [{"offset": 1, "key": "a\nb"}, {}, {"message": "its own", "offset": 3}])
        log_many(logger, "event applied", [{"key": "café"}])
    finally:
        logger.removeHandler(handler)
    before, *lines = [json.loads(line) for line in written(stream).splitlines()]
    assert before["message"] == "before"
    assert [line.get("offset") for line in lines] == [1, None, 3, None]
    assert [line["message"] for line in lines] == ["event applied", "event applied", "its own", "event applied"]
    assert lines[3]["key"] == "café"
    assert all(line["logger"] == name and line["level"] == "INFO" for line in lines)
    assert lines[0]["key"] == "a\nb" and lines[0]["ts"] == lines[2]["ts"]
