"""`manage.py dead_letters list|show|replay` against the real broker, with a running consumer."""

import io
import json
import time
import uuid

import pytest
from confluent_kafka import Producer
from django.conf import settings
from django.core.management import CommandError, call_command

from cqrs_site.core.codec import post_key
from reads.cache import cache_get
from tests.conftest import eventually
from tests.integration.consumers.test_cache_consumer import marker_after, post_event, produce
from writes import services


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dead_letters", *args, stdout=out)
    return out.getvalue()


def listed(key: str) -> list[dict]:
    return [json.loads(line) for line in run("list", "--json", "--key", key).splitlines()]


def dead_letter(key: bytes, value: bytes, error: str = "EventInvalid: refused by an older release") -> None:
    """Put a message on the dead-letter topic as a consumer would have."""
    producer = Producer(settings.KAFKA_PRODUCER_CONFIG)
    headers = [
        ("dlq.error", error.encode()),
        ("dlq.topic", settings.KAFKA_EVENTS_TOPIC.encode()),
        ("dlq.partition", b"0"),
        ("dlq.offset", b"7"),
        ("dlq.consumer", b"cache"),
        ("dlq.at", str(time.time()).encode()),
    ]
    producer.produce(settings.KAFKA_DEAD_LETTER_TOPIC, key=key, value=value, headers=headers)
    assert producer.flush(10) == 0


def cached(post_id: str) -> tuple[int, dict] | None:
    entry = cache_get(post_key(post_id))
    return None if entry is None else (entry.version, json.loads(entry.body))


def test_a_poison_message_is_listed_shown_and_not_replayed_while_it_still_cannot_be_decoded(consumer):
    key = f"poison-{uuid.uuid4().hex}"
    produce((key.encode(), b"{not an event"))
    [row] = eventually(lambda: listed(key), timeout=20)
    assert row["error"].startswith("EventInvalid: not JSON") and row["decodes_now"] is False
    assert row["source"].startswith(f"{settings.KAFKA_EVENTS_TOPIC}[") and row["at"]

    lines = run("list", "--key", key).splitlines()
    assert lines[0].startswith(row["id"]) and "still poison" in lines[0]
    assert lines[-1] == f"1 dead letters on {settings.KAFKA_DEAD_LETTER_TOPIC}"

    shown = run("show", row["id"])
    assert f"dead letter {row['id']}" in shown and "EventInvalid: not JSON" in shown
    assert f"key       {key}" in shown and shown.rstrip().endswith("{not an event")

    replayed = run("replay", "--key", key, "--no-progress")
    assert f"skipped {row['id']}: the current code cannot decode it" in replayed
    assert "0 replayed" in replayed and "1 skipped" in replayed


def test_a_dead_letter_the_code_now_decodes_is_replayed_through_the_fence(consumer):
    user = services.user_create(username="dead-letters")
    post = services.post_create(user_id=user["id"], title="v1", content="C")
    eventually(lambda: cached(post["id"]) is not None, timeout=15)
    key = post["id"]
    dead_letter(key.encode(), post_event(post, 2, "from the dead letter"))
    [row] = eventually(lambda: listed(key), timeout=10)
    assert row["decodes_now"] is True

    dry = run("replay", "--key", key, "--dry-run")
    assert f"{row['id']}" in dry and "would send" in dry and "nothing sent" in dry
    time.sleep(1)
    assert cached(post["id"])[0] == 1  # a dry run sends nothing

    assert "1 replayed" in run("replay", row["id"], "--no-progress")
    eventually(lambda: cached(post["id"])[0] == 2, timeout=15)
    assert cached(post["id"])[1]["title"] == "from the dead letter"

    # An older version replayed later never moves the entry back; replaying twice changes nothing.
    dead_letter(key.encode(), post_event(post, 1, "older"))
    assert "2 replayed" in run("replay", "--key", key, "--no-progress")
    marker = marker_after(key.encode())
    eventually(lambda: cache_get(marker), timeout=15)  # once it is cached, all before it was applied
    assert cached(post["id"]) == (2, {**cached(post["id"])[1], "title": "from the dead letter"})


def test_filters_and_unknown_ids():
    key = f"filtered-{uuid.uuid4().hex}"
    dead_letter(key.encode(), b"{}", error="KeyError: 'type'")
    [row] = eventually(lambda: listed(key), timeout=10)
    assert [
        r["id"]
        for r in json.loads("[" + ",".join(run("list", "--json", "--key", key, "--since", "1h").splitlines()) + "]")
    ] == [row["id"]]
    assert run("list", "--json", "--key", key, "--until", "1h") == ""
    assert run("list", "--json", "--key", key, "--error", "keyerror") != ""
    assert run("list", "--json", "--key", key, "--error", "timeout") == ""
    with pytest.raises(CommandError, match="no such dead letters: 99:12345"):
        run("replay", "99:12345")
    with pytest.raises(CommandError, match="no dead letter 99:12345"):
        run("show", "99:12345")
    with pytest.raises(CommandError, match="not a time"):
        run("list", "--since", "yesterday")
