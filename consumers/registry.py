"""The consumers this project runs: name -> topic, group, handler, dead-letter topic.

`python manage.py run_consumer NAME` looks the name up here; one generic runner serves all.
"""

from dataclasses import dataclass

from django.conf import settings

from .handlers import CacheProjection


@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    topic: str
    group: str
    handler: object
    dead_letter_topic: str


def consumer_specs() -> dict[str, ConsumerSpec]:
    return {
        "cache": ConsumerSpec(
            name="cache",
            topic=settings.KAFKA_EVENTS_TOPIC,
            group=settings.CACHE_CONSUMER_GROUP,
            handler=CacheProjection(),
            dead_letter_topic=settings.KAFKA_DEAD_LETTER_TOPIC,
        )
    }
