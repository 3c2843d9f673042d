"""The Kafka topics this project needs, created from settings."""

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings


def topics_create(*, timeout: float = 15.0) -> dict[str, str]:
    """Create the event and dead-letter topics; returns topic -> 'created' or 'exists'."""
    admin = AdminClient({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    wanted = [
        NewTopic(
            topic, num_partitions=settings.KAFKA_TOPIC_PARTITIONS, replication_factor=settings.KAFKA_REPLICATION_FACTOR
        )
        for topic in (settings.KAFKA_EVENTS_TOPIC, settings.KAFKA_DEAD_LETTER_TOPIC)
    ]
    outcome = {}
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            outcome[topic] = "created"
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[topic] = "exists"
            else:
                raise
    return outcome
